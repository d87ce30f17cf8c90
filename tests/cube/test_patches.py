"""Patch index and splits (cube/patches.py) against hand-computed and analytic expectations."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from cube.errors import ConfigError
from cube.grid import CubeGrid
from cube.patches import build_patches, export_patches
from cube.tiling import PatchSpec, SplitSpec, assign_splits, n_val_clamped, sample_rows


def _ocean(grid: CubeGrid) -> np.ndarray:
    return np.ones((grid.nlat, grid.nlon), dtype=bool)


def _days(start: str, n: int) -> np.ndarray:
    return np.datetime64(start, "D") + np.arange(n)


def _covering_tiles(patches: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """How many tiles contain each point, by half-open edge tests (dateline-aware) - not by indices."""
    width = (patches.lon1.to_numpy() - patches.lon0.to_numpy()) % 360.0
    in_lat = (patches.lat0.to_numpy() <= lat[:, None]) & (lat[:, None] < patches.lat1.to_numpy())
    in_lon = ((lon[:, None] - patches.lon0.to_numpy()) % 360.0) < width
    return (in_lat & in_lon).sum(axis=1)


# ---------------------------------------------------------------------------------- specs

@pytest.mark.parametrize("kwargs, field", [
    ({"tile_size": 0}, "tile_size"), ({"tile_size": 12.5}, "tile_size"), ({"stride": 0}, "stride"),
    ({"invalid_threshold": 1.5}, "invalid_threshold"), ({"invalid_threshold": -0.1}, "invalid_threshold"),
])
def test_patch_spec_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PatchSpec(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"method": "geo"}, "method"), ({"val_fraction": 1.0}, "val_fraction"), ({"val_fraction": -0.1}, "val_fraction"),
    ({"seed": -1}, "seed"), ({"block_tiles": 0}, "block_tiles"), ({"method": "year"}, "val_year"),
    ({"val_year": "2018"}, "val_year"),
])
def test_split_spec_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SplitSpec(**kwargs)


def test_specs_round_trip_and_reject_unknown_keys():
    assert PatchSpec.from_dict(PatchSpec(64, 32, 0.2).to_dict()) == PatchSpec(64, 32, 0.2)
    assert SplitSpec.from_dict(SplitSpec("year", val_year=2018).to_dict()) == SplitSpec("year", val_year=2018)
    with pytest.raises(ConfigError, match="tile_size"):
        PatchSpec.from_dict({"tile": 128})
    assert PatchSpec().invalid_threshold == 0.5  # docs' recommended value, not the script's 0.2


# ---------------------------------------------------------------------------------- tiles

def test_tile_edges_are_integer_multiples_of_the_tile_span():
    grid = CubeGrid(lat_south=-80.0, lon_west=-180.0, resolution=0.1, nlat=1600, nlon=3600)
    p = build_patches(_ocean(grid), grid, PatchSpec(tile_size=128, invalid_threshold=1.0))
    n_rows, n_cols = 1600 // 128, 3600 // 128
    assert len(p) == n_rows * n_cols
    span = Decimal(128) * Decimal("0.1")
    k = np.arange(n_rows)
    lat_expected = np.array([float(Decimal(-80) + int(i) * span) for i in k])
    np.testing.assert_allclose(np.unique(p.lat0), lat_expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.unique(p.lat1), lat_expected + 12.8, atol=1e-9, rtol=0)
    last = p.iloc[-1]
    assert abs(last.lon1 - float(Decimal(-180) + n_cols * span)) < 1e-9  # 178.4, no accumulated error
    assert abs(last.lat1 - float(Decimal(-80) + n_rows * span)) < 1e-9  # 73.6
    # Neighbours share their edge bit for bit (half-open: one closes where the next opens).
    first_row = p[p.row0 == 0]
    np.testing.assert_array_equal(first_row.lon1.to_numpy()[:-1], first_row.lon0.to_numpy()[1:])
    # Order: lat outer (south first), lon inner, ids 0..N-1.
    assert p.patch.tolist() == list(range(len(p)))
    assert (np.diff(p.row0) >= 0).all() and (p.col0.iloc[:n_cols].diff().dropna() == 128).all()


def test_every_ocean_cell_is_in_exactly_one_tile_except_the_remainder():
    grid = CubeGrid(lat_south=10.0, lon_west=20.0, resolution=0.5, nlat=37, nlon=45)  # regional, not global
    p = build_patches(_ocean(grid), grid, PatchSpec(tile_size=8, invalid_threshold=1.0))
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    count = _covering_tiles(p, lat.ravel(), lon.ravel()).reshape(lat.shape)
    tiled_rows, tiled_cols = (37 // 8) * 8, (45 // 8) * 8
    assert (count[:tiled_rows, :tiled_cols] == 1).all()
    assert (count[tiled_rows:, :] == 0).all() and (count[:, tiled_cols:] == 0).all()
    # A cell centre exactly on a shared tile edge cannot exist, so test the edge points themselves:
    # a point on the edge between two tiles belongs to the northern / eastern one only.
    edge_lat, edge_lon = np.array([10.0 + 4.0]), np.array([20.0 + 4.0])  # 8 cells x 0.5 deg = 4 deg
    assert _covering_tiles(p, edge_lat, edge_lon)[0] == 1


def test_quarter_land_tile_has_invalid_fraction_one_quarter_and_threshold_drops():
    grid = CubeGrid(lat_south=0.0, lon_west=0.0, resolution=1.0, nlat=8, nlon=16)
    ocean = _ocean(grid)
    ocean[0:2, 0:8] = False      # tile (0, 0): a 2 x 8 strip of land = 16 / 64 = 0.25
    ocean[0:8, 8:16:2] = False   # tile (0, 8): every other column land = 0.5
    p = build_patches(ocean, grid, PatchSpec(tile_size=8, invalid_threshold=1.0))
    assert p.invalid_fraction.tolist() == [0.25, 0.5]
    kept = build_patches(ocean, grid, PatchSpec(tile_size=8, invalid_threshold=0.3))
    assert kept.col0.tolist() == [0] and kept.patch.tolist() == [0]
    # "above the threshold" is dropped: exactly at the threshold is kept.
    assert len(build_patches(ocean, grid, PatchSpec(tile_size=8, invalid_threshold=0.5))) == 2
    assert len(build_patches(ocean, grid, PatchSpec(tile_size=8, invalid_threshold=0.2))) == 0


def test_dropping_renumbers_patches_and_records_the_spec():
    grid = CubeGrid(lat_south=0.0, lon_west=0.0, resolution=1.0, nlat=4, nlon=12)
    ocean = _ocean(grid)
    ocean[:, 4:8] = False  # the middle tile is all land
    p = build_patches(ocean, grid, PatchSpec(tile_size=4))
    assert p.patch.tolist() == [0, 1] and p.col0.tolist() == [0, 8]
    assert p.attrs["patch_spec"] == PatchSpec(tile_size=4).to_dict() and p.attrs["grid"] == grid.to_dict()


def test_global_grid_wraps_tiles_across_the_dateline():
    grid = CubeGrid(lat_south=-12.8, lon_west=-180.0, resolution=0.1, nlat=256, nlon=3600)
    ocean = _ocean(grid)
    ocean[:, 0:32] = False  # 3.2 deg of land just east of the dateline
    p = build_patches(ocean, grid, PatchSpec(tile_size=128, stride=64, invalid_threshold=1.0))
    row = p[p.row0 == 0]
    assert len(row) == 3600 // 64
    straddling = row[row.col0 + 128 > 3600]
    assert straddling.col0.tolist() == [55 * 64]
    tile = straddling.iloc[0]
    assert tile.lon0 == pytest.approx(172.0, abs=1e-9) and tile.lon1 == pytest.approx(-175.2, abs=1e-9)
    # Circular mean: the centre is on the dateline side (178.4), not the naive (172 - 175.2) / 2.
    assert tile.lon_center == pytest.approx(178.4, abs=1e-9)
    # Its columns 3520..3599 and 0..47 include the 32 land columns: 32 / 128 invalid.
    assert tile.invalid_fraction == pytest.approx(32 / 128)
    lon_c = row.lon_center.to_numpy()
    np.testing.assert_allclose(np.sin(np.deg2rad(lon_c)),
                               np.sin(np.deg2rad(-180 + (row.col0.to_numpy() + 64) * 0.1)), atol=1e-12)


def test_global_grid_in_0_360_has_a_tile_centred_near_the_dateline():
    grid = CubeGrid(lat_south=-12.8, lon_west=0.0, resolution=0.1, nlat=128, nlon=3600)
    p = build_patches(_ocean(grid), grid, PatchSpec(tile_size=128))
    assert len(p) == 3600 // 128
    crossing = p[p.lon1 < p.lon0]
    assert crossing.col0.tolist() == [14 * 128]  # 179.2 .. 192.0 E
    tile = crossing.iloc[0]
    assert tile.lon0 == pytest.approx(179.2) and tile.lon1 == pytest.approx(-168.0)
    assert tile.lon_center == pytest.approx(-174.4, abs=1e-9)  # 185.6 E, not the naive 5.6
    assert ((p.lon0 >= -180) & (p.lon0 < 180)).all()


def test_non_overlapping_global_grid_leaves_the_remainder_columns_out():
    grid = CubeGrid(lat_south=0.0, lon_west=-180.0, resolution=0.1, nlat=128, nlon=3600)
    p = build_patches(_ocean(grid), grid, PatchSpec(tile_size=128))
    assert len(p) == 28 and (p.lon1 > p.lon0).all()
    assert _covering_tiles(p, np.array([5.0]), np.array([179.0]))[0] == 0  # 178.4..180 is the remainder


def test_a_tile_ending_on_the_dateline_does_not_look_like_a_crossing_one():
    regional = CubeGrid(lat_south=0.0, lon_west=167.2, resolution=0.1, nlat=128, nlon=128)
    p = build_patches(_ocean(regional), regional, PatchSpec(tile_size=128))
    assert p.lon0.iloc[0] == pytest.approx(167.2) and p.lon1.iloc[0] == 180.0
    assert p.lon_center.iloc[0] == pytest.approx(173.6)
    twelfth = CubeGrid(lat_south=0.0, lon_west=-180.0, resolution=1 / 12, nlat=120, nlon=4320)
    p = build_patches(_ocean(twelfth), twelfth, PatchSpec(tile_size=120))
    assert len(p) == 36 and p.lon0.iloc[0] == -180.0 and p.lon1.iloc[-1] == 180.0
    assert (p.lon1 > p.lon0).all()


def test_tile_larger_than_grid_and_bad_mask_raise():
    grid = CubeGrid(lat_south=0.0, lon_west=0.0, resolution=1.0, nlat=4, nlon=4)
    with pytest.raises(ValueError, match="tile_size"):
        build_patches(_ocean(grid), grid, PatchSpec(tile_size=8))
    with pytest.raises(ValueError, match="shape"):
        build_patches(np.ones((4, 5), bool), grid, PatchSpec(tile_size=2))
    with pytest.raises(ValueError, match="boolean"):
        build_patches(np.full((4, 4), 0.5), grid, PatchSpec(tile_size=2))


# ---------------------------------------------------------------------------------- splits

def _grid_patches(n_lat_tiles: int, n_lon_tiles: int, tile: int = 4, stride: int | None = None) -> pd.DataFrame:
    grid = CubeGrid(lat_south=0.0, lon_west=0.0, resolution=1.0, nlat=n_lat_tiles * tile, nlon=n_lon_tiles * tile)
    return build_patches(_ocean(grid), grid, PatchSpec(tile_size=tile, stride=stride))


def test_patch_split_hand_worked_case():
    # 10 patches, val_fraction 0.15: round(1.5) = 2 val patches; numpy's PCG64 stream gives
    # default_rng(7).permutation(10) = [8, 0, 7, 1, ...], so patches 8 and 0 are val.
    p = assign_splits(_grid_patches(2, 5), SplitSpec())
    assert sorted(p.patch[p.split == "val"]) == [0, 8]
    assert (p.split[~p.patch.isin([0, 8])] == "train").all()


def test_patch_split_reproduces_the_reference_algorithm():
    p = _grid_patches(7, 25)  # 175 patches, the 0.1 deg reference size
    out = assign_splits(p, SplitSpec(val_fraction=0.15, seed=7))
    n_val = 26  # docs: 175 patches -> 149 train / 26 val
    expected = set(np.random.default_rng(7).permutation(p.patch.to_numpy())[:n_val])
    assert set(out.patch[out.split == "val"]) == expected
    assert (out.split == "train").sum() == 149
    assert "split" not in p.columns  # input untouched


@pytest.mark.parametrize("n, frac, expected", [(0, 0.15, 0), (1, 0.15, 0), (2, 0.15, 1), (2, 0.9, 1),
                                               (10, 0.0, 0), (3, 0.01, 1), (751, 0.15, 113), (10, 0.25, 2)])
def test_val_fraction_clamp(n, frac, expected):
    assert n_val_clamped(n, frac) == expected


def test_clamp_applies_to_tables():
    one = assign_splits(_grid_patches(1, 1), SplitSpec())
    assert one.split.tolist() == ["train"]
    two = assign_splits(_grid_patches(1, 2), SplitSpec())
    assert sorted(two.split) == ["train", "val"]
    none = assign_splits(_grid_patches(2, 2), SplitSpec(val_fraction=0.0))
    assert (none.split == "train").all()


def test_window_split_keeps_blocks_together():
    p = assign_splits(_grid_patches(6, 8), SplitSpec(method="window", block_tiles=2, val_fraction=0.25, seed=3))
    block = list(zip(p.row0 // 8, p.col0 // 8))  # 2 tiles x 4 cells
    by_block = pd.Series(p.split.to_numpy()).groupby(pd.Series(block)).nunique()
    assert (by_block == 1).all() and len(by_block) == 12
    val_blocks = {b for b, s in zip(block, p.split) if s == "val"}
    assert len(val_blocks) == 3  # round(12 * 0.25)
    # The blocks are drawn by default_rng(seed).permutation over blocks numbered south-west first.
    ordered = sorted(set(block))
    expected = {ordered[i] for i in np.random.default_rng(3).permutation(12)[:3]}
    assert val_blocks == expected


def test_year_and_random_methods_leave_the_patch_split_to_rows():
    p = assign_splits(_grid_patches(1, 3), SplitSpec(method="random"))
    assert (p.split == "all").all()


def test_overlapping_tiles_need_val_year():
    p = _grid_patches(3, 3, tile=4, stride=2)
    for method in ("patch", "window", "random"):
        with pytest.raises(ValueError, match="val_year"):
            assign_splits(p, SplitSpec(method=method))
    assign_splits(p, SplitSpec(method="year", val_year=2018))
    assign_splits(p, SplitSpec(method="patch", val_year=2018))
    table_without_attrs = pd.DataFrame(p)
    table_without_attrs.attrs = {}
    with pytest.raises(ValueError, match="patch_spec"):
        assign_splits(table_without_attrs, SplitSpec())
    with pytest.raises(ValueError, match="val_year"):
        assign_splits(table_without_attrs, SplitSpec(), patch_spec=PatchSpec(tile_size=4, stride=2))


# ---------------------------------------------------------------------------------- rows

def test_window_validity_at_both_ends_and_even_window():
    p = assign_splits(_grid_patches(1, 2), SplitSpec(val_fraction=0.0))
    days = _days("2010-01-01", 10)
    rows = sample_rows(p, days, 3, SplitSpec(val_fraction=0.0))
    assert sorted(set(rows.day_index)) == list(range(1, 9))
    assert rows.day.min() == pd.Timestamp("2010-01-02") and rows.day.max() == pd.Timestamp("2010-01-09")
    assert len(rows) == 2 * 8
    even = sample_rows(p, days, 4, SplitSpec(val_fraction=0.0))  # 4 -> 5 days, radius 2
    assert sorted(set(even.day_index)) == list(range(2, 8))
    assert sorted(set(sample_rows(p, days, 1, SplitSpec(val_fraction=0.0)).day_index)) == list(range(10))
    # Date-major order: both patches of a day before the next day.
    assert rows.day_index.tolist()[:4] == [1, 1, 2, 2] and rows.patch.tolist()[:4] == [0, 1, 0, 1]
    assert sample_rows(p, days, 11, SplitSpec(val_fraction=0.0)).empty


def test_window_needs_a_data_day():
    p = assign_splits(_grid_patches(1, 1), SplitSpec())
    days = _days("2010-01-01", 9)
    has_data = np.ones(9, bool)
    has_data[3:6] = False  # days 3, 4, 5 missing: only the window centred on 4 is empty
    rows = sample_rows(p, days, 3, SplitSpec(), data_days_valid=has_data)
    assert sorted(rows.day_index) == [1, 2, 3, 5, 6, 7]


def test_min_profiles_counts_per_patch_not_worldwide_reference_11_7():
    p = assign_splits(_grid_patches(1, 2), SplitSpec(val_fraction=0.0))
    days = _days("2010-01-01", 10)
    obs = np.zeros((2, 10), np.int64)
    obs[0, 5] = 1       # patch 0: one profile, on day 5
    obs[1, :] = 50      # patch 1: many profiles every day
    assert (obs.sum(axis=0) > 0).all()  # the reference's worldwide daily count keeps every row
    rows = sample_rows(p, days, 3, SplitSpec(val_fraction=0.0), obs_count=obs, min_profiles=1)
    assert sorted(rows.day_index[rows.patch == 0]) == [4, 5, 6]
    assert sorted(rows.day_index[rows.patch == 1]) == list(range(1, 9))
    assert rows.obs_count[rows.patch == 0].tolist() == [1, 1, 1]
    assert (rows.obs_count[rows.patch == 1] == 150).all()
    with pytest.raises(ValueError, match="obs_count"):
        sample_rows(p, days, 3, SplitSpec(val_fraction=0.0), min_profiles=1)


def test_rows_take_the_patch_split():
    p = assign_splits(_grid_patches(2, 5), SplitSpec())  # val = patches 0 and 8 (hand-worked above)
    rows = sample_rows(p, _days("2010-01-01", 5), 1, SplitSpec())
    assert set(rows.patch[rows.split == "val"]) == {0, 8}
    assert len(rows) == 50


def test_year_split_by_centre_day():
    spec = SplitSpec(method="year", val_year=2018)
    p = assign_splits(_grid_patches(1, 2), spec)
    days = _days("2017-12-28", 10)  # ... 2017-12-31 | 2018-01-01 ...
    rows = sample_rows(p, days, 3, spec)
    val_days = sorted(set(rows.day[rows.split == "val"].dt.strftime("%Y-%m-%d")))
    assert val_days == ["2018-01-01", "2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05"]
    train_days = sorted(set(rows.day[rows.split == "train"].dt.strftime("%Y-%m-%d")))
    assert train_days == ["2017-12-29", "2017-12-30", "2017-12-31"]  # windows may reach into 2018


def test_val_year_with_a_patch_split_is_a_spatio_temporal_holdout():
    spec = SplitSpec(method="patch", val_year=2018)
    p = assign_splits(_grid_patches(2, 5, tile=4, stride=2), spec)
    rows = sample_rows(p, _days("2017-12-30", 4), 1, spec)
    val_patches = set(p.patch[p.split == "val"])
    assert ((rows.split == "val") == rows.patch.isin(val_patches)).all()
    assert (rows.day[rows.split == "val"].dt.year == 2018).all()
    assert (rows.day[rows.split == "train"].dt.year == 2017).all()
    assert len(rows) == 2 * len(p)  # each patch keeps the 2 days of its own side


def test_random_split_is_sample_level_with_the_clamp():
    spec = SplitSpec(method="random", val_fraction=0.2, seed=11)
    p = assign_splits(_grid_patches(1, 3), spec)
    rows = sample_rows(p, _days("2010-01-01", 12), 3, spec)
    n = len(rows)
    assert n == 3 * 10 and (rows.split == "val").sum() == 6
    expected = np.sort(np.random.default_rng(11).permutation(n)[:6])
    np.testing.assert_array_equal(np.flatnonzero(rows.split == "val"), expected)


def test_rows_refuse_a_table_split_for_another_method():
    p = assign_splits(_grid_patches(1, 2), SplitSpec())
    with pytest.raises(ValueError, match="another method"):
        sample_rows(p, _days("2010-01-01", 5), 1, SplitSpec(method="random"))
    with pytest.raises(ValueError, match="assign_splits"):
        sample_rows(_grid_patches(1, 2), _days("2010-01-01", 5), 1, SplitSpec())
    with pytest.raises(ValueError, match="contiguous"):
        sample_rows(p, np.array(["2010-01-01", "2010-01-03"], "datetime64[D]"), 1, SplitSpec())


def test_rows_at_reference_scale_are_vectorised():
    spec = SplitSpec()
    p = assign_splits(_grid_patches(7, 25), spec)
    days = _days("2010-01-01", 5000)
    obs = np.random.default_rng(0).poisson(0.3, size=(175, 5000))
    rows = sample_rows(p, days, 7, spec, obs_count=obs, min_profiles=1)
    # Independent count: windows with >= 1 observation, via a moving sum by convolution.
    window = np.stack([np.convolve(o, np.ones(7, int), mode="valid") for o in obs])
    assert len(rows) == int((window >= 1).sum())


# ---------------------------------------------------------------------------------- export

def test_export_csv_round_trip_with_wkt(tmp_path):
    grid = CubeGrid(lat_south=-12.8, lon_west=0.0, resolution=0.1, nlat=128, nlon=3600)
    p = assign_splits(build_patches(_ocean(grid), grid, PatchSpec(tile_size=128)), SplitSpec())
    export_patches(p, tmp_path / "patches.csv")
    back = pd.read_csv(tmp_path / "patches.csv")
    pd.testing.assert_frame_equal(back.drop(columns="wkt"), p, check_dtype=False, check_exact=True)
    first = back.wkt.iloc[0]
    assert first == ("POLYGON ((0.000000 -12.800000, 12.800000 -12.800000, 12.800000 0.000000, "
                     "0.000000 0.000000, 0.000000 -12.800000))")
    crossing = back.wkt[back.col0 == 14 * 128].iloc[0]
    assert crossing.startswith("POLYGON ((179.200000 -12.800000, 192.000000 -12.800000")


def test_export_parquet_round_trip_and_bad_suffix(tmp_path):
    p = assign_splits(_grid_patches(2, 3), SplitSpec())
    export_patches(p, tmp_path / "patches.parquet")
    back = pd.read_parquet(tmp_path / "patches.parquet")
    pd.testing.assert_frame_equal(back, p, check_dtype=False)
    assert back.row0.dtype == np.int64 and back.lat0.dtype == np.float64
    with pytest.raises(ValueError, match="suffix"):
        export_patches(p, tmp_path / "patches.txt")
