"""The patch table (DESIGN.md 5, REFERENCE.md 2.1, 11): which tiles of the cube grid are kept, and
its export to CSV/Parquet.

Pure functions on numpy/pandas: the builder calls :func:`build_patches` (then
:func:`cube.tiling.assign_splits`) once and stores the table in the cube's ``patches`` group. The
rules the loaders share (specs, dateline columns, odd windows, splits, window rows) live in
:mod:`cube.tiling`. Nothing here reads NetCDF or Zarr or imports torch.

Decisions that differ from the reference (REFERENCE.md 2.1 / 11), on purpose:

* Tile edges are computed from integers (``lat_south + row0 * res``), never by accumulating a span,
  so the last tile of a global 0.1 deg grid has exact edges (11.17).
* Tiles are half-open cell blocks, so every cell of the tiled area belongs to exactly one tile of a
  non-overlapping grid (11.12).
* On a global grid tiles wrap across the dateline: ``nlon // stride`` tiles per row start at
  ``k * stride`` and columns are taken modulo ``nlon``. With ``stride == tile_size`` and ``nlon``
  not a multiple of the tile (3600 / 128) the last ``nlon % tile_size`` columns are in no tile,
  exactly like the leftover rows at the top; an overlapping stride (with ``val_year``) or a
  tile size dividing ``nlon`` covers them.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from .grid import CubeGrid, wrap_lon
from .tiling import PATCH_COLUMNS, PatchSpec, unwrapped_east



# --------------------------------------------------------------------------------------------
# Patch grid
# --------------------------------------------------------------------------------------------

def _check_mask(ocean_mask, grid: CubeGrid) -> np.ndarray:
    mask = np.asarray(ocean_mask)
    if mask.shape != (grid.nlat, grid.nlon):
        raise ValueError(f"ocean_mask has shape {mask.shape}, expected (nlat, nlon) = {(grid.nlat, grid.nlon)}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"ocean_mask must be boolean (or 0/1), got dtype {mask.dtype} with other values")
        mask = mask.astype(bool)
    return mask


def _tile_starts(grid: CubeGrid, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
    """Start rows and columns of the tile grid (only full tiles; columns wrap on a global grid)."""
    t, s = spec.tile_size, spec.step
    if t > grid.nlat or t > grid.nlon:
        raise ValueError(f"patches.tile_size: a tile of {t} x {t} cells does not fit the {grid.nlat} x {grid.nlon} "
                         f"cube grid; lower it")
    rows = np.arange(0, grid.nlat - t + 1, s, dtype=np.int64)
    if grid.is_global_lon:
        cols = np.arange(grid.nlon // s, dtype=np.int64) * s
    else:
        cols = np.arange(0, grid.nlon - t + 1, s, dtype=np.int64)
    return rows, cols


def _ocean_counts(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int, wrap: bool) -> np.ndarray:
    """Ocean cells per tile, shape (len(rows), len(cols)), from band sums and a column cumsum.

    Memory stays O(n_tile_rows * nlon): the mask is summed one band of tile rows at a time.
    """
    bands = np.stack([mask[r:r + tile].sum(axis=0, dtype=np.int64) for r in rows])
    if wrap:
        # Columns modulo nlon: append the first tile-1 columns so straddling tiles are contiguous.
        bands = np.concatenate([bands, bands[:, :tile - 1]], axis=1)
    csum = np.concatenate([np.zeros((len(rows), 1), np.int64), np.cumsum(bands, axis=1)], axis=1)
    return csum[:, cols + tile] - csum[:, cols]


def circular_mean_lon(lon0: np.ndarray, lon1: np.ndarray) -> np.ndarray:
    """Dateline-safe midpoint of two longitudes (degrees, in [-180, 180)), as REFERENCE.md 5 step 9.

    ``atan2(sin l0 + sin l1, cos l0 + cos l1)``: exact for edges less than 180 degrees apart.
    """
    a0, a1 = np.deg2rad(lon0), np.deg2rad(lon1)
    return wrap_lon(np.rad2deg(np.arctan2(np.sin(a0) + np.sin(a1), np.cos(a0) + np.cos(a1))))


def _edge_lon(lon, east: bool) -> np.ndarray:
    """Edge longitudes wrapped to [-180, 180) (west) or (-180, 180] (east).

    An edge on the dateline is -180 when it is a west edge and 180 when it is an east edge, so only
    tiles that really cross the dateline have ``lon1 < lon0``. Float noise of ``k * res`` (e.g.
    1/12 deg) within 1e-9 deg of the dateline is snapped onto it.
    """
    lon = wrap_lon(lon)
    on_dateline = (np.abs(lon + 180.0) < 1e-9) | (np.abs(lon - 180.0) < 1e-9)
    return np.where(on_dateline, 180.0 if east else -180.0, lon)


def build_patches(ocean_mask: np.ndarray, grid: CubeGrid, spec: PatchSpec = PatchSpec()) -> pd.DataFrame:
    """The patch table: one row per kept tile, ordered south to north, then west to east.

    ``ocean_mask`` is (nlat, nlon) bool with row 0 = south (cube layout). Tiles of
    ``tile_size`` x ``tile_size`` cells start at row/col 0 every ``stride`` cells, never partial;
    on a global grid ``nlon // stride`` tiles per row wrap across the dateline. Columns:
    ``patch`` (0..N-1, renumbered after dropping), ``row0, col0`` (first cell), ``lat0, lat1``
    (south/north edges), ``lon0`` (west edge, [-180, 180)), ``lon1`` (east edge, (-180, 180];
    ``lon1 < lon0`` means the tile crosses the dateline), ``lat_center``, ``lon_center``
    (dateline-safe circular mean of lon0/lon1), ``invalid_fraction`` (1 - ocean share).
    Tiles with ``invalid_fraction > invalid_threshold`` are dropped. The specs are recorded in
    ``attrs['patch_spec']`` and ``attrs['grid']`` for :func:`assign_splits`.
    """
    mask = _check_mask(ocean_mask, grid)
    rows, cols = _tile_starts(grid, spec)
    t = spec.tile_size
    invalid = 1.0 - _ocean_counts(mask, rows, cols, t, grid.is_global_lon) / float(t * t)
    row0, col0 = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))  # lat outer, lon inner
    invalid = invalid.ravel()
    keep = invalid <= spec.invalid_threshold
    row0, col0, invalid = row0[keep], col0[keep], invalid[keep]
    res = grid.resolution
    lat0 = grid.lat_south + row0 * res
    lat1 = grid.lat_south + (row0 + t) * res
    lon0 = _edge_lon(grid.lon_west + col0 * res, east=False)
    lon1 = _edge_lon(grid.lon_west + (col0 + t) * res, east=True)
    values = {
        "patch": np.arange(row0.size, dtype=np.int64), "row0": row0, "col0": col0,
        "lat0": lat0, "lat1": lat1, "lon0": lon0, "lon1": lon1,
        "lat_center": (lat0 + lat1) / 2.0, "lon_center": circular_mean_lon(lon0, lon1),
        "invalid_fraction": invalid.astype(np.float64),
    }
    df = pd.DataFrame({name: values[name] for name in PATCH_COLUMNS})
    df.attrs["patch_spec"] = spec.to_dict()
    df.attrs["grid"] = grid.to_dict()
    return df



# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def patch_wkt(patches: pd.DataFrame) -> pd.Series:
    """Closed lon/lat POLYGON per tile with 6 decimals, like the reference spatial CSV.

    A tile crossing the dateline is written with its east edge unwrapped (> 180) so the polygon
    keeps its true 12.8 degree width instead of spanning the globe the other way.
    """
    lon0, lat0, lat1 = patches["lon0"].to_numpy(), patches["lat0"].to_numpy(), patches["lat1"].to_numpy()
    lon1 = unwrapped_east(lon0, patches["lon1"].to_numpy())
    corners = zip(lon0, lat0, lon1, lat1)
    return pd.Series([f"POLYGON (({a:.6f} {b:.6f}, {c:.6f} {b:.6f}, {c:.6f} {d:.6f}, {a:.6f} {d:.6f}, "
                      f"{a:.6f} {b:.6f}))" for a, b, c, d in corners], index=patches.index, dtype=object)


def export_patches(patches: pd.DataFrame, path) -> None:
    """Write the patch table to ``path`` (local path or fsspec URL) as CSV or Parquet by suffix.

    CSV adds a ``wkt`` POLYGON column (see :func:`patch_wkt`); floats are written at full
    precision so the numbers read back exactly. Parquet keeps dtypes and needs no ``wkt``.
    """
    suffix = PurePosixPath(str(path)).suffix.lower()
    if suffix == ".csv":
        out = patches.copy()
        out["wkt"] = patch_wkt(patches)
        out.to_csv(path, index=False)
    elif suffix == ".parquet":
        patches.to_parquet(path, index=False)
    else:
        raise ValueError(f"cannot export patches to {path}: the suffix must be .csv or .parquet, got {suffix!r}")
