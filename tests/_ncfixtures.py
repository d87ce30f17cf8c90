"""Writers of small synthetic NetCDF files in the real products' on-disk formats (REFERENCE.md 1).

Each writer takes physical values (kelvin / degC / metres, NaN = missing) and packs them the way
the product does, so tests can compare a reader's output with the analytic values they started
from. ``fmt`` is any netCDF4 format ('NETCDF4', 'NETCDF3_CLASSIC', ...). ``copy_netcdf`` copies a
file (e.g. a real sample) with variables dropped or edited, optionally into another format.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import netCDF4
import numpy as np

from cube.constants import GLORYS_DEPTHS

OSTIA_FLAGS = {"water": 1, "land": 2, "optional_lake_surface": 4, "sea_ice": 8, "optional_river_surface": 16}
GLORYS_SCALE, GLORYS_OFFSET, GLORYS_FILL = 0.000732444, 21.0, -32767
PROFILE_FILL = 99999.0


def ostia_name(day: str = "20170101") -> str:
    return f"{day}120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc"


def _pack(values: np.ndarray, scale: float, offset: float, fill: int, dtype) -> np.ndarray:
    packed = np.round((np.nan_to_num(values, nan=offset) - offset) / scale)
    return np.where(np.isnan(values), fill, packed).astype(dtype)


def _coord(ds, name: str, values, attrs: dict, dtype="f4") -> None:
    ds.createDimension(name, len(values))
    var = ds.createVariable(name, dtype, (name,))
    var.setncatts(attrs)
    var[:] = values


def write_ostia(path, sst_k, lat, lon, *, seconds: int = 1136116800, mask=None, sea_ice=None, units="kelvin",
                time_dim: bool = True, fmt: str = "NETCDF4", omit: tuple[str, ...] = ()) -> Path:
    """OSTIA L4 file: ``analysed_sst`` int16 (scale 0.01, offset 273.15, fill -32768) from kelvin values.

    ``sst_k`` is (lat, lon) or (time, lat, lon); ``mask`` int (lat, lon) flags with
    ``flag_masks``/``flag_meanings`` as OSTIA's; ``sea_ice`` a (lat, lon) fraction.
    """
    sst_k = np.asarray(sst_k, dtype=np.float64)
    sst_k = sst_k[np.newaxis] if sst_k.ndim == 2 else sst_k
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.setncatts({"Conventions": "CF-1.4", "title": "synthetic OSTIA L4", "gds_version_id": "2.0"})
        dims = ("time", "lat", "lon") if time_dim else ("lat", "lon")
        if time_dim:
            _coord(ds, "time", seconds + 86400 * np.arange(sst_k.shape[0]),
                   {"units": "seconds since 1981-01-01 00:00:00", "calendar": "Gregorian", "standard_name": "time"}, "i4")
        _coord(ds, "lat", lat, {"units": "degrees_north", "standard_name": "latitude"})
        _coord(ds, "lon", lon, {"units": "degrees_east", "standard_name": "longitude"})
        field = sst_k if time_dim else sst_k[0]
        if "analysed_sst" not in omit:
            var = ds.createVariable("analysed_sst", "i2", dims, fill_value=np.int16(-32768))
            var.setncatts({"units": units, "scale_factor": np.float32(0.01), "add_offset": np.float32(273.15),
                           "standard_name": "sea_surface_foundation_temperature"})
            var.set_auto_maskandscale(False)
            var[:] = _pack(field, 0.01, 273.15, -32768, np.int16)
        if mask is not None:
            var = ds.createVariable("mask", "i1", dims, fill_value=np.int8(-128))
            var.setncatts({"flag_masks": np.array(list(OSTIA_FLAGS.values()), dtype=np.int8),
                           "flag_meanings": " ".join(OSTIA_FLAGS)})
            var[:] = np.broadcast_to(mask, field.shape).astype(np.int8)
        if sea_ice is not None:
            var = ds.createVariable("sea_ice_fraction", "i1", dims, fill_value=np.int8(-128))
            var.setncatts({"scale_factor": np.float32(0.01), "add_offset": np.float32(0.0), "units": "1"})
            var.set_auto_maskandscale(False)
            var[:] = np.broadcast_to(_pack(np.asarray(sea_ice, float), 0.01, 0.0, -128, np.int8), field.shape)
    return Path(path)


def write_glorys(path, thetao_c, lat, lon, hours, *, depth=GLORYS_DEPTHS, units="degrees_C", packed: bool = True,
                 fmt: str = "NETCDF4", global_attrs: dict | None = None, omit: tuple[str, ...] = ()) -> Path:
    """GLORYS12 file: ``thetao(time, depth, latitude, longitude)`` from degC values (NaN = land/seabed).

    Packed as the reanalysis (int16, scale 0.000732444, offset 21, fill -32767) or float32 with the
    GLO12 fill 9.96921e36. ``hours`` are hours since 1950-01-01.
    """
    thetao_c = np.asarray(thetao_c, dtype=np.float64)
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.setncatts({"Conventions": "CF-1.6", "source": "MERCATOR GLORYS12V1", **(global_attrs or {})})
        _coord(ds, "time", np.asarray(hours, dtype=np.float64), {"units": "hours since 1950-01-01", "calendar": "gregorian"}, "f8")
        _coord(ds, "depth", depth, {"units": "m", "positive": "down", "standard_name": "depth"})
        _coord(ds, "latitude", lat, {"units": "degrees_north", "standard_name": "latitude"})
        _coord(ds, "longitude", lon, {"units": "degrees_east", "standard_name": "longitude"})
        if "thetao" in omit:
            return Path(path)
        dims = ("time", "depth", "latitude", "longitude")
        if packed:
            var = ds.createVariable("thetao", "i2", dims, fill_value=np.int16(GLORYS_FILL))
            var.setncatts({"scale_factor": np.float32(GLORYS_SCALE), "add_offset": np.float32(GLORYS_OFFSET)})
            var.set_auto_maskandscale(False)
            var[:] = _pack(thetao_c, GLORYS_SCALE, GLORYS_OFFSET, GLORYS_FILL, np.int16)
        else:
            var = ds.createVariable("thetao", "f4", dims, fill_value=np.float32(9.96921e36))
            var[:] = np.where(np.isnan(thetao_c), 9.96921e36, thetao_c).astype(np.float32)
        var.setncatts({"units": units, "standard_name": "sea_water_potential_temperature", "cell_methods": "area: mean"})
    return Path(path)


def _chars(values, shape) -> np.ndarray:
    arr = np.asarray(values, dtype="U1") if not np.isscalar(values) else np.full(shape, values, dtype="U1")
    return np.broadcast_to(arr, shape).astype("S1")


def write_en4(path, *, juld, lat, lon, depth, potm, temp=None, juld_qc="1", position_qc="1", profile_potm_qc="1",
              deph_qc="1", potm_qc="1", fmt: str = "NETCDF4", omit: tuple[str, ...] = ()) -> Path:
    """EN4.2.2 profile file (N_PROF x N_LEVELS) from physical values; NaN is written as the 99999 fill.

    QC arguments are a single char for all, or arrays of chars of the profile/level shape.
    """
    depth = np.asarray(depth, dtype=np.float64)
    n_prof, n_lev = depth.shape
    floats = {"JULD": ("f8", ("N_PROF",), juld, {"units": "days since 1950-01-01 00:00:00 utc"}),
              "LATITUDE": ("f8", ("N_PROF",), lat, {"units": "degree_north"}),
              "LONGITUDE": ("f8", ("N_PROF",), lon, {"units": "degree_east"}),
              "DEPH_CORRECTED": ("f4", ("N_PROF", "N_LEVELS"), depth, {"units": "meter"}),
              "POTM_CORRECTED": ("f4", ("N_PROF", "N_LEVELS"), potm, {"units": "degree_Celsius"})}
    if temp is not None:
        floats["TEMP"] = ("f4", ("N_PROF", "N_LEVELS"), temp, {"units": "degree_Celsius"})
    chars = {"JULD_QC": (("N_PROF",), juld_qc), "POSITION_QC": (("N_PROF",), position_qc),
             "PROFILE_POTM_QC": (("N_PROF",), profile_potm_qc),
             "DEPH_CORRECTED_QC": (("N_PROF", "N_LEVELS"), deph_qc),
             "POTM_CORRECTED_QC": (("N_PROF", "N_LEVELS"), potm_qc)}
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.setncatts({"title": "synthetic EN4.2.2 profiles", "Conventions": "CF-1.0"})
        ds.createDimension("N_PROF", n_prof)
        ds.createDimension("N_LEVELS", n_lev)
        for name, (dtype, dims, values, attrs) in floats.items():
            if name in omit:
                continue
            var = ds.createVariable(name, dtype, dims, fill_value=PROFILE_FILL)
            var.setncatts(attrs)
            var.set_auto_maskandscale(False)
            var[:] = np.where(np.isnan(np.asarray(values, float)), PROFILE_FILL, values)
        for name, (dims, values) in chars.items():
            if name in omit:
                continue
            var = ds.createVariable(name, "S1", dims, fill_value=b" ")
            var[:] = _chars(values, tuple(len(ds.dimensions[d]) for d in dims))
    return Path(path)


def copy_netcdf(src, dst, *, drop: tuple[str, ...] = (), edit: Callable[[str, np.ndarray], np.ndarray] | None = None,
                fmt: str | None = None, rows: np.ndarray | None = None) -> Path:
    """Copy ``src`` to ``dst`` raw (no decoding), without ``drop``, passing each array through ``edit``;
    with ``rows``, only (and in that order) those profiles of the ``N_PROF`` dimension."""
    with netCDF4.Dataset(src) as s:
        s.set_auto_maskandscale(False)
        s.set_auto_chartostring(False)
        with netCDF4.Dataset(dst, "w", format=fmt or s.data_model) as d:
            d.setncatts({k: s.getncattr(k) for k in s.ncattrs()})
            for name, dim in s.dimensions.items():
                size = len(rows) if rows is not None and name == "N_PROF" else len(dim)
                d.createDimension(name, None if dim.isunlimited() else size)
            for name, var in s.variables.items():
                if name in drop:
                    continue
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                out = d.createVariable(name, var.dtype, var.dimensions, fill_value=attrs.pop("_FillValue", None))
                out.setncatts(attrs)
                out.set_auto_maskandscale(False)
                out.set_auto_chartostring(False)
                data = var[...]
                if rows is not None and var.dimensions[:1] == ("N_PROF",):
                    data = data[rows]
                out[...] = edit(name, data.copy()) if edit else data
    return Path(dst)


#: Fixed-length char dimensions of the Argo GDAC format (user manual 3.1, section 2.2).
ARGO_STRING_DIMS = {"DATE_TIME": 14, "STRING2": 2, "STRING4": 4, "STRING8": 8, "STRING16": 16, "STRING32": 32,
                    "STRING64": 64, "STRING256": 256}


def _argo_text(values, width: int) -> np.ndarray:
    """Strings as a blank-padded (len(values), width) ``S1`` array, as GDAC files store text."""
    return np.array([list(str(v)[:width].ljust(width)) for v in values], dtype="S1").reshape(len(values), width)


def write_argo_profiles(path, profiles: list[dict], *, wmo: str = "6901234", cycle: int = 1,
                        data_type: str = "Argo profile") -> Path:
    """An Argo GDAC profile file (format 3.1 layout of the real D5900446_001.nc / 13857_prof.nc).

    NetCDF-3 classic, ``N_PROF x N_LEVELS`` with the STRINGnn/DATE_TIME char dimensions, blank
    padded text, 99999/999999 fills and the real files' attributes. Each profile is a dict with
    ``scheme`` (VERTICAL_SAMPLING_SCHEME), ``pres`` and ``temp`` (levels; shorter profiles are
    padded with fills), optional ``psal``, ``juld`` (days since 1950-01-01), ``lat``, ``lon``,
    ``data_mode`` ('R'; 'A'/'D' also fill ``*_ADJUSTED`` with the same values) and ``qc`` ('1').
    """
    n_prof, n_lev = len(profiles), max(len(p["pres"]) for p in profiles)
    params = ["PRES", "TEMP"] + (["PSAL"] if any("psal" in p for p in profiles) else [])

    def levels(key):
        out = np.full((n_prof, n_lev), PROFILE_FILL, dtype=np.float32)
        for i, p in enumerate(profiles):
            if key in p:
                out[i, :len(p[key])] = p[key]
        return out

    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.setncatts({"title": "Argo float vertical profile", "institution": "AOML", "source": "Argo float",
                      "user_manual_version": "3.1", "Conventions": "Argo-3.1 CF-1.6",
                      "featureType": "trajectoryProfile"})
        for name, size in {**ARGO_STRING_DIMS, "N_PROF": n_prof, "N_PARAM": len(params), "N_LEVELS": n_lev,
                           "N_CALIB": 1}.items():
            ds.createDimension(name, size)
        ds.createDimension("N_HISTORY", None)

        def text(name, dims, values, **attrs):
            var = ds.createVariable(name, "S1", dims, fill_value=b" ")
            var.setncatts(attrs)
            var[:] = values
            return var

        def number(name, dtype, dims, values, fill, **attrs):
            var = ds.createVariable(name, dtype, dims, fill_value=fill)
            var.setncatts(attrs)
            var.set_auto_maskandscale(False)
            var[:] = values

        text("DATA_TYPE", ("STRING16",), _argo_text([data_type], 16)[0], conventions="Argo reference table 1")
        text("FORMAT_VERSION", ("STRING4",), _argo_text(["3.1"], 4)[0])
        text("REFERENCE_DATE_TIME", ("DATE_TIME",), _argo_text(["19500101000000"], 14)[0])
        text("PLATFORM_NUMBER", ("N_PROF", "STRING8"), _argo_text([wmo] * n_prof, 8))
        text("STATION_PARAMETERS", ("N_PROF", "N_PARAM", "STRING16"),
             np.stack([_argo_text(params, 16)] * n_prof))
        number("CYCLE_NUMBER", "i4", ("N_PROF",), np.full(n_prof, cycle), np.int32(99999))
        text("DIRECTION", ("N_PROF",), np.array(["A"] * n_prof, dtype="S1"))
        text("DATA_MODE", ("N_PROF",), np.array([p.get("data_mode", "R") for p in profiles], dtype="S1"))
        number("JULD", "f8", ("N_PROF",), [p["juld"] for p in profiles], 999999.0,
               standard_name="time", units="days since 1950-01-01 00:00:00 UTC", axis="T")
        text("JULD_QC", ("N_PROF",), np.array(["1"] * n_prof, dtype="S1"))
        number("LATITUDE", "f8", ("N_PROF",), [p["lat"] for p in profiles], 99999.0, units="degree_north")
        number("LONGITUDE", "f8", ("N_PROF",), [p["lon"] for p in profiles], 99999.0, units="degree_east")
        text("POSITION_QC", ("N_PROF",), np.array(["1"] * n_prof, dtype="S1"))
        text("PROFILE_TEMP_QC", ("N_PROF",), np.array(["A"] * n_prof, dtype="S1"))
        text("VERTICAL_SAMPLING_SCHEME", ("N_PROF", "STRING256"), _argo_text([p["scheme"] for p in profiles], 256),
             long_name="Vertical sampling scheme", conventions="Argo reference table 16")
        units = {"PRES": "decibar", "TEMP": "degree_Celsius", "PSAL": "psu"}
        for name in params:
            values = levels(name.lower())
            qc = np.where(values == PROFILE_FILL, b" ", np.array([[p.get("qc", "1")] for p in profiles], dtype="S1"))
            adjusted = np.array([[p.get("data_mode", "R") in "AD"] for p in profiles])
            for suffix, vals, flags in (("", values, qc), ("_ADJUSTED", np.where(adjusted, values, PROFILE_FILL),
                                                           np.where(adjusted, qc, b" "))):
                number(name + suffix, "f4", ("N_PROF", "N_LEVELS"), vals, np.float32(PROFILE_FILL), units=units[name])
                text(f"{name}{suffix}_QC", ("N_PROF", "N_LEVELS"), flags.astype("S1"),
                     conventions="Argo reference table 2")
    return Path(path)


# -- editing a copy of the demo products ------------------------------------------------------

def demo_copy(tiny_demo: Path, folder: Path) -> Path:
    shutil.copytree(tiny_demo, folder)
    return folder


def ostia(demo: Path, day: str, version: str = "fv02.0") -> Path:
    return demo / "ostia" / ostia_name(day).replace("fv02.0", version)


def edit(src: Path, dst: Path, **changes: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Copy ``src`` to ``dst`` (raw values) passing the named variables through their functions."""
    tmp = dst.with_suffix(".tmp")
    copy_netcdf(src, tmp, edit=lambda name, data: changes[name](data) if name in changes else data)
    tmp.replace(dst)
    return dst
