"""End-to-end cube builds from hand-made raw files: every expected cube value is computed here from
the values written into the files, not by the builder's own code."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from _ncfixtures import ostia_name, write_en4, write_glorys, write_ostia
from cube.build import build
from cube.config import CubeConfig
from cube.spec import load_config
from cube.constants import GLORYS_DEPTHS

REGION = (40.0, 41.6, -20.0, -18.4)        # 16 x 16 cells at 0.1 deg
HOURS_20100101 = 525960                     # hours since 1950-01-01 of 2010-01-01 00:00


def _ostia_axes(region=REGION):
    la0, la1, lo0, lo1 = region
    return np.arange(la0 + 0.025, la1, 0.05), np.arange(lo0 + 0.025, lo1, 0.05)


def _glorys_axes(region=REGION):
    # GLORYS cell centres at k/12 degrees, covering the region with a margin.
    la0, la1, lo0, lo1 = region
    lat = np.arange(np.floor(la0 * 12) - 1, np.ceil(la1 * 12) + 2) / 12
    lon = np.arange(np.floor(lo0 * 12) - 1, np.ceil(lo1 * 12) + 2) / 12
    return lat, lon


def write_background(folder, days=("20100101", "20100102", "20100103"), sst=285.0, theta=12.0):
    (folder / "ostia").mkdir(parents=True, exist_ok=True)
    (folder / "glorys").mkdir(exist_ok=True)
    lat, lon = _ostia_axes()
    for k, day in enumerate(days):
        write_ostia(folder / "ostia" / ostia_name(day), np.full((lat.size, lon.size), sst), lat, lon,
                    seconds=915192000 + 86400 * k)  # 2010-01-01 12:00 + k days
    glat, glon = _glorys_axes()
    write_glorys(folder / "glorys" / "mercatorglorys12v1_gl12_mean_20100101_R20100106.nc",
                 np.full((1, 50, glat.size, glon.size), theta), glat, glon, [HOURS_20100101])


def config(folder, **extra) -> CubeConfig:
    data = {"output": str(folder / "cube.zarr"),
            "inputs": {"ostia": [f"{folder}/ostia/*.nc"], "glorys": [f"{folder}/glorys/*.nc"],
                       "en4": [f"{folder}/en4/*.nc"]},
            "grid": {"region": list(REGION)}, "chunks": {"days": 2}, "patches": {"tile_size": 16},
            "compute": {"progress": False}}
    data.update(extra)
    return load_config(data, CubeConfig)


def _profile_depths(top, bottom, step=5.0):
    d = np.arange(top, bottom + 1e-9, step)
    return d


def test_profiles_rasterised_as_hand_expectation(tmp_path):
    """Counts and sums per (day, level, cell) equal a hand rasterisation: a profile on a cell edge,
    a real 0 degC profile, QC-rejected levels, a profile starting at 4 m.

    Fixes REFERENCE.md 11.7 (the EN4 month is NetCDF-3, which the reference's index skipped),
    11.8 (potential temperature with QC applied), 11.12 (a profile on a shared edge lands in
    exactly one cell) and 11.13 (a real 0 degC observation is valid: validity comes from counts)."""
    write_background(tmp_path)
    n_lev = 420
    depth = np.full((5, n_lev), np.nan)
    potm = np.full((5, n_lev), np.nan)
    potm_qc = np.full((5, n_lev), "1")
    specs = [  # (lat, lon, JULD day offset from 2010-01-01, top depth, value)
        (40.05, -19.95, 0.3, 4.0, 10.0),   # A: cell (0, 0), day 0, starts at 4 m -> levels 4..39
        (40.1, -19.9, 0.7, 4.0, 11.0),     # B: exactly on the corner of cells -> cell (1, 1) (half-open)
        (40.55, -19.45, 1.2, 4.0, 0.0),    # C: a real 0 degC profile, cell (5, 5), day 1
        (40.55, -19.45, 1.9, 4.0, 2.0),    # D: same cell and day as C, observed 94..199 m QC-rejected
        (41.55, -18.45, 2.5, 0.2, 5.0),    # E: starts at 0.2 m -> levels 0..39, cell (15, 15), day 2
    ]
    for p, (_, _, _, top, value) in enumerate(specs):
        d = _profile_depths(top, 2000.0)
        depth[p, :d.size] = d
        potm[p, :d.size] = value
    # D's observed depths 94..199 m are flagged bad, leaving good depths ..., 89, 204, ... m.
    # By hand (nearest good depth vs max(0.1 z, 10 m)): level 21 (92.3 m) 3.3 m ok; 22 (109.7) 20.7 > 11.0;
    # 23 (130.7) 41.7 > 13.1; 24 (155.9) 48.1 > 15.6 -> rejected; 25 (186.1) 17.9 <= 18.6 ok.
    potm_qc[3, (depth[3] >= 90) & (depth[3] <= 200)] = "4"
    (tmp_path / "en4").mkdir()
    juld = 21915 + np.array([s[2] for s in specs])      # 21915 = 2010-01-01 in days since 1950-01-01
    write_en4(tmp_path / "en4" / "EN.4.2.2.f.profiles.g10.201001.nc", juld=juld,
              lat=np.array([s[0] for s in specs]), lon=np.array([s[1] for s in specs]),
              depth=depth, potm=potm, potm_qc=potm_qc, fmt="NETCDF3_CLASSIC")
    report = build(config(tmp_path), progress=False)
    assert report.rejects == []
    root = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    count, total = root["profiles/count"][:], root["profiles/sum"][:]

    expected_count = np.zeros_like(count)
    expected_sum = np.zeros(count.shape)
    levels_4m = np.arange(4, 40)                                  # 5.078 m .. 1941.9 m
    for (day, row, col, levels, value) in [
        (0, 0, 0, levels_4m, 10.0), (0, 1, 1, levels_4m, 11.0), (1, 5, 5, levels_4m, 0.0),
        (1, 5, 5, np.setdiff1d(levels_4m, [22, 23, 24]), 2.0), (2, 15, 15, np.arange(0, 40), 5.0),
    ]:
        expected_count[day, levels, row, col] += 1
        expected_sum[day, levels, row, col] += value
    np.testing.assert_array_equal(count, expected_count)
    np.testing.assert_allclose(total, expected_sum, atol=1e-4)
    assert count[1, 20, 5, 5] == 2 and total[1, 20, 5, 5] == pytest.approx(2.0)   # 0 degC + 2 degC
    assert root["profiles/n_obs"][1, 5, 5] == count[1, :, 5, 5].sum()


def test_ostia_lon_0_360_gives_the_same_cube(tmp_path):
    region = (10.0, 11.6, -0.8, 0.8)                              # crosses the prime meridian
    lat = np.arange(10.025, 11.6, 0.05)
    lon = np.arange(-0.775, 0.8, 0.05)
    sst = 280 + 0.5 * lat[:, None] + 3 * np.sin(np.radians(lon[None, :]) * 40)
    cubes = []
    for name, lon_file in (("pm180", lon), ("pm360", np.concatenate([lon[lon >= 0], lon[lon < 0] + 360]))):
        folder = tmp_path / name
        (folder / "ostia").mkdir(parents=True)
        order = np.argsort(np.where(lon < 0, lon + 360, lon)) if name == "pm360" else np.arange(lon.size)
        write_ostia(folder / "ostia" / ostia_name("20100101"), sst[:, order], lat, lon_file, seconds=915192000)
        cfg = load_config({"output": str(folder / "cube.zarr"), "inputs": {"ostia": [f"{folder}/ostia/*.nc"]},
                           "grid": {"region": list(region)}, "patches": {"tile_size": 16},
                           "compute": {"progress": False}}, CubeConfig)
        build(cfg, progress=False)
        cubes.append(zarr.open_group(str(folder / "cube.zarr"), mode="r")["ostia/analysed_sst"][:])
    # Equal up to float32 rounding of the shifted longitudes (350.025f - 360 != -9.975f), far below
    # OSTIA's 0.01 K packing step.
    np.testing.assert_allclose(cubes[0], cubes[1], rtol=0, atol=1e-4)
    # The area mean of 2x2 source cells, by hand, at one cell:
    expected = sst[4:6, 10:12].mean()
    assert cubes[0][0, 2, 5] == pytest.approx(expected, abs=1e-3)


def test_glorys_monthly_file_is_dated_mid_month(tmp_path):
    """REFERENCE.md 11.16: monthly ``_YYYYMM.nc`` names crashed the reference's date parser."""
    write_background(tmp_path)
    (tmp_path / "glorys").joinpath("mercatorglorys12v1_gl12_mean_20100101_R20100106.nc").unlink()
    glat, glon = _glorys_axes()
    write_glorys(tmp_path / "glorys" / "mercatorglorys12v1_gl12_mean_201001.nc",
                 np.full((1, 50, glat.size, glon.size), 9.0), glat, glon, [HOURS_20100101 + 15 * 24 + 12])
    build(config(tmp_path), progress=False)
    root = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    hours = root["glorys/time"][:]
    assert (np.datetime64("1950-01-01T00", "h") + hours[0].astype("timedelta64[h]")).astype("datetime64[D]") \
        == np.datetime64("2010-01-15")


def test_rerun_is_a_no_op_and_new_days_append(tmp_path):
    write_background(tmp_path, days=("20100101", "20100102", "20100103"), sst=285.0)
    cfg = config(tmp_path)
    first = build(cfg, progress=False)
    assert first.status == "built"
    again = build(cfg, progress=False)
    assert again.status == "up to date" and again.tasks_run == 0
    lat, lon = _ostia_axes()
    for k, day in ((3, "20100104"), (4, "20100105")):
        write_ostia(tmp_path / "ostia" / ostia_name(day), np.full((lat.size, lon.size), 290.0), lat, lon,
                    seconds=915192000 + 86400 * k)
    appended = build(cfg, progress=False)
    assert appended.status == "appended"
    sst = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")["ostia/analysed_sst"][:]
    assert sst.shape[0] == 5
    assert np.allclose(sst[:3], 285.0, atol=0.01) and np.allclose(sst[3:], 290.0, atol=0.01)
    # The same inputs from scratch give the same cube.
    fresh = config(tmp_path, output=str(tmp_path / "fresh.zarr"))
    build(fresh, progress=False)
    np.testing.assert_array_equal(sst, zarr.open_group(str(tmp_path / "fresh.zarr"), mode="r")["ostia/analysed_sst"][:])


def test_interrupted_build_resumes_and_never_shows_a_partial_cube(tmp_path, monkeypatch):
    import cube.tasks as builder

    write_background(tmp_path)
    cfg = config(tmp_path)
    real = builder.task_glorys

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(builder, "task_glorys", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(cfg, progress=False)
    assert not (tmp_path / "cube.zarr").exists()
    assert (tmp_path / "cube.zarr.partial").exists()
    monkeypatch.setattr(builder, "task_glorys", real)
    resumed = build(cfg, progress=False)
    assert resumed.tasks_skipped > 0
    assert not (tmp_path / "cube.zarr.partial").exists()
    fresh = config(tmp_path, output=str(tmp_path / "fresh.zarr"))
    build(fresh, progress=False)
    a = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "fresh.zarr"), mode="r")
    for path in ("ostia/analysed_sst", "glorys/thetao", "profiles/count", "static/ocean_mask"):
        np.testing.assert_array_equal(a[path][:], b[path][:])


def test_real_ostia_sample_builds_a_global_cube(tmp_path, real_data):
    """The real OSTIA file (0.25 deg, lon 0..360, no mask) -> a 1 deg global cube; cells equal the
    NaN-aware mean of their 4 x 4 source cells read independently with netCDF4."""
    import netCDF4

    src = real_data / "20170101120000-UKMO-L4_GHRSST-SSTfnd-OSTIAanom-GLOB-v02.0-fv02.0.nc"
    cfg = load_config({"output": str(tmp_path / "global.zarr"), "inputs": {"ostia": [str(src)]},
                       "grid": {"resolution": 1.0}, "patches": {"tile_size": 30},
                       "compute": {"progress": False}}, CubeConfig)
    report = build(cfg, progress=False)
    assert report.rejects == []
    root = zarr.open_group(str(tmp_path / "global.zarr"), mode="r")
    sst = root["ostia/analysed_sst"][0]
    assert sst.shape == (180, 360)
    with netCDF4.Dataset(src) as ds:
        v = ds["analysed_sst"]
        v.set_auto_maskandscale(False)
        raw = v[0].astype(float)
        lat, lon = ds["lat"][:], ds["lon"][:]
    kelvin = np.where(raw == -32768, np.nan, raw * 0.01 + 273.15)
    # 0..360 -> -180..180 by hand: columns of lon >= 180 go first.
    order = np.argsort(np.where(lon >= 180, lon - 360, lon))
    kelvin = kelvin[:, order]
    assert np.all(np.diff(lat) > 0)
    for row, col in ((100, 200), (60, 300), (90, 10), (120, 150)):        # open ocean cells
        block = kelvin[4 * row:4 * row + 4, 4 * col:4 * col + 4]
        if np.isnan(block).mean() <= 0.5:
            assert sst[row, col] == pytest.approx(np.nanmean(block), abs=1e-3)
    # Land (no mask variable): where SST is missing; the patch index covers the globe.
    assert np.isnan(sst).mean() > 0.2
    n_tiles = root["patches/patch"].shape[0]
    assert 0 < n_tiles <= (180 // 30) * (360 // 30)


def test_real_argo_samples_go_into_a_cube(tmp_path, real_data):
    """Argo float 13857 over its first months: each accepted profile adds to the cell holding it."""
    import netCDF4

    region = (0.0, 7.2, -34.0, -15.6)
    glat, glon = _glorys_axes(region)
    (tmp_path / "glorys").mkdir()
    write_glorys(tmp_path / "glorys" / "mercatorglorys12v1_gl12_mean_199708.nc",
                 np.full((1, 50, glat.size, glon.size), 10.0), glat, glon, [(np.datetime64("1997-08-15") - np.datetime64("1950-01-01")).astype(int) * 24])
    cfg = load_config({"output": str(tmp_path / "argo.zarr"),
                       "inputs": {"glorys": [f"{tmp_path}/glorys/*.nc"],
                                  "argo": [str(real_data / "13857_prof.nc"), str(real_data / "D5900446_001.nc")]},
                       "grid": {"region": list(region), "resolution": 0.4},
                       "time": {"start": "1997-07-25", "end": "1997-12-31"},
                       "patches": {"tile_size": 9}, "compute": {"progress": False}}, CubeConfig)
    report = build(cfg, progress=False)
    assert report.rejects == []
    with netCDF4.Dataset(real_data / "13857_prof.nc") as ds:
        juld = ds["JULD"][:].filled(np.nan)
        plat, plon = ds["LATITUDE"][:].filled(np.nan), ds["LONGITUDE"][:].filled(np.nan)
    day = np.floor(juld).astype(int)                                 # days since 1950-01-01
    start = (np.datetime64("1997-07-25") - np.datetime64("1950-01-01")).astype(int)
    in_time = (day >= start) & (day <= start + 159)
    root = zarr.open_group(str(tmp_path / "argo.zarr"), mode="r")
    n_obs = root["profiles/n_obs"][:]
    for k in np.flatnonzero(in_time):
        row, col = int((plat[k] - region[0]) // 0.4), int((plon[k] - region[2]) // 0.4)
        assert n_obs[day[k] - start, row, col] > 0, f"profile {k} missing"
    assert (n_obs.sum(axis=(1, 2)) > 0).sum() == len(np.unique(day[in_time]))
    assert report.profiles_used == in_time.sum()
    assert report.profiles_rejected.get("outside_region", 0) + report.profiles_rejected.get("outside_time_range", 0) > 0


def test_native_grid_keeps_glorys_values(tmp_path):
    """resolution: native puts cube cells on the GLORYS 1/12 deg centres: thetao passes unchanged."""
    write_background(tmp_path)
    glat, glon = _glorys_axes()
    theta = 10 + 0.5 * glat[None, None, :, None] + 0.1 * glon[None, None, None, :] - 0.01 * np.arange(50)[None, :, None, None]
    write_glorys(tmp_path / "glorys" / "mercatorglorys12v1_gl12_mean_20100101_R20100106.nc", theta, glat, glon,
                 [HOURS_20100101])
    build(config(tmp_path, grid={"region": list(REGION), "resolution": "native"}), progress=False)
    root = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    lat, lon = root["glorys/lat"][:], root["glorys/lon"][:]
    assert np.allclose(np.diff(lat), 1 / 12) and np.allclose(lat * 12, np.round(lat * 12), atol=1e-6)
    i = np.searchsorted(glat, lat[0] - 1e-6)
    j = np.searchsorted(glon, lon[0] - 1e-6)
    expected = theta[0][:, i:i + lat.size, j:j + lon.size]
    np.testing.assert_allclose(root["glorys/thetao"][0], expected, atol=1e-3)    # int16 packing step 0.0007


def test_sharded_cube_has_fewer_objects_and_the_same_values(tiny_demo, tmp_path):
    from conftest import tiny_cube_config

    plain = tiny_cube_config(tiny_demo, tmp_path / "plain.zarr")
    sharded = tiny_cube_config(tiny_demo, tmp_path / "sharded.zarr", chunks={"days": 4, "shard_tiles": 2})
    build(plain, progress=False)
    build(sharded, progress=False)
    a = zarr.open_group(plain.output, mode="r")
    b = zarr.open_group(sharded.output, mode="r")
    for path in ("ostia/analysed_sst", "glorys/thetao", "profiles/count", "profiles/sum", "static/ocean_mask"):
        np.testing.assert_array_equal(a[path][:], b[path][:])
        assert b[path].shards is not None
    count = lambda p: sum(1 for f in p.rglob("*") if f.is_file() and ".build" not in f.parts)  # noqa: E731
    assert count(tmp_path / "sharded.zarr") < count(tmp_path / "plain.zarr")
    from loaders import CubeStream
    from loaders.config import DatasetConfig

    s_plain = CubeStream(plain.output, DatasetConfig(window_days=3), split="all")
    s_sharded = CubeStream(sharded.output, DatasetConfig(window_days=3), split="all")
    for i in (0, len(s_plain) - 1):
        x, y = s_plain.sample(i), s_sharded.sample(i)
        assert all(np.array_equal(x[k], y[k]) for k in ("eo", "x", "y", "x_valid_mask", "y_valid_mask"))
