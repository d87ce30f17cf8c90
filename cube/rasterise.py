"""Rasterisation of vertically aligned profiles into daily per-cell counts and sums (DESIGN.md 4).

Every QC-accepted, aligned profile value adds 1 to ``count`` and its temperature to ``sum`` of
the (day, level, row, col) cell that contains it. Cells are the cube grid's half-open cells
(``CubeGrid.cell_index``): a profile exactly on an edge lands in exactly one cell, the one
north/east of the edge, and longitudes are compared modulo 360 (0..360 input is fine, a global
grid wraps at the dateline). Several profiles in a cell combine per level independently, so the
window mean ``sum / count`` weights every observation by 1 and a real 0 degC stays valid.

The result is **sparse** (:class:`RasterisedProfiles`): unique cell indices with their count and
sum, sorted day-major, so the builder can scatter any (days x rows x cols) block into Zarr chunks
without allocating the dense (time, depth, lat, lon) cube. Everything is vectorised: one
``np.unique`` over the linear cell index of all observations, then ``np.bincount``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from cube.grid import CubeGrid


@dataclass(frozen=True, eq=False)
class RasterisedProfiles:
    """Observed cells of a (n_days, nlev, nlat, nlon) daily profile raster, sparse.

    ``day, level, row, col`` (int64) are unique cells sorted by (day, level, row, col); ``count``
    (int32) and ``sum`` (float32, accumulated in float64) hold their observations. Profiles that
    were not rasterised are counted: ``dropped_out_of_time`` (day outside ``[0, n_days)``) and
    ``dropped_outside`` (in time, but position outside the grid or not finite).
    """

    shape: tuple[int, int, int, int]
    day: np.ndarray
    level: np.ndarray
    row: np.ndarray
    col: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    dropped_outside: int = 0
    dropped_out_of_time: int = 0

    @property
    def n_observations(self) -> int:
        """Profile values rasterised (sum of all counts)."""
        return int(self.count.sum(dtype=np.int64))

    def days_with_data(self) -> np.ndarray:
        """Sorted day indices that hold at least one observation."""
        return np.unique(self.day)

    def dense(self, day_start: int = 0, day_stop: int | None = None,
              rows: slice = slice(None), cols: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``count`` (int32) and ``sum`` (float32) for days ``[day_start, day_stop)`` and a
        row / column window (unit-step slices), shaped (days, nlev, rows, cols); zeros unobserved."""
        n_days, nlev, nlat, nlon = self.shape
        day_stop = n_days if day_stop is None else day_stop
        r0, r1, rs = rows.indices(nlat)
        c0, c1, cs = cols.indices(nlon)
        if rs != 1 or cs != 1 or not 0 <= day_start <= day_stop <= n_days:
            raise ValueError(f"dense() needs unit-step windows inside the raster {self.shape}, got days "
                             f"[{day_start}, {day_stop}), rows {rows}, cols {cols}")
        lo, hi = np.searchsorted(self.day, [day_start, day_stop], side="left")
        sel = slice(lo, hi)
        r, c = self.row[sel], self.col[sel]
        inside = (r >= r0) & (r < r1) & (c >= c0) & (c < c1)
        at = (self.day[sel][inside] - day_start, self.level[sel][inside], r[inside] - r0, c[inside] - c0)
        shape = (day_stop - day_start, nlev, max(r1 - r0, 0), max(c1 - c0, 0))
        count = np.zeros(shape, dtype=np.int32)
        total = np.zeros(shape, dtype=np.float32)
        count[at] = self.count[sel][inside]
        total[at] = self.sum[sel][inside]
        return count, total

    @classmethod
    def combine(cls, parts: list["RasterisedProfiles"]) -> "RasterisedProfiles":
        """Merge rasters of the same shape (e.g. one per input file): counts and sums add up."""
        if not parts:
            raise ValueError("combine() needs at least one raster")
        shape = parts[0].shape
        if any(p.shape != shape for p in parts):
            raise ValueError(f"cannot combine rasters of shapes {[p.shape for p in parts]}")
        index = np.concatenate([_linear_index(p.day, p.level, p.row, p.col, shape) for p in parts])
        count = np.concatenate([p.count for p in parts]).astype(np.int64)
        # float32 sums re-added in float64: exact enough for sums of a few file-level partials.
        total = np.concatenate([p.sum for p in parts]).astype(np.float64)
        return _from_index(index, count, total, shape,
                           sum(p.dropped_outside for p in parts), sum(p.dropped_out_of_time for p in parts))


def _from_index(index, weight_count, weight_sum, shape, dropped_outside: int, dropped_out_of_time: int):
    """Aggregate per-observation linear cell indices into a sorted, unique sparse raster.

    ``weight_count`` None means 1 per observation. One stable argsort (measured 4x faster than
    ``np.unique(return_inverse=True)`` on 8 M keys) and ``np.add.reduceat`` over the runs.
    """
    order = np.argsort(index, kind="stable")
    index = index[order]
    run_start = np.concatenate([[True], index[1:] != index[:-1]]) if index.size else np.zeros(0, bool)
    starts = np.flatnonzero(run_start)
    cells = index[starts]
    if weight_count is None:
        count = np.diff(np.append(starts, index.size))
    else:
        count = np.add.reduceat(weight_count[order], starts) if starts.size else np.zeros(0, np.int64)
    total = np.add.reduceat(weight_sum[order], starts) if starts.size else np.zeros(0)
    day, level, row, col = np.unravel_index(cells, shape)
    return RasterisedProfiles(shape, day, level, row, col, count.astype(np.int32),
                              total.astype(np.float32), int(dropped_outside), int(dropped_out_of_time))


def _linear_index(day, level, row, col, shape) -> np.ndarray:
    """C-order cell index in int64 (plain arithmetic: 3x faster than np.ravel_multi_index)."""
    _, nlev, nlat, nlon = shape
    return ((day.astype(np.int64) * nlev + level) * nlat + row) * nlon + col


def rasterise(day_index: ArrayLike, lat: ArrayLike, lon: ArrayLike, values: ArrayLike, grid: CubeGrid,
              n_days: int) -> RasterisedProfiles:
    """Rasterise aligned profiles onto the cube's daily (day, level, lat, lon) axes.

    ``day_index (P,)`` integer day offsets into the cube's daily axis (outside ``[0, n_days)``
    dropped and counted), ``lat, lon (P,)`` degrees (any longitude convention), ``values
    (P, nlev)`` temperatures on the cube levels with NaN where there is no accepted observation.
    """
    day = np.asarray(day_index)
    values = np.asarray(values)
    if day.dtype.kind not in "iu":
        raise ValueError(f"day_index must be integers (day offsets), got dtype {day.dtype}")
    n_prof = day.shape[0] if day.ndim == 1 else -1
    if values.ndim != 2 or values.shape[0] != n_prof or np.shape(lat) != (n_prof,) or np.shape(lon) != (n_prof,):
        raise ValueError(f"need day_index, lat, lon (P,) and values (P, nlev); got {day.shape}, "
                         f"{np.shape(lat)}, {np.shape(lon)}, {values.shape}")
    shape = (int(n_days), values.shape[1], grid.nlat, grid.nlon)
    if np.prod(shape, dtype=np.float64) >= 2.0 ** 62:
        raise ValueError(f"raster {shape} is too large for a 64-bit cell index")
    in_time = (day >= 0) & (day < n_days)
    row, col, inside = grid.cell_index(lat, lon)
    keep = in_time & inside
    kept = values[keep]
    prof, lev = np.nonzero(np.isfinite(kept))
    index = _linear_index(day[keep][prof], lev, row[keep][prof], col[keep][prof], shape)
    obs = kept[prof, lev].astype(np.float64)
    return _from_index(index, None, obs, shape,
                       int(np.count_nonzero(in_time & ~inside)), int(np.count_nonzero(~in_time)))
