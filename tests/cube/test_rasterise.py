"""cube.rasterise against hand-rasterised expectations."""

from __future__ import annotations

import numpy as np
import pytest

from cube.grid import CubeGrid
from cube.rasterise import RasterisedProfiles, rasterise

NAN = np.nan
GRID = CubeGrid(10.0, -40.0, 0.5, 4, 6)  # lat 10..12, lon -40..-37, 0.5 deg cells


def dense_of(r: RasterisedProfiles):
    return r.dense(0, r.shape[0])


def test_two_profiles_in_one_cell_average_per_level_independently():
    values = np.array([[10.0, 8.0, NAN],
                       [12.0, NAN, 4.0]])
    r = rasterise([1, 1], [10.2, 10.4], [-39.9, -39.6], values, GRID, n_days=3)
    count, total = dense_of(r)
    assert count.shape == (3, 3, 4, 6) and count.dtype == np.int32 and total.dtype == np.float32
    expect_count = np.zeros((3, 3, 4, 6), np.int32)
    expect_sum = np.zeros((3, 3, 4, 6), np.float32)
    expect_count[1, :, 0, 0] = [2, 1, 1]
    expect_sum[1, :, 0, 0] = [22.0, 8.0, 4.0]
    np.testing.assert_array_equal(count, expect_count)
    np.testing.assert_array_equal(total, expect_sum)
    assert r.n_observations == 4 and r.dropped_outside == 0 and r.dropped_out_of_time == 0
    np.testing.assert_array_equal(r.days_with_data(), [1])


def test_profile_on_a_cell_edge_is_counted_once_north_east():
    """REFERENCE.md 11.12: inclusive bbox edges counted an edge profile in both neighbours."""
    # lat 10.5 / lon -39.5 are edges between rows 0|1 and cols 0|1.
    r = rasterise([0], [10.5], [-39.5], [[5.0]], GRID, n_days=1)
    count, _ = dense_of(r)
    assert count.sum() == 1 and count[0, 0, 1, 1] == 1
    # the grid's own west / south edges are inside, its north / east edges outside (half-open)
    r = rasterise([0, 0, 0, 0], [10.0, 12.0, 11.0, 11.0], [-38.0, -38.0, -40.0, -37.0], np.ones((4, 1)), GRID, 1)
    count, _ = dense_of(r)
    assert count[0, 0, 0, 4] == 1 and count[0, 0, 2, 0] == 1 and count.sum() == 2
    assert r.dropped_outside == 2


def test_real_zero_degrees_counts_and_nan_levels_do_not():
    values = np.array([[0.0, NAN, 0.0, NAN]])
    r = rasterise([0], [11.2], [-38.2], values, GRID, n_days=1)
    count, total = dense_of(r)
    np.testing.assert_array_equal(count[0, :, 2, 3], [1, 0, 1, 0])
    np.testing.assert_array_equal(total[0, :, 2, 3], [0.0, 0.0, 0.0, 0.0])
    assert count.sum() == 2


def test_out_of_grid_and_out_of_time_profiles_are_dropped_and_counted():
    day = [0, -1, 5, 2, 2, 2, 1]
    lat = [10.1, 10.1, 10.1, 9.9, 12.5, NAN, 11.9]
    lon = [-39.9, -39.9, -39.9, -39.9, -39.9, -39.9, -37.1]
    r = rasterise(day, lat, lon, np.ones((7, 2)), GRID, n_days=5)
    assert r.dropped_out_of_time == 2  # day -1 and day 5
    assert r.dropped_outside == 3  # south, north, NaN latitude
    count, _ = dense_of(r)
    assert count.sum() == 4 and count[0, :, 0, 0].tolist() == [1, 1] and count[1, :, 3, 5].tolist() == [1, 1]


def test_0_360_longitudes_land_in_the_same_cell():
    values = np.array([[3.0], [5.0]])
    r = rasterise([0, 0], [11.1, 11.1], [-38.7, 360 - 38.7], values, GRID, n_days=1)
    count, total = dense_of(r)
    assert count[0, 0, 2, 2] == 2 and total[0, 0, 2, 2] == 8.0 and count.sum() == 2


def test_global_grid_wraps_at_the_dateline():
    grid = CubeGrid(-90.0, -180.0, 1.0, 180, 360)  # col j covers [-180 + j, -179 + j)
    lon = [179.5, -180.5, 180.0, -180.0, 540.0, -179.999, 359.999]
    r = rasterise(np.zeros(7, int), np.zeros(7), lon, np.ones((7, 1)), grid, n_days=1)
    count, _ = dense_of(r)
    assert r.dropped_outside == 0
    assert count[0, 0, 90, 359] == 2  # 179.5 E and 180.5 W = 179.5 E
    assert count[0, 0, 90, 0] == 4  # the dateline itself (as 180, -180, 540) and 179.999 W
    assert count[0, 0, 90, 179] == 1  # 359.999 E = 0.001 W
    assert count.sum() == 7


def test_dense_windows_and_combine():
    rng = np.random.default_rng(5)
    n = 500
    day = rng.integers(-2, 12, n)
    lat = rng.uniform(9.5, 12.5, n)
    lon = rng.uniform(-40.5, -36.5, n)
    values = np.where(rng.random((n, 3)) < 0.7, rng.normal(15, 3, (n, 3)), NAN)
    grid = GRID
    r = rasterise(day, lat, lon, values, grid, n_days=10)
    # Independent expectation: a per-profile loop with the cell rule written out (half-open cells).
    count = np.zeros((10, 3, 4, 6), np.int64)
    total = np.zeros((10, 3, 4, 6))
    for d, la, lo, v in zip(day, lat, lon, values):
        i, j = int(np.floor((la - 10.0) / 0.5)), int(np.floor((lo + 40.0) / 0.5))
        if 0 <= d < 10 and 0 <= i < 4 and 0 <= j < 6:
            for k in range(3):
                if np.isfinite(v[k]):
                    count[d, k, i, j] += 1
                    total[d, k, i, j] += v[k]
    got_count, got_sum = r.dense(0, 10)
    np.testing.assert_array_equal(got_count, count)
    np.testing.assert_allclose(got_sum, total, rtol=1e-6)
    # a window is the same slice of the full dense raster
    wc, ws = r.dense(3, 7, rows=slice(1, 3), cols=slice(2, 6))
    np.testing.assert_array_equal(wc, count[3:7, :, 1:3, 2:6])
    np.testing.assert_allclose(ws, total[3:7, :, 1:3, 2:6], rtol=1e-6)
    # two halves combined equal the whole
    half = n // 2
    parts = [rasterise(day[s], lat[s], lon[s], values[s], grid, 10) for s in (slice(0, half), slice(half, n))]
    both = RasterisedProfiles.combine(parts)
    np.testing.assert_array_equal(both.dense()[0], count)
    np.testing.assert_allclose(both.dense()[1], total, rtol=1e-6)
    assert both.dropped_outside == r.dropped_outside and both.dropped_out_of_time == r.dropped_out_of_time


def test_empty_input_and_bad_arguments():
    r = rasterise(np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros((0, 50)), GRID, n_days=2)
    count, total = r.dense()
    assert count.shape == (2, 50, 4, 6) and count.sum() == 0 and r.n_observations == 0
    with pytest.raises(ValueError, match="integers"):
        rasterise([0.5], [10.1], [-39.9], [[1.0]], GRID, 1)
    with pytest.raises(ValueError, match="values"):
        rasterise([0, 1], [10.1, 10.2], [-39.9, -39.8], [[1.0]], GRID, 2)
    with pytest.raises(ValueError, match="unit-step"):
        r.dense(0, 3)
