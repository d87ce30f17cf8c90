"""The cube build config (configs/cube.yaml): frozen dataclasses loaded with :mod:`cube.spec`.

:class:`CubeConfig` and its sections (inputs, grid, time, chunks, compression, profile QC,
patches, split, compute). The loading mechanism (key-path errors, ``to_dict``/``from_dict``, the
path rule) lives in :mod:`cube.spec`; :func:`load_cube_config` applies it to a cube config file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .layout import ChunkConfig, CompressionConfig
from .spec import check, check_storage_options, config_base, load_config, resolve_path
from .tiling import PatchSpec, SplitSpec


# --------------------------------------------------------------------------------------------
# The cube build config (configs/cube.yaml)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputsConfig:
    """Where the raw products are: glob patterns or lists of paths/URLs per product (any fsspec URL).

    ``storage_options``: what fsspec needs to reach the input URLs (``key``/``secret``,
    ``endpoint_url`` or ``client_kwargs`` for ``s3://``, ``headers`` for ``https://``, ...), passed
    to ``fsspec.url_to_fs`` for every input; empty = fsspec's defaults (the AWS_* variables for
    ``s3://``). Never recorded in the cube.
    """

    ostia: list[str] = field(default_factory=list)
    glorys: list[str] = field(default_factory=list)
    en4: list[str] = field(default_factory=list)
    argo: list[str] = field(default_factory=list)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_storage_options("storage_options", self.storage_options)


@dataclass(frozen=True)
class GridConfig:
    """The cube grid. ``region`` = (lat_min, lat_max, lon_min, lon_max); null = the OSTIA extent."""

    resolution: float | Literal["native"] = 0.1
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if self.resolution != "native":
            check(0 < self.resolution <= 10, f"resolution: must be in (0, 10] degrees, got {self.resolution}")
        if self.region is not None:
            la0, la1, lo0, lo1 = self.region
            check(-90 <= la0 < la1 <= 90, f"region: need -90 <= lat_min < lat_max <= 90, got {self.region}")
            check(-180 <= lo0 < lo1 <= 360, f"region: need lon_min < lon_max within [-180, 360], got {self.region}")


@dataclass(frozen=True)
class TimeConfig:
    """The cube's daily axis, inclusive 'YYYY-MM-DD' bounds; null = the span of the OSTIA inputs."""

    start: str | None = None
    end: str | None = None

    def __post_init__(self):
        import numpy as np

        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None:
                try:
                    np.datetime64(v, "D")
                except ValueError:
                    raise ValueError(f"{name}: expected a date 'YYYY-MM-DD', got {v!r}") from None
        if self.start and self.end:
            check(self.start <= self.end, f"start {self.start} is after end {self.end}")


@dataclass(frozen=True)
class ProfileQCConfig:
    """Profile QC: accepted QC codes (EN4/Argo level and profile flags) and the temperature used."""

    accepted_qc: tuple[str, ...] = ("1", "2")
    temperature: Literal["potential", "insitu"] = "potential"

    def __post_init__(self):
        check(len(self.accepted_qc) > 0, "accepted_qc: must name at least one QC code")
        check(all(len(c) == 1 for c in self.accepted_qc), f"accepted_qc: codes are single characters, got {self.accepted_qc}")


@dataclass(frozen=True)
class ComputeConfig:
    """How the build runs: dask threads (default), a LocalCluster of N processes, or a scheduler address."""

    scheduler: str | None = None
    local_cluster: int | None = None
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        check(self.local_cluster is None or self.local_cluster >= 1, f"local_cluster: must be >= 1, got {self.local_cluster}")


@dataclass(frozen=True)
class CubeConfig:
    """Everything ``depthcube build`` needs. Relative paths resolve against the config file's folder.

    ``output_storage_options``: what fsspec and zarr need to reach ``output`` (the inputs have
    their own, ``inputs.storage_options``); empty = fsspec's defaults. Never recorded in the cube.
    """

    output: str = "data/cube.zarr"
    inputs: InputsConfig = field(default_factory=InputsConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    profiles: ProfileQCConfig = field(default_factory=ProfileQCConfig)
    patches: PatchSpec = field(default_factory=PatchSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    strict: bool = False
    output_storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check(bool(self.output), "output: must be a path or URL")
        check_storage_options("output_storage_options", self.output_storage_options)
        check(not self.patches.overlapping or self.split.method == "year" or self.split.val_year is not None,
               "split.val_year: overlapping tiles (patches.stride < tile_size) need a temporal holdout year")
        spatial, tile = self.chunks.spatial, self.patches.tile_size
        check(spatial is None or spatial % tile == 0 or tile % spatial == 0,
               f"chunks.spatial: must divide patches.tile_size ({tile}) evenly or be a multiple of it, so a "
               f"tile reads whole chunks; got {spatial}")
        cells = self._region_cells()
        check(cells is None or (tile <= cells[0] and (tile <= cells[1] or cells[2])),
               f"patches.tile_size: a tile of {tile} cells does not fit in grid.region "
               f"({cells and cells[0]} x {cells and cells[1]} cells)")

    def _region_cells(self) -> tuple[int, int, bool] | None:
        """(rows, columns, global in longitude) of the grid a given region makes, else None."""
        if self.grid.region is None:
            return None
        la0, la1, lo0, lo1 = self.grid.region
        res = 1 / 12 if self.grid.resolution == "native" else float(self.grid.resolution)
        return math.ceil((la1 - la0) / res - 1e-6), math.ceil((lo1 - lo0) / res - 1e-6), lo1 - lo0 >= 360


def load_cube_config(path: str | Path, **overrides) -> CubeConfig:
    """Load ``configs/cube.yaml``; relative input globs and the output resolve by
    :func:`cube.spec.config_base` (the repo root for a file in ``configs/``, else the file's folder)."""
    cfg = load_config(path, CubeConfig)
    return dataclasses.replace(resolve_paths(cfg, config_base(path)), **overrides)


def resolve_paths(cfg: CubeConfig, base: Path) -> CubeConfig:
    """``cfg`` with its relative local input paths and output made absolute against ``base``."""
    inputs = dataclasses.replace(cfg.inputs, **{k: [resolve_path(p, base) for p in getattr(cfg.inputs, k)]
                                                for k in ("ostia", "glorys", "en4", "argo")})
    return dataclasses.replace(cfg, inputs=inputs, output=resolve_path(cfg.output, base))
