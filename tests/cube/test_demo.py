"""Demo raw products (cube.demo): real-product layout, physics, coherence between products, determinism.

Expectations come from the real samples in ../shared/data/real, from the product specifications
(REFERENCE.md 1) and from physics, never from the generator's own output.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from global_land_mask import globe

from cube.constants import GLORYS_DEPTHS
from cube.demo import DemoSpec, TruthOcean, write_demo
from cube.demo.truth import days_since_1950
from cube.grid import CubeGrid

REAL_OSTIA = "20170101120000-UKMO-L4_GHRSST-SSTfnd-OSTIAanom-GLOB-v02.0-fv02.0.nc"
REAL_GLORYS = "cmems_glo12_thetao_point_profile.nc"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GOOD = (b"1", b"2")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    spec = DemoSpec.preset("tiny")
    out = tmp_path_factory.mktemp("demo")
    return spec, out, write_demo(out, spec)


def _all_files(paths: dict) -> list[Path]:
    return [Path(p) for key in ("ostia", "glorys", "en4") for p in paths[key]]


def _raw(path) -> netCDF4.Dataset:
    ds = netCDF4.Dataset(path)
    ds.set_auto_maskandscale(False)
    return ds


def _en4(paths, month: str) -> Path:
    return next(Path(p) for p in paths["en4"] if p.endswith(f".{month}.nc"))


# ---- layout ----------------------------------------------------------------------------------------

def test_layout_names_follow_the_reference_parsers(demo):
    spec, out, paths = demo
    assert sorted(p.name for p in (out / "ostia").glob("*.nc")) == sorted(Path(p).name for p in paths["ostia"])
    assert [re.match(r"^(\d{8})\d{6}-", Path(p).name).group(1) for p in paths["ostia"]] == \
        [str(d).replace("-", "") for d in np.arange("2010-01-27", "2010-02-06", dtype="datetime64[D]")]
    assert all(Path(p).name.endswith("-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc") for p in paths["ostia"])
    # Daily GLORYS every 7 days from the start; the run date R is a Wednesday after the day.
    glorys = [re.search(r"_(\d{8})_R(\d{8})\.nc$", Path(p).name).groups() for p in paths["glorys"]]
    assert [g[0] for g in glorys] == ["20100127", "20100203"]
    for day, run in glorys:
        run_day = np.datetime64(f"{run[:4]}-{run[4:6]}-{run[6:]}")
        assert (run_day.astype(int) + 3) % 7 == 2 and run_day > np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:]}")
    assert [re.search(r"g10\.(\d{6})\.nc$", Path(p).name).group(1) for p in paths["en4"]] == ["201001", "201002"]
    assert not list(out.rglob("*.part"))


def test_every_file_opens_with_netcdf4_and_xarray(demo):
    _, _, paths = demo
    for path in _all_files(paths):
        with netCDF4.Dataset(path) as ds:
            assert ds.variables
            assert "SYNTHETIC" in ds.getncattr("depthcube_demo_note")
        with xr.open_dataset(path, decode_times=False) as ds:
            ds.load()


def test_tiny_and_small_presets_give_whole_tiles():
    tiny, small = DemoSpec.preset("tiny"), DemoSpec.preset("small")
    g = CubeGrid.from_bounds(*tiny.region, 0.1)
    assert (g.nlat // 16) * (g.nlon // 16) >= 2
    g = CubeGrid.from_bounds(*small.region, 0.1)
    assert (g.nlat // 128) * (g.nlon // 128) >= 6
    assert small.days.size >= 59 and len(tiny.months) == 2 and tiny.glorys_days.size == 2


# ---- OSTIA --------------------------------------------------------------------------------------------

def test_ostia_packing_equals_the_real_sample(demo, real_data):
    _, _, paths = demo
    with _raw(real_data / REAL_OSTIA) as real, _raw(paths["ostia"][0]) as ds:
        a, b = real["analysed_sst"], ds["analysed_sst"]
        assert b.dtype == a.dtype == np.int16
        assert b.dimensions == ("time", "lat", "lon")
        for attr in ("scale_factor", "add_offset", "_FillValue", "units", "standard_name", "valid_min", "valid_max"):
            assert np.asarray(b.getncattr(attr)).dtype == np.asarray(a.getncattr(attr)).dtype, attr
            assert b.getncattr(attr) == a.getncattr(attr), attr
        for name in ("lat", "lon"):
            assert ds[name].dtype == real[name].dtype == np.float32
        for attr in ("Conventions", "title", "summary", "id", "gds_version_id", "product_version", "date_created",
                     "start_time", "stop_time", "spatial_resolution", "southernmost_latitude", "westernmost_longitude"):
            assert attr in ds.ncattrs(), attr
        assert ds.data_model == "NETCDF4"


def test_ostia_variables_and_flags(demo):
    _, _, paths = demo
    with _raw(paths["ostia"][0]) as ds:
        assert ds["analysis_error"].dtype == np.int16 and ds["analysis_error"].scale_factor == np.float32(0.01)
        assert ds["analysis_error"].add_offset == 0 and ds["analysis_error"].units == "kelvin"
        assert ds["sea_ice_fraction"].dtype == np.int8 and ds["sea_ice_fraction"].scale_factor == np.float32(0.01)
        mask = ds["mask"]
        assert mask.dtype == np.int8
        assert list(mask.flag_masks) == [1, 2, 4, 8, 16]
        assert mask.flag_meanings == "water land optional_lake_surface sea_ice optional_river_surface"
        assert ds["time"].units == "seconds since 1981-01-01 00:00:00"
        # 2010-01-27 12:00 in seconds since 1981-01-01, by hand: 10618 days * 86400 + 43200.
        assert int(ds["time"][0]) == 10618 * 86400 + 43200


def test_ostia_decodes_to_kelvin_with_land_fill(demo):
    spec, _, paths = demo
    with xr.open_dataset(paths["ostia"][0]) as ds:
        lat, lon = ds.lat.values, ds.lon.values
        # Cell centres of the global 0.05 deg grid, consecutive and ascending, covering exactly the region.
        for centres, first in ((lat, -89.975), (lon, -179.975)):
            k = (centres.astype(np.float64) - first) / 0.05
            assert np.allclose(k, np.round(k), atol=1e-3) and np.all(np.diff(np.round(k)) == 1)
        assert lat[0] - 0.025 == pytest.approx(spec.region[0], abs=1e-4) and lat[-1] + 0.025 == pytest.approx(spec.region[1], abs=1e-4)
        assert lon[0] - 0.025 == pytest.approx(spec.region[2], abs=1e-4) and lon[-1] + 0.025 == pytest.approx(spec.region[3], abs=1e-4)
        assert ds.time.values[0] == np.datetime64("2010-01-27T12:00")
        sst = ds.analysed_sst.values[0]
        land = globe.is_land(*np.meshgrid(lat.astype(np.float64), lon.astype(np.float64), indexing="ij"))
        assert land.any() and (~land).any()
        assert np.array_equal(np.isnan(sst), land)
        # Bay of Biscay in January: 8-16 degC (plausible winter foundation SST).
        assert 273.15 + 8 < np.nanmin(sst) and np.nanmax(sst) < 273.15 + 16
        assert np.array_equal(ds["mask"].values[0] == 2, land)


# ---- GLORYS -------------------------------------------------------------------------------------------

def test_glorys_depth_axis_equals_the_real_sample(demo, real_data):
    _, _, paths = demo
    with _raw(real_data / REAL_GLORYS) as real, _raw(paths["glorys"][0]) as ds:
        assert ds["depth"].dtype == real["depth"].dtype == np.float32
        assert np.array_equal(ds["depth"][:], real["depth"][:])
        for attr in real["depth"].ncattrs():
            assert ds["depth"].getncattr(attr) == real["depth"].getncattr(attr), attr
        assert ds["thetao"].dimensions == real["thetao"].dimensions
        assert ds["thetao"].standard_name == real["thetao"].standard_name
        assert ds["thetao"].units == real["thetao"].units == "degrees_C"
        assert ds["time"].units == real["time"].units == "hours since 1950-01-01"


def test_glorys_packing_grid_and_time(demo):
    spec, _, paths = demo
    with _raw(paths["glorys"][0]) as ds:
        v = ds["thetao"]
        assert v.dtype == np.int16 and v._FillValue == -32767
        assert v.scale_factor == 0.000732444226741791 and v.add_offset == 21.0
        lat, lon = ds["latitude"][:].astype(np.float64), ds["longitude"][:].astype(np.float64)
        k, m = (lat + 80.0) * 12.0, (lon + 180.0) * 12.0
        assert np.allclose(k, np.round(k), atol=1e-3) and np.all(np.diff(np.round(k)) == 1)
        assert np.allclose(m, np.round(m), atol=1e-3) and np.all(np.diff(np.round(m)) == 1)
        lat_min, lat_max, lon_min, lon_max = spec.region
        assert lat[0] < lat_min and lat[-1] > lat_max and lon[0] < lon_min and lon[-1] > lon_max
        # 2010-01-27 12:00 = 21941.5 days after 1950-01-01.
        assert float(ds["time"][0]) == 21941.5 * 24


def test_glorys_values_land_and_seabed(demo):
    _, _, paths = demo
    with xr.open_dataset(paths["glorys"][0]) as ds:
        t = ds.thetao.values[0]
        lat, lon = np.meshgrid(ds.latitude.values.astype(float), ds.longitude.values.astype(float), indexing="ij")
    valid = np.isfinite(t)
    assert np.nanmin(t) >= -2 and np.nanmax(t) <= 32
    assert np.array_equal(~valid[0], globe.is_land(lat, lon))
    # Below the seabed is fill: valid levels form a prefix of each column, with shelf and deep columns.
    assert np.all(valid[1:] <= valid[:-1])
    bottom = valid.sum(axis=0)[valid[0]]
    assert bottom.min() <= 20 and bottom.max() >= 45 and np.unique(bottom).size >= 10
    # Physics: the deep ocean is colder than the surface, and abyssal water is 1-4 degC.
    assert np.nanmean(t[0]) - np.nanmean(t[40]) > 5
    assert 0.5 < np.nanmin(t[40:]) and np.nanmax(t[40:]) < 4.5


def test_glorys_monthly_means_are_dated_mid_month(tmp_path):
    spec = DemoSpec.preset("tiny", glorys_monthly=True, profiles_per_day=0)
    paths = write_demo(tmp_path, spec)
    assert [Path(p).name for p in paths["glorys"]] == ["mercatorglorys12v1_gl12_mean_201001.nc",
                                                      "mercatorglorys12v1_gl12_mean_201002.nc"]
    with xr.open_dataset(paths["glorys"][0]) as jan, xr.open_dataset(paths["glorys"][1]) as feb:
        assert jan.time.values[0] == np.datetime64("2010-01-16T12:00")  # 31 days / 2
        assert feb.time.values[0] == np.datetime64("2010-02-15T00:00")  # 28 days / 2
        assert np.nanmin(jan.thetao.values) >= -2 and np.nanmax(feb.thetao.values) <= 32
    assert paths["en4"] == []


# ---- EN4 ----------------------------------------------------------------------------------------------

def test_en4_formats_alternate_netcdf3_and_netcdf4(demo):
    _, _, paths = demo
    jan, feb = _en4(paths, "201001"), _en4(paths, "201002")
    with netCDF4.Dataset(jan) as a, netCDF4.Dataset(feb) as b:
        assert a.data_model == "NETCDF4" and b.data_model == "NETCDF3_CLASSIC"
    assert jan.read_bytes()[:8] == HDF5_MAGIC
    assert feb.read_bytes()[:4] == b"CDF\x01"  # classic NetCDF-3, not HDF5


@pytest.mark.parametrize("month", ["201001", "201002"])
def test_en4_schema_fill_and_qc(demo, month):
    _, _, paths = demo
    with _raw(_en4(paths, month)) as ds:
        assert ds.dimensions["N_LEVELS"].size == 400 and ds.dimensions["N_PROF"].size > 20
        assert ds["JULD"].dtype == np.float64 and ds["JULD"].units == "days since 1950-01-01 00:00:00 utc"
        for name in ("LATITUDE", "LONGITUDE"):
            assert ds[name].dtype == np.float64 and ds[name]._FillValue == 99999.0
        for name in ("DEPH_CORRECTED", "TEMP", "POTM_CORRECTED", "PSAL_CORRECTED"):
            assert ds[name].dtype == np.float32 and ds[name]._FillValue == np.float32(99999.0)
            assert ds[name].dimensions == ("N_PROF", "N_LEVELS")
        depth = ds["DEPH_CORRECTED"][:]
        present = depth != 99999.0
        assert (~present).any() and np.all(present[:, 0])
        for name in ("JULD_QC", "POSITION_QC", "PROFILE_POTM_QC", "PROFILE_DEPH_QC",
                     "POTM_CORRECTED_QC", "DEPH_CORRECTED_QC"):
            qc = ds[name][:]
            assert qc.dtype == np.dtype("S1"), name
            used = qc[present] if qc.ndim == 2 else qc
            assert set(np.unique(used)) <= {bytes([c]) for c in b"0123456789"}, name
        assert set(np.unique(ds["PSAL_CORRECTED_QC"][:][present])) <= {b" ", b"1"}
        for name in ("PLATFORM_NUMBER", "DATA_MODE", "WMO_INST_TYPE"):
            assert name in ds.variables
        # Every defect the readers must handle is there: fill and bad dates/positions, rejected profiles.
        assert np.any(ds["JULD"][:] == 99999.0) and np.any(ds["JULD_QC"][:] == b"4")
        assert np.any(ds["LATITUDE"][:] == 99999.0) and np.any(ds["POSITION_QC"][:] == b"4")
        assert np.any(ds["PROFILE_POTM_QC"][:] == b"4") and np.any(ds["POTM_CORRECTED_QC"][:] == b"4")
    with netCDF4.Dataset(_en4(paths, month)) as ds:  # default auto-masking hides the fill
        assert np.ma.count_masked(ds["POTM_CORRECTED"][:]) == int((~present).sum())
        assert np.ma.count_masked(ds["LATITUDE"][:]) >= 1


def _good_profiles(ds):
    """Arrays of the profiles a careful reader keeps: all profile-level QC good, position finite."""
    keep = (np.isin(ds["JULD_QC"][:], GOOD) & np.isin(ds["POSITION_QC"][:], GOOD)
            & np.isin(ds["PROFILE_POTM_QC"][:], GOOD) & (ds["LATITUDE"][:] != 99999.0))
    depth = np.where(ds["DEPH_CORRECTED"][:] == 99999.0, np.nan, ds["DEPH_CORRECTED"][:])[keep]
    level_ok = np.isin(ds["POTM_CORRECTED_QC"][:], GOOD)[keep]
    potm = np.where(level_ok, ds["POTM_CORRECTED"][:][keep], np.nan)
    temp = np.where(level_ok, ds["TEMP"][:][keep], np.nan)
    return ds["JULD"][:][keep], ds["LATITUDE"][:][keep], ds["LONGITUDE"][:][keep], depth, potm, temp


def test_en4_depth_coverage_and_physics(demo):
    _, _, paths = demo
    with _raw(_en4(paths, "201002")) as ds:
        juld, lat, lon, depth, potm, temp = _good_profiles(ds)
        wmo = ds["WMO_INST_TYPE"][:]
    assert np.all(np.diff(depth, axis=1)[np.isfinite(np.diff(depth, axis=1))] >= 0)
    top, bottom = np.nanmin(depth, axis=1), np.nanmax(depth, axis=1)
    n_levels = np.isfinite(depth).sum(axis=1)
    assert np.median(top) < 5 and top.max() < 10.5 and np.any(top > 4)
    assert np.any(bottom > 1800) and np.any((bottom > 400) & (bottom < 800))
    deep_ones = bottom > 1800  # Argo-like (and CTDs) in deep water: 70-400 levels
    assert n_levels.max() <= 400 and np.all(n_levels[deep_ones] >= 70)
    # Profiles are in the month and nearly all at sea in the region; a few carry good QC but sit on
    # land or just outside the region (position errors real archives have).
    assert np.all((juld >= 21946) & (juld < 21974))
    at_sea_inside = ~globe.is_land(lat, lon) & (lat >= 43.0) & (lat < 46.2) & (lon >= -5.6) & (lon < -0.8)
    assert at_sea_inside.mean() > 0.9 and not at_sea_inside.all()
    # Good values are plausible ocean temperatures; in-situ exceeds potential by the adiabatic
    # heating: ~0 at the surface, ~0.1-0.35 K at 2000 m.
    assert np.nanmin(potm) > -2 and np.nanmax(potm) < 32
    shallow, deep = depth < 20, (depth > 1800) & (depth < 2100)
    assert np.nanmax(np.abs(temp - potm)[shallow]) < 0.01
    assert 0.08 < np.nanmedian((temp - potm)[deep]) < 0.4
    codes = set(np.char.strip(netCDF4.chartostring(wmo)))
    assert codes & {"042", "052"} and codes & {"846", "851", "844"}  # XBTs and Argo floats


def test_en4_xarray_reads_both_formats(demo):
    _, _, paths = demo
    for p in paths["en4"]:
        with xr.open_dataset(p, decode_times=False) as ds:
            assert ds.sizes["N_LEVELS"] == 400
            assert float(ds.DEPH_CORRECTED.max()) < 6000 and ds.DEPH_CORRECTED.isnull().any()


# ---- coherence between products --------------------------------------------------------------------------

def test_ostia_and_glorys_surface_agree_closely_but_not_exactly(demo):
    _, _, paths = demo
    with xr.open_dataset(paths["ostia"][0]) as o, xr.open_dataset(paths["glorys"][0]) as g:
        assert o.time.values[0] == g.time.values[0]
        glorys0 = g.thetao.isel(time=0, depth=0)
        ostia = (o.analysed_sst.isel(time=0) - 273.15).sel(lat=glorys0.latitude, lon=glorys0.longitude, method="nearest")
        inside = ((glorys0.latitude > o.lat.min()) & (glorys0.latitude < o.lat.max())
                  & (glorys0.longitude > o.lon.min()) & (glorys0.longitude < o.lon.max()))
        diff = (ostia.values - glorys0.values)[inside.values]
    diff = diff[np.isfinite(diff)]
    assert diff.size > 500
    assert 0.02 < np.mean(np.abs(diff)) < 0.4
    assert abs(np.mean(diff)) < 0.1


def test_profiles_match_glorys_at_the_nearest_point_level_and_time(demo):
    _, _, paths = demo
    snaps = [xr.open_dataset(p) for p in paths["glorys"]]
    snap_days = np.array([float(s.time.values[0].astype("datetime64[s]").astype(np.int64)) / 86400 + 7305 for s in snaps])
    diffs = []
    for p in paths["en4"]:
        with _raw(p) as ds:
            juld, lat, lon, depth, potm, _ = _good_profiles(ds)
        for k in range(lat.size):
            snap = snaps[int(np.argmin(np.abs(snap_days - juld[k])))]
            column = snap.thetao.isel(time=0).sel(latitude=lat[k], longitude=lon[k], method="nearest").values
            ok = np.isfinite(column)
            if ok.sum() < 2:
                continue
            levels = np.isfinite(potm[k]) & (depth[k] <= GLORYS_DEPTHS[ok].max()) & (depth[k] >= GLORYS_DEPTHS[0])
            if levels.any():
                diffs.append(potm[k][levels] - np.interp(depth[k][levels], GLORYS_DEPTHS[ok], column[ok]))
    for s in snaps:
        s.close()
    diffs = np.abs(np.concatenate(diffs))
    assert diffs.size > 1000
    assert np.median(diffs) < 0.1 and np.percentile(diffs, 95) < 0.5


# ---- the truth itself ---------------------------------------------------------------------------------------

def test_truth_is_physically_plausible_everywhere():
    truth = TruthOcean(0, (43.0, 46.0, -5.0, -1.0))
    lat, lon = np.arange(-79.0, 89.0, 2.0), np.arange(-180.0, 180.0, 3.0)
    far = np.full((lat.size, lon.size), 1e4)
    for day in ("2010-02-01", "2010-08-20"):
        t = (np.datetime64(day) - np.datetime64("1950-01-01")).astype(float) + 0.5
        temp = truth.temperature_grid(lat, lon, GLORYS_DEPTHS, t, coast_km=far)
        assert temp.min() >= -2 and temp.max() <= 32
        zonal = temp[0].mean(axis=1)
        assert zonal[np.abs(lat) < 10].mean() > 25 and zonal[lat > 60].mean() < 10
        assert temp[40:].max() < 4.5  # below ~2000 m
    # Seasons: northern mid-latitudes are warmer in August than in February.
    feb, aug = (truth.temperature_grid(np.array([40.0]), lon, np.zeros(1), days_since_1950(np.datetime64(d)),
                                       coast_km=np.full((1, lon.size), 1e4))[0, 0].mean() for d in ("2010-02-15", "2010-08-25"))
    assert aug - feb > 4


def test_truth_grid_and_point_evaluations_agree():
    truth = TruthOcean(3, (30.0, 40.0, -30.0, -20.0))
    lat, lon = np.linspace(30.0, 40.0, 41), np.linspace(-30.0, -20.0, 37)
    t = 21941.5
    grid = truth.temperature_grid(lat, lon, GLORYS_DEPTHS, t)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, lat.size, 200), rng.integers(0, lon.size, 200)
    points, salt = truth.profiles(lat[i], lon[j], np.full(200, t), np.broadcast_to(GLORYS_DEPTHS, (200, 50)))
    assert np.allclose(points, grid[:, i, j].T, atol=1e-9)
    assert np.all((salt > 33) & (salt < 38))


# ---- determinism -------------------------------------------------------------------------------------------

def test_same_spec_gives_byte_identical_files(demo, tmp_path):
    spec, out, paths = demo
    time.sleep(1.1)  # HDF5 object timestamps, if any were written, have a resolution of 1 s
    again = write_demo(tmp_path, spec)
    for a, b in zip(_all_files(paths), _all_files(again)):
        assert a.name == b.name
        assert a.read_bytes() == b.read_bytes(), a.name


def test_a_different_seed_gives_different_values(demo, tmp_path):
    spec, _, paths = demo
    other = write_demo(tmp_path, DemoSpec.preset("tiny", seed=1))
    for key, var in (("ostia", "analysed_sst"), ("glorys", "thetao"), ("en4", "POTM_CORRECTED")):
        with netCDF4.Dataset(paths[key][0]) as a, netCDF4.Dataset(other[key][0]) as b:
            x, y = a[var][:], b[var][:]
            assert x.shape != y.shape or not np.ma.allclose(x, y), key


# ---- spec validation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(region=(46.0, 43.0, -5.0, -1.0)), "lat_min < lat_max"),
    (dict(region=(43.0, 46.0, 170.0, 190.0)), "dateline"),
    (dict(region=(-85.0, -82.0, 0.0, 4.0)), "-80"),
    (dict(region=(43.0, 46.0, -5.0)), "4"),
    (dict(region="Biscay"), "4 numbers"),
    (dict(start="2010-02-05", end="2010-01-27"), "before start"),
    (dict(start="27/01/2010"), "YYYY-MM-DD"),
    (dict(seed=-1), "seed"),
    (dict(glorys_step_days=0), "glorys_step_days"),
    (dict(profiles_per_day=-3.0), "profiles_per_day"),
    (dict(colour="blue"), "unknown DemoSpec field"),
])
def test_spec_validation_messages(kwargs, words):
    with pytest.raises(ValueError) as err:
        DemoSpec.preset("tiny", **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown demo preset 'huge'; choose one of: small, tiny"):
        DemoSpec.preset("huge")


def test_spec_round_trips_through_a_dict():
    spec = DemoSpec.preset("small", seed=5, glorys_step_days=3)
    assert DemoSpec.from_dict(spec.to_dict()) == spec
    assert spec.region == (30.0, 56.0, -40.0, 0.0) and spec.seed == 5


@pytest.mark.slow
def test_small_preset_writes_every_product(tmp_path):
    paths = write_demo(tmp_path, DemoSpec.preset("small"))
    assert len(paths["ostia"]) == 59 and len(paths["glorys"]) == 9 and len(paths["en4"]) == 2
    with xr.open_dataset(paths["ostia"][0]) as ds:
        assert ds.sizes["lat"] == 520 and ds.sizes["lon"] == 800
