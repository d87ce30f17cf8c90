"""Regridding of regular lat/lon source fields onto the cube grid (pure numpy/scipy, no dask).

Every method is **separable**: a 2-D regridding is ``out = Wy @ V @ Wx.T`` with 1-D weight
matrices, one per axis, that depend only on the (source axes, cube grid) pair. A
:class:`Regridder` computes them once and applies them to any number of fields (the builder
regrids hundreds of days on the same axes). :func:`get_regridder` keeps the one cache of
regridders (least recently used, behind a lock: build tasks run on threads), which :func:`regrid`,
the other functions below and the builder's tasks (:mod:`cube.tasks`) all go through.

Methods
-------
``mean``
    Exact **area** mean (first-order conservative). The weight of source cell ``(i, j)`` in cube
    cell ``(I, J)`` is the spherical area of their intersection, which factorises as
    ``(sin(lat_hi) - sin(lat_lo)) * (lon_hi - lon_lo)`` over the overlap, so non-integer ratios
    (GLORYS 1/12 deg -> 0.1 deg) are exact. Source cell edges are the midpoints between centres.
    NaN-aware: the mean is taken over the valid part only, and a cube cell is valid where the
    valid source area covers at least ``min_valid_fraction`` of **the cube cell's area** (parts
    of the cube cell that no source cell covers count as invalid).
``linear``
    Bilinear interpolation at cube cell centres. NaN-aware by renormalisation: invalid neighbours
    get weight 0 and the remaining weights are rescaled to sum to 1. A cube cell is valid where
    its valid neighbours carry at least ``min_valid_fraction`` of the bilinear weight (and more
    than 0), so with the default 0.5 coastal values are not smeared more than half a source cell
    onto land. Between the outermost source centre and the source's outer edge the edge value
    is used (constant); beyond the source's extent the result is NaN.
``nearest``
    The value of the source cell that contains the cube cell centre (source cells half-open:
    a centre exactly on a source edge takes the cell north/east of it). No averaging.
``auto``
    ``mean`` when the source is finer than the cube grid on both axes (coarsening), else
    ``linear`` (refining, or equal resolution where bilinear reduces to the identity).

Longitude is periodic: when the source axis spans 360 deg its columns wrap across the dateline
(both for interpolation neighbours and for area overlaps), and cube longitudes are compared with
source longitudes modulo 360, so a regional grid anywhere works without special cases.

Implementation (chosen by measurement, ``bench/regrid_methods.py``, 2 cores): the 1-D weights
are ``scipy.sparse`` CSR matrices applied per 2-D field as ``(Wx @ (Wy @ V).T).T`` in the
field's own dtype (float32 weights for float32 fields: 3x faster than letting scipy upcast to
float64). Per field (mean, NaN-aware, float32): OSTIA 520x800 -> 0.1 deg 1.4 ms, global
3600x7200 -> 1800x3600 0.19 s, GLORYS 50 x 315x483 (1/12 deg) -> 260x400 35 ms. Peers on the
same fields: numpy padded gathers 1.7 ms / 0.18 s / 150 ms, numpy reshape block mean (integer
ratios only) 6.7 ms / 0.45 s / n.a., pyinterp ``Binning2D`` 22 ms / 1.2 s / 275 ms (and it gives
each source cell wholly to one cube cell: up to 0.02 K off on the non-integer GLORYS ratio),
pyinterp ``bivariate`` bilinear 5.4 ms / 0.27 s / 167 ms against our linear 1.3 ms / 0.19 s /
35 ms, and the reference's scipy ``RegularGridInterpolator`` linear+nearest 12 ms / 0.67 s /
346 ms. Building the weights takes about 1 ms even for the global grid.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import hashlib
import threading

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from cube.errors import InputError
from cube.grid import CubeGrid

METHODS = ("auto", "mean", "linear", "nearest")
CATEGORICAL_METHODS = ("auto", "majority", "nearest")
#: Source edges within this fraction of the finer step from a cube edge are snapped onto it, so
#: float32 coordinate noise does not create sliver overlaps (1e-3 of 0.05 deg is about 5 m).
_SNAP_FRACTION = 1e-3
#: Two categorical area fractions closer than this are a tie (then the lowest code wins).
_TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class AxisWeights:
    """1-D weights of one axis: ``matrix`` (n_out, n_src) CSR, ``out = matrix @ src``.

    ``total[k]`` is the weight sum output ``k`` would need to be fully covered (the cube cell's
    own area factor for ``mean``, 1 inside the source for ``linear``).
    """

    matrix: sp.csr_matrix
    total: np.ndarray

    @classmethod
    def from_triplets(cls, tgt, src, w, n_out: int, n_src: int, total) -> "AxisWeights":
        """Build from COO triplets (output index, source index, weight); zero weights dropped."""
        keep = w > 0
        m = sp.csr_matrix((w[keep], (tgt[keep], src[keep])), shape=(n_out, n_src), dtype=np.float64)
        m.sum_duplicates()
        return cls(m, np.asarray(total, dtype=np.float64))

    def as_dtype(self, dtype) -> sp.csr_matrix:
        """The matrix in ``dtype`` (float32 products stay float32 and run about 3x faster)."""
        return self.matrix if self.matrix.dtype == dtype else self.matrix.astype(dtype)

    def dense(self) -> np.ndarray:
        """The weights as a dense (n_out, n_src) array (for tests and inspection)."""
        return self.matrix.toarray()

    @property
    def covered(self) -> np.ndarray:
        """Weight sum per output of an all-valid source (below ``total`` where not covered)."""
        return np.asarray(self.matrix.sum(axis=1)).ravel()


# ---------------------------------------------------------------------------------------------
# Source axes


@dataclass(frozen=True)
class SourceAxis:
    """Cell centres and edges of one ascending source axis (float64)."""

    centres: np.ndarray
    edges: np.ndarray
    periodic: bool

    @property
    def step(self) -> float:
        return float(np.median(np.diff(self.centres)))


def _check_axis(c: np.ndarray, name: str, source: str) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise InputError(source, "bad_grid", f"{name} must be a 1-D axis of >= 2 centres, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise InputError(source, "bad_grid", f"{name} has non-finite values")
    if not np.all(np.diff(c) > 0):
        raise InputError(source, "bad_grid", f"{name} must be strictly ascending (readers normalise it)")
    return c


def lat_axis(lat: ArrayLike, source: str = "<source>") -> SourceAxis:
    """Latitude centres -> cells with midpoint edges, outer edges clipped to [-90, 90]."""
    c = _check_axis(lat, "latitude", source)
    if c[0] < -90 - 1e-6 or c[-1] > 90 + 1e-6:
        raise InputError(source, "bad_grid", f"latitudes {c[0]}..{c[-1]} are outside [-90, 90]")
    edges = np.concatenate([[1.5 * c[0] - 0.5 * c[1]], 0.5 * (c[1:] + c[:-1]), [1.5 * c[-1] - 0.5 * c[-2]]])
    return SourceAxis(c, np.clip(edges, -90.0, 90.0), periodic=False)


def lon_axis(lon: ArrayLike, source: str = "<source>") -> SourceAxis:
    """Longitude centres -> cells; periodic (wrapping at the dateline) when they span 360 deg."""
    c = _check_axis(lon, "longitude", source)
    step = float(np.median(np.diff(c)))
    if c[-1] - c[0] >= 360.0:
        raise InputError(source, "bad_grid", f"longitudes span {c[-1] - c[0]} >= 360 deg (duplicate column?)")
    periodic = abs(c[-1] - c[0] + step - 360.0) < _SNAP_FRACTION * step
    first = 0.5 * (c[0] + c[-1] - 360.0) if periodic else 1.5 * c[0] - 0.5 * c[1]
    last = first + 360.0 if periodic else 1.5 * c[-1] - 0.5 * c[-2]
    edges = np.concatenate([[first], 0.5 * (c[1:] + c[:-1]), [last]])
    return SourceAxis(c, edges, periodic)


# ---------------------------------------------------------------------------------------------
# 1-D weights


def _snap(r: np.ndarray, res: float, tol: float) -> np.ndarray:
    """Move values within ``tol`` of a multiple of ``res`` onto it."""
    k = np.round(r / res)
    return np.where(np.abs(r - k * res) < tol, k * res, r)


def _overlaps(a: np.ndarray, b: np.ndarray, res: float, n: int, tol: float):
    """Intersections of source intervals [a_i, b_i] with cells [k res, (k+1) res), k < n.

    Returns (cell k, source i, lo, hi) for every intersection longer than ``tol``.
    """
    k0 = np.maximum(np.floor(a / res), 0).astype(np.int64)
    k1 = np.minimum(np.ceil(b / res) - 1, n - 1).astype(np.int64)
    counts = np.maximum(k1 - k0 + 1, 0)
    src = np.repeat(np.arange(a.size), counts)
    k = k0[src] + (np.arange(src.size) - np.repeat(np.cumsum(counts) - counts, counts))
    lo = np.maximum(a[src], k * res)
    hi = np.minimum(b[src], (k + 1) * res)
    keep = hi - lo > tol
    return k[keep], src[keep], lo[keep], hi[keep]


def _relative_lon_intervals(axis: SourceAxis, lon_west: float, res: float, tol: float):
    """Source cells as intervals relative to the grid's west edge, modulo 360 (split at 360)."""
    a = _snap(np.mod(axis.edges[:-1] - lon_west, 360.0), res, tol)
    a = np.where(a >= 360.0 - tol, a - 360.0, a)
    b = a + np.diff(axis.edges)
    idx = np.arange(a.size)
    wrap = b > 360.0 + tol
    # A cell crossing 360 is also the piece [a - 360, b - 360] at the grid's west end.
    a2, b2, i2 = a[wrap] - 360.0, b[wrap] - 360.0, idx[wrap]
    b = _snap(b, res, tol)
    return np.concatenate([a, a2]), np.concatenate([b, _snap(b2, res, tol)]), np.concatenate([idx, i2])


def area_weights_lat(axis: SourceAxis, grid: CubeGrid) -> AxisWeights:
    """Latitude factor of the spherical overlap area: sin(hi) - sin(lo) over each overlap."""
    res = grid.resolution
    tol = _SNAP_FRACTION * min(res, axis.step)
    r = _snap(axis.edges - grid.lat_south, res, tol)
    k, i, lo, hi = _overlaps(r[:-1], r[1:], res, grid.nlat, tol)
    w = np.sin(np.radians(grid.lat_south + hi)) - np.sin(np.radians(grid.lat_south + lo))
    e = np.radians(grid.lat_edges)
    return AxisWeights.from_triplets(k, i, w, grid.nlat, axis.centres.size, np.sin(e[1:]) - np.sin(e[:-1]))


def area_weights_lon(axis: SourceAxis, grid: CubeGrid) -> AxisWeights:
    """Longitude factor of the overlap area: the overlap length in degrees (modulo 360)."""
    res = grid.resolution
    tol = _SNAP_FRACTION * min(res, axis.step)
    a, b, src = _relative_lon_intervals(axis, grid.lon_west, res, tol)
    k, i, lo, hi = _overlaps(a, b, res, grid.nlon, tol)
    return AxisWeights.from_triplets(k, src[i], hi - lo, grid.nlon, axis.centres.size, np.full(grid.nlon, res))


def linear_weights(axis: SourceAxis, t: np.ndarray, is_lon: bool) -> AxisWeights:
    """Linear interpolation weights at points ``t``; periodic axes wrap last -> first column."""
    c, n = axis.centres, axis.centres.size
    u = axis.edges[0] + np.mod(t - axis.edges[0], 360.0) if is_lon else np.asarray(t, dtype=np.float64)
    inside = (u >= axis.edges[0]) & (u <= axis.edges[-1])  # always, on a periodic axis
    ext = np.concatenate([c, [c[0] + 360.0]]) if axis.periodic else c
    if axis.periodic:  # west of the first centre = between the last centre and the first + 360
        u = np.where(u < c[0], u + 360.0, u)
    i = np.clip(np.searchsorted(ext, u, side="right") - 1, 0, ext.size - 2)
    f = np.clip((u - ext[i]) / (ext[i + 1] - ext[i]), 0.0, 1.0)
    # Coincident axes (the 'native' grid) must give the identity, not 1e-13 of a neighbour.
    f = np.where(f < 1e-9, 0.0, np.where(f > 1 - 1e-9, 1.0, f))
    rows = np.arange(t.size)
    tgt = np.concatenate([rows, rows])[np.concatenate([inside, inside])]
    src = np.concatenate([i, (i + 1) % n])[np.concatenate([inside, inside])]
    w = np.concatenate([1.0 - f, f])[np.concatenate([inside, inside])]
    return AxisWeights.from_triplets(tgt, src, w, t.size, n, inside.astype(np.float64))


def nearest_index(axis: SourceAxis, t: np.ndarray, is_lon: bool) -> np.ndarray:
    """Index of the half-open source cell containing each point ``t`` (-1 outside the source)."""
    u = axis.edges[0] + np.mod(t - axis.edges[0], 360.0) if is_lon else np.asarray(t, dtype=np.float64)
    tol = 1e-9 * axis.step
    i = np.searchsorted(axis.edges, u + tol, side="right") - 1
    inside = (i >= 0) & (i < axis.centres.size) & (u >= axis.edges[0] - tol)
    return np.where(inside, i, -1)


# ---------------------------------------------------------------------------------------------
# The regridder


def _resolve_method(method: str, lat: SourceAxis, lon: SourceAxis, grid: CubeGrid) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown regrid method {method!r}; expected one of {METHODS}")
    if method != "auto":
        return method
    finer = max(lat.step, lon.step) < grid.resolution * (1 - 1e-6)
    return "mean" if finer else "linear"


def _as_float(values) -> np.ndarray:
    v = np.asarray(values)
    return v if v.dtype.kind == "f" else v.astype(np.float64)


def _apply(wy: sp.csr_matrix, wx: sp.csr_matrix, field: np.ndarray) -> np.ndarray:
    """``wy @ field @ wx.T`` for one 2-D field (transposing the dense side is the fast order)."""
    return (wx @ (wy @ field).T).T


def _valid_mean(wy, wx, field: np.ndarray, need: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Weighted mean of the finite part of ``field``; NaN where the valid weight < ``need``."""
    valid = np.isfinite(field)
    if valid.all():  # no land or gaps: the valid weight is known, skip the second product
        num, wsum = _apply(wy, wx, field), covered
    else:
        num = _apply(wy, wx, np.where(valid, field, 0).astype(field.dtype, copy=False))
        wsum = _apply(wy, wx, valid.astype(field.dtype))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((wsum > 0) & (wsum >= need), num / wsum, np.nan)


class Regridder:
    """Weights from one pair (source axes, cube grid), applied to many fields.

    ``Regridder(src_lat, src_lon, grid, method)`` computes the 1-D weights once (a few ms for a
    global 0.05 deg source); calling it on ``values (..., ny, nx)`` returns ``(..., nlat, nlon)``
    in the values' float dtype (float32 stays float32; integers become float64), NaN invalid.
    ``source`` names the input in errors.
    """

    def __init__(self, src_lat: ArrayLike, src_lon: ArrayLike, grid: CubeGrid, method: str = "auto",
                 source: str = "<source>"):
        self.grid = grid
        self.source = source
        self.lat = lat_axis(src_lat, source)
        self.lon = lon_axis(src_lon, source)
        self.method = _resolve_method(method, self.lat, self.lon, grid)
        self.shape_in = (self.lat.centres.size, self.lon.centres.size)
        if self.method == "mean":
            self.wy, self.wx = area_weights_lat(self.lat, grid), area_weights_lon(self.lon, grid)
        elif self.method == "linear":
            self.wy = linear_weights(self.lat, grid.lat, is_lon=False)
            self.wx = linear_weights(self.lon, grid.lon, is_lon=True)
        else:
            self.iy = nearest_index(self.lat, grid.lat, is_lon=False)
            self.ix = nearest_index(self.lon, grid.lon, is_lon=True)

    def _check(self, values: np.ndarray) -> None:
        if values.ndim < 2 or values.shape[-2:] != self.shape_in:
            raise InputError(self.source, "bad_grid",
                             f"field of shape {values.shape} does not end with the axes' shape {self.shape_in}")

    def _weights(self, dtype) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        if self.method == "nearest":
            raise ValueError("nearest regridding has no weights")
        return self.wy.as_dtype(dtype), self.wx.as_dtype(dtype)

    def weighted_sum(self, values: np.ndarray) -> np.ndarray:
        """``Wy @ values @ Wx.T`` over the last two axes (NaN propagates; no normalisation)."""
        wy, wx = self._weights(values.dtype)
        return self._per_field(values, lambda field: _apply(wy, wx, field))

    def _per_field(self, values: np.ndarray, fn) -> np.ndarray:
        """Apply ``fn`` to every 2-D field of ``values (..., ny, nx)``; a per-level loop keeps
        the work in cache (measured 2x faster than whole-cube numpy passes on GLORYS)."""
        flat = values.reshape((-1,) + self.shape_in)
        out = np.empty((flat.shape[0], self.grid.nlat, self.grid.nlon), dtype=values.dtype)
        for k, field in enumerate(flat):
            out[k] = fn(field)
        return out.reshape(values.shape[:-2] + out.shape[1:])

    def _covered(self) -> np.ndarray:
        """Weight sum per cube cell of an all-valid source (less than total where it is not covered)."""
        return np.outer(self.wy.covered, self.wx.covered)

    def total_weight(self) -> np.ndarray:
        """Weight sum a cube cell needs to be fully covered (its area factor for mean, 1 or 0 for linear)."""
        return np.outer(self.wy.total, self.wx.total)

    def __call__(self, values: ArrayLike, min_valid_fraction: float = 0.5) -> np.ndarray:
        """Regrid ``values (..., ny, nx)`` (NaN = invalid) onto the cube grid."""
        v = _as_float(values)
        self._check(v)
        if self.method == "nearest":
            return self.take(v, fill_value=np.nan)
        wy, wx = self._weights(v.dtype)
        # The small slack keeps an exactly-half-valid cell valid despite float32 rounding.
        need = (min_valid_fraction * (1 - 1e-6) * self.total_weight()).astype(v.dtype)
        covered = self._covered().astype(v.dtype)
        return self._per_field(v, lambda field: _valid_mean(wy, wx, field, need, covered))

    def take(self, values: ArrayLike, fill_value) -> np.ndarray:
        """Nearest-cell lookup (any dtype preserved); cube cells outside the source get ``fill_value``."""
        if self.method != "nearest":
            raise ValueError(f"take() needs a nearest regridder, this one is {self.method!r}")
        values = np.asarray(values)
        self._check(values)
        out = values[..., np.maximum(self.iy, 0)[:, None], np.maximum(self.ix, 0)[None, :]]
        outside = (self.iy < 0)[:, None] | (self.ix < 0)[None, :]
        if outside.any():
            out = np.where(outside, np.asarray(fill_value, dtype=out.dtype), out)
        return out

    def fraction(self, mask: ArrayLike) -> np.ndarray:
        """Area fraction of True per cube cell (area-mean regridders only), float32.

        Relative to the whole cube cell: parts no source cell covers count as False.
        """
        if self.method != "mean":
            raise ValueError(f"fraction() needs area weights ('mean'), this regridder is {self.method!r}")
        m = np.asarray(mask)
        self._check(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = self.weighted_sum(m.astype(np.float32)) / self.total_weight().astype(np.float32)
        return np.clip(frac, 0.0, 1.0)

    def majority(self, codes: ArrayLike, fill_value: int = 0) -> np.ndarray:
        """Most frequent code per cube cell by overlap area; ties -> lowest code (area-mean only).

        Ties are fractions within 1e-5 of the cube cell area. Cells no source covers get
        ``fill_value``. The result only ever holds codes present in the overlapping sources.
        """
        codes = np.asarray(codes)
        best_code = None
        best = None
        for code in np.unique(codes):  # ascending, so a later code must beat an earlier one clearly
            frac = self.fraction(codes == code)
            if best is None:
                best, best_code = frac, np.full(frac.shape, code, dtype=codes.dtype)
                continue
            better = frac > best + _TIE_TOLERANCE
            best = np.where(better, frac, best)
            best_code = np.where(better, code, best_code)
        if best is None:
            raise InputError(self.source, "no_valid_data", "categorical field is empty")
        return np.where(best > 0, best_code, np.asarray(fill_value, dtype=codes.dtype))


# ---------------------------------------------------------------------------------------------
# Functional API with a weights cache


_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def _axis_key(a) -> str:
    a = np.ascontiguousarray(a, dtype=np.float64)
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()


def get_regridder(src_lat: ArrayLike, src_lon: ArrayLike, grid: CubeGrid, method: str = "auto") -> Regridder:
    """A cached :class:`Regridder` for these axes, grid and method (weights built once)."""
    key = (_axis_key(src_lat), _axis_key(src_lon), grid, method)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    r = Regridder(src_lat, src_lon, grid, method)
    with _CACHE_LOCK:
        _CACHE[key] = r
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return r


def regrid(values: ArrayLike, src_lat: ArrayLike, src_lon: ArrayLike, grid: CubeGrid,
           method: str = "auto", min_valid_fraction: float = 0.5) -> np.ndarray:
    """Regrid ``values (..., ny, nx)`` from ascending regular source centres onto ``grid``.

    Returns ``(..., grid.nlat, grid.nlon)``, NaN where invalid; leading dims (time, depth)
    broadcast. ``method``: ``auto`` | ``mean`` | ``linear`` | ``nearest`` (module docstring).
    """
    return get_regridder(src_lat, src_lon, grid, method)(values, min_valid_fraction)


def regrid_categorical(codes: ArrayLike, src_lat: ArrayLike, src_lon: ArrayLike, grid: CubeGrid,
                       method: str = "majority", fill_value: int = 0) -> np.ndarray:
    """Regrid integer codes (e.g. the OSTIA mask) without ever mixing them (REFERENCE 11.10).

    ``majority``: the code covering the largest part of each cube cell (ties -> lowest code),
    right for coarsening and still well defined when refining; ``nearest``: the code of the
    source cell containing the cube centre; ``auto``: majority when coarsening, else nearest.
    Never linear, so no code absent from the overlapping sources can appear. Cells outside the
    source get ``fill_value``. Output dtype = input dtype.
    """
    if method not in CATEGORICAL_METHODS:
        raise ValueError(f"unknown categorical method {method!r}; expected one of {CATEGORICAL_METHODS}")
    if method == "auto":
        auto = _resolve_method("auto", lat_axis(src_lat), lon_axis(src_lon), grid)
        method = "majority" if auto == "mean" else "nearest"
    if method == "majority":
        return get_regridder(src_lat, src_lon, grid, "mean").majority(codes, fill_value)
    return get_regridder(src_lat, src_lon, grid, "nearest").take(codes, fill_value)


def regrid_fraction(mask_bool: ArrayLike, src_lat: ArrayLike, src_lon: ArrayLike, grid: CubeGrid) -> np.ndarray:
    """Area fraction (0..1, float32) of True source area in each cube cell, e.g. ocean fraction.

    Exact spherical overlap areas, whether coarsening or refining; cube-cell parts that no
    source cell covers count as False.
    """
    return get_regridder(src_lat, src_lon, grid, "mean").fraction(mask_bool)
