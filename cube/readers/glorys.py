"""GLORYS12 / GLO12 potential temperature ``thetao(time, depth, latitude, longitude)``.

Accepted files (REFERENCE.md 1.2): GLOBAL_MULTIYEAR_PHY_001_030 daily means
(``..._YYYYMMDD.nc``, ``..._YYYYMMDD_RYYYYMMDD.nc``), monthly means (``..._YYYYMM.nc``, e.g.
``mercatorglorys12v1_gl12_mean_202301.nc``) and GLOBAL_ANALYSISFORECAST_PHY_001_024 (GLO12)
instantaneous files such as the real ``cmems_glo12_thetao_point_profile.nc`` (float32, fill
9.97e36, 6-hourly). Values are int16-packed or float; land and below-seabed cells are fills.
"""

from __future__ import annotations

import re

import netCDF4
import numpy as np
import xarray as xr

from cube.constants import GLORYS_DEPTHS
from cube.errors import InputError
from cube.readers.cf import check_unique_times, date_from_digits, decode_values, time_from_var, unit_kind
from cube.readers.horizontal import (HorizontalPlan, as_bbox, check_lat_lon_dims, plan_horizontal, read_coord,
                                     read_horizontal)
from cube.readers.netcdf import (PathArg, attr_text, global_attrs, open_netcdf, optional_var, path_name, require_var,
                                 var_attrs)
from cube.readers.products import require_product

DAILY_NAME = re.compile(r"_(\d{8})(?:_R\d{8})?\.nc$")
MONTHLY_NAME = re.compile(r"_(\d{6})\.nc$")
#: Depth levels must match GLORYS_DEPTHS within this relative tolerance.
DEPTH_RTOL = 1e-3
#: Plausible sea-water potential temperature in degC.
THETAO_RANGE_C = (-5.0, 45.0)
DEPTH_DIMS = ("depth", "deptht", "lev")
# Attribute text (lower case) meaning monthly / daily means: words, CMEMS dataset ids (..._P1M-m),
# CF cell_methods intervals, CMIP-style frequency values.
MONTHLY_WORDS = re.compile(r"\bmonthly\b|(?<![a-z0-9])p1m(?![a-z0-9])|interval:\s*1\s*mon|^mon(th)?$|^1m$")
DAILY_WORDS = re.compile(r"\bdaily\b|(?<![a-z0-9])p1d(?![a-z0-9])|interval:\s*1\s*day|^day$|^1d$")


def read_glorys(path: PathArg, bbox=None) -> xr.Dataset:
    """Read one GLORYS/GLO12 file into ``thetao(time, depth, lat, lon)`` float32 degC.

    Promises: NaN over land and below the seabed; lat ascending; lon in [-180, 180) ascending;
    ``depth`` ascending metres, snapped to :data:`cube.constants.GLORYS_DEPTHS` (the file's 50
    levels must match them within 1e-3 relative, else ``bad_depth_axis``). Time comes from the
    time variable: a monthly-mean file (name ``_YYYYMM.nc``, or a ``frequency``/``title``/dataset
    id/``cell_methods`` saying monthly) is dated the 15th of its month at 00:00 whatever its time
    value; a daily-mean file (name ``_YYYYMMDD[_RYYYYMMDD].nc`` or attributes saying daily) is
    dated its day at 00:00; other files (e.g. GLO12 instantaneous 6-hourly) keep their times.
    A name date must agree with the time variable (``bad_time``). ``bbox`` subsets before reading
    (one source cell of margin). Raises InputError: ``missing_variable``, ``bad_units`` (kelvin or
    other non-Celsius units, or values outside -5..45 degC), ``bad_depth_axis``, ``bad_grid``,
    ``bad_time``, ``duplicate_time``, ``no_valid_data``, ``unreadable``.
    """
    box = as_bbox(bbox)
    with open_netcdf(path) as ds:
        var, time_dim, lat_dim, lon_dim, depth_order = _checked_header(ds, path)
        plan = plan_horizontal(read_coord(ds, lat_dim, path), read_coord(ds, lon_dim, path), box, path,
                               shape=var.shape[-2:])
        times = _times(ds, path, var, time_dim)
        raw = read_horizontal(var, plan)
        thetao = decode_values(raw if time_dim else raw[np.newaxis], var_attrs(var), dtype=np.float32)
    if not np.array_equal(depth_order, np.arange(depth_order.size)):
        thetao = thetao[:, depth_order]
    if (np.diff(times) < np.timedelta64(0, "ns")).any():
        order = np.argsort(times, kind="stable")
        times, thetao = times[order], thetao[order]
    _check_values(path, thetao)
    return _dataset(path, times, plan, thetao)


def scan_glorys(path: PathArg, bbox=None) -> dict:
    """The file's times (dating rules of :func:`read_glorys`) and full lat/lon axes, after the
    same variable, units, depth-axis and grid checks, reading no thetao values.

    With ``bbox``, also reads the top level inside it (1/50 of the file) and checks its values as
    :func:`read_glorys` does, so a file in kelvin or without any valid value is rejected
    (``bad_units``, ``no_valid_data``) before a build gives its snapshot a place on the time axis.
    """
    box = as_bbox(bbox)
    with open_netcdf(path) as ds:
        var, time_dim, lat_dim, lon_dim, depth_order = _checked_header(ds, path)
        lat, lon = read_coord(ds, lat_dim, path), read_coord(ds, lon_dim, path)
        plan = plan_horizontal(lat, lon, None, path, shape=var.shape[-2:])
        times = np.sort(_times(ds, path, var, time_dim))
        if box is not None:
            top = _top_level(var, plan_horizontal(lat, lon, box, path), int(depth_order[0]), time_dim is not None)
    if box is not None:
        _check_values(path, top)
    return {"time": times, "lat": plan.lat, "lon": plan.lon}


def _top_level(var: netCDF4.Variable, plan: HorizontalPlan, level: int, has_time: bool) -> np.ndarray:
    """The shallowest level of every snapshot inside the plan, decoded (time, 1, lat, lon)."""
    r0, r1 = int(plan.rows.min()), int(plan.rows.max()) + 1
    c0, c1 = int(plan.cols.min()), int(plan.cols.max()) + 1
    raw = var[:, level, r0:r1, c0:c1] if has_time else var[level, r0:r1, c0:c1][np.newaxis]
    return decode_values(raw[:, np.newaxis], var_attrs(var), dtype=np.float32)


def _checked_header(ds: netCDF4.Dataset, path):
    """``thetao`` with its units, dims, depth axis and lat/lon checked: (var, time_dim, lat_dim,
    lon_dim, depth_order). Shared by :func:`read_glorys` and :func:`scan_glorys`."""
    require_product(ds, path, "glorys")
    var = require_var(ds, "thetao", path)
    _check_units(path, var)
    time_dim, depth_dim, lat_dim, lon_dim = _layout(path, var)
    depth_order = _depth_order(path, read_coord(ds, depth_dim, path))
    check_lat_lon_dims(path, ds, lat_dim, lon_dim)
    return var, time_dim, lat_dim, lon_dim, depth_order


def _check_units(path, var: netCDF4.Variable) -> None:
    units = var_attrs(var).get("units")
    if unit_kind(units) != "celsius":
        raise InputError(path, "bad_units", f"thetao has units {units!r}; degrees_C expected")


def _layout(path, var: netCDF4.Variable) -> tuple[str | None, str, str, str]:
    dims = var.dimensions
    if len(dims) == 4:
        return dims
    if len(dims) == 3 and dims[0] in DEPTH_DIMS:
        return (None, *dims)
    raise InputError(path, "bad_grid", f"thetao has dims {dims}; expected (time, depth, latitude, longitude)")


def _depth_order(path, depth: np.ndarray) -> np.ndarray:
    """Index order that makes the file's depth axis ascending, once it is checked against GLORYS_DEPTHS."""
    order = np.argsort(depth, kind="stable")
    ok = depth.size == GLORYS_DEPTHS.size and np.allclose(depth[order], GLORYS_DEPTHS, rtol=DEPTH_RTOL, atol=0)
    if not ok:
        shown = f"{depth.size} levels" + (f" {depth.min():.3f}..{depth.max():.3f} m" if depth.size else "")
        raise InputError(path, "bad_depth_axis", f"depth has {shown}; the 50 GLORYS levels "
                                                 f"{GLORYS_DEPTHS[0]:.3f}..{GLORYS_DEPTHS[-1]:.3f} m expected")
    return order


def _frequency(path, ds: netCDF4.Dataset, var: netCDF4.Variable, time_var) -> str:
    """'monthly', 'daily' or 'instant' (keep times as they are), from the name, then attributes."""
    name = path_name(path)
    if MONTHLY_NAME.search(name):
        return "monthly"
    if DAILY_NAME.search(name):
        return "daily"
    gattrs = global_attrs(ds)
    texts = [attr_text(gattrs.get(k)) for k in ("frequency", "time_frequency", "title", "id", "dataset_id", "dataset")]
    texts.append(attr_text(var_attrs(var).get("cell_methods")))
    if time_var is not None:
        texts += [attr_text(var_attrs(time_var).get(k)) for k in ("frequency", "long_name")]
    if any(MONTHLY_WORDS.search(t) for t in texts):
        return "monthly"
    if any(DAILY_WORDS.search(t) for t in texts):
        return "daily"
    return "instant"


def _name_date(path) -> tuple[np.datetime64 | None, str]:
    name = path_name(path)
    for pattern, unit in ((MONTHLY_NAME, "M"), (DAILY_NAME, "D")):
        m = pattern.search(name)
        if m:
            return date_from_digits(path, m.group(1)).astype(f"datetime64[{unit}]"), unit
    return None, ""


def _times(ds: netCDF4.Dataset, path, var: netCDF4.Variable, time_dim: str | None) -> np.ndarray:
    time_var = optional_var(ds, time_dim) if time_dim else None
    freq = _frequency(path, ds, var, time_var)
    name_date, unit = _name_date(path)
    n = var.shape[0] if time_dim else 1
    if time_var is None:
        if name_date is None or n != 1:
            raise InputError(path, "bad_time", "no time variable and no _YYYYMM[DD].nc date in the file name")
        times = np.array([name_date.astype("datetime64[ns]")])
    else:
        times = time_from_var(time_var, path)
        if times.size != n:
            raise InputError(path, "bad_time", f"time has {times.size} values for {n} thetao fields")
    if name_date is not None and times[0].astype(f"datetime64[{unit}]") != name_date:
        raise InputError(path, "bad_time", f"time variable says {times[0]}, file name says {name_date}")
    if freq == "monthly":
        times = times.astype("datetime64[M]").astype("datetime64[D]") + np.timedelta64(14, "D")
    elif freq == "daily":
        times = times.astype("datetime64[D]")
    times = times.astype("datetime64[ns]")
    check_unique_times(path, times)
    return times


def _check_values(path, thetao: np.ndarray) -> None:
    if np.isnan(thetao).all():
        raise InputError(path, "no_valid_data", "thetao has no valid value in the region read")
    lo, hi = float(np.nanmin(thetao)), float(np.nanmax(thetao))
    if lo < THETAO_RANGE_C[0] or hi > THETAO_RANGE_C[1]:
        hint = " (they look like kelvin)" if lo > 200 else ""
        raise InputError(path, "bad_units", f"thetao values span {lo:.2f}..{hi:.2f}{hint}; degrees_C within "
                                            f"{THETAO_RANGE_C[0]:.0f}..{THETAO_RANGE_C[1]:.0f} expected")


def _dataset(path, times, plan: HorizontalPlan, thetao) -> xr.Dataset:
    return xr.Dataset(
        {"thetao": (("time", "depth", "lat", "lon"), thetao,
                    {"units": "degrees_C", "standard_name": "sea_water_potential_temperature"})},
        coords={
            "time": ("time", times),
            "depth": ("depth", GLORYS_DEPTHS.copy(), {"units": "m", "positive": "down", "standard_name": "depth"}),
            "lat": ("lat", plan.lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", plan.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"product": "glorys", "source_file": str(path)},
    )
