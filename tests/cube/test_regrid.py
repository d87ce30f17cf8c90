"""cube.regrid against analytic cell means, hand-computed cases and the real OSTIA sample."""

from __future__ import annotations


import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from cube.errors import InputError
from cube.grid import CubeGrid
from cube.regrid import Regridder, get_regridder, regrid, regrid_categorical, regrid_fraction

OSTIA_REAL = "20170101120000-UKMO-L4_GHRSST-SSTfnd-OSTIAanom-GLOB-v02.0-fv02.0.nc"


def centres(start: float, step: float, n: int) -> np.ndarray:
    return start + step * (np.arange(n) + 0.5)


# --- analytic spherical cell means of f = A + B*lat + C*lon + D*sin(lat)*cos(2 lon) (degrees) ---
A, B, C, D = 280.0, 0.3, -0.05, 4.0


def f_point(lat, lon):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return A + B * la + C * lo + D * np.sin(np.radians(la)) * np.cos(2 * np.radians(lo))


def f_cell_mean(lat0, lat1, lon0, lon1):
    """Exact mean of f over [lat0, lat1] x [lon0, lon1] on the sphere (weight cos(lat))."""
    p0, p1 = np.radians(lat0)[:, None], np.radians(lat1)[:, None]
    l0, l1 = np.radians(lon0)[None, :], np.radians(lon1)[None, :]
    area = np.sin(p1) - np.sin(p0)
    mean_lat = np.degrees((p1 * np.sin(p1) + np.cos(p1) - p0 * np.sin(p0) - np.cos(p0)) / area)
    mean_lon = np.degrees((l0 + l1) / 2)
    mean_sin = (np.sin(p1) + np.sin(p0)) / 2
    mean_cos2 = (np.sin(2 * l1) - np.sin(2 * l0)) / (2 * (l1 - l0))
    return A + B * mean_lat + C * mean_lon + D * mean_sin * mean_cos2


def exact_cube_means(grid: CubeGrid) -> np.ndarray:
    e, w = grid.lat_edges, grid.lon_edges
    return f_cell_mean(e[:-1], e[1:], w[:-1], w[1:])


# ------------------------------------------------------------------------------------- mean


def test_area_mean_of_exact_cell_means_is_exact_for_integer_ratio():
    """Conservative remapping: source cells holding their exact means give exact cube means."""
    grid = CubeGrid(50.0, -20.0, 0.3, 20, 30)
    step = 0.1
    lat_e, lon_e = 50.0 + step * np.arange(61), -20.0 + step * np.arange(91)
    src = f_cell_mean(lat_e[:-1], lat_e[1:], lon_e[:-1], lon_e[1:])
    out = regrid(src, centres(50.0, step, 60), centres(-20.0, step, 90), grid, method="mean")
    np.testing.assert_allclose(out, exact_cube_means(grid), rtol=0, atol=1e-10)


def test_area_mean_non_integer_ratio_matches_analytic_mean():
    """GLORYS 1/12 deg -> 0.1 deg: point samples at centres, error bounded by the source step."""
    grid = CubeGrid(-30.0, 100.0, 0.1, 40, 50)
    lat, lon = centres(-31.0, 1 / 12, 12 * 6), centres(99.0, 1 / 12, 12 * 7)
    out = regrid(f_point(lat, lon), lat, lon, grid, method="mean")
    expect = exact_cube_means(grid)
    # Piecewise-constant pieces of a 1/12 deg cell: error <= |grad| * step / 2 = 0.35/12/2.
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out - expect)) < 0.35 / 24
    # ...and the exact overlap weights make it much better than that bound on average.
    assert np.mean(np.abs(out - expect)) < 2e-3


def test_float32_stays_float32_and_close():
    grid = CubeGrid(0.0, 0.0, 0.2, 10, 10)
    lat, lon = centres(0.0, 0.05, 40), centres(0.0, 0.05, 40)
    v = f_point(lat, lon)
    out32 = regrid(v.astype(np.float32), lat, lon, grid, method="mean")
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, regrid(v, lat, lon, grid, method="mean"), atol=1e-4)


def half_land_source():
    """0.05 deg source under a 0.1 deg grid, i.e. 2 x 2 source cells per cube cell."""
    grid = CubeGrid(10.0, 20.0, 0.1, 2, 2)
    lat, lon = centres(10.0, 0.05, 4), centres(20.0, 0.05, 4)
    v = np.arange(16, dtype=np.float64).reshape(4, 4)
    v[0:2, 0] = np.nan  # cube cell (0, 0): its west half is land
    v[2:4, 2:4] = np.nan  # cube cell (1, 1): all land
    v[2, 0:2] = np.nan  # cube cell (1, 0): its south half (the larger half) is land
    v[3, 1] = np.nan  # ...and a quarter more
    return grid, lat, lon, v


def test_nan_aware_mean_and_valid_fraction():
    grid, lat, lon, v = half_land_source()
    out = regrid(v, lat, lon, grid, method="mean", min_valid_fraction=0.5)
    # (0, 0): east column valid, same latitudes -> area weights of rows 0 and 1 (sin differences).
    w0, w1 = np.diff(np.sin(np.radians([10.0, 10.05, 10.1])))
    assert out[0, 0] == pytest.approx((1 * w0 + 5 * w1) / (w0 + w1), abs=1e-12)
    assert out[0, 1] == pytest.approx(np.average([2, 3, 6, 7], weights=[w0, w0, w1, w1]), abs=1e-12)
    assert np.isnan(out[1, 1])
    assert np.isnan(out[1, 0])  # only a quarter valid
    relaxed = regrid(v, lat, lon, grid, method="mean", min_valid_fraction=0.2)
    assert relaxed[1, 0] == pytest.approx(12.0)
    strict = regrid(v, lat, lon, grid, method="mean", min_valid_fraction=0.51)
    assert np.isnan(strict[0, 0]) and strict[0, 1] == pytest.approx(out[0, 1])


def test_uncovered_part_of_a_cube_cell_counts_as_invalid():
    grid = CubeGrid(0.0, 0.0, 1.0, 1, 3)
    lat, lon = centres(0.0, 0.25, 4), centres(0.75, 0.25, 7)  # source covers lon 0.75 .. 2.5
    out = regrid(np.ones((4, 7)), lat, lon, grid, method="mean")
    assert np.isnan(out[0, 0])  # 25 % covered
    assert out[0, 1] == 1.0
    assert out[0, 2] == 1.0  # exactly 50 % covered


def test_leading_dims_broadcast():
    grid = CubeGrid(0.0, 0.0, 0.1, 4, 5)
    lat, lon = centres(0.0, 1 / 12, 5), centres(0.0, 1 / 12, 6)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 3, 5, 6))
    v[v > 1.5] = np.nan
    out = regrid(v, lat, lon, grid, method="mean")
    assert out.shape == (2, 3, 4, 5)
    for t in range(2):
        for z in range(3):
            np.testing.assert_array_equal(out[t, z], regrid(v[t, z], lat, lon, grid, method="mean"))


# ------------------------------------------------------------------------------------ linear


def test_bilinear_of_a_linear_field_is_exact():
    grid = CubeGrid(-5.0, 170.0, 0.1, 30, 40)
    lat, lon = centres(-6.0, 0.25, 24), centres(169.0, 0.25, 28)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    out = regrid(1.5 + 0.7 * la - 0.2 * lo, lat, lon, grid, method="linear")
    gla, glo = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    np.testing.assert_allclose(out, 1.5 + 0.7 * gla - 0.2 * glo, atol=1e-10)


def test_bilinear_nan_renormalisation():
    """Target a quarter of the way from source centre 0 to 1: weights 3/4 and 1/4."""
    lat = np.array([0.0, 1.0])
    lon = np.array([0.0, 1.0])
    grid = CubeGrid(0.2, 0.0, 0.1, 1, 1)  # centre (0.25, 0.05)
    v = np.array([[10.0, 20.0], [30.0, 40.0]])
    expect = 0.75 * (0.95 * 10 + 0.05 * 20) + 0.25 * (0.95 * 30 + 0.05 * 40)
    assert regrid(v, lat, lon, grid, method="linear")[0, 0] == pytest.approx(expect)
    north_land = v.copy()
    north_land[1, :] = np.nan  # valid weight 0.75: renormalised over the south row
    assert regrid(north_land, lat, lon, grid, method="linear")[0, 0] == pytest.approx(0.95 * 10 + 0.05 * 20)
    south_land = v.copy()
    south_land[0, :] = np.nan  # valid weight 0.25 < 0.5
    assert np.isnan(regrid(south_land, lat, lon, grid, method="linear")[0, 0])
    kept = regrid(south_land, lat, lon, grid, method="linear", min_valid_fraction=0.2)[0, 0]
    assert kept == pytest.approx(0.95 * 30 + 0.05 * 40)


def test_linear_beyond_source_extent_is_nan_and_edge_strip_is_constant():
    lat, lon = np.array([0.5, 1.5]), np.array([0.5, 1.5])
    grid = CubeGrid(0.0, -1.0, 0.5, 4, 6)  # lon -1 .. 2: first two columns outside the source
    out = regrid(np.array([[1.0, 2.0], [3.0, 4.0]]), lat, lon, grid, method="linear")
    assert np.all(np.isnan(out[:, :2]))
    assert out[0, 2] == 1.0  # centre (0.25, 0.25): inside the source cell of (0.5, 0.5)
    assert out[3, 5] == 4.0


def test_auto_picks_mean_when_coarsening_and_native_grid_is_identity():
    lat, lon = centres(0.0, 1 / 12, 24), centres(0.0, 1 / 12, 36)
    assert Regridder(lat, lon, CubeGrid(0.0, 0.0, 0.1, 5, 5)).method == "mean"
    native = CubeGrid.from_centres(lat, lon)
    r = Regridder(lat, lon, native)
    assert r.method == "linear"
    v = np.random.default_rng(1).normal(size=(24, 36))
    v[3:7, 5:9] = np.nan
    np.testing.assert_array_equal(r(v), v)


# ----------------------------------------------------------------------------------- nearest


def test_nearest_takes_the_cell_north_east_of_an_edge():
    lat, lon = centres(0.0, 0.05, 4), centres(0.0, 0.05, 4)
    v = np.arange(16.0).reshape(4, 4)
    out = regrid(v, lat, lon, CubeGrid(0.0, 0.0, 0.1, 2, 2), method="nearest")
    # Cube centres 0.05 / 0.15 sit on source edges: the source cell above/east of it is chosen.
    np.testing.assert_array_equal(out, v[np.ix_([1, 3], [1, 3])])


# ------------------------------------------------------------------------- dateline and wrap


def test_global_mean_wraps_across_the_dateline():
    lat, lon = centres(-90.0, 1.0, 180), centres(-180.0, 1.0, 360)
    v = np.tile(np.arange(360.0), (180, 1))
    grid = CubeGrid(-90.0, -181.0, 2.0, 90, 180)  # cell 0 spans 179 E .. 179 W
    out = regrid(v, lat, lon, grid, method="mean")
    np.testing.assert_allclose(out[:, 0], (359 + 0) / 2)
    np.testing.assert_allclose(out[:, 1], (1 + 2) / 2)


def test_global_linear_wraps_across_the_dateline():
    lat, lon = centres(-90.0, 2.0, 90), centres(-180.0, 2.0, 180)  # centres -179 .. 179
    v = np.tile(np.arange(180.0), (90, 1))
    grid = CubeGrid(-90.0, -180.0, 0.5, 360, 720)
    out = regrid(v, lat, lon, grid, method="linear")
    # Cube centre -179.75 lies between 179 (col 179) and -179 (col 0), 0.75 deg from -179.
    np.testing.assert_allclose(out[:, 0], 0.375 * 179 + 0.625 * 0)
    np.testing.assert_allclose(out[:, -1], 0.625 * 179 + 0.375 * 0)


def test_0_360_source_equals_rolled_minus180_180_source():
    rng = np.random.default_rng(3)
    lat = centres(-90.0, 1.0, 180)
    lon360 = centres(0.0, 1.0, 360)
    v360 = rng.normal(size=(180, 360))
    v360[rng.random((180, 360)) < 0.2] = np.nan
    lon180, v180 = np.roll(lon360, 180) - np.where(np.roll(lon360, 180) >= 180, 360, 0), np.roll(v360, 180, axis=1)
    assert np.all(np.diff(lon180) > 0)
    for grid in (CubeGrid(-90.0, -180.0, 2.0, 90, 180), CubeGrid(-90.0, -180.0, 0.5, 360, 720)):
        for method in ("mean", "linear", "nearest"):
            np.testing.assert_allclose(regrid(v360, lat, lon360, grid, method),
                                       regrid(v180, lat, lon180, grid, method), atol=1e-12)


def test_regional_grid_inside_the_globe_uses_no_wrap():
    lat, lon = centres(0.0, 0.5, 4), centres(-180.0, 0.5, 720)
    v = np.tile(np.arange(720.0), (4, 1))
    out = regrid(v, lat, lon, CubeGrid(0.0, 10.0, 1.0, 2, 3), method="mean")
    np.testing.assert_allclose(out, np.tile([380.5, 382.5, 384.5], (2, 1)))


# ------------------------------------------------------------------------ categorical, fraction


def test_majority_hand_cases_and_ties_go_to_the_lowest_code():
    lat, lon = centres(10.0, 0.05, 2), centres(0.0, 0.05, 8)
    codes = np.array([[1, 1, 2, 1, 2, 2, 1, 2],
                      [1, 2, 1, 1, 2, 2, 1, 2]], dtype=np.int8)
    out = regrid_categorical(codes, lat, lon, CubeGrid(10.0, 0.0, 0.1, 1, 4))
    # cells: 3 water; 3 water; 4 land; an east-west 2/2 tie -> lowest code
    np.testing.assert_array_equal(out, [[1, 1, 2, 1]])
    assert out.dtype == np.int8


def test_majority_never_invents_a_code():
    """REFERENCE.md 11.10: the categorical OSTIA mask was interpolated linearly (water 1 + land 2 -> 1.5)."""
    rng = np.random.default_rng(4)
    lat, lon = centres(-20.0, 1 / 12, 120), centres(30.0, 1 / 12, 120)
    codes = np.where(rng.random((120, 120)) < 0.5, 1, 2).astype(np.int16)
    out = regrid_categorical(codes, lat, lon, CubeGrid(-20.0, 30.0, 0.1, 100, 100))
    assert set(np.unique(out)) <= {1, 2}
    # 5 x 5 cells each exactly one source cell -> every source-size block keeps its code.
    big = regrid_categorical(codes, lat, lon, CubeGrid(-20.0, 30.0, 1 / 12, 120, 120), method="auto")
    np.testing.assert_array_equal(big, codes)


def test_categorical_nearest_when_refining():
    lat, lon = centres(0.0, 1.0, 2), centres(0.0, 1.0, 2)
    codes = np.array([[1, 2], [8, 9]], dtype=np.uint8)
    out = regrid_categorical(codes, lat, lon, CubeGrid(0.0, 0.0, 0.5, 4, 4), method="auto")
    np.testing.assert_array_equal(out, np.kron(codes, np.ones((2, 2), dtype=np.uint8)))


def test_fraction_is_the_true_area_fraction():
    lat, lon = centres(60.0, 0.5, 2), centres(0.0, 0.5, 2)
    mask = np.array([[True, True], [True, False]])
    out = regrid_fraction(mask, lat, lon, CubeGrid(60.0, 0.0, 1.0, 1, 1))
    s = np.sin(np.radians([60.0, 60.5, 61.0]))
    south, north = s[1] - s[0], s[2] - s[1]
    assert out[0, 0] == pytest.approx((2 * south + north) / (2 * south + 2 * north), abs=1e-6)
    assert out.dtype == np.float32


# ------------------------------------------------------------------------- errors and cache


def test_bad_axes_and_shapes_raise_input_error():
    lat, lon = centres(0.0, 0.5, 4), centres(0.0, 0.5, 4)
    grid = CubeGrid(0.0, 0.0, 1.0, 2, 2)
    with pytest.raises(InputError, match="ascending") as e:
        Regridder(lat[::-1], lon, grid, source="x.nc")
    assert e.value.path == "x.nc" and e.value.reason == "bad_grid"
    with pytest.raises(InputError, match="shape"):
        Regridder(lat, lon, grid)(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="expected one of"):
        Regridder(lat, lon, grid, method="cubic")


def test_weights_are_cached_per_axes_and_grid():
    lat, lon = centres(0.0, 0.5, 4), centres(0.0, 0.5, 4)
    grid = CubeGrid(0.0, 0.0, 1.0, 2, 2)
    assert get_regridder(lat, lon, grid, "mean") is get_regridder(lat.copy(), lon.copy(), grid, "mean")
    assert get_regridder(lat, lon, grid, "mean") is not get_regridder(lat, lon + 0.5, grid, "mean")


# ----------------------------------------------------------------------------- real OSTIA file


@pytest.fixture(scope="module")
def ostia_real(real_data):
    import xarray as xr

    with xr.open_dataset(real_data / OSTIA_REAL) as ds:
        return (ds["lat"].values, ds["lon"].values, ds["analysed_sst"].values[0])


def test_real_ostia_0_360_float32_axes_area_mean_equals_block_mean(ostia_real):
    """0.25 deg real OSTIA (lon 0..360, float32 axes, land NaN) -> 0.5 deg global in -180..180."""
    lat, lon, sst = ostia_real
    out = regrid(sst, lat, lon, CubeGrid(-90.0, -180.0, 0.5, 360, 720), method="mean")
    rolled = np.roll(sst.astype(np.float64), 720, axis=1)  # 0.125 E first -> 180.125 W first
    w = np.cos(np.radians(lat.astype(np.float64))).reshape(360, 2, 1, 1)
    blocks = rolled.reshape(360, 2, 720, 2)
    valid = np.isfinite(blocks)
    num = (np.where(valid, blocks, 0) * w).sum(axis=(1, 3))
    den = (valid * w).sum(axis=(1, 3))
    expect = np.where(den >= 0.5 * (2 * w.sum(axis=1)[:, 0]), num / np.where(den > 0, den, 1), np.nan)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expect))
    # cos-at-centre vs exact sin weights: equal to ~1e-7 relative; sst is float32.
    np.testing.assert_allclose(out, expect, atol=2e-3, equal_nan=True)


def test_real_ostia_refining_is_bilinear_where_all_neighbours_are_valid(ostia_real):
    lat, lon, sst = ostia_real
    grid = CubeGrid(-40.0, -30.0, 0.1, 100, 150)  # South Atlantic, open ocean
    r = Regridder(lat, lon, grid, "auto")
    assert r.method == "linear"
    out = r(sst)
    rgi = RegularGridInterpolator((lat.astype(np.float64), lon.astype(np.float64)), sst.astype(np.float64))
    gla, glo = np.meshgrid(grid.lat, grid.lon % 360, indexing="ij")
    expect = rgi(np.stack([gla.ravel(), glo.ravel()], axis=-1)).reshape(gla.shape)
    assert np.isfinite(expect).all()
    np.testing.assert_allclose(out, expect, atol=1e-3)
