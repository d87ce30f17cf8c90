"""``depthcube download``: fetch the real inputs of a region and a time span into the layout the
cube build reads (``<output>/ostia``, ``glorys``, ``en4``, ``argo``; see ``configs/cube.yaml``).

One module per source behind one entry point, :func:`download`:

- :mod:`.copernicus`: OSTIA L4 and GLORYS12 thetao through the ``copernicusmarine`` toolbox,
- :mod:`.en4`: the EN4.2.2 yearly zips over HTTPS, unpacked to the monthly files,
- :mod:`.argo`: Argo GDAC ``*_prof.nc`` files chosen from the GDAC profile index.

A :class:`~.request.DownloadRequest` is validated once; :func:`plan` lists every fetch with an
estimated size (``--dry-run`` prints it). A run executes the fetches that are not complete
(resuming: a file already in place is skipped; files only appear whole, see :mod:`.files`) and
stops at the first failure with one :class:`~.files.DownloadError` line; what was fetched
stays. A planner may list more once earlier fetches are in place (Argo: floats come from the
index), so each product is planned again until nothing new appears. At the end a ``cube.yaml``
for the downloaded files is written in the output folder unless one is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cube.progress import Progress

from .argo import plan_argo
from .copernicus import plan_glorys, plan_ostia, preflight
from .en4 import plan_en4
from .files import DownloadError
from .plan import Fetch, ProductPlan, describe, human_bytes
from .request import DownloadRequest, load_request

PLANNERS = {"ostia": plan_ostia, "glorys": plan_glorys, "en4": plan_en4, "argo": plan_argo}
#: Planning rounds per product: Argo needs two (the index, then its floats).
MAX_ROUNDS = 3
INPUT_GLOBS = {"ostia": "*.nc", "glorys": "*.nc", "en4": "EN.4.2.2.f.profiles.g10.*.nc", "argo": "*_prof.nc"}

__all__ = ["DownloadError", "DownloadReport", "DownloadRequest", "Fetch", "ProductPlan", "download", "load_request",
           "plan"]


@dataclass
class DownloadReport:
    """What a run did: fetches run and skipped per product, and the config written (if any)."""

    fetched: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    config: Path | None = None


def plan(req: DownloadRequest, product: str, *, ask_sizes: bool = False) -> ProductPlan:
    """The fetches of one product (``ask_sizes``: ask the EN4 server for its zip sizes)."""
    if product == "en4":
        return plan_en4(req, ask_sizes=ask_sizes)
    return PLANNERS[product](req)


def dry_run(req: DownloadRequest) -> list[str]:
    """The lines ``--dry-run`` prints: per product its fetches, sizes and the size arithmetic."""
    lines, total = [], 0
    for product in req.products:
        p = plan(req, product, ask_sizes=True)
        lines += describe(p, Path(req.output))
        size = p.estimated_bytes(todo_only=True)
        total = None if total is None or size is None else total + size
    lines.append(f"total to fetch: {human_bytes(total)}" + ("" if total is not None else " (some sizes unknown)"))
    return lines


def download(req: DownloadRequest, *, progress: bool = True) -> DownloadReport:
    """Fetch every incomplete file of ``req``; DownloadError (one line) at the first failure."""
    report = DownloadReport()
    if any(p in req.products and plan(req, p).todo for p in ("ostia", "glorys")):
        preflight()  # a missing package or credential is said before anything is fetched
    for product in req.products:
        first = plan(req, product)
        report.skipped[product] = len(first.fetches) - len(first.todo)
        report.fetched[product] = 0
        current, seen = first, set()
        for _ in range(MAX_ROUNDS):
            todo = [f for f in current.todo if f.targets not in seen]
            if not todo:
                break
            with Progress(len(todo), f"download {product}", unit="file", enabled=progress) as bar:
                for f in todo:
                    seen.add(f.targets)
                    f.run()
                    report.fetched[product] += 1
                    bar.update()
            current = plan(req, product)
    report.config = write_cube_config(req)
    return report


def write_cube_config(req: DownloadRequest) -> Path | None:
    """``<output>/cube.yaml`` reading the downloaded files (absolute globs, the request's region and
    span, the cube beside them), unless that file exists: the user's edits are never replaced."""
    out = Path(req.output).resolve()
    path = out / "cube.yaml"
    if path.exists():
        return None
    la0, la1, lo0, lo1 = req.region
    config = {"output": str(out / "cube.zarr"),
              "inputs": {p: ([str(out / p / INPUT_GLOBS[p])] if p in req.products else []) for p in INPUT_GLOBS},
              "grid": {"resolution": 0.1, "region": [la0, la1, lo0, lo1]},
              "time": {"start": req.start, "end": req.end},
              "patches": {"tile_size": _tile_size(min(la1 - la0, lo1 - lo0) / 0.1)}}
    path.write_text("# written by depthcube download; build with: depthcube build " + str(path) + "\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def _tile_size(cells: float) -> int:
    """DepthDif's 128-cell tiles, or the largest power of two (>= 8) that fits a smaller region."""
    tile = 128
    while tile > 8 and tile > cells:
        tile //= 2
    return tile
