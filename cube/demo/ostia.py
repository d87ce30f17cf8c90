"""Synthetic OSTIA L4 (GHRSST GDS 2.0, METOFFICE-GLO-SST-L4-REP-OBS-SST) daily files.

One file per day, ``YYYYMMDD120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc``, NetCDF-4
(zlib), on the global 0.05 deg grid (cell centres -89.975 + 0.05 k, -179.975 + 0.05 k, float32,
ascending) cut to the cells whose centres lie in the region. Layout and packing follow the real
product (and the shared real sample's ``analysed_sst`` attributes exactly):

* ``analysed_sst(time=1, lat, lon)`` int16, scale 0.01, offset 273.15, kelvin, fill -32768 over land:
  the truth at the surface plus OSTIA's own small-scale structure (four separable waves of
  0.3-1.2 deg, ~0.2 K rms, new each day), at least -1.8 degC;
* ``analysis_error`` int16 (scale 0.01, kelvin): larger near coasts;
* ``sea_ice_fraction`` int8 (scale 0.01): > 0 only where the SST is near freezing;
* ``mask`` int8 bit flags 1 water, 2 land, 8 sea ice (``flag_masks``/``flag_meanings``);
* ``time`` int32 seconds since 1981-01-01 at 12:00 of the day; GHRSST global attributes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cube.constants import CELSIUS_TO_KELVIN
from cube.demo.ncio import atomic_dataset, iso_compact, new_variable, set_attrs, spec_attrs, stable_uuid, yyyymmdd
from cube.demo.truth import TruthOcean, days_since_1950

RESOLUTION = 0.05
FILE_SUFFIX = "120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc"
EPOCH = np.datetime64("1981-01-01T00:00:00", "s")
SST_SCALE, SST_OFFSET, SST_FILL = np.float32(0.01), np.float32(273.15), np.int16(-32768)
ICE_FILL, MASK_FILL = np.int8(-128), np.int8(-128)
WATER, LAND, LAKE, ICE, RIVER = 1, 2, 4, 8, 16
MIN_SST_C = -1.8


def file_name(day: np.datetime64) -> str:
    """OSTIA REP file name of one day."""
    return yyyymmdd(day) + FILE_SUFFIX


def cell_centres(lo: float, hi: float, first: float) -> np.ndarray:
    """Centres ``first + 0.05 k`` of the global 0.05 deg cells whose centre lies in [lo, hi)."""
    k0 = int(np.ceil((lo - first) / RESOLUTION - 1e-9))
    k1 = int(np.ceil((hi - first) / RESOLUTION - 1e-9))
    # Rounded to float32 like the stored axes, so land and SST are computed where a reader places them.
    return (first + np.arange(k0, k1) * RESOLUTION).astype(np.float32).astype(np.float64)


class OstiaWriter:
    """Writes the daily OSTIA files of one spec (static fields computed once)."""

    def __init__(self, truth: TruthOcean, spec):
        self.truth, self.spec = truth, spec
        lat_min, lat_max, lon_min, lon_max = spec.region
        self.lat = cell_centres(lat_min, lat_max, -89.975)
        self.lon = cell_centres(lon_min, lon_max, -179.975)
        lat2, lon2 = np.meshgrid(self.lat, self.lon, indexing="ij")
        self.ocean = truth.is_ocean(lat2, lon2)
        self.coast_km = truth.coast_km(lat2, lon2)

    def write_day(self, outdir: Path, day: np.datetime64) -> Path:
        """Write the file of ``day`` into ``outdir`` and return its path."""
        path = Path(outdir) / file_name(day)
        rng = np.random.default_rng([self.spec.seed, 1, int(yyyymmdd(day))])
        noon = np.datetime64(day, "D") + np.timedelta64(12, "h")
        sst_c = self.truth.temperature_grid(self.lat, self.lon, np.zeros(1), days_since_1950(noon), self.coast_km)[0]
        sst_c = np.maximum(sst_c + self._small_scale(rng), MIN_SST_C)
        ice = np.clip((-1.2 - sst_c) / 0.6, 0.0, 1.0)
        error_k = 0.18 + 0.35 * np.exp(-self.coast_km / 25.0) + 0.05 * rng.random(sst_c.shape)
        with atomic_dataset(path, "NETCDF4") as ds:
            self._write_axes(ds, noon)
            self._write_fields(ds, sst_c, error_k, ice)
            set_attrs(ds, self._global_attrs(day))
        return path

    def _small_scale(self, rng: np.random.Generator) -> np.ndarray:
        """OSTIA's own structure: four separable waves (0.3-1.2 deg, 0.2 K each), new every day."""
        field = np.zeros((self.lat.size, self.lon.size))
        for wy, wx, py, px in rng.random((4, 4)):
            gy = np.sin(2 * np.pi * self.lat / (0.3 + 0.9 * wy) + 2 * np.pi * py)
            gx = np.sin(2 * np.pi * self.lon / (0.3 + 0.9 * wx) + 2 * np.pi * px)
            field += 0.2 * np.outer(gy, gx)
        return field

    def _write_axes(self, ds, noon: np.datetime64) -> None:
        ds.createDimension("time", 1)
        ds.createDimension("lat", self.lat.size)
        ds.createDimension("lon", self.lon.size)
        t = new_variable(ds, "time", "i4", ("time",), {
            "long_name": "reference time of sst field", "standard_name": "time", "axis": "T",
            "units": "seconds since 1981-01-01 00:00:00", "calendar": "gregorian"})
        t[:] = np.array([(noon - EPOCH) / np.timedelta64(1, "s")], dtype=np.int32)
        for name, values, std, units, axis, vmax in (("lat", self.lat, "latitude", "degrees_north", "Y", 90.0),
                                                      ("lon", self.lon, "longitude", "degrees_east", "X", 180.0)):
            v = new_variable(ds, name, "f4", (name,), {
                "long_name": std, "standard_name": std, "units": units, "axis": axis,
                "valid_min": np.float32(-vmax), "valid_max": np.float32(vmax),
                "reference_datum": "geographical coordinates, WGS84 projection",
                "comment": "geolocations inherited from the input data without correction"})
            v[:] = values.astype(np.float32)

    def _create(self, ds, name, dtype, fill, attrs):
        chunks = (1, min(self.lat.size, 1200), min(self.lon.size, 2400))
        return new_variable(ds, name, dtype, ("time", "lat", "lon"), attrs, fill_value=fill, compression="zlib",
                            complevel=4, shuffle=True, chunksizes=chunks)

    def _write_fields(self, ds, sst_c, error_k, ice) -> None:
        land = ~self.ocean
        sst = self._create(ds, "analysed_sst", "i2", SST_FILL, {
            "long_name": "analysed sea surface temperature", "standard_name": "sea_surface_foundation_temperature",
            "type": "foundation", "units": "kelvin", "scale_factor": SST_SCALE, "add_offset": SST_OFFSET,
            "valid_min": np.int16(-300), "valid_max": np.int16(4500),
            "source": "UKMO-L4HRfnd-GLOB-OSTIA (synthetic)", "comment": "OSTIA foundation SST"})
        sst[0] = _pack(sst_c + CELSIUS_TO_KELVIN - SST_OFFSET, SST_SCALE, land, SST_FILL, np.int16)
        error = self._create(ds, "analysis_error", "i2", SST_FILL, {
            "long_name": "estimated error standard deviation of analysed_sst", "units": "kelvin",
            "scale_factor": SST_SCALE, "add_offset": np.float32(0.0),
            "valid_min": np.int16(0), "valid_max": np.int16(32767), "comment": " "})
        error[0] = _pack(error_k, SST_SCALE, land, SST_FILL, np.int16)
        fraction = self._create(ds, "sea_ice_fraction", "i1", ICE_FILL, {
            "long_name": "sea ice area fraction", "standard_name": "sea_ice_area_fraction", "units": "1",
            "scale_factor": SST_SCALE, "add_offset": np.float32(0.0), "valid_min": np.int8(0),
            "valid_max": np.int8(100), "source": "EUMETSAT OSI-SAF (synthetic)", "comment": " "})
        fraction[0] = _pack(ice, SST_SCALE, land, ICE_FILL, np.int8)
        mask = self._create(ds, "mask", "i1", MASK_FILL, {
            "long_name": "land sea ice lake bit mask", "valid_min": np.int8(1), "valid_max": np.int8(31),
            "flag_masks": np.array([WATER, LAND, LAKE, ICE, RIVER], dtype=np.int8),
            "flag_meanings": "water land optional_lake_surface sea_ice optional_river_surface",
            "source": "global_land_mask (synthetic)",
            "comment": "Bit-wise composite mask: land/ open ocean/ sea ice"})
        mask[0] = np.where(land, LAND, WATER + ICE * (ice > 0)).astype(np.int8)

    def _global_attrs(self, day: np.datetime64) -> dict:
        day = np.datetime64(day, "D")
        lat_min, lat_max, lon_min, lon_max = self.spec.region
        start, stop = iso_compact(day), iso_compact(day + np.timedelta64(1, "D"))
        res = f"{RESOLUTION} degree"
        return {
            "Conventions": "CF-1.4, ACDD-1.3",
            "title": "Global SST & Sea Ice Analysis, L4 OSTIA, 0.05 deg daily (METOFFICE-GLO-SST-L4-REP-OBS-SST)",
            "summary": "A merged, multi-sensor L4 Foundation SST product",
            "references": "Donlon, C.J., Martin, M., Stark, J.D., Roberts-Jones, J., Fiedler, E., Wimmer, W., "
                          "2011. The Operational Sea Surface Temperature and Sea Ice Analysis (OSTIA). "
                          "Remote Sensing of the Environment",
            "institution": "UKMO", "history": "Created by the depthcube demo generator: SYNTHETIC data",
            "comment": "WARNING Some applications are unable to properly handle signed byte values. "
                       "If values are encountered > 127, please subtract 256 from this reported value",
            "license": "These data are available free of charge under the CMEMS data policy",
            "id": "METOFFICE-GLO-SST-L4-REP-OBS-SST", "naming_authority": "org.ghrsst", "product_version": "2.0",
            "uuid": stable_uuid("ostia", self.spec.seed, yyyymmdd(day), *self.spec.region),
            "gds_version_id": "2.0", "netcdf_version_id": "4.x",
            "date_created": iso_compact(day + np.timedelta64(2, "D")), "start_time": start, "time_coverage_start": start,
            "stop_time": stop, "time_coverage_end": stop, "file_quality_level": np.int32(3),
            "source": "UKMO-L4HRfnd-GLOB-OSTIA", "platform": "Aqua, Envisat, NOAA-18, NOAA-19, MetOpA, MSG1, SSMI, TRMM",
            "sensor": "AATSR, AMSR, AVHRR, AVHRR_GAC, SEVIRI, TMI",
            "metadata_conventions": "Unidata Observation Dataset v1.0",
            "keywords": "Oceans > Ocean Temperature > Sea Surface Temperature",
            "keywords_vocabulary": "NASA Global Change Master Directory (GCMD) Science Keywords",
            "standard_name_vocabulary": "NetCDF Climate and Forecast (CF) Metadata Convention",
            "westernmost_longitude": np.float32(lon_min), "easternmost_longitude": np.float32(lon_max),
            "southernmost_latitude": np.float32(lat_min), "northernmost_latitude": np.float32(lat_max),
            "geospatial_lat_min": np.float32(lat_min), "geospatial_lat_max": np.float32(lat_max),
            "geospatial_lon_min": np.float32(lon_min), "geospatial_lon_max": np.float32(lon_max),
            "spatial_resolution": res, "geospatial_lat_units": "degrees_north", "geospatial_lat_resolution": res,
            "geospatial_lon_units": "degrees_east", "geospatial_lon_resolution": res,
            "acknowledgment": "Please acknowledge the use of these data with the following statement: "
                              "These data were provided by GHRSST, Met Office and CMEMS",
            "creator_name": "Met Office as part of CMEMS", "creator_email": "servicedesk.cmems@mercator-ocean.eu",
            "creator_url": "http://marine.copernicus.eu/", "project": "Group for High Resolution Sea Surface Temperature",
            "publisher_name": "GHRSST Project Office", "publisher_url": "http://www.ghrsst.org",
            "publisher_email": "ghrsst-po@nceo.ac.uk", "processing_level": "L4", "cdm_data_type": "grid",
            **spec_attrs(self.spec),
        }


def _pack(values: np.ndarray, scale, land: np.ndarray, fill, dtype) -> np.ndarray:
    """Round ``values / scale`` to the integer type, with ``fill`` over land."""
    return np.where(land, fill, np.round(values / scale)).astype(dtype)
