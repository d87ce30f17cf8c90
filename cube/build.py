"""``depthcube build``: raw NetCDF -> cube.zarr (DESIGN.md sections 4, 5 and 8).

Plan of a build (each step names the layer it calls; this module imports no torch):

1. **scan** (driver, cheap): expand the input globs, read each file's dates through the readers
   (a one-cell slab, so bad files are found before any heavy work), pick the grid and the daily axis.
2. **static** (driver): regrid the first GLORYS snapshot -> ``ocean_mask`` and ``bottom_level``;
   build the patch index (``cube.patches``).
3. **tasks** (dask, parallel over time, region writes to disjoint chunks):
   ``ostia:<chunk>`` one daily chunk of OSTIA days; ``glorys:<file>`` every snapshot of one file;
   ``profiles-a:<file>`` read + QC + vertical alignment of one profile file into a scratch table;
   ``profiles-b:<chunk>`` rasterise the scratch rows of one daily chunk into count/sum.
4. **publish**: patch index, attributes (config, version, inputs with checksums, rejects),
   consolidated metadata, then rename ``<cube>.partial`` -> ``<cube>``.

Safety: the driver holds a lock on the output (``<cube>.lock``, :class:`cube.store.BuildLock`) for
the whole build, and never deletes or replaces a path that is not a depthcube cube; replacing a
cube it cannot update in place needs ``rebuild`` (see :func:`build`).

Incremental: a finished cube records every input with its checksum. Re-running with the same
inputs does nothing; new inputs that extend the daily axis are appended in place (only the
affected chunks are recomputed, consolidated metadata rewritten last). An interrupted build keeps
its staging folder and journal (``.build/journal.jsonl``) and resumes where it stopped.
Peak memory is bounded by one task per worker (a chunk of days or one input file), independent
of the number of input files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from importlib.metadata import version as pkg_version
from pathlib import Path

import fsspec
import numpy as np

from . import store
from .config import CubeConfig
from .spec import to_dict
from .constants import GLORYS_DEPTHS
from .errors import ConfigError, InputError
from .grid import CubeGrid
from .layout import CONTRACT, decode_attrs

log = logging.getLogger("depthcube.build")

PRODUCTS = ("ostia", "glorys", "en4", "argo")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    product: str
    url: str
    size: int
    checksum: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def key(self) -> str:
        return f"{self.product}:{self.name}:{self.checksum}"


def expand_inputs(cfg: CubeConfig, unmatched: list[str] | None = None) -> list[InputFile]:
    """Every input file named by the config's globs/paths, sorted, with size and checksum.

    A path without wildcards that does not exist raises ``InputError('not_found')``; a glob that
    matches nothing is appended to ``unmatched`` as ``inputs.<product>: no file matches 'PATTERN'``.
    """
    files = []
    for product in PRODUCTS:
        urls = set()
        for pattern in getattr(cfg.inputs, product):
            fs, path = fsspec.core.url_to_fs(pattern)
            matches = fs.glob(path) if any(c in path for c in "*?[") else [path]
            if not matches and unmatched is not None:
                unmatched.append(f"inputs.{product}: no file matches {pattern!r}")
            if not matches and not any(c in path for c in "*?["):
                raise InputError(pattern, "not_found", "input file does not exist")
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            for m in matches:
                urls.add(m if protocol in ("file", "local") else f"{protocol}://{m}")
        files += [_input_file(product, url) for url in sorted(urls)]
    return files


def _input_file(product: str, url: str) -> InputFile:
    """An input with its size and checksum. A match that cannot be read (a directory, a dangling
    link, no permission) is kept with an ``unreadable:`` checksum: the scan rejects it by name."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            return InputFile(product, url, 0, "unreadable:directory")
        return InputFile(product, url, int(info.get("size") or 0), _checksum(fs, path, info))
    except OSError as e:
        return InputFile(product, url, 0, f"unreadable:{type(e).__name__}")


def _checksum(fs, path, info) -> str:
    """Content checksum (sha256 of the bytes) for files up to 64 MiB, else size+mtime token."""
    if (info.get("size") or 0) <= 64 * 2**20:
        return "sha256:" + hashlib.sha256(fs.cat_file(path)).hexdigest()[:32]
    return "token:" + str(fs.checksum(path))


# --------------------------------------------------------------------------------------------
# Build report
# --------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """What a build did: numbers for the summary and the cube's attributes."""

    output: str
    status: str = "built"
    inputs: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # good files this cube does not use (outside its days)
    warnings: list[str] = field(default_factory=list)   # e.g. a glob that matches nothing
    staging: str = ""                                   # where this build writes (``<cube>.partial`` or the cube)
    profiles_used: int = 0
    profiles_rejected: dict[str, int] = field(default_factory=dict)
    levels_rejected: int = 0
    tasks_run: int = 0
    tasks_skipped: int = 0
    seconds: float = 0.0
    bytes_read: int = 0

    def reject(self, f: InputFile | str, err: InputError):
        url = f.url if isinstance(f, InputFile) else f
        self.rejects.append({"file": url, "reason": err.reason, "detail": err.detail})


# --------------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    grid: CubeGrid
    days: np.ndarray                      # datetime64[D], the daily axis
    ostia_by_day: dict[int, InputFile]    # day index -> file
    glorys_times: np.ndarray              # datetime64[s], sorted unique snapshot times
    glorys_files: list[tuple[InputFile, list[int]]]  # file -> indices into glorys_times
    profile_files: list[InputFile]


def _read(product: str, f: InputFile, cfg: CubeConfig, bbox=None):
    from . import readers

    if product == "ostia":
        return readers.read_ostia(f.url, bbox=bbox)
    if product == "glorys":
        return readers.read_glorys(f.url, bbox=bbox)
    if product == "en4":
        return readers.read_en4(f.url, accepted_qc=cfg.profiles.accepted_qc,
                                temperature=cfg.profiles.temperature, bbox=bbox)
    return readers.read_argo(f.url, accepted_qc=cfg.profiles.accepted_qc, bbox=bbox)


def _raise(err: Exception):
    raise err


def scan(cfg: CubeConfig, files: list[InputFile], report: BuildReport, strict: bool) -> Plan:
    """Dates of every OSTIA/GLORYS file from its metadata (checked by the readers' scan functions, so
    unreadable or mislabelled files are rejected before any heavy work), the grid and the daily axis."""
    by_product = {p: [f for f in files if f.product == p] for p in PRODUCTS}

    def guarded(f, fn):
        try:
            return fn()
        except InputError as e:
            if strict:
                raise
            report.reject(f, e)
            return None

    from . import readers

    ostia_days: dict[np.datetime64, InputFile] = {}
    ostia_meta = [(f, guarded(f, lambda: readers.scan_ostia(f.url))) for f in by_product["ostia"]]
    ostia_meta = [(f, meta) for f, meta in ostia_meta if meta is not None]
    grid = _choose_grid(cfg, ostia_meta[0][1] if ostia_meta else None)
    for f, meta in ostia_meta:
        day = np.datetime64(meta["time"][0], "D")
        if day in ostia_days:
            guarded(f, lambda: _raise(InputError(f.url, "duplicate_time",
                                                 f"OSTIA day {day} is already provided by {ostia_days[day].name}")))
        elif (outside := _outside_region(f, meta, grid)) is not None:
            guarded(f, lambda: _raise(outside))
        else:
            ostia_days[day] = f

    days = _daily_axis(cfg, ostia_days)
    index = {d: i for i, d in enumerate(days)}
    ostia_by_day = {index[d]: f for d, f in ostia_days.items() if d in index}
    report.skipped += [{"file": f.url, "reason": "outside_time_range",
                        "detail": f"day {d} is not in the cube's days {days[0]}..{days[-1]}"}
                       for d, f in sorted(ostia_days.items()) if d not in index]

    glorys_entries = []
    seen_times: dict[np.datetime64, str] = {}
    scanned = [(f, guarded(f, lambda: _scan_glorys(f, grid))) for f in by_product["glorys"]]
    scanned = [(f, meta) for f, meta in scanned if meta is not None]
    common = _common_lattice([meta for _, meta in scanned])
    for f, meta in scanned:
        odd = _off_lattice(f, meta, common)
        if odd is not None:
            guarded(f, lambda: _raise(odd))
            continue
        times = [np.datetime64(t, "s") for t in meta["time"]]
        dup = [t for t in times if t in seen_times]
        if dup:
            guarded(f, lambda: _raise(InputError(
                f.url, "duplicate_time", f"GLORYS time {dup[0]} is already provided by {seen_times[dup[0]]}")))
            continue
        for t in times:
            seen_times[t] = f.name
        glorys_entries.append((f, times))
    glorys_times = np.array(sorted(seen_times), dtype="datetime64[s]")
    tindex = {t: i for i, t in enumerate(glorys_times)}
    glorys_files = [(f, [tindex[t] for t in times]) for f, times in glorys_entries]
    profile_files = by_product["en4"] + by_product["argo"]
    return Plan(grid, days, ostia_by_day, glorys_times, glorys_files, profile_files)


def _scan_glorys(f: InputFile, grid: CubeGrid) -> dict:
    """The readers' GLORYS scan, after two checks of the file's axes against the cube: a grid,
    not a point extract (``bad_grid``), and some overlap with the cube's region (``outside_region``)."""
    from . import readers

    meta = readers.scan_glorys(f.url)
    if meta["lat"].size < 2 or meta["lon"].size < 2:
        raise InputError(f.url, "bad_grid", f"a {meta['lat'].size} x {meta['lon'].size} point extract, not a grid "
                                            f"(at least 2 x 2 cells are needed to regrid)")
    outside = _outside_region(f, meta, grid)
    if outside is not None:
        raise outside
    return readers.scan_glorys(f.url, bbox=_bbox(grid))


def _outside_region(f: InputFile, meta: dict, grid: CubeGrid) -> InputError | None:
    """``outside_region`` when the file's cells (centres +- half a step) miss the cube's region."""
    from .readers.common import as_bbox

    lat, lon = meta["lat"], meta["lon"]
    half = [float(np.median(np.diff(a))) / 2 if a.size > 1 else 0.0 for a in (lat, lon)]
    box = as_bbox(_bbox(grid))
    if box.lat_near(lat, half[0]).any() and box.lon_near(lon, half[1]).any():
        return None
    return InputError(f.url, "outside_region",
                      f"covers lat {lat.min():.4g}..{lat.max():.4g}, lon {lon.min():.4g}..{lon.max():.4g}; the cube is "
                      f"lat {grid.lat_south:.4g}..{grid.lat_north:.4g}, lon {grid.lon_west:.4g}..{grid.lon_east:.4g}")


def _lattice(meta: dict) -> tuple[float, float, float, float] | None:
    """(lat step, lon step, first lat, first lon) of a scanned grid; None for a single point."""
    lat, lon = meta["lat"], meta["lon"]
    if lat.size < 2 or lon.size < 2:
        return None
    return float(np.median(np.diff(lat))), float(np.median(np.diff(lon))), float(lat[0]), float(lon[0])


def _same_lattice(a, b) -> bool:
    """Same steps (0.1 %) and centres offset by whole steps (to 1 % of a step)."""
    steps_equal = all(abs(a[k] - b[k]) <= 1e-3 * abs(b[k]) for k in (0, 1))
    offsets = ((a[2] - b[2]) / b[0], (a[3] - b[3]) / b[1])
    return steps_equal and all(abs(o - round(o)) <= 0.01 for o in offsets)


def _common_lattice(metas: list[dict]) -> tuple[tuple, int] | None:
    """The grid most GLORYS files share (ties: the first file's) and how many share it."""
    groups: list[list] = []
    for lattice in filter(None, map(_lattice, metas)):
        group = next((g for g in groups if _same_lattice(lattice, g[0])), None)
        group.append(lattice) if group is not None else groups.append([lattice])
    return (max(groups, key=len)[0], len(max(groups, key=len))) if groups else None


def _off_lattice(f: InputFile, meta: dict, common: tuple[tuple, int] | None) -> InputError | None:
    """A ``bad_grid`` error when ``f`` is not on the common GLORYS grid, so one snapshot from
    another product or resolution cannot change what the target is."""
    mine = _lattice(meta)
    if mine is None or common is None or _same_lattice(mine, common[0]):
        return None
    ref, n = common
    return InputError(f.url, "bad_grid", f"grid of {mine[0]:.4g} x {mine[1]:.4g} deg cells centred from "
                                         f"({mine[2]:.4f}, {mine[3]:.4f}) is not the {ref[0]:.4g} x {ref[1]:.4g} deg "
                                         f"grid (centres from ({ref[2]:.4f}, {ref[3]:.4f})) of {n} other GLORYS file(s)")


def _choose_grid(cfg: CubeConfig, first_ostia: dict | None) -> CubeGrid:
    if cfg.grid.region is not None:
        la0, la1, lo0, lo1 = cfg.grid.region
    elif first_ostia is not None:
        lat, lon = first_ostia["lat"], first_ostia["lon"]
        half = float(np.median(np.diff(lat))) / 2 if lat.size > 1 else 0.025
        la0, la1, lo0, lo1 = lat[0] - half, lat[-1] + half, lon[0] - half, lon[-1] + half
    else:
        raise InputError("config", "no_grid", "no grid.region given and no readable OSTIA file to take the extent from")
    if cfg.grid.resolution == "native":
        res = 1.0 / 12.0
        # Snap to the GLORYS grid: cell centres at -180 + k/12, -80 + k/12.
        lo0 = -180 + np.floor((lo0 + 180) / res + 0.5) * res - res / 2
        la0 = -80 + np.floor((la0 + 80) / res + 0.5) * res - res / 2
    else:
        res = float(cfg.grid.resolution)
        la0, lo0 = np.floor(la0 / res + 1e-6) * res, np.floor(lo0 / res + 1e-6) * res
        la1, lo1 = np.ceil(la1 / res - 1e-6) * res, np.ceil(lo1 / res - 1e-6) * res
    la0, la1 = max(la0, -90.0), min(la1, 90.0)
    return CubeGrid(float(la0), float(lo0), res, int(round((la1 - la0) / res)), int(round((lo1 - lo0) / res)))


def _daily_axis(cfg: CubeConfig, ostia_days: dict) -> np.ndarray:
    if cfg.time.start and cfg.time.end:
        start, end = np.datetime64(cfg.time.start, "D"), np.datetime64(cfg.time.end, "D")
    elif ostia_days:
        start = np.datetime64(cfg.time.start, "D") if cfg.time.start else min(ostia_days)
        end = np.datetime64(cfg.time.end, "D") if cfg.time.end else max(ostia_days)
    else:
        raise InputError("config", "no_time_axis", "no time.start/end given and no readable OSTIA file to take the days from")
    if end < start:
        key, day = ("time.start", start) if cfg.time.start else ("time.end", end)
        raise ConfigError(f"{key}: {day} leaves no day to build: the OSTIA files cover "
                          f"{min(ostia_days)}..{max(ostia_days)}")
    return np.arange(start, end + np.timedelta64(1, "D"), dtype="datetime64[D]")


# --------------------------------------------------------------------------------------------
# Tasks (run on dask workers; each opens the store itself and writes a disjoint region)
# --------------------------------------------------------------------------------------------

_REGRIDDERS: dict = {}


def _regridded(f: InputFile, ds, var: str, grid: CubeGrid, index=0) -> np.ndarray:
    """``ds[var].values[index]`` regridded onto the cube grid; a grid the regridder cannot use
    raises InputError naming ``f`` (the regridder itself only knows the axes)."""
    try:
        return _regridder(ds["lat"].values, ds["lon"].values, grid)(ds[var].values[index])
    except InputError as e:
        raise InputError(f.url, e.reason, e.detail) from None


def _regridder(src_lat, src_lon, grid: CubeGrid, method: str = "auto"):
    from .regrid import Regridder

    key = (hashlib.sha1(np.ascontiguousarray(src_lat).tobytes() + np.ascontiguousarray(src_lon).tobytes()).hexdigest(),
           grid, method)
    if key not in _REGRIDDERS:
        if len(_REGRIDDERS) > 8:
            _REGRIDDERS.clear()
        _REGRIDDERS[key] = Regridder(src_lat, src_lon, grid, method=method)
    return _REGRIDDERS[key]


def task_ostia(url: str, cfg: CubeConfig, grid: CubeGrid, t0: int, t1: int, files: dict[int, InputFile]) -> dict:
    """Regrid the OSTIA days [t0, t1) of the daily axis and write them; missing days stay NaN."""
    block = np.full((t1 - t0, grid.nlat, grid.nlon), np.nan, np.float32)
    rejects = []
    bbox = _bbox(grid)
    for t, f in files.items():
        try:
            block[t - t0] = _regridded(f, _read("ostia", f, cfg, bbox=bbox), "analysed_sst", grid)
        except InputError as e:
            rejects.append({"file": f.url, "reason": e.reason, "detail": e.detail})
    store.open_root(url)["ostia/analysed_sst"][t0:t1] = block
    return {"rejects": rejects, "days_written": len(files) - len(rejects)}


def task_glorys(url: str, cfg: CubeConfig, grid: CubeGrid, f: InputFile, tindex: list[int]) -> dict:
    """Regrid every snapshot of one GLORYS file and write it at its index on the glorys time axis."""
    try:
        ds = _read("glorys", f, cfg, bbox=_bbox(grid))
        snapshots = [_regridded(f, ds, "thetao", grid, k).astype(np.float32) for k in range(len(tindex))]
    except InputError as e:
        return {"rejects": [{"file": f.url, "reason": e.reason, "detail": e.detail}]}
    arr = store.open_root(url)["glorys/thetao"]
    for ti, snapshot in zip(tindex, snapshots):
        arr[ti] = snapshot
    return {"rejects": []}


def regrid_static(cfg: CubeConfig, grid: CubeGrid, plan: Plan, report: BuildReport) -> tuple[np.ndarray, np.ndarray]:
    """``ocean_mask`` and ``bottom_level`` from the first readable GLORYS snapshot (else OSTIA land)."""
    for f, _ in plan.glorys_files:
        try:
            theta = _regridded(f, _read("glorys", f, cfg, bbox=_bbox(grid)), "thetao", grid)
        except InputError:
            continue
        valid = np.isfinite(theta)
        # A column's valid levels are contiguous from the top; count them.
        bottom = np.cumprod(valid, axis=0).sum(axis=0).astype(np.int8)
        return bottom > 0, bottom
    for f in plan.ostia_by_day.values():
        try:
            ds = _read("ostia", f, cfg, bbox=_bbox(grid))
        except InputError:
            continue
        from .regrid import regrid_fraction

        ocean = regrid_fraction(~ds["land"].values.astype(bool), ds["lat"].values, ds["lon"].values, grid) >= 0.5
        return ocean, np.zeros(ocean.shape, np.int8)
    raise InputError("inputs", "no_valid_data", "no readable GLORYS or OSTIA file to derive the ocean mask from")


def _bbox(grid: CubeGrid):
    return (grid.lat_south, grid.lat_north, grid.lon_west, grid.lon_east)


def task_profiles_a(url: str, cfg: CubeConfig, grid: CubeGrid, f: InputFile, day0: np.datetime64, n_days: int) -> dict:
    """Read, QC and vertically align one profile file; save the in-cube rows to the scratch area."""
    from .vertical import align_to_levels

    try:
        table = _read(f.product, f, cfg, bbox=_bbox(grid))
        _check_some_profile_passed(f, table)
    except InputError as e:
        return {"rejects": [{"file": f.url, "reason": e.reason, "detail": e.detail}], "used": 0,
                "rejected": {}, "levels_rejected": 0, "day_range": None}
    values = align_to_levels(table.depth, table.temp, GLORYS_DEPTHS)
    day = (table.day - day0).astype(np.int64)
    _, _, inside = grid.cell_index(table.lat, table.lon)
    keep = inside & (day >= 0) & (day < n_days) & np.isfinite(values).any(axis=1)
    rejected = dict(table.rejected)
    for reason, mask in (("outside_region", ~inside), ("outside_time_range", inside & ((day < 0) | (day >= n_days))),
                         ("no_aligned_levels", inside & (day >= 0) & (day < n_days) & ~np.isfinite(values).any(axis=1))):
        if mask.any():
            rejected[reason] = rejected.get(reason, 0) + int(mask.sum())
    buf = io.BytesIO()
    np.savez(buf, day=day[keep], lat=table.lat[keep], lon=table.lon[keep], values=values[keep].astype(np.float32))
    fs, path = store.fs_and_path(_scratch_url(url, f))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, buf.getvalue())
    rng = [int(day[keep].min()), int(day[keep].max())] if keep.any() else None
    return {"rejects": [], "used": int(keep.sum()), "rejected": rejected,
            "levels_rejected": int(table.levels_rejected), "day_range": rng}


def _check_some_profile_passed(f: InputFile, table) -> None:
    """InputError('no_valid_data') when no profile of the file passed QC (profiles outside the
    cube's region count as passed: a global file is not bad because a regional cube skips it)."""
    if len(table) + table.rejected.get("outside_region", 0) > 0:
        return
    total = sum(table.rejected.values())
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(table.rejected.items()))
    raise InputError(f.url, "no_valid_data", f"none of its {total} profiles passed QC ({why})" if total
                     else "the file holds no profiles")


def _scratch_url(url: str, f: InputFile) -> str:
    digest = hashlib.sha1(f.key().encode()).hexdigest()[:16]
    return f"{str(url).rstrip('/')}/.build/profiles/{digest}.npz"


def task_profiles_b(url: str, grid: CubeGrid, t0: int, t1: int, sources: list[InputFile], block: int,
                    fresh: bool) -> dict:
    """Rasterise the aligned profile rows of days [t0, t1) into ``profiles/count``, ``sum`` and ``n_obs``.

    Works one spatial chunk at a time, so memory is one chunk whatever the grid size; chunks with
    no observation are not written (they read as zeros). When re-computing an existing cube
    (``fresh=False``), a chunk that had data and now has none is overwritten with zeros, which
    makes zarr delete it.
    """
    from .rasterise import rasterise

    parts = []
    for f in sources:
        fs, path = store.fs_and_path(_scratch_url(url, f))
        with np.load(io.BytesIO(fs.cat_file(path))) as z:
            sel = (z["day"] >= t0) & (z["day"] < t1)
            parts.append({k: z[k][sel] for k in ("day", "lat", "lon", "values")})
    root = store.open_root(url)
    count_arr, sum_arr, nobs_arr = (root[f"profiles/{n}"] for n in ("count", "sum", "n_obs"))
    cat = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in ("day", "lat", "lon")}
    values = np.concatenate([p["values"] for p in parts]) if parts else np.zeros((0, len(GLORYS_DEPTHS)), np.float32)
    raster = rasterise(cat["day"].astype(np.int64) - t0, cat["lat"], cat["lon"], values, grid, t1 - t0)
    with_data = set(zip((raster.row // block).tolist(), (raster.col // block).tolist()))
    observations = 0
    for bi in range(-(-grid.nlat // block)):
        for bj in range(-(-grid.nlon // block)):
            rows, cols = slice(bi * block, (bi + 1) * block), slice(bj * block, (bj + 1) * block)
            if (bi, bj) in with_data:
                count, total = raster.dense(0, t1 - t0, rows=rows, cols=cols)
            elif not fresh and nobs_arr[t0:t1, rows, cols].any():
                count = np.zeros((t1 - t0, len(GLORYS_DEPTHS)) + nobs_arr[t0:t1, rows, cols].shape[1:], np.int32)
                total = count.astype(np.float32)
            else:
                continue
            count_arr[t0:t1, :, rows, cols] = count
            sum_arr[t0:t1, :, rows, cols] = total
            nobs_arr[t0:t1, rows, cols] = count.sum(axis=1, dtype=np.int32)
            observations += int(count.sum())
    return {"observations": observations}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def build(cfg: CubeConfig, *, strict: bool | None = None, progress: bool | None = None,
          scheduler: str | None = None, local_cluster: int | None = None, rebuild: bool = False) -> BuildReport:
    """Build (or bring up to date) the cube described by ``cfg``. Returns a :class:`BuildReport`.

    Input problems never raise (the file goes to the reject list) unless ``strict``; then the
    first bad file raises :class:`InputError` naming it, before anything is published. With
    ``strict``, an up-to-date cube whose ``rejects`` list is not empty raises for its first reject,
    and a glob that matches nothing raises :class:`ConfigError` (otherwise it is a warning).

    The output is never deleted or replaced unless it is a depthcube cube (:func:`cube.store.node_kind`):
    anything else at ``cfg.output``, or at ``<output>.partial`` / ``<output>.old`` (the names a
    build stages at and moves the old cube aside to), raises :class:`~cube.store.OutputError`
    untouched. A cube that cannot be brought up to date in place (another config, a daily axis
    that does not only grow) is replaced only with ``rebuild``. The whole build holds the
    output's :class:`~cube.store.BuildLock`; filesystem failures (disk full, read-only, a path
    under a file) raise OutputError with one line, leaving a staging folder a rerun resumes.
    """
    t_start = time.perf_counter()
    strict = cfg.strict if strict is None else strict
    progress = cfg.compute.progress if progress is None else progress
    final = _output_path(cfg.output)
    report = BuildReport(output=final, staging=final + ".partial")
    unmatched: list[str] = []
    files = expand_inputs(cfg, unmatched)
    if unmatched and strict:
        raise ConfigError(unmatched[0])
    report.warnings += unmatched
    for line in unmatched:
        log.warning(line)
    report.bytes_read = sum(f.size for f in files)
    report.inputs = [dataclasses.asdict(f) for f in files]
    try:
        _refuse_foreign(final)  # before the lock too, so no lock file appears beside a refused path
        with store.BuildLock(final):
            _build_locked(cfg, files, report, strict, progress, scheduler, local_cluster, rebuild)
    except OSError as e:
        raise store.OutputError(store.describe_os_error(e, final, _work_kept(report.staging))) from e
    report.seconds = time.perf_counter() - t_start
    return report


def _work_kept(staging: str) -> str | None:
    """``staging`` if a failed build left its work there for a rerun to resume, else None."""
    try:
        return staging if store.node_kind(staging) in ("staging", "cube") else None
    except OSError:
        return None


def _output_path(output: str) -> str:
    """The output as the build addresses it: local paths absolute (``-o .`` is the current folder,
    not ``./..partial``), URLs as given, without a trailing slash."""
    if store.is_remote(output):
        return str(output).rstrip("/")
    return os.path.abspath(os.path.expanduser(str(output).removeprefix("file://")))


def _refuse_foreign(final: str) -> str:
    """``final``'s :func:`~cube.store.node_kind`, after checking that nothing there or at its
    staging names is someone else's (OutputError otherwise). An empty folder at the final name
    counts as someone else's (a folder the user made); an empty ``.partial`` is a leftover of a
    build killed as it began, and is reused."""
    kind = store.node_kind(final)
    if kind in ("foreign", "empty"):
        raise store.OutputError(f"{final} exists and is not a depthcube cube; depthcube never deletes or "
                                f"replaces it: give another output path (-o)")
    for suffix, role in ((".partial", "stages a new cube"), (".old", "moves the old cube aside")):
        if store.node_kind(final + suffix) == "foreign":
            raise store.OutputError(f"{final}{suffix} exists and was not made by depthcube, which {role} "
                                    f"there: move it away and run again")
    return kind


def _existing_cube(final: str, rebuild: bool) -> dict | None:
    """The root attributes of the cube at ``final`` (None when absent or ``rebuild``)."""
    if _refuse_foreign(final) == "absent" or rebuild:
        return None
    return decode_attrs(store.open_root(final, mode="r").attrs.asdict())


def _check_strict_rejects(attrs: dict):
    """``--strict`` on an up-to-date cube: the bad inputs it lists still fail the build."""
    rejects = attrs.get("rejects", [])
    if rejects:
        r = rejects[0]
        raise InputError(r["file"], r["reason"], f"{r.get('detail') or ''} (a reject of the up-to-date cube; "
                                                 f"{len(rejects)} in all)".lstrip())


def _build_locked(cfg: CubeConfig, files: list[InputFile], report: BuildReport, strict: bool, progress: bool,
                  scheduler: str | None, local_cluster: int | None, rebuild: bool):
    """The build proper, under the output's lock; fills ``report``."""
    final = report.output
    existing = _existing_cube(final, rebuild)
    if existing is not None and _same_build(existing, cfg, files):
        if strict:
            _check_strict_rejects(existing)
        report.status = "up to date"
        return

    plan = scan(cfg, files, report, strict)
    why_not = None if existing is None else _why_not_append(existing, cfg, plan)
    if why_not is not None:
        raise store.OutputError(f"{final} holds a depthcube cube that cannot be brought up to date in place "
                                f"({why_not}); run again with --rebuild to replace it")
    append = existing is not None
    target = final if append else report.staging
    report.staging = target
    journal = store.Journal(target) if (append or (store.exists(target) and not rebuild)) else None
    if journal is not None and not append and journal.entries.get("__plan__", {}).get("fingerprint") != _fingerprint(cfg, files, plan):
        journal = None  # a stale staging folder from another plan: start again
    ocean_mask, bottom = regrid_static(cfg, plan.grid, plan, report)
    patches = _patches(cfg, plan.grid, ocean_mask)

    if append:
        _grow(target, existing, plan)
    elif journal is None:
        store.remove(target)
        store.create_cube(target, days=plan.days, glorys_times=plan.glorys_times, lat=plan.grid.lat,
                          lon=plan.grid.lon, depth=GLORYS_DEPTHS, chunking=cfg.chunks, compression=cfg.compression,
                          tile=cfg.patches.tile_size, attrs={"contract": CONTRACT, "status": "building"})
        journal = store.Journal(target)
        journal.record({"task": "__plan__", "fingerprint": _fingerprint(cfg, files, plan)})
    if append and journal is None:
        journal = store.Journal(target)
    root = store.open_root(target)
    root["static/ocean_mask"][:] = ocean_mask
    root["static/bottom_level"][:] = bottom

    tasks = _tasks(target, cfg, plan)
    report.tasks_skipped = sum(1 for k in tasks if journal.done(k))
    todo = {k: v for k, v in tasks.items() if not journal.done(k)}
    with _task_runner(cfg, progress, scheduler, local_cluster) as runner:  # one cluster for both phases
        _run_phase(runner, todo, journal, report, strict, phase="a")
        # Phase b (rasterising profiles) needs the day ranges recorded by phase a.
        tasks_b = _tasks_b(target, plan, journal, cfg, fresh=not append)
        todo_b = {k: v for k, v in tasks_b.items() if not journal.done(k)}
        report.tasks_skipped += len(tasks_b) - len(todo_b)
        _run_phase(runner, todo_b, journal, report, strict, phase="b")

    keys = sorted(set(tasks) | set(tasks_b))
    _collect(journal, report, keys)
    _finish(target, cfg, plan, patches, report, files, keys, append, _input_days(plan, journal, report.rejects))
    if not append:
        store.publish(target, final)
        report.status = "built"
    else:
        report.status = "appended"


def _fingerprint(cfg: CubeConfig, files: list[InputFile], plan: Plan) -> str:
    payload = json.dumps([to_dict(cfg), [f.key() for f in files], str(plan.days[0]), len(plan.days),
                          [str(t) for t in plan.glorys_times]], default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


def _same_build(attrs: dict, cfg: CubeConfig, files: list[InputFile]) -> bool:
    old = attrs.get("build", {})
    return (attrs.get("status") == "complete" and old.get("config") == json.loads(json.dumps(to_dict(_portable(cfg))))
            and sorted(i["checksum"] + i["url"] for i in attrs.get("inputs", []))
            == sorted(f.checksum + f.url for f in files))


def _portable(cfg: CubeConfig) -> CubeConfig:
    """The config as recorded in the cube: inputs are listed separately, so leave them out."""
    return dataclasses.replace(cfg, inputs=type(cfg.inputs)(), compute=type(cfg.compute)())


def _why_not_append(attrs: dict, cfg: CubeConfig, plan: Plan) -> str | None:
    """None when an existing cube can be grown in place (only inputs changed and the axes only
    grew), else why not, in a few words."""
    old = attrs.get("build", {})
    old_glorys = np.array(old.get("glorys_times", []), dtype="datetime64[s]")
    checks = (
        (attrs.get("status") == "complete", f"its status is {attrs.get('status')!r}"),
        (old.get("config") == json.loads(json.dumps(to_dict(_portable(cfg)))), "the build config changed"),
        (old.get("grid") == plan.grid.to_dict(), "the grid changed"),
        (str(plan.days[0]) == old.get("start"), f"the first day moves from {old.get('start')} to {plan.days[0]}"),
        (len(plan.days) >= old.get("n_days", 0), f"the days shrink from {old.get('n_days')} to {len(plan.days)}"),
        (np.array_equal(plan.glorys_times[: len(old_glorys)], old_glorys), "the GLORYS snapshot times changed"),
    )
    return next((why for ok, why in checks if not ok), None)


def _grow(target: str, attrs: dict, plan: Plan):
    """Grow the time axes in place. The root ``zarr.json`` (attributes and consolidated metadata)
    is left alone until :func:`_finish`, so readers keep seeing the old cube meanwhile, and an
    interrupted append is found and finished by the next build (its attributes still say complete)."""
    root = store.open_root(target)
    store.resize_time(root, "ostia", plan.days)
    store.resize_time(root, "profiles", plan.days)
    store.resize_time(root, "glorys", plan.glorys_times, hourly=True)


def _chunks(n: int, size: int):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _tasks(url: str, cfg: CubeConfig, plan: Plan) -> dict:
    """Task key -> (function, args). Keys carry input checksums, so a task whose inputs changed
    runs again and one already in the journal (an interrupted or earlier build) is skipped."""
    tasks = {}
    for t0, t1 in _chunks(len(plan.days), cfg.chunks.days):
        files = {t: f for t, f in plan.ostia_by_day.items() if t0 <= t < t1}
        tasks[_chunk_key("ostia", t0, t1, files.values())] = (task_ostia, (url, cfg, plan.grid, t0, t1, files))
    for f, tindex in plan.glorys_files:
        tasks[f"glorys:{f.key()}:{tindex}"] = (task_glorys, (url, cfg, plan.grid, f, tindex))
    for f in plan.profile_files:
        key = f"profiles-a:{f.key()}:{plan.days[0]}:{len(plan.days)}"
        tasks[key] = (task_profiles_a, (url, cfg, plan.grid, f, plan.days[0], len(plan.days)))
    return tasks


def _tasks_b(url: str, plan: Plan, journal: store.Journal, cfg: CubeConfig, fresh: bool) -> dict:
    ranges = []
    for f in plan.profile_files:
        e = journal.entries.get(f"profiles-a:{f.key()}:{plan.days[0]}:{len(plan.days)}", {})
        if e.get("day_range"):
            ranges.append((f, e["day_range"]))
    tasks = {}
    for t0, t1 in _chunks(len(plan.days), cfg.chunks.days):
        sources = [f for f, (lo, hi) in ranges if lo < t1 and hi >= t0]
        tasks[_chunk_key("profiles-b", t0, t1, sources)] = (
            task_profiles_b, (url, plan.grid, t0, t1, sources, cfg.chunks.spatial or cfg.patches.tile_size, fresh))
    return tasks


def _chunk_key(kind: str, t0: int, t1: int, files) -> str:
    """Task key of a daily chunk: changes when the chunk's extent or any of its inputs change."""
    digest = hashlib.sha1("".join(f.key() for f in files).encode()).hexdigest()[:12]
    return f"{kind}:{t0}:{t1}:{digest}"


def _task_runner(cfg: CubeConfig, progress: bool, scheduler: str | None, local_cluster: int | None):
    """The runner of every phase of one build: a cluster (``--local-cluster``/``--scheduler``, else the
    config's) is connected once, its dashboard link printed, and closed when the build's phases end."""
    from .compute import TaskRunner

    return TaskRunner(scheduler=scheduler or cfg.compute.scheduler, local_cluster=local_cluster or cfg.compute.local_cluster,
                      threads=cfg.compute.threads, progress=progress)


def _run_phase(runner, todo: dict, journal: store.Journal, report: BuildReport, strict: bool, phase: str):
    def on_result(key: str, result: dict):
        if strict and result.get("rejects"):
            r = result["rejects"][0]
            raise InputError(r["file"], r["reason"], r["detail"])
        journal.record({"task": key, **result})
        report.tasks_run += 1

    runner.run(todo, on_result, desc="build: read+regrid" if phase == "a" else "build: rasterise profiles")


def _collect(journal: store.Journal, report: BuildReport, keys: list[str]):
    """Sum the journal entries of this plan's tasks into the report. Entries of other plans (the
    build an append extends, inputs since removed) are ignored; rejects are sorted, so the
    report and the cube's attributes do not depend on the order tasks finished in."""
    seen = {(r["file"], r["reason"]) for r in report.rejects}
    for key in keys:
        e = journal.entries.get(key, {})
        for r in e.get("rejects", []):
            if (r["file"], r["reason"]) not in seen:
                report.rejects.append(r)
                seen.add((r["file"], r["reason"]))
        if key.startswith("profiles-a:"):
            report.profiles_used += e.get("used", 0)
            report.levels_rejected += e.get("levels_rejected", 0)
            for reason, n in e.get("rejected", {}).items():
                report.profiles_rejected[reason] = report.profiles_rejected.get(reason, 0) + n
    report.rejects.sort(key=lambda r: (r["file"], r["reason"]))
    report.profiles_rejected = dict(sorted(report.profiles_rejected.items()))


def _patches(cfg: CubeConfig, grid: CubeGrid, ocean_mask: np.ndarray):
    from .patches import assign_splits, build_patches

    return assign_splits(build_patches(ocean_mask, grid, cfg.patches), cfg.split)


def _grow_patch_index(url: str, patches, cfg: CubeConfig) -> bool:
    """Bring the patch index of an appended cube up to date in place, when its tiles and splits
    did not change: only ``obs_count`` and its time axis grow (old chunks keep their values), so
    readers of the old cube never see the index disappear. False when the tiles changed."""
    from .index import obs_count

    root = store.open_root(url)
    g = root["patches"]
    gattrs = decode_attrs(g.attrs.asdict())
    same = (gattrs.get("patch_config") == to_dict(cfg.patches) and gattrs.get("split_config") == to_dict(cfg.split)
            and g["patch"].shape[0] == len(patches)
            and all(np.array_equal(np.asarray(g[c][:], dtype=object).astype(str), patches[c].to_numpy().astype(str))
                    for c in ("patch", "row0", "col0", "split")))
    if not same:
        return False
    counts = obs_count(root, patches, cfg.patches.tile_size)
    store.grow_coordinate(g["time"], root["profiles/time"][:])
    g["obs_count"].resize(counts.shape)
    g["obs_count"][:] = counts
    return True


def _input_days(plan: Plan, journal: store.Journal, rejects: list[dict]) -> dict[str, list[str]]:
    """url -> [first, last] UTC day (ISO) of the data each input gave the cube: its OSTIA day,
    its GLORYS snapshots, the days of its used profiles. Inputs that gave nothing (rejected ones
    included) are absent."""
    days: dict[str, list] = {}
    for t, f in plan.ostia_by_day.items():
        days.setdefault(f.url, []).append(plan.days[t])
    for f, indices in plan.glorys_files:
        days.setdefault(f.url, []).extend(plan.glorys_times[indices].astype("datetime64[D]"))
    for f in plan.profile_files:
        span = journal.entries.get(f"profiles-a:{f.key()}:{plan.days[0]}:{len(plan.days)}", {}).get("day_range")
        if span:
            days.setdefault(f.url, []).extend(plan.days[span])
    rejected = {r["file"] for r in rejects}
    return {url: [str(min(v)), str(max(v))] for url, v in days.items() if len(v) and url not in rejected}


def _finish(url: str, cfg: CubeConfig, plan: Plan, patches, report: BuildReport, files: list[InputFile],
            task_keys: list[str], append: bool = False, input_days: dict | None = None):
    """Patch index, then attributes and consolidated metadata in one write (the moment an append
    becomes visible to readers, see ``cube.store``). Each input is recorded with the first and
    last day of the data it gave (``days``, see :func:`_input_days`)."""
    from .index import write_patch_index

    if not (append and _grow_patch_index(url, patches, cfg)):
        write_patch_index(url, patches, plan.grid, cfg)
    store.consolidate(url, {
        "contract": CONTRACT,
        "status": "complete",
        "title": "depthcube: OSTIA, GLORYS and in-situ profiles on one grid",
        "Conventions": "CF-1.10",
        "software": f"depthcube {_version()}",
        "created_by": "depthcube build",
        "build": {"config": to_dict(_portable(cfg)), "grid": plan.grid.to_dict(), "start": str(plan.days[0]),
                  "n_days": len(plan.days), "glorys_times": [str(t) for t in plan.glorys_times],
                  "task_keys": task_keys},
        "inputs": [{"url": f.url, "name": f.name, "product": f.product, "size": f.size, "checksum": f.checksum,
                    "days": (input_days or {}).get(f.url)} for f in files],
        "rejects": report.rejects,
        "profiles": {"used": report.profiles_used, "rejected": report.profiles_rejected,
                     "levels_rejected": report.levels_rejected},
    })


def _version() -> str:
    try:
        return pkg_version("depthcube")
    except Exception:
        return "unknown"
