"""Horizontal axes of gridded inputs: regions and lon/lat normalisation before reading.

:class:`Bbox` is a lat/lon box (dateline-safe); :func:`plan_horizontal` checks a file's lat/lon
axes and plans the read of a box plus one cell of margin, with longitudes normalised to
[-180, 180) and latitudes ascending, regular axes put back on their lattice
(:func:`regular_axis`); :func:`read_horizontal` reads only the planned rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import netCDF4
import numpy as np

from cube.errors import ConfigError, InputError
from cube.grid import wrap_lon
from cube.readers.netcdf import attr_text, require_var, var_attrs


@dataclass(frozen=True)
class Bbox:
    """A lat/lon box ``[lat_min, lat_max) x [lon_min, lon_max)``; longitudes compare modulo 360.

    ``lon_min > lon_max`` (e.g. 170, -170) means the box crosses the dateline; a span of 360 is global.
    """

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def __post_init__(self):
        vals = (self.lat_min, self.lat_max, self.lon_min, self.lon_max)
        if not all(np.isfinite(v) for v in vals):
            raise ConfigError(f"bbox: values must be finite, got {vals}")
        # Latitudes beyond +-90 are allowed: they simply reach the pole (callers pad boxes by a margin).
        if not self.lat_min < self.lat_max:
            raise ConfigError(f"bbox: need lat_min < lat_max, got lat {self.lat_min}..{self.lat_max}")
        if self.lon_max - self.lon_min > 360 or self.lon_min == self.lon_max:
            raise ConfigError(f"bbox: longitude span {self.lon_min}..{self.lon_max} must be in (0, 360]")

    def __str__(self) -> str:
        """Short form for messages: 'lat 40..41.6, lon -20..-18.4' (the repr stays the dataclass one)."""
        return f"lat {self.lat_min:g}..{self.lat_max:g}, lon {self.lon_min:g}..{self.lon_max:g}"

    @property
    def lon_width(self) -> float:
        """Eastward span in degrees, in (0, 360]."""
        d = self.lon_max - self.lon_min
        return d if d > 0 else d + 360.0

    def contains(self, lat, lon) -> np.ndarray:
        """Half-open membership of points (profile positions), dateline-safe."""
        lat = np.asarray(lat, dtype=np.float64)
        east = np.mod(np.asarray(lon, dtype=np.float64) - self.lon_min, 360.0)
        with np.errstate(invalid="ignore"):
            return (lat >= self.lat_min) & (lat < self.lat_max) & (east < self.lon_width)

    def lon_near(self, lon, margin: float) -> np.ndarray:
        """Closed membership of longitudes within ``margin`` degrees of the box (grid subsetting)."""
        if self.lon_width + 2 * margin >= 360.0:
            return np.ones(np.shape(lon), dtype=bool)
        east = np.mod(np.asarray(lon, dtype=np.float64) - (self.lon_min - margin), 360.0)
        return east <= self.lon_width + 2 * margin + 1e-9

    def lat_near(self, lat, margin: float) -> np.ndarray:
        lat = np.asarray(lat, dtype=np.float64)
        return (lat >= self.lat_min - margin - 1e-9) & (lat <= self.lat_max + margin + 1e-9)


def as_bbox(bbox) -> Bbox | None:
    """None, a :class:`Bbox` or a ``(lat_min, lat_max, lon_min, lon_max)`` sequence -> Bbox | None."""
    if bbox is None or isinstance(bbox, Bbox):
        return bbox
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bbox: expected (lat_min, lat_max, lon_min, lon_max), got {bbox!r}") from exc
    if len(values) != 4:
        raise ConfigError(f"bbox: expected 4 values (lat_min, lat_max, lon_min, lon_max), got {len(values)}")
    return Bbox(*values)


@dataclass(frozen=True, eq=False)
class HorizontalPlan:
    """Which source rows/columns to read, in output order (lat ascending, lon in [-180,180) ascending)."""

    rows: np.ndarray
    cols: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def _check_axis(path, name: str, values: np.ndarray) -> None:
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise InputError(path, "bad_grid", f"{name} must be a non-empty 1-D finite vector, got shape {values.shape}")


def _step(values: np.ndarray) -> float:
    return float(np.median(np.abs(np.diff(values)))) if values.size > 1 else 0.0


#: A regular axis is rebuilt on its lattice when every centre lies within this fraction of a step of it.
LATTICE_TOLERANCE = 0.01


def regular_axis(centres: np.ndarray) -> np.ndarray:
    """Ascending centres put back exactly on their lattice ``origin + k / m`` degrees.

    Coordinates stored as float32 are off by up to half an ulp (1.5e-5 deg at 180, 3e-5 at 360),
    and a 0..360 axis shifted to [-180, 180) keeps the error of its larger numbers, so two files
    of the same grid in the two conventions would regrid a coastal cell differently. When the
    step is within tolerance of 1/m deg and the first centre of a multiple of half a step, the
    axis is rebuilt from those exact numbers; any other axis is returned unchanged.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        return c
    step = (c[-1] - c[0]) / (c.size - 1)
    m = np.round(1.0 / step)
    if m < 1:
        return c
    half = 0.5 / m
    fitted = np.round(c[0] / half) * half + np.arange(c.size) / m
    return fitted if np.abs(fitted - c).max() <= LATTICE_TOLERANCE * step else c


def plan_horizontal(lat, lon, bbox: Bbox | None, path, shape: tuple[int, int] | None = None) -> HorizontalPlan:
    """Plan the read of a regular lat/lon grid, subset to ``bbox`` plus one source cell of margin.

    Latitudes must be strictly monotonic within [-90, 90]; longitudes (any convention: 0..360 or
    -180..180) must not repeat once wrapped to [-180, 180); their lengths must match ``shape``
    (the data's last two dims) when given. Otherwise InputError('bad_grid'). A bbox that misses
    the grid raises InputError('no_valid_data'). The planned axes are ascending and, for regular
    grids, exactly on their lattice (:func:`regular_axis`), whatever the file's convention.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    _check_axis(path, "latitude", lat)
    _check_axis(path, "longitude", lon)
    if shape is not None and (lat.size, lon.size) != tuple(shape):
        raise InputError(path, "bad_grid", f"coordinates have {lat.size} x {lon.size} points, the data {tuple(shape)}")
    dlat = np.diff(lat)
    if lat.size > 1 and not ((dlat > 0).all() or (dlat < 0).all()):
        raise InputError(path, "bad_grid", "latitudes are not strictly monotonic")
    if np.abs(lat).max() > 90 + 1e-6:
        raise InputError(path, "bad_grid", f"latitudes reach {np.abs(lat).max()}, outside [-90, 90]")
    wrapped = wrap_lon(lon)
    lon_order = np.argsort(wrapped, kind="stable")
    if lon.size > 1 and (np.diff(wrapped[lon_order]) <= 1e-9).any():
        raise InputError(path, "bad_grid", "longitudes repeat once wrapped to [-180, 180) (e.g. both 0 and 360)")
    lat_order = np.argsort(lat, kind="stable")
    lat_axis, lon_axis = regular_axis(lat[lat_order]), regular_axis(wrapped[lon_order])
    keep_lat = np.ones(lat.size, bool) if bbox is None else bbox.lat_near(lat_axis, _step(lat))
    keep_lon = np.ones(lon.size, bool) if bbox is None else bbox.lon_near(lon_axis, _step(lon_axis))
    if not keep_lat.any() or not keep_lon.any():
        raise InputError(path, "no_valid_data", f"bbox {bbox} does not overlap the grid "
                                                f"(lat {lat.min()}..{lat.max()}, lon {lon.min()}..{lon.max()})")
    return HorizontalPlan(lat_order[keep_lat], lon_order[keep_lon], lat_axis[keep_lat], lon_axis[keep_lon])


def _blocks(sorted_idx: np.ndarray) -> list[slice]:
    """Contiguous runs of sorted unique indices, as slices."""
    breaks = np.flatnonzero(np.diff(sorted_idx) > 1) + 1
    return [slice(int(run[0]), int(run[-1]) + 1) for run in np.split(sorted_idx, breaks)]


def read_horizontal(var: netCDF4.Variable, plan: HorizontalPlan) -> np.ndarray:
    """Read ``var[..., rows, cols]`` raw (undecoded): one slab per contiguous run of source columns.

    Only the planned rows/columns are read from disk; a plan that straddles the file's longitude
    seam reads two slabs and joins them in output order.
    """
    r0, r1 = int(plan.rows.min()), int(plan.rows.max()) + 1
    cols = np.unique(plan.cols)
    parts = [var[..., r0:r1, block] for block in _blocks(cols)]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    if not np.array_equal(plan.rows, np.arange(r0, r1)):
        data = np.take(data, plan.rows - r0, axis=-2)
    if not np.array_equal(plan.cols, cols):
        data = np.take(data, np.searchsorted(cols, plan.cols), axis=-1)
    return data


def read_coord(ds: netCDF4.Dataset, name: str, path) -> np.ndarray:
    """A 1-D coordinate variable as float64 (missing -> InputError('missing_variable'))."""
    var = require_var(ds, name, path)
    return np.asarray(var[...], dtype=np.float64).ravel()


def check_lat_lon_dims(path, ds: netCDF4.Dataset, lat_dim: str, lon_dim: str) -> None:
    """InputError('bad_grid') unless the data's last two dims are latitude then longitude."""
    for dim, axis, std in ((lat_dim, "Y", "latitude"), (lon_dim, "X", "longitude")):
        attrs = var_attrs(ds.variables[dim]) if dim in ds.variables else {}
        if not (dim.lower().startswith(std[:3]) or attr_text(attrs.get("standard_name")) == std
                or attr_text(attrs.get("axis")) == axis.lower()):
            raise InputError(path, "bad_grid", f"dims end in ({lat_dim}, {lon_dim}); (latitude, longitude) expected")
