"""Which windows an epoch uses, and where each one lies in the cube.

A window is one patch (a tile of the cube's patch index) x ``window`` consecutive days centred on
a day. The patch index chooses the tiles and their split; :func:`cube.tiling.sample_rows` turns
them into (patch, centre day) rows, with the per-patch profile filter.

Where a window lies comes from the cube contract's tiling rules, not from xbatcher: the days are
:func:`cube.tiling.window_days_slice` (the odd window centred on the row's day) and the columns
:func:`cube.tiling.tile_column_selector` (a slice, or an index array for a tile that wraps
across the dateline on a global cube, which xbatcher's contiguous slicing cannot express).
xbatcher is not used for the time axis either: its public API yields windows as loaded xarray
objects, not as positions, and reading its internal selector table is not public. The windows
are the same ones ``xbatcher.BatchGenerator(input_dims={"time": window},
input_overlap={"time": window - 1})`` makes on the cube's daily axis (``tests/loaders/test_stream.py``
checks this through xbatcher's public indexing). Reads go through
:class:`loaders.reader.CubeReader`'s chunk cache instead of per-sample xarray/dask indexing
(DESIGN.md 7 guidance: no dask in the per-sample hot path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cube.layout import decode_attrs
from cube.tiling import SplitSpec, sample_rows, tile_column_selector, window_days_slice

from .config import DatasetConfig
from .reader import CubeReader


class CubeContentError(ValueError):
    """The cube lacks data that the requested samples need (raised when a stream is built)."""


def check_cube_serves(reader: CubeReader, cfg: DatasetConfig) -> None:
    """CubeContentError in one line when the cube lacks a group the samples of ``cfg`` need.

    Every mode needs at least one GLORYS snapshot: ``y`` (the dense target) is the window mean
    of the nearest snapshot per day, and ``glorys_surface`` eo / corruption-based ``x`` derive
    from it. A cube built without GLORYS input has a ``glorys`` group with no time step.
    """
    if len(reader.glorys_times) == 0:
        needs = ["y"] + (["eo"] if cfg.eo.source == "glorys_surface" else []) + (
            ["x"] if cfg.x.source not in ("argo", "none") else [])
        raise CubeContentError(
            f"{reader.url}: the cube has no GLORYS snapshot (glorys/thetao has 0 time steps), which the "
            f"samples with x.source={cfg.x.source!r}, eo.source={cfg.eo.source!r} need for {', '.join(needs)}: "
            f"rebuild it with GLORYS files under inputs.glorys")


@dataclass(frozen=True)
class Window:
    row: int              # index into Windows.rows
    patch: int
    split: str
    centre: np.datetime64
    time: slice           # days of the window on the cube's daily axis
    rows: slice           # tile rows (south-up)
    cols: np.ndarray | slice  # tile columns (an index array when wrapping the dateline)
    lat_center: float
    lon_center: float


class Windows:
    """The rows (patch x centre day) of one split, sorted by (patch, day) for chunk locality."""

    def __init__(self, reader: CubeReader, cfg: DatasetConfig, split: str = "train"):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        self.window = cfg.window
        days = reader.days
        if len(days) < self.window:
            raise ValueError(f"{reader.url}: window of {self.window} days is longer than the cube's {len(days)} days")
        spec = SplitSpec.from_dict(decode_attrs(reader.root["patches"].attrs.asdict())["split_config"])
        rows = sample_rows(reader.patches, days, self.window, spec,
                           obs_count=reader.obs_count if cfg.min_profiles else None, min_profiles=cfg.min_profiles)
        if split != "all":
            rows = rows[rows["split"] == split]
        self.rows = rows.sort_values(["patch", "day_index"], kind="stable").reset_index(drop=True)
        self.patches = reader.patches.set_index("patch")
        self.tile = reader.tile
        self.nlon = reader.ocean_mask.shape[1]
        self._days = days
        self._patch_ids = self.rows["patch"].to_numpy()
        self._day_index = self.rows["day_index"].to_numpy()
        self._splits = self.rows["split"].astype(str).to_numpy()
        # per patch: row0, col0, lat_center, lon_center as plain Python numbers (no pandas per window)
        self._geometry = {int(p): (int(r0), int(c0), float(lat), float(lon)) for p, r0, c0, lat, lon in zip(
            self.patches.index, self.patches["row0"], self.patches["col0"], self.patches["lat_center"],
            self.patches["lon_center"])}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Window:
        patch = int(self._patch_ids[i])
        centre = int(self._day_index[i])
        r0, c0, lat, lon = self._geometry[patch]
        cols = tile_column_selector(c0, self.tile, self.nlon)
        return Window(i, patch, str(self._splits[i]), self._days[centre], window_days_slice(centre, self.window),
                      slice(r0, r0 + self.tile), cols, lat, lon)

    def frame(self) -> pd.DataFrame:
        return self.rows
