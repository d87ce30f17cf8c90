"""OSTIA L4 (GHRSST) daily SST: ``YYYYMMDD120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB[_REP]-v02.0-fv02.0.nc``.

Quirks handled here (REFERENCE.md 1.1, data/real/PROVENANCE.md): ``analysed_sst`` int16 packed
(scale 0.01, offset 273.15 K, fill -32768); longitudes 0..360 in some files (rolled to
[-180, 180)); descending latitudes; no ``mask`` variable in some files (land is then where the SST
is missing); a ``time`` dimension that may be absent (the date then comes from the file name).
"""

from __future__ import annotations

import re

import netCDF4
import numpy as np
import xarray as xr

from cube.errors import InputError
from cube.readers.cf import check_unique_times, date_from_digits, decode_values, fill_mask, time_from_var, unit_kind
from cube.readers.horizontal import (Bbox, HorizontalPlan, as_bbox, check_lat_lon_dims, plan_horizontal, read_coord,
                                     read_horizontal)
from cube.readers.netcdf import PathArg, attr_text, open_netcdf, optional_var, path_name, require_var, var_attrs
from cube.readers.products import require_product

#: ``YYYYMMDDhhmmss-`` at the start of a GHRSST file name.
NAME_DATE = re.compile(r"^(\d{8})(\d{6})-")
#: Plausible foundation SST in kelvin (sea ice ~271 K, warmest pools ~307 K).
SST_RANGE_K = (250.0, 320.0)
LAND_FLAG = "land"


def read_ostia(path: PathArg, bbox=None) -> xr.Dataset:
    """Read one OSTIA L4 file into ``analysed_sst(time, lat, lon)`` float32 kelvin and ``land(lat, lon)``.

    Promises: lat ascending, lon in [-180, 180) ascending, time datetime64[ns] from the CF time
    variable (its day must equal the ``YYYYMMDD`` of the file name when the name has one, else
    ``bad_time``; without a time variable the name's timestamp is used). NaN where the SST is
    missing. ``land`` is the bit named 'land' of ``mask`` (``flag_masks``/``flag_meanings``, bit
    test on the raw flags, never interpolated), or where the SST is missing at every time when the
    file has no ``mask``. ``sea_ice_fraction`` (float32, 0..1) is included when present.
    ``bbox=(lat_min, lat_max, lon_min, lon_max)`` reads only that region plus one source cell of
    margin, also across the file's longitude seam. Raises InputError: ``missing_variable``,
    ``bad_units`` (not kelvin, or values outside 250..320 K), ``bad_grid``, ``bad_time``,
    ``duplicate_time``, ``no_valid_data`` (a day with no valid SST in the region), ``unreadable``.
    """
    box = as_bbox(bbox)
    with open_netcdf(path) as ds:
        sst_var, plan, times, has_time = _checked_header(ds, path, box)
        sst = _read_field(sst_var, plan, has_time)
        land = _land(ds, path, plan, sst)
        ice = _sea_ice(ds, plan, sst_var)
    _check_values(path, sst, box)
    return _dataset(path, times, plan, sst, land, ice)


def scan_ostia(path: PathArg) -> dict:
    """Metadata only (no SST read): the file's times and full lat/lon axes, checked as in
    :func:`read_ostia` (variable, units, layout, grid, time vs name). For planning a build."""
    with open_netcdf(path) as ds:
        _, plan, times, _ = _checked_header(ds, path, None)
    return {"time": times, "lat": plan.lat, "lon": plan.lon}


def _checked_header(ds: netCDF4.Dataset, path, box):
    """``analysed_sst`` with units, layout, grid and times checked: (var, read plan for ``box``,
    times, has_time). Shared by :func:`read_ostia` and :func:`scan_ostia`."""
    require_product(ds, path, "ostia")
    sst_var = require_var(ds, "analysed_sst", path)
    _check_sst_units(path, sst_var)
    lat_dim, lon_dim, has_time = _layout(path, sst_var)
    check_lat_lon_dims(path, ds, lat_dim, lon_dim)
    plan = plan_horizontal(read_coord(ds, lat_dim, path), read_coord(ds, lon_dim, path), box, path,
                           shape=sst_var.shape[-2:])
    return sst_var, plan, _times(ds, path, sst_var, has_time), has_time


def _check_sst_units(path, var: netCDF4.Variable) -> None:
    units = var_attrs(var).get("units")
    kind = unit_kind(units)
    # Missing units are left to the 250..320 K range check, which also catches degC values.
    if kind not in ("kelvin", ""):
        raise InputError(path, "bad_units", f"analysed_sst has units {units!r}; kelvin expected")


def _layout(path, var: netCDF4.Variable) -> tuple[str, str, bool]:
    dims = var.dimensions
    if len(dims) not in (2, 3):
        raise InputError(path, "bad_grid", f"analysed_sst has dims {dims}; expected (time, lat, lon) or (lat, lon)")
    return dims[-2], dims[-1], len(dims) == 3


def _name_timestamp(path) -> np.datetime64 | None:
    m = NAME_DATE.match(path_name(path))
    if not m:
        return None
    day = date_from_digits(path, m.group(1))
    hh, mm, ss = int(m.group(2)[:2]), int(m.group(2)[2:4]), int(m.group(2)[4:])
    return (day + np.timedelta64(hh * 3600 + mm * 60 + ss, "s")).astype("datetime64[ns]")


def _times(ds: netCDF4.Dataset, path, var: netCDF4.Variable, has_time: bool) -> np.ndarray:
    name_time = _name_timestamp(path)
    time_var = optional_var(ds, var.dimensions[0]) if has_time else None
    if time_var is None:
        n = var.shape[0] if has_time else 1
        if name_time is None or n != 1:
            raise InputError(path, "bad_time", "no time variable and no YYYYMMDDhhmmss- date in the file name")
        return np.array([name_time])
    times = time_from_var(time_var, path)
    if times.size != (var.shape[0] if has_time else 1):
        raise InputError(path, "bad_time", f"time has {times.size} values for {var.shape[0]} SST fields")
    check_unique_times(path, times)
    if name_time is not None and times[0].astype("datetime64[D]") != name_time.astype("datetime64[D]"):
        raise InputError(path, "bad_time", f"time variable says {times[0]}, file name says {name_time.astype('datetime64[D]')}")
    return times


def _read_field(var: netCDF4.Variable, plan: HorizontalPlan, has_time: bool) -> np.ndarray:
    values = decode_values(read_horizontal(var, plan), var_attrs(var), dtype=np.float32)
    return values if has_time else values[np.newaxis]


def _sea_ice(ds: netCDF4.Dataset, plan: HorizontalPlan, sst_var: netCDF4.Variable) -> np.ndarray | None:
    ice_var = optional_var(ds, "sea_ice_fraction")
    if ice_var is None or ice_var.dimensions != sst_var.dimensions:
        return None  # absent, or on a layout we cannot align with the SST: leave it out
    return _read_field(ice_var, plan, len(ice_var.dimensions) == 3)


def _flag_bit(path, attrs: dict, name: str) -> tuple[str, int]:
    """('mask', bit) from flag_masks or ('value', v) from flag_values for the flag called ``name``."""
    meanings = attr_text(attrs.get("flag_meanings")).split()
    for key, kind in (("flag_masks", "mask"), ("flag_values", "value")):
        if key in attrs and name in meanings:
            values = np.atleast_1d(attrs[key]).ravel()
            if values.size != len(meanings):
                raise InputError(path, "bad_mask", f"mask has {len(meanings)} flag_meanings but {values.size} {key}")
            return kind, int(values[meanings.index(name)])
    raise InputError(path, "bad_mask", f"mask has no flag named {name!r} (flag_meanings: {meanings})")


def _land(ds: netCDF4.Dataset, path, plan: HorizontalPlan, sst: np.ndarray) -> np.ndarray:
    mask_var = optional_var(ds, "mask")
    if mask_var is None:
        return np.isnan(sst).all(axis=0)
    attrs = var_attrs(mask_var)
    kind, flag = _flag_bit(path, attrs, LAND_FLAG)
    raw = np.asarray(read_horizontal(mask_var, plan))
    raw = raw.reshape((-1,) + raw.shape[-2:])[0]  # static: the first time step
    flags = raw.astype(np.int64) & 0xFF if raw.dtype.itemsize == 1 else raw.astype(np.int64)
    land = (flags & flag) != 0 if kind == "mask" else flags == flag
    return land & ~fill_mask(raw, attrs)


def _check_values(path, sst: np.ndarray, box: Bbox | None) -> None:
    empty = np.isnan(sst).all(axis=(1, 2))
    if empty.any():
        where = f" inside bbox {box}" if box is not None else ""
        raise InputError(path, "no_valid_data", f"{int(empty.sum())} of {len(empty)} days have no valid SST{where}")
    lo, hi = float(np.nanmin(sst)), float(np.nanmax(sst))
    if lo < SST_RANGE_K[0] or hi > SST_RANGE_K[1]:
        hint = " (they look like degrees Celsius)" if hi < 100 else ""
        raise InputError(path, "bad_units", f"analysed_sst values span {lo:.2f}..{hi:.2f}{hint}; "
                                            f"kelvin within {SST_RANGE_K[0]:.0f}..{SST_RANGE_K[1]:.0f} expected")


def _dataset(path, times, plan: HorizontalPlan, sst, land, ice) -> xr.Dataset:
    data = {
        "analysed_sst": (("time", "lat", "lon"), sst,
                         {"units": "kelvin", "standard_name": "sea_surface_foundation_temperature",
                          "long_name": "analysed sea surface temperature"}),
        "land": (("lat", "lon"), land, {"long_name": "land (OSTIA mask flag 'land', or SST always missing)"}),
    }
    if ice is not None:
        data["sea_ice_fraction"] = (("time", "lat", "lon"), ice, {"units": "1", "standard_name": "sea_ice_area_fraction"})
    coords = {
        "time": ("time", times.astype("datetime64[ns]")),
        "lat": ("lat", plan.lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", plan.lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    return xr.Dataset(data, coords=coords, attrs={"product": "ostia", "source_file": str(path)})
