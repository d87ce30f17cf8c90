"""Sample assembly and CubeStream against an analytic cube (tests/_cubes.py): every expected value
is computed here by hand from the closed-form fields, not by the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _cubes import DAYS, GRID, PROFILE_OBS, SNAPSHOTS, TILE, make_analytic_cube, ocean_and_bottom, sst_k, thetao_c
from cube.constants import denormalise_to_celsius, normalise_celsius
from loaders.config import DatasetConfig, EOConfig, XConfig
from loaders.stream import CubeStream, StreamLoader


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("analytic") / "cube.zarr")


def _index_of(stream: CubeStream, row0: int, col0: int, centre: str) -> int:
    rows = stream.windows.rows
    patches = stream.reader.patches.set_index("patch")
    for i in range(len(rows)):
        p = patches.loc[rows.loc[i, "patch"]]
        if p.row0 == row0 and p.col0 == col0 and str(rows.loc[i, "day"])[:10] == centre:
            return i
    raise KeyError((row0, col0, centre))


def test_argo_x_is_count_weighted_window_mean_and_keeps_zero_degc(cube):
    """REFERENCE.md 11.13: zero-filled x with validity from counts, so 0 degC is a real value."""
    stream = CubeStream(cube, DatasetConfig(window_days=5, x=XConfig(source="argo")), split="all")
    # Window centred on day 4 covers days 2..6: observations of (level 5, row 20, col 30) are 10, 12, 14.
    i = _index_of(stream, 16, 16, str(DAYS[4]))
    s = stream.sample(i)
    r, c = TILE - 1 - (20 - 16), 30 - 16                      # north-up row of cube row 20 in the tile
    assert s["x_valid_mask"][5, r, c]
    assert denormalise_to_celsius(s["x"][5, r, c]) == pytest.approx((10 + 12 + 14) / 3, abs=1e-4)
    assert s["x_valid_mask"][6, r, c]                          # the real 0 degC observation is valid
    assert denormalise_to_celsius(s["x"][6, r, c]) == pytest.approx(0.0, abs=1e-4)
    assert s["x_valid_mask"].sum() == 2 and s["x_valid_mask_1d"].sum() == 1
    assert np.all(s["x"][~s["x_valid_mask"]] == 0)


def test_y_is_window_mean_of_nearest_snapshot_per_day(cube):
    stream = CubeStream(cube, DatasetConfig(window_days=5, x=XConfig(source="none")), split="all")
    centre = 11                                                  # days 9..13 = Feb 3..7
    i = _index_of(stream, 16, 32, str(DAYS[centre]))
    s = stream.sample(i)
    # Hand: nearest snapshot by real day distance (from noon): Feb 3 -> Feb 4 (s=2)... Feb 7 -> Feb 9 (s=3)
    days = DAYS[centre - 2: centre + 3]
    snap_days = SNAPSHOTS.astype("datetime64[D]")
    nearest = [int(np.argmin(np.abs((d - snap_days).astype(int) + 0.5))) for d in days]
    lat = GRID.lat[16:32][::-1]                                 # north-up
    lon = GRID.lon[32:48]
    z = 3
    expected = np.mean([thetao_c(sn, z, lat[:, None], lon[None, :]) for sn in nearest], axis=0)
    got = denormalise_to_celsius(s["y"][z])
    assert np.allclose(got, expected, atol=2e-4)
    assert s["y_valid_mask"][z].all()


def test_north_up_and_eo_window_mean(cube):
    stream = CubeStream(cube, DatasetConfig(window_days=3, x=XConfig(source="none")), split="all")
    centre = 8                                                   # days 7..9, day 7 is all-NaN in OSTIA
    i = _index_of(stream, 16, 16, str(DAYS[centre]))
    s = stream.sample(i)
    lat = GRID.lat[16:32][::-1][:, None]
    lon = GRID.lon[16:32][None, :]
    expected = np.mean([sst_k(t, lat, lon) for t in (8, 9)], axis=0) - 273.15
    assert np.allclose(denormalise_to_celsius(s["eo"][0]), expected, atol=2e-4)
    assert s["eo"][0, 0, 0] > s["eo"][0, -1, 0]                  # row 0 is the warm north
    assert s["land_mask"].dtype == torch.float32 if isinstance(s["land_mask"], torch.Tensor) else True


def test_land_and_seabed_are_zero_and_invalid(cube):
    stream = CubeStream(cube, DatasetConfig(window_days=1, x=XConfig(source="none")), split="all")
    ocean, bottom = ocean_and_bottom()
    i = _index_of(stream, 0, 0, str(DAYS[5]))
    s = stream.sample(i)
    land = ~ocean[:TILE, :TILE][::-1]
    assert np.array_equal(s["land_mask"][0] == 0, land)
    assert np.all(s["eo"][0][land] == 0) and not s["y_valid_mask"][:, land].any()
    shelf = CubeStream(cube, DatasetConfig(window_days=1, x=XConfig(source="none")), split="all")
    j = _index_of(shelf, 0, 16, str(DAYS[5]))
    t = shelf.sample(j)
    col = 25 - 16
    row = TILE - 1 - (12 - 0)
    assert t["y_valid_mask"][:12, row, col].all() and not t["y_valid_mask"][12:, row, col].any()
    assert np.all(t["y"][12:, row, col] == 0)


def test_date_feb29_and_coords(cube):
    from loaders.sample import yyyymmdd

    assert yyyymmdd(np.datetime64("2012-02-29")) == 20120228
    assert yyyymmdd(np.datetime64("2012-02-29"), feb29_to_feb28=False) == 20120229
    stream = CubeStream(cube, DatasetConfig(window_days=1, x=XConfig(source="none")), split="all")
    s = stream.sample(0)
    assert s["date"] == int(str(stream.windows[0].centre).replace("-", ""))
    p = stream.reader.patches.set_index("patch").loc[stream.windows[0].patch]
    assert s["coords"][0] == pytest.approx((p.lat0 + p.lat1) / 2)


def test_target_bands_and_normalisation_inverse():
    t = np.array([-2.0, 0.0, 16.5927, 30.0])
    assert np.allclose(denormalise_to_celsius(normalise_celsius(t)), t, atol=1e-12)
    # (273.15 - 289.74267) / 10.93340 = -1.51761 (REFERENCE.md 7 prints it rounded as -1.5174)
    assert normalise_celsius(0.0) == pytest.approx(-1.51761, abs=1e-5)


def test_sharding_two_ranks_three_workers_is_disjoint_and_complete(cube):
    stream = CubeStream(cube, DatasetConfig(window_days=3, block_size=4), split="all")
    n = len(stream)
    seen = []
    for epoch in (0, 1):
        seen_epoch = []
        for rank in range(2):
            for worker in range(3):
                seen_epoch.extend(stream.shard_indices(epoch, rank, 2, worker, 3).tolist())
        # padded like DistributedSampler: each window once, plus n % 2 repeated to even the ranks
        assert len(seen_epoch) == 2 * -(-n // 2) and set(seen_epoch) == set(range(n))
        seen.append(seen_epoch)
    assert seen[0] != seen[1]                                    # a new shuffle each epoch


def test_resume_mid_epoch_yields_exactly_the_rest(cube):
    cfg = DatasetConfig(window_days=3, x=XConfig(source="tracks", mask_fraction=0.9), block_size=3)
    stream = CubeStream(cube, cfg, split="all")
    loader = StreamLoader(stream, batch_size=4, num_workers=0)
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    loader.commit()
    state = loader.state_dict()
    rest_reference = [b["info"]["index"].tolist() for b in it]
    resumed = CubeStream(cube, cfg, split="all")
    resumed.load_state_dict(state)
    rest = [b["info"]["index"].tolist() for b in StreamLoader(resumed, batch_size=4, num_workers=0)]
    assert rest == rest_reference
    done = sum((b["info"]["index"].tolist() for b in first), [])
    assert sorted(done + sum(rest, [])) == list(range(len(stream)))


def test_corruption_is_reproducible_per_epoch(cube):
    """REFERENCE.md 11.15: synthetic pixels came from default_rng(seed + idx), the same every epoch."""
    cfg = DatasetConfig(window_days=1, x=XConfig(source="synthetic_pixels", pixel_count=20))
    stream = CubeStream(cube, cfg, split="all")
    a, b, c = stream.sample(2, epoch=0), stream.sample(2, epoch=0), stream.sample(2, epoch=1)
    assert np.array_equal(a["x_valid_mask"], b["x_valid_mask"])
    assert not np.array_equal(a["x_valid_mask"], c["x_valid_mask"])


def test_augmentation_keeps_tensors_aligned(cube):
    cfg = DatasetConfig(window_days=1, x=XConfig(source="tracks", mask_fraction=0.8), augment=True, eo=EOConfig(source="glorys_surface"))
    stream = CubeStream(cube, cfg, split="all")
    for i in range(6):
        s = stream.sample(i)
        # x is y where observed, whatever the rotation/flip, and the eo (GLORYS level 0) matches y[0].
        assert np.array_equal(s["x"][s["x_valid_mask"]], s["y"][s["x_valid_mask"]])
        assert np.array_equal(s["y_valid_mask"][0], s["land_mask"][0] > 0)
        assert np.allclose(s["eo"][0][s["y_valid_mask"][0]], s["y"][0][s["y_valid_mask"][0]])


def test_direct_chunk_decode_equals_zarr(tiny_cube):
    """The reader's zarr-bypassing chunk decode returns exactly zarr's values, edge chunks and
    never-written (all-zero) chunks included."""
    from loaders.reader import CubeReader
    from _cubes import assert_direct_decode_equals_zarr

    reader = CubeReader(str(tiny_cube))
    for path in ("profiles/count", "profiles/sum", "profiles/n_obs", "glorys/thetao", "ostia/analysed_sst"):
        assert_direct_decode_equals_zarr(reader, path)


def test_window_days_are_xbatchers_time_windows(cube):
    """The windows' days are the ones xbatcher's public API makes on the cube's daily axis:
    BatchGenerator(input_dims={"time": window}, input_overlap={"time": window - 1})[k] is the
    window starting on day k, i.e. centred on day k + window // 2."""
    import xarray as xr
    import xbatcher

    stream = CubeStream(cube, DatasetConfig(window_days=4), split="all", shuffle=False)  # 4 -> 5 days
    days = stream.reader.days
    window = stream.windows.window
    assert window == 5
    gen = xbatcher.BatchGenerator(xr.Dataset(coords={"time": days}), input_dims={"time": window},
                                  input_overlap={"time": window - 1})
    assert len(gen) == len(days) - window + 1
    for i in range(len(stream.windows)):
        w = stream.windows[i]
        k = int(np.flatnonzero(days == w.centre)[0]) - window // 2
        assert (days[w.time] == gen[k]["time"].values).all()
