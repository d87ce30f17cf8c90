"""Tests of cube.readers: a conformance suite every product reader passes, then each product's quirks.

Expectations come from analytic fields written by tests/_ncfixtures.py, from hand computation,
or from the real samples in ../shared/data/real read independently with netCDF4 and gsw.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import gsw
import netCDF4
import numpy as np
import pytest
import xarray as xr

from _ncfixtures import copy_netcdf, ostia_name, write_argo_profiles, write_en4, write_glorys, write_ostia
from cube.constants import GLORYS_DEPTHS
from cube.errors import ConfigError, InputError
from cube.profiles import ProfileTable
from cube.readers import detect_product, open_product, read_argo, read_en4, read_glorys, read_ostia
from cube.readers.horizontal import Bbox, plan_horizontal, read_horizontal

from conftest import REAL_DATA as REAL  # noqa: E402  (tests using it take the real_data fixture)
OSTIA_REAL = REAL / "20170101120000-UKMO-L4_GHRSST-SSTfnd-OSTIAanom-GLOB-v02.0-fv02.0.nc"
ARGO_MULTI = REAL / "13857_prof.nc"
ARGO_SINGLE = REAL / "D5900446_001.nc"
GLO12_REAL = REAL / "cmems_glo12_thetao_point_profile.nc"
needs_real = pytest.mark.usefixtures("real_data")


def raw(path, name):
    """A variable read independently of the readers: netCDF4, no decoding."""
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        ds.set_auto_chartostring(False)
        return ds[name][...]


def data_model(path):
    with netCDF4.Dataset(path) as ds:
        return ds.data_model


def chars(path, name):
    return np.char.decode(raw(path, name).astype("S1"), "ascii")


def assert_same(a, b):
    """Two reader results hold the same values (NaN == NaN); the source path may differ."""
    if isinstance(a, xr.Dataset):
        xr.testing.assert_equal(a, b)
        return
    assert isinstance(a, ProfileTable) and isinstance(b, ProfileTable)
    for name in ("time", "lat", "lon", "depth", "temp"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.rejected == b.rejected and a.levels_rejected == b.levels_rejected


# ----------------------------------------------------------------------------------------------
# Analytic synthetic products
# ----------------------------------------------------------------------------------------------

def sst_field(lat, lon):
    """Kelvin SST with distinct values in every cell (so a roll or flip is caught)."""
    lat, lon = np.meshgrid(np.asarray(lat, float), np.asarray(lon, float), indexing="ij")
    return 273.15 + 12 + 10 * np.cos(np.deg2rad(lat)) + 3 * np.sin(np.deg2rad(lon)) + 0.01 * lat


def thetao_field(lat, lon, n_time=1):
    """degC potential temperature decaying with depth; NaN below a seabed that deepens eastward."""
    z = GLORYS_DEPTHS.astype(float)[:, None, None]
    la, lo = np.meshgrid(np.asarray(lat, float), np.asarray(lon, float), indexing="ij")
    t = 2 + 20 * np.exp(-z / 400) + 0.1 * la + 0.01 * lo
    bottom = 30 + 5 * np.arange(lo.shape[1])[None, :]  # valid levels per column
    t = np.where(np.arange(50)[:, None, None] < np.broadcast_to(bottom, la.shape)[None], t, np.nan)
    t[:, 0, 0] = np.nan  # one land column
    return np.stack([t + 0.5 * k for k in range(n_time)])


GLAT = np.array([-1.0, -0.5, 0.0, 0.5])
GLON = np.array([10.0, 10.5, 11.0])


def en4_profiles():
    """Nine EN4 profiles, each exercising one rule; see test_en4_profile_rules for the expectations."""
    n, L = 9, 6
    depth = np.tile([4.0, 10.0, 50.0, 200.0, 1000.0, 2000.0], (n, 1))
    potm = np.tile([20.0, 18.0, 12.0, 6.0, 0.0, -0.5], (n, 1))  # 0 degC at 1000 m is real data
    juld = np.full(n, 21940.25)
    lat = np.linspace(-30, 30, n)
    lon = np.linspace(-150, 170, n)
    juld[1] = np.nan                       # 1: JULD fill -> bad_time
    lat[2] = lon[2] = np.nan               # 2: position fill -> bad_position
    profile_qc = np.array(list("111411111"))  # 3: PROFILE_POTM_QC 4 -> profile_qc
    potm_qc = np.full((n, L), "1")
    potm_qc[4, [1, 3]] = "4"               # 4: two temperature levels rejected
    deph_qc = np.full((n, L), "1")
    deph_qc[4, 5] = "4"                    # 4: one depth level rejected
    potm_qc[5, :] = "4"                    # 5: every level rejected -> no_valid_levels
    juld[6] = 21945.9                      # 6: 2010-01-31 21:36 UTC (month boundary next day)
    lon[6] = 190.0                         # 6: east of the dateline, wraps to -170
    juld_qc = np.array(list("1111111 1"))  # 7: blank JULD_QC = not checked -> accepted
    juld_qc[8] = "4"                       # 8: JULD_QC 4 -> time_qc
    potm[0, 2] = np.nan                    # 0: one missing value (fill) -> not a QC rejection
    return dict(juld=juld, lat=lat, lon=lon, depth=depth, potm=potm, temp=potm + 0.1, juld_qc=juld_qc,
                profile_potm_qc=profile_qc, potm_qc=potm_qc, deph_qc=deph_qc)


# ----------------------------------------------------------------------------------------------
# Conformance suite: every reader opens, decodes and rejects bad input the same way
# ----------------------------------------------------------------------------------------------

class ReaderConformance:
    """Subclasses set ``kind``, ``essential`` and implement ``write_valid(tmp_path) -> Path``."""

    kind: str
    essential: str

    @staticmethod
    def read(path):
        raise NotImplementedError

    def write_valid(self, tmp_path: Path) -> Path:
        raise NotImplementedError

    def expect_unreadable(self, path):
        with pytest.raises(InputError) as info:
            self.read(path)
        assert info.value.reason == "unreadable"
        assert Path(path).name in str(info.value)

    def test_reads_and_normalises(self, tmp_path):
        result = self.read(self.write_valid(tmp_path))
        if isinstance(result, xr.Dataset):
            lat, lon = result["lat"].values, result["lon"].values
            assert (np.diff(lat) > 0).all() and (np.diff(lon) > 0).all()
            assert result["time"].dtype == np.dtype("datetime64[ns]")
        else:
            assert len(result) > 0 and result.time.dtype == np.dtype("datetime64[s]")
            lon = result.lon
            assert result.depth.dtype == result.temp.dtype == np.float32
        assert ((lon >= -180) & (lon < 180)).all()

    def test_detect_and_dispatch(self, tmp_path):
        path = self.write_valid(tmp_path)
        assert detect_product(path) == self.kind
        assert_same(open_product(path), self.read(path))

    def test_netcdf3_and_netcdf4_read_the_same(self, tmp_path):
        path = self.write_valid(tmp_path)
        other = "NETCDF3_64BIT_OFFSET" if data_model(path) == "NETCDF4" else "NETCDF4"
        (tmp_path / "copy").mkdir()
        copy = copy_netcdf(path, tmp_path / "copy" / path.name, fmt=other)
        assert data_model(copy) == other
        assert_same(self.read(path), self.read(copy))

    def test_fsspec_url_reads_the_same(self, tmp_path):
        path = self.write_valid(tmp_path)
        url = f"memory://conformance-{self.kind}/{path.name}"
        fsspec.filesystem("memory").pipe(url, path.read_bytes())
        assert_same(self.read(url), self.read(path))

    def test_zero_byte_file(self, tmp_path):
        path = self.write_valid(tmp_path)
        path.write_bytes(b"")
        self.expect_unreadable(path)

    def test_truncated_file(self, tmp_path):
        path = self.write_valid(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        self.expect_unreadable(path)

    def test_non_netcdf_bytes(self, tmp_path):
        path = self.write_valid(tmp_path)
        path.write_bytes(b"<html><body>503 Service Unavailable</body></html>\n" * 20)
        self.expect_unreadable(path)

    def test_missing_file(self, tmp_path):
        self.expect_unreadable(tmp_path / self.write_valid(tmp_path).name.replace(".nc", "_absent.nc"))

    def test_missing_variable(self, tmp_path):
        path = self.write_valid(tmp_path)
        (tmp_path / "drop").mkdir()
        broken = copy_netcdf(path, tmp_path / "drop" / path.name, drop=(self.essential,))
        with pytest.raises(InputError) as info:
            self.read(broken)
        assert info.value.reason == "missing_variable" and self.essential in str(info.value)
        # One short line: the variable and a count, never the file's whole variable list.
        detail = info.value.detail
        assert "\n" not in detail and len(detail) < 120, detail
        assert f"among the file's {len(netCDF4.Dataset(broken).variables)} variables" in detail


class TestOstiaConformance(ReaderConformance):
    kind, essential = "ostia", "analysed_sst"
    read = staticmethod(read_ostia)

    def write_valid(self, tmp_path):
        lat, lon = np.arange(-4.5, 5), np.arange(0.5, 360, 5.0)
        return write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon, fmt="NETCDF3_CLASSIC")


class TestGlorysConformance(ReaderConformance):
    kind, essential = "glorys", "thetao"
    read = staticmethod(read_glorys)

    def write_valid(self, tmp_path):
        return write_glorys(tmp_path / "mercatorglorys12v1_gl12_mean_20230105_R20230111.nc",
                            thetao_field(GLAT, GLON), GLAT, GLON, [640008.0])


class TestEn4Conformance(ReaderConformance):
    kind, essential = "en4", "POTM_CORRECTED"
    read = staticmethod(read_en4)

    def write_valid(self, tmp_path):
        return write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **en4_profiles())


@needs_real
class TestArgoConformance(ReaderConformance):
    kind, essential = "argo", "TEMP"
    read = staticmethod(read_argo)

    def write_valid(self, tmp_path):
        return copy_netcdf(ARGO_SINGLE, tmp_path / ARGO_SINGLE.name)


# ----------------------------------------------------------------------------------------------
# OSTIA
# ----------------------------------------------------------------------------------------------

@needs_real
def test_ostia_real_sample_rolled_to_minus180_180():
    ds = read_ostia(OSTIA_REAL)
    lon, sst = ds["lon"].values, ds["analysed_sst"].values
    assert lon[0] == -179.875 and lon[-1] == 179.875 and (np.diff(lon) == 0.25).all()
    assert (np.diff(ds["lat"].values) > 0).all()
    assert ds["time"].values[0] == np.datetime64("2017-01-01T12:00")
    assert 270 < np.nanmin(sst) and np.nanmax(sst) < 310
    np.testing.assert_array_equal(ds["land"].values, np.isnan(sst[0]))  # no mask variable: land = missing
    # A known ocean point (0.125 N, 29.875 W) is 330.125 E in the file: decode the int16 by hand.
    file_lat, file_lon = raw(OSTIA_REAL, "lat"), raw(OSTIA_REAL, "lon")
    i, j = np.flatnonzero(file_lat == 0.125)[0], np.flatnonzero(file_lon == 330.125)[0]
    packed = int(raw(OSTIA_REAL, "analysed_sst")[0, i, j])
    assert packed != -32768
    got = ds["analysed_sst"].sel(lat=0.125, lon=-29.875).item()
    assert got == pytest.approx(packed * 0.01 + 273.15, abs=1e-4)


@needs_real
def test_ostia_real_bbox_across_the_files_seam_equals_the_full_read():
    full = read_ostia(OSTIA_REAL)
    part = read_ostia(OSTIA_REAL, bbox=(40.0, 50.0, -5.0, 5.0))
    lon = part["lon"].values
    # 0..360 file: -5..5 E spans its seam; one 0.25-degree cell of margin on each side.
    assert lon[0] == -5.125 and lon[-1] == 5.125 and (np.diff(lon) == 0.25).all()
    assert part["lat"].values[0] == 39.875 and part["lat"].values[-1] == 50.125
    xr.testing.assert_equal(part, full.sel(lat=part["lat"], lon=part["lon"]))


def test_ostia_mask_flags_give_land_by_bit_test(tmp_path):
    lat, lon = np.array([-1.0, 0.0, 1.0]), np.array([-10.0, 0.0, 10.0])
    sst = sst_field(lat, lon)
    flags = np.array([[1, 2, 1], [2 | 8, 1 | 8, 4], [1, 1, 2 | 4]])  # land bit (2) alone or with others
    sst[1, 1] = np.nan  # missing over water: not land
    path = write_ostia(tmp_path / ostia_name(), sst, lat, lon, mask=flags, sea_ice=np.full((3, 3), 0.4))
    ds = read_ostia(path)
    np.testing.assert_array_equal(ds["land"].values, (flags & 2) != 0)
    np.testing.assert_allclose(ds["analysed_sst"].values[0], sst, atol=0.005)
    np.testing.assert_allclose(ds["sea_ice_fraction"].values, 0.4, atol=1e-6)
    assert ds["sea_ice_fraction"].dtype == np.float32


def test_ostia_0_360_and_minus180_180_files_read_equal(tmp_path):
    lat = np.arange(-2.0, 3.0)
    lon360 = np.arange(0.5, 360, 1.0)
    lon180 = np.arange(-179.5, 180, 1.0)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = read_ostia(write_ostia(tmp_path / "a" / ostia_name(), sst_field(lat, lon360), lat, lon360))
    b = read_ostia(write_ostia(tmp_path / "b" / ostia_name(), sst_field(lat, lon180), lat, lon180))
    xr.testing.assert_equal(a, b)
    np.testing.assert_allclose(a["analysed_sst"].values[0], sst_field(lat, lon180), atol=0.005)


def test_ostia_descending_latitudes_read_ascending(tmp_path):
    lat, lon = np.array([2.0, 1.0, 0.0, -1.0]), np.array([5.0, 6.0])
    ds = read_ostia(write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon))
    np.testing.assert_array_equal(ds["lat"].values, lat[::-1])
    np.testing.assert_allclose(ds["analysed_sst"].values[0], sst_field(lat, lon)[::-1], atol=0.005)


def test_ostia_bbox_across_the_dateline(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.arange(-179.5, 180, 1.0)
    ds = read_ostia(write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon), bbox=(0, 1, 178, -178))
    # 178..182 E plus one cell: centres 177.5..179.5 and -179.5..-177.5, ascending in [-180, 180).
    np.testing.assert_array_equal(ds["lon"].values, [-179.5, -178.5, -177.5, 177.5, 178.5, 179.5])
    np.testing.assert_allclose(ds["analysed_sst"].values[0], sst_field(lat, ds["lon"].values), atol=0.005)


def test_read_horizontal_reads_only_the_planned_slab():
    class Recorder:
        """Stands in for a netCDF4 variable over a 0..360 grid and records what is read."""

        def __init__(self, data):
            self.data, self.reads = data, []

        def __getitem__(self, key):
            self.reads.append(key)
            return self.data[key]

    lat, lon = np.arange(-89.5, 90), np.arange(0.5, 360)
    data = np.arange(lat.size * lon.size).reshape(1, lat.size, lon.size)
    plan = plan_horizontal(lat, lon, Bbox(10, 20, -10, 10), "grid.nc")
    var = Recorder(data)
    out = read_horizontal(var, plan)
    cells = sum((k[-2].stop - k[-2].start) * (k[-1].stop - k[-1].start) for k in var.reads)
    # 10..20 N and 10 W..10 E plus one cell: rows 9.5..20.5 N, columns 349.5..359.5 E then 0.5..10.5 E.
    assert len(var.reads) == 2 and cells == out.shape[-1] * out.shape[-2] == 12 * 22
    expected_cols = np.concatenate([np.arange(349, 360), np.arange(0, 11)])
    np.testing.assert_array_equal(out[0], data[0][np.ix_(np.arange(99, 111), expected_cols)])
    np.testing.assert_array_equal(plan.lon, np.arange(-10.5, 11))


def test_ostia_rejects_celsius(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    path = write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon, units="degC")
    with pytest.raises(InputError, match="kelvin expected") as info:
        read_ostia(path)
    assert info.value.reason == "bad_units"


def test_ostia_rejects_celsius_values_labelled_kelvin(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    path = write_ostia(tmp_path / ostia_name(), sst_field(lat, lon) - 273.15, lat, lon)  # ~25 "K"
    with pytest.raises(InputError, match="degrees Celsius") as info:
        read_ostia(path)
    assert info.value.reason == "bad_units"


def test_ostia_time_must_match_the_file_name(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    path = write_ostia(tmp_path / ostia_name("20170102"), sst_field(lat, lon), lat, lon)  # time says 2017-01-01
    with pytest.raises(InputError) as info:
        read_ostia(path)
    assert info.value.reason == "bad_time"


def test_ostia_without_time_dimension_takes_the_name_date(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    ds = read_ostia(write_ostia(tmp_path / ostia_name("20200229"), sst_field(lat, lon), lat, lon, time_dim=False))
    np.testing.assert_array_equal(ds["time"].values, [np.datetime64("2020-02-29T12:00", "ns")])


def test_ostia_all_missing_day_has_no_valid_data(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    path = write_ostia(tmp_path / ostia_name(), np.full((2, 2), np.nan), lat, lon)
    with pytest.raises(InputError) as info:
        read_ostia(path)
    assert info.value.reason == "no_valid_data"


def test_ostia_repeated_longitudes_are_a_bad_grid(tmp_path):
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 180.0, 360.0])
    path = write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon)
    with pytest.raises(InputError) as info:
        read_ostia(path)
    assert info.value.reason == "bad_grid"


def test_bbox_is_validated():
    with pytest.raises(ConfigError):
        Bbox(10, 5, 0, 1)
    with pytest.raises(ConfigError):
        read_ostia("unused.nc", bbox=(0, 1, 2))


# ----------------------------------------------------------------------------------------------
# GLORYS / GLO12
# ----------------------------------------------------------------------------------------------

@needs_real
def test_glo12_real_file_reads_as_glorys():
    assert detect_product(GLO12_REAL) == "glorys"
    ds = read_glorys(GLO12_REAL)
    thetao = ds["thetao"].values
    assert thetao.shape == (5, 50, 1, 1) and thetao.dtype == np.float32
    np.testing.assert_array_equal(ds["depth"].values, GLORYS_DEPTHS)
    np.testing.assert_allclose(raw(GLO12_REAL, "depth"), ds["depth"].values, rtol=1e-6)
    assert np.isnan(thetao[:, 48:]).all() and np.isfinite(thetao[:, :48]).all()  # bottom two levels empty
    # hours since 1950-01-01: 639912 h = 2023-01-01 00:00, then every 6 h (instantaneous fields).
    expected = np.datetime64("2023-01-01T00:00", "ns") + np.arange(5) * np.timedelta64(6, "h")
    np.testing.assert_array_equal(ds["time"].values, expected)
    np.testing.assert_array_equal(thetao[:, :48, 0, 0], raw(GLO12_REAL, "thetao")[:, :48, 0, 0])


def test_glorys_monthly_file_is_dated_the_15th(tmp_path):
    hours = (np.datetime64("2023-01-16T12:00") - np.datetime64("1950-01-01T00:00")) / np.timedelta64(1, "h")
    path = write_glorys(tmp_path / "mercatorglorys12v1_gl12_mean_202301.nc", thetao_field(GLAT, GLON), GLAT, GLON, [hours])
    ds = read_glorys(path)
    np.testing.assert_array_equal(ds["time"].values, [np.datetime64("2023-01-15T00:00", "ns")])


def test_glorys_monthly_from_attributes(tmp_path):
    hours = (np.datetime64("2023-03-01") - np.datetime64("1950-01-01")) / np.timedelta64(1, "h")
    path = write_glorys(tmp_path / "thetao_subset.nc", thetao_field(GLAT, GLON), GLAT, GLON, [hours],
                        global_attrs={"title": "Monthly mean fields for product GLOBAL_MULTIYEAR_PHY_001_030"})
    np.testing.assert_array_equal(read_glorys(path)["time"].values, [np.datetime64("2023-03-15", "ns")])


def test_glorys_daily_file_is_dated_its_day(tmp_path):
    hours = (np.datetime64("2023-01-05T12:00") - np.datetime64("1950-01-01")) / np.timedelta64(1, "h")
    path = write_glorys(tmp_path / "mercatorglorys12v1_gl12_mean_20230105_R20230111.nc",
                        thetao_field(GLAT, GLON), GLAT, GLON, [hours])
    ds = read_glorys(path)
    np.testing.assert_array_equal(ds["time"].values, [np.datetime64("2023-01-05T00:00", "ns")])
    # int16 packing decoded: the analytic field within half a quantum, NaN exactly where written.
    expected = thetao_field(GLAT, GLON)
    np.testing.assert_array_equal(np.isnan(ds["thetao"].values), np.isnan(expected))
    np.testing.assert_allclose(ds["thetao"].values, expected, atol=0.000732444 / 2 + 1e-5)
    assert ds["thetao"].dims == ("time", "depth", "lat", "lon")


def test_glorys_daily_name_and_time_must_agree(tmp_path):
    hours = (np.datetime64("2023-01-06") - np.datetime64("1950-01-01")) / np.timedelta64(1, "h")
    path = write_glorys(tmp_path / "glorys_20230105.nc", thetao_field(GLAT, GLON), GLAT, GLON, [hours])
    with pytest.raises(InputError) as info:
        read_glorys(path)
    assert info.value.reason == "bad_time"


def test_glorys_duplicate_times_rejected(tmp_path):
    path = write_glorys(tmp_path / "glorys_week.nc", thetao_field(GLAT, GLON, 2), GLAT, GLON, [640008.0, 640008.0])
    with pytest.raises(InputError) as info:
        read_glorys(path)
    assert info.value.reason == "duplicate_time"


def test_glorys_kelvin_rejected(tmp_path):
    path = write_glorys(tmp_path / "glorys_20230105.nc", thetao_field(GLAT, GLON) + 273.15, GLAT, GLON,
                        [640008.0], units="K", packed=False)
    with pytest.raises(InputError, match="degrees_C expected") as info:
        read_glorys(path)
    assert info.value.reason == "bad_units"


def test_glorys_kelvin_values_labelled_celsius_rejected(tmp_path):
    path = write_glorys(tmp_path / "glorys.nc", thetao_field(GLAT, GLON) + 273.15, GLAT, GLON, [640008.0], packed=False)
    with pytest.raises(InputError, match="look like kelvin") as info:
        read_glorys(path)
    assert info.value.reason == "bad_units"


@pytest.mark.parametrize("depth", [GLORYS_DEPTHS[:49], GLORYS_DEPTHS * 1.01, np.linspace(0, 5000, 50)])
def test_glorys_wrong_depth_axis_rejected(tmp_path, depth):
    field = thetao_field(GLAT, GLON)[:, : depth.size]
    path = write_glorys(tmp_path / "glorys.nc", field, GLAT, GLON, [640008.0], depth=depth)
    with pytest.raises(InputError) as info:
        read_glorys(path)
    assert info.value.reason == "bad_depth_axis"


def test_glorys_bbox_keeps_a_margin(tmp_path):
    lat, lon = np.arange(-5.0, 5.5, 0.5), np.arange(-10.0, 10.5, 0.5)
    path = write_glorys(tmp_path / "glorys.nc", np.full((1, 50, lat.size, lon.size), 10.0), lat, lon, [640008.0])
    ds = read_glorys(path, bbox=(0.2, 1.2, 3.0, 4.0))
    np.testing.assert_array_equal(ds["lat"].values, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(ds["lon"].values, [2.5, 3.0, 3.5, 4.0, 4.5])


# ----------------------------------------------------------------------------------------------
# EN4
# ----------------------------------------------------------------------------------------------

def test_en4_profile_rules(tmp_path):
    p = en4_profiles()
    table = read_en4(write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **p))
    kept = [0, 4, 6, 7]
    assert len(table) == len(kept)
    assert table.rejected == {"bad_time": 1, "bad_position": 1, "profile_qc": 1, "no_valid_levels": 1, "time_qc": 1}
    assert table.levels_rejected == 3 + 6  # profile 4: two temperature + one depth level; profile 5: all six
    np.testing.assert_array_equal(table.lat, p["lat"][kept])
    # Profile 0: starts at 4 m (no extrapolation), keeps its real 0 degC at 1000 m, a fill is NaN.
    np.testing.assert_array_equal(table.depth[0], [4, 10, np.nan, 200, 1000, 2000])
    np.testing.assert_array_equal(table.temp[0], [20, 18, np.nan, 6, 0, -0.5])
    # Profile 4: QC-rejected levels are NaN in depth and temperature alike.
    np.testing.assert_array_equal(table.temp[1], [20, np.nan, 12, np.nan, 0, np.nan])
    np.testing.assert_array_equal(np.isnan(table.depth[1]), np.isnan(table.temp[1]))
    # Profile 6: JULD 21945.9 = 2010-01-31 (21945 days after 1950-01-01) + 21.6 h; lon 190 -> -170.
    assert table.time[2] == np.datetime64("2010-01-31T21:36:00")
    assert table.day[2] == np.datetime64("2010-01-31")
    assert table.lon[2] == -170.0
    assert table.time[0] == np.datetime64("2010-01-26T06:00:00")  # 21940.25


def test_en4_netcdf3_and_netcdf4_identical(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    name = "EN.4.2.2.f.profiles.g10.201001.nc"
    nc3 = write_en4(tmp_path / "a" / name, fmt="NETCDF3_CLASSIC", **en4_profiles())
    nc4 = write_en4(tmp_path / "b" / name, fmt="NETCDF4", **en4_profiles())
    assert data_model(nc3) == "NETCDF3_CLASSIC" and data_model(nc4) == "NETCDF4"
    assert_same(read_en4(nc3), read_en4(nc4))


def test_en4_insitu_uses_temp(tmp_path):
    table = read_en4(write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **en4_profiles()), temperature="insitu")
    np.testing.assert_allclose(table.temp[0], np.array([20, 18, np.nan, 6, 0, -0.5]) + 0.1, rtol=1e-6)


def test_en4_bbox_drops_outside_profiles(tmp_path):
    p = en4_profiles()
    path = write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **p)
    table = read_en4(path, bbox=(-90, 90, 160, -160))  # across the dateline: only lon -170 (profile 6)
    assert len(table) == 1 and table.lon[0] == -170.0
    # Profiles 0, 4, 7 and also 5 (outside_region is checked before no_valid_levels).
    assert table.rejected == {"bad_time": 1, "bad_position": 1, "profile_qc": 1, "time_qc": 1, "outside_region": 4}


def test_en4_strict_qc_rejects_unchecked(tmp_path):
    table = read_en4(write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **en4_profiles()), accept_unchecked=False)
    assert table.rejected["time_qc"] == 2  # the blank JULD_QC of profile 7 now counts as not accepted


def test_en4_bad_units(tmp_path):
    path = write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **en4_profiles())
    (tmp_path / "k").mkdir()
    copy = copy_netcdf(path, tmp_path / "k" / path.name)
    with netCDF4.Dataset(copy, "a") as ds:
        ds["POTM_CORRECTED"].units = "kelvin"
    with pytest.raises(InputError) as info:
        read_en4(copy)
    assert info.value.reason == "bad_units"


# ----------------------------------------------------------------------------------------------
# Argo
# ----------------------------------------------------------------------------------------------

@needs_real
def test_argo_multi_profile_real_file():
    table = read_argo(ARGO_MULTI)
    insitu = read_argo(ARGO_MULTI, temperature="insitu")
    assert len(table) == 140 and table.rejected == {}  # all JULD/POSITION QC 1, grades A (139) and C (1)
    pres = raw(ARGO_MULTI, "PRES").astype(float)
    pres[pres == 99999] = np.nan
    n = table.depth.shape[1]
    # Real-time file: raw TEMP and TEMP_QC; the 7 levels flagged 3 are NaN and counted.
    bad = chars(ARGO_MULTI, "TEMP_QC") == "3"
    assert table.levels_rejected == bad.sum() == 7
    assert np.isnan(insitu.temp[bad[:, :n]]).all()
    good = ~np.isnan(insitu.temp)
    temp = raw(ARGO_MULTI, "TEMP")[:, :n]
    np.testing.assert_array_equal(insitu.temp[good], temp[good])
    # Depth is positive, increases with pressure, and is about 0.99 m per dbar.
    depth = table.depth
    assert (depth[good] > 0).all()
    assert all((np.diff(d[~np.isnan(d)]) > 0).all() for d in depth)
    ratio = depth[good] / pres[:, :n][good]
    assert ((ratio > 0.97) & (ratio < 1.0)).all()
    # Potential temperature (no salinity: SP 35) is below in-situ under the surface.
    deep = good & (pres[:, :n] > 10)
    diff = table.temp[deep] - insitu.temp[deep]
    assert (diff < 0).all() and (diff > -0.2).all()


@needs_real
def test_argo_single_profile_real_file():
    table = read_argo(ARGO_SINGLE)
    assert len(table) == 1 and table.rejected == {}  # JULD_QC '8' (estimated) is accepted
    assert table.time[0] == np.datetime64("2004-04-30T01:01:50")
    assert table.lat[0] == -41.731 and table.lon[0] == -164.016
    p = raw(ARGO_SINGLE, "PRES_ADJUSTED")[0].astype(float)
    t = raw(ARGO_SINGLE, "TEMP_ADJUSTED")[0].astype(float)
    s = raw(ARGO_SINGLE, "PSAL_ADJUSTED")[0].astype(float)
    pt = gsw.pt0_from_t(gsw.SA_from_SP(s, p, -164.016, -41.731), t, p)
    np.testing.assert_allclose(table.temp[0], pt, atol=1e-5)
    np.testing.assert_allclose(table.depth[0], -gsw.z_from_p(p, -41.731), rtol=1e-6)
    assert (table.temp[0][p > 10] < t[p > 10]).all()


@needs_real
def test_argo_delayed_mode_uses_adjusted_values(tmp_path):
    def edit(name, data):
        if name == "TEMP":
            data[0, :] += 1.0  # raw differs from adjusted by 1 degC
        if name == "TEMP_ADJUSTED_QC":
            data[0, 10] = b"4"
        return data

    path = copy_netcdf(ARGO_SINGLE, tmp_path / ARGO_SINGLE.name, edit=edit)
    table = read_argo(path, temperature="insitu")
    expected = raw(ARGO_SINGLE, "TEMP_ADJUSTED")[0].copy()
    expected[10] = np.nan
    np.testing.assert_array_equal(table.temp[0], expected)
    assert table.levels_rejected == 1
    # The same file in real-time mode takes the raw values (+1) and the raw flags (all '1').
    (tmp_path / "r").mkdir()
    rt = copy_netcdf(path, tmp_path / "r" / ARGO_SINGLE.name,
                     edit=lambda name, data: np.full_like(data, b"R") if name == "DATA_MODE" else data)
    np.testing.assert_allclose(read_argo(rt, temperature="insitu").temp[0], raw(ARGO_SINGLE, "TEMP")[0] + 1.0)


@needs_real
def test_argo_fill_time_and_position_rejected(tmp_path):
    def juld_fill(name, data):
        return np.full_like(data, 999999.0) if name == "JULD" else data

    def position_fill(name, data):
        return np.full_like(data, 99999.0) if name in ("LATITUDE", "LONGITUDE") else data

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    t = read_argo(copy_netcdf(ARGO_SINGLE, tmp_path / "a" / ARGO_SINGLE.name, edit=juld_fill))
    p = read_argo(copy_netcdf(ARGO_SINGLE, tmp_path / "b" / ARGO_SINGLE.name, edit=position_fill))
    assert len(t) == 0 and t.rejected == {"bad_time": 1}
    assert len(p) == 0 and p.rejected == {"bad_position": 1}


@needs_real
def test_argo_profile_grade_d_rejected(tmp_path):
    path = copy_netcdf(ARGO_SINGLE, tmp_path / ARGO_SINGLE.name,
                       edit=lambda name, data: np.full_like(data, b"D") if name == "PROFILE_TEMP_QC" else data)
    assert read_argo(path).rejected == {"profile_qc": 1}
    assert len(read_argo(path, accepted_profile_grades="ABCD")) == 1


def test_salinity_35_costs_less_than_a_hundredth_of_a_degree():
    """The SP = 35 fallback claim of cube.readers.argo, checked with gsw itself."""
    p = np.array([0.0, 10, 100, 500, 1000, 1500, 2000])
    worst = 0.0
    for sp in (33.0, 34.0, 36.0, 37.0):
        for t in (-1.8, 2.0, 10.0, 20.0, 30.0):
            for lat, lon in ((0, -30), (45, -150), (-60, 20)):
                true = gsw.pt0_from_t(gsw.SA_from_SP(sp, p, lon, lat), t, p)
                approx = gsw.pt0_from_t(gsw.SA_from_SP(35.0, p, lon, lat), t, p)
                worst = max(worst, float(np.abs(true - approx).max()))
    assert 0 < worst < 0.01


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------

@needs_real
@pytest.mark.parametrize("path, kind", [(OSTIA_REAL, "ostia"), (ARGO_MULTI, "argo"), (ARGO_SINGLE, "argo"),
                                        (GLO12_REAL, "glorys")])
def test_detect_real_files_by_name(path, kind):
    assert detect_product(path) == kind


def test_detect_by_variables_when_the_name_says_nothing(tmp_path):
    en4 = write_en4(tmp_path / "profiles.nc", **en4_profiles())
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    sst = write_ostia(tmp_path / "sst.nc", sst_field(lat, lon), lat, lon)
    glorys = write_glorys(tmp_path / "model.nc", thetao_field(GLAT, GLON), GLAT, GLON, [640008.0])
    assert [detect_product(p) for p in (en4, sst, glorys)] == ["en4", "ostia", "glorys"]
    other = write_en4(tmp_path / "other.nc", omit=("DEPH_CORRECTED",), **en4_profiles())
    with pytest.raises(InputError) as info:
        detect_product(other)
    assert info.value.reason == "unknown_product"
    with pytest.raises(ConfigError):
        open_product(en4, kind="woa")


# ----------------------------------------------------------------------------------------------
# Wrong-product messages: one line saying what the file is and where it belongs
# ----------------------------------------------------------------------------------------------

def _argo_cast(temp=12.0):
    return {"scheme": "Primary sampling: discrete []", "pres": [5.0, 10.0, 20.0], "temp": [temp] * 3,
            "juld": 21916.5, "lat": 40.55, "lon": -19.45}


def _b_file_from(core, dst, data_type="B-Argo profile"):
    """A BGC-Argo B-file made from a core file: no TEMP/PSAL (they stay in the core file)."""
    def retype(name, data):
        if name == "DATA_TYPE":
            return np.array(list(data_type.ljust(data.shape[0])), dtype="S1")
        return data
    drop = tuple(n for n in netCDF4.Dataset(core).variables if n.startswith(("TEMP", "PSAL", "PROFILE_TEMP", "PROFILE_PSAL")))
    return copy_netcdf(core, dst, drop=drop, edit=retype)


def test_bgc_b_file_names_its_core_file(tmp_path):
    core = write_argo_profiles(tmp_path / "R6901234_001.nc", [_argo_cast()])
    (tmp_path / "b").mkdir()
    bfile = _b_file_from(core, tmp_path / "b" / "BR6901234_001.nc")
    with pytest.raises(InputError) as info:
        read_argo(bfile)
    assert info.value.reason == "missing_variable"
    assert info.value.detail == ("a BGC-Argo B-file (no TEMP): temperature is in the core Argo file "
                                 "R6901234_001.nc; list that under inputs.argo")


@needs_real
def test_real_delayed_mode_b_file_is_recognised_by_its_data_type(tmp_path):
    """DATA_TYPE 'B-Argo profile' says it even when the name does not follow the B<mode> pattern."""
    bfile = _b_file_from(ARGO_SINGLE, tmp_path / "bgc_profile.nc")
    with pytest.raises(InputError) as info:
        read_argo(bfile)
    assert "BGC-Argo B-file" in info.value.detail and len(info.value.detail) < 120


@needs_real
def test_argo_prof_file_given_as_en4_says_where_it_belongs(tmp_path):
    with pytest.raises(InputError) as info:
        read_en4(ARGO_MULTI)
    assert info.value.reason == "missing_variable"
    assert info.value.detail == ("variable 'DEPH_CORRECTED' not found; looks like an Argo file: "
                                 "list it under inputs.argo")


def test_other_products_in_the_wrong_list_say_where_they_belong(tmp_path):
    en4 = write_en4(tmp_path / "EN.4.2.2.f.profiles.g10.201001.nc", **en4_profiles())
    glorys = write_glorys(tmp_path / "glorys_20100101.nc", thetao_field(GLAT, GLON), GLAT, GLON, [525960.0])
    for reader, path, where in ((read_argo, en4, "an EN4 file: list it under inputs.en4"),
                                (read_ostia, glorys, "a GLORYS file: list it under inputs.glorys")):
        with pytest.raises(InputError) as info:
            reader(path)
        assert info.value.detail.endswith(f"looks like {where}"), info.value.detail


def test_build_lists_an_argo_file_under_en4_as_one_line(tmp_path):
    from test_build import config, write_background

    write_background(tmp_path)
    (tmp_path / "en4").mkdir()
    write_argo_profiles(tmp_path / "en4" / "6901234_prof.nc", [_argo_cast()])
    from cube.build import build

    report = build(config(tmp_path), progress=False)
    assert [(r["reason"], r["detail"]) for r in report.rejects] == [
        ("missing_variable", "variable 'DEPH_CORRECTED' not found; looks like an Argo file: list it under inputs.argo")]


def test_messages_show_a_bbox_as_short_text_not_a_repr(tmp_path):
    lat, lon = np.arange(-4.5, 5), np.arange(0.5, 360, 5.0)
    path = write_ostia(tmp_path / ostia_name(), sst_field(lat, lon), lat, lon)
    with pytest.raises(InputError) as info:
        read_ostia(path, bbox=(60.0, 70.0, 10.0, 20.0))
    assert "bbox lat 60..70, lon 10..20 does not overlap the grid" in info.value.detail
    assert "Bbox(" not in str(info.value)
