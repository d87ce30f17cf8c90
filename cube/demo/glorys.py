"""Synthetic GLORYS12 (GLOBAL_MULTIYEAR_PHY_001_030, MERCATOR GLORYS12V1) thetao files.

``thetao(time=1, depth=50, latitude, longitude)`` int16 packed like the real product (scale
0.000732444226741791, offset 21, fill -32767, degrees_C, ``sea_water_potential_temperature``), on
the real 1/12 deg lattice (``latitude = -80 + k/12``, ``longitude = -180 + k/12``, float32,
ascending) cut to the region plus one node on each side (so a cube cell at the region's edge can
still be interpolated), with the 50 ``cube.constants.GLORYS_DEPTHS`` levels (``depth`` float32,
attributes as in the real sample). Fill over land and at levels at or below the seabed.
``time`` is float32 hours since 1950-01-01 (as in the real sample). NetCDF-4, zlib.

* Daily means (the reference "weekly" setup: one every ``glorys_step_days``):
  ``mercatorglorys12v1_gl12_mean_YYYYMMDD_RYYYYMMDD.nc``, R = the following Wednesday (the weekly
  production run); time = 12:00 of the day. The truth is taken at 12:00: it changes on scales of
  weeks, so this equals its daily mean to ~1e-3 K.
* Monthly means: ``mercatorglorys12v1_gl12_mean_YYYYMM.nc``, the mean of the 12:00 truth over every
  day of the month, dated at mid-month (the month's start plus half its length).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cube.constants import GLORYS_DEPTHS
from cube.demo.ncio import atomic_dataset, new_variable, set_attrs, spec_attrs, yyyymmdd
from cube.demo.truth import GLORYS_STEP, TruthOcean, days_since_1950

SCALE = 0.000732444226741791
OFFSET = 21.0
FILL = np.int16(-32767)


def daily_file_name(day: np.datetime64) -> str:
    """Daily-mean file name with its run date R (the first Wednesday after the day)."""
    day = np.datetime64(day, "D")
    weekday = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    run = day + np.timedelta64(int((2 - weekday - 1) % 7 + 1), "D")
    return f"mercatorglorys12v1_gl12_mean_{yyyymmdd(day)}_R{yyyymmdd(run)}.nc"


def monthly_file_name(month: np.datetime64) -> str:
    """Monthly-mean file name."""
    return f"mercatorglorys12v1_gl12_mean_{str(np.datetime64(month, 'M')).replace('-', '')}.nc"


def lattice_axes(region) -> tuple[np.ndarray, np.ndarray]:
    """GLORYS node latitudes/longitudes covering the region plus one node per side, inside the globe."""
    lat_min, lat_max, lon_min, lon_max = region
    k = np.arange(int(np.floor((lat_min + 80.0) * 12)) - 1, int(np.ceil((lat_max + 80.0) * 12)) + 2)
    m = np.arange(int(np.floor((lon_min + 180.0) * 12)) - 1, int(np.ceil((lon_max + 180.0) * 12)) + 2)
    k = k[(k >= 0) & (k <= 170 * 12)]
    m = m[(m >= 0) & (m < 360 * 12)]
    return ((-80.0 + k / 12.0).astype(np.float32).astype(np.float64),
            (-180.0 + m / 12.0).astype(np.float32).astype(np.float64))


class GlorysWriter:
    """Writes the GLORYS files of one spec (grid, land and seabed computed once)."""

    def __init__(self, truth: TruthOcean, spec):
        self.truth, self.spec = truth, spec
        self.lat, self.lon = lattice_axes(spec.region)
        static = truth.static
        rows = np.round((self.lat - static.lat0) / GLORYS_STEP).astype(int)
        cols = np.round((self.lon - static.lon0) / GLORYS_STEP).astype(int)
        seabed = static.seabed_m[np.ix_(rows, cols)]
        land = static.land[np.ix_(rows, cols)]
        #: (depth, lat, lon) True where thetao is defined: ocean, and the level is above the seabed.
        self.valid = (GLORYS_DEPTHS[:, None, None] < seabed[None]) & ~land[None]
        self.coast_km = static.coast_km[np.ix_(rows, cols)]

    def _field(self, day: np.datetime64) -> np.ndarray:
        noon = np.datetime64(day, "D") + np.timedelta64(12, "h")
        return self.truth.temperature_grid(self.lat, self.lon, GLORYS_DEPTHS, days_since_1950(noon), self.coast_km)

    def write_daily(self, outdir: Path, day: np.datetime64) -> Path:
        """Daily-mean snapshot of ``day``."""
        noon = np.datetime64(day, "D") + np.timedelta64(12, "h")
        path = Path(outdir) / daily_file_name(day)
        self._write(path, self._field(day), noon, "Daily mean fields", yyyymmdd(day))
        return path

    def write_monthly(self, outdir: Path, month: np.datetime64) -> Path:
        """Monthly mean of ``month`` (mean of the daily truth over every day of the month)."""
        first = np.datetime64(month, "M").astype("datetime64[D]")
        days = np.arange(first, (np.datetime64(month, "M") + np.timedelta64(1, "M")).astype("datetime64[D]"))
        mean = sum(self._field(d) for d in days) / len(days)
        mid = first.astype("datetime64[s]") + np.timedelta64(int(len(days) * 12), "h")
        path = Path(outdir) / monthly_file_name(month)
        self._write(path, mean, mid, "Monthly mean fields", str(np.datetime64(month, "M")))
        return path

    def _write(self, path: Path, temp_c: np.ndarray, when: np.datetime64, kind: str, label: str) -> None:
        packed = np.where(self.valid, np.round((temp_c - OFFSET) / SCALE), FILL).astype(np.int16)
        hours = (np.datetime64(when, "s") - np.datetime64("1950-01-01T00:00:00")) / np.timedelta64(1, "h")
        with atomic_dataset(path, "NETCDF4") as ds:
            self._write_axes(ds, hours)
            attrs = {"cell_methods": "area: mean", "long_name": "Temperature",
                     "standard_name": "sea_water_potential_temperature", "unit_long": "Degrees Celsius",
                     "units": "degrees_C", "scale_factor": SCALE, "add_offset": OFFSET,
                     "valid_min": np.int16(-32767), "valid_max": np.int16(22600)}
            v = new_variable(ds, "thetao", "i2", ("time", "depth", "latitude", "longitude"), attrs,
                             fill_value=FILL, compression="zlib", complevel=1, shuffle=True,
                             chunksizes=(1, 1, self.lat.size, self.lon.size))
            v[0] = packed
            set_attrs(ds, self._global_attrs(kind, label))

    def _write_axes(self, ds, hours: float) -> None:
        for name, size in (("time", 1), ("depth", GLORYS_DEPTHS.size), ("latitude", self.lat.size),
                           ("longitude", self.lon.size)):
            ds.createDimension(name, size)
        depth = new_variable(ds, "depth", "f4", ("depth",), {
            "axis": "Z", "long_name": "Depth", "positive": "down", "standard_name": "depth", "unit_long": "Meters",
            "units": "m", "valid_min": GLORYS_DEPTHS[0], "valid_max": GLORYS_DEPTHS[-1]})
        depth[:] = GLORYS_DEPTHS
        for name, values, units, unit_long, axis in (("latitude", self.lat, "degrees_north", "Degrees North", "Y"),
                                                     ("longitude", self.lon, "degrees_east", "Degrees East", "X")):
            vals = values.astype(np.float32)
            v = new_variable(ds, name, "f4", (name,), {
                "axis": axis, "long_name": name.capitalize(), "standard_name": name, "step": np.float64(GLORYS_STEP),
                "unit_long": unit_long, "units": units, "valid_min": vals.min(), "valid_max": vals.max()})
            v[:] = vals
        time = new_variable(ds, "time", "f4", ("time",), {
            "axis": "T", "long_name": "Time (hours since 1950-01-01)", "standard_name": "time",
            "units": "hours since 1950-01-01", "calendar": "gregorian",
            "valid_min": np.int64(hours), "valid_max": np.int64(hours)})
        time[:] = np.float32(hours)

    def _global_attrs(self, kind: str, label: str) -> dict:
        lat_min, lat_max, lon_min, lon_max = self.spec.region
        return {
            "Conventions": "CF-1.6", "area": "GLOBAL", "contact": "servicedesk.cmems@mercator-ocean.eu",
            "credit": "E.U. Copernicus Marine Service Information (CMEMS)", "institution": "Mercator Ocean",
            "licence": "http://marine.copernicus.eu/services-portfolio/service-commitments-and-licence/",
            "producer": "CMEMS - Global Monitoring and Forecasting Centre", "product": "GLOBAL_MULTIYEAR_PHY_001_030",
            "product_user_manual": "http://marine.copernicus.eu/documents/PUM/CMEMS-GLO-PUM-001-030.pdf",
            "references": "http://marine.copernicus.eu", "source": "MERCATOR GLORYS12V1",
            "title": f"{kind} for product GLOBAL_MULTIYEAR_PHY_001_030 ({label})",
            "history": "Created by the depthcube demo generator: SYNTHETIC data",
            "geospatial_lat_min": float(lat_min), "geospatial_lat_max": float(lat_max),
            "geospatial_lon_min": float(lon_min), "geospatial_lon_max": float(lon_max),
            **spec_attrs(self.spec),
        }
