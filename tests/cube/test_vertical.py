"""cube.vertical.align_to_levels against hand computations and a per-profile loop of the rule."""

from __future__ import annotations


import numpy as np
import pytest

from cube.constants import GLORYS_DEPTHS
from cube.vertical import align_to_levels

Z = GLORYS_DEPTHS.astype(np.float64)


def reference_align(depth, temp, levels=GLORYS_DEPTHS):
    """REFERENCE.md 3.6 step 3 written out for one profile, the plain way."""
    z_all = np.asarray(levels, dtype=np.float64)
    out = np.full(z_all.size, np.nan)
    depth, temp = np.asarray(depth, dtype=np.float64), np.asarray(temp, dtype=np.float64)
    ok = np.isfinite(depth) & np.isfinite(temp) & (depth >= 0)
    d, t = depth[ok], temp[ok]
    if d.size == 0:
        return out
    order = np.argsort(d, kind="stable")
    d, t = d[order], t[order]
    ud = np.unique(d)
    ut = np.array([t[d == x].mean() for x in ud])
    for m, z in enumerate(z_all):
        if ud.size == 1:
            if abs(z - ud[0]) <= 1e-6:
                out[m] = ut[0]
            continue
        if not (ud[0] <= z <= ud[-1]):
            continue
        below, above = ud[ud < z], ud[ud >= z]
        left = below[-1] if below.size else ud[0]
        right = above[0] if above.size else ud[-1]
        if min(abs(z - left), abs(z - right)) <= max(0.10 * z, 10.0):
            out[m] = np.interp(z, ud, ut)
    return out


def valid_levels(row) -> list[int]:
    return np.flatnonzero(np.isfinite(row)).tolist()


def argo_depths(start=4.0, stop=2000.0):
    """A typical Argo core sampling: 10 m to 200 m, 25 m to 1000 m, 50 m below."""
    d = np.concatenate([np.arange(start, 200, 10.0), np.arange(200, 1000, 25.0), np.arange(1000, stop + 1, 50.0)])
    return d[d <= stop]


def test_4_to_2000_m_profile_fills_levels_4_to_39_with_linear_values():
    d = argo_depths()
    out = align_to_levels(d[None], (20 - 0.01 * d)[None])
    assert out.dtype == np.float32 and out.shape == (1, 50)
    assert valid_levels(out[0]) == list(range(4, 40))  # levels 0-3 lie above the first sample at 4 m
    np.testing.assert_allclose(out[0, 4:40], 20 - 0.01 * Z[4:40], rtol=0, atol=2e-6)


def test_duplicate_depths_are_averaged_first():
    out = align_to_levels([[10.0, 10.0, 20.0]], [[1.0, 3.0, 5.0]])
    # levels 8-11 (11.4 .. 18.5 m) lie between (10 m, mean 2) and (20 m, 5).
    assert valid_levels(out[0]) == [8, 9, 10, 11]
    assert out[0, 8] == pytest.approx(2 + (Z[8] - 10) * 0.3, abs=1e-6)
    assert out[0, 11] == pytest.approx(2 + (Z[11] - 10) * 0.3, abs=1e-6)


@pytest.mark.parametrize("level, below, above, accepted", [
    (20, 9.5, 10.5, True),       # z = 77.85 m: the 10 m absolute cutoff applies, nearest 9.5 m away
    (20, 10.5, 10.5, False),     # nearest 10.5 m away
    (35, 106.0, 106.5, True),    # z = 1062.44 m: the 10 % cutoff (106.244 m) applies
    (35, 106.5, 107.0, False),
])
def test_cutoff_boundary(level, below, above, accepted):
    z = Z[level]
    out = align_to_levels([[z - below, z + above]], [[10.0, 20.0]])
    expect_value = 10 + below / (below + above) * 10
    assert valid_levels(out[0]) == ([level] if accepted else [])
    if accepted:
        assert out[0, level] == pytest.approx(expect_value, abs=1e-5)


def test_real_zero_degrees_is_kept():
    d = argo_depths(0.0, 300.0)
    out = align_to_levels(d[None], np.zeros((1, d.size)))
    assert valid_levels(out[0]) == list(range(0, 28))
    assert np.all(out[0, :28] == 0.0)


def test_unsorted_input_matches_sorted():
    rng = np.random.default_rng(0)
    d = argo_depths()
    t = 25 * np.exp(-d / 500)
    perm = rng.permutation(d.size)
    out = align_to_levels(np.stack([d, d[perm]]), np.stack([t, t[perm]]))
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_allclose(out[0, 4:40], 25 * np.exp(-Z[4:40] / 500), atol=0.05)  # linear interp of a smooth curve


def test_nan_negative_and_empty_profiles():
    d = np.array([[np.nan] * 4, [-5.0, -1.0, np.nan, np.nan],
                  [5.0, np.nan, 15.0, 25.0], [5.0, 10.0, 15.0, 25.0]])
    t = np.array([[np.nan] * 4, [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 3.0, 4.0]])
    out = align_to_levels(d, t)
    assert np.all(np.isnan(out[:2]))
    # The NaN depth (row 2) and the NaN temperature (row 3) both drop the 10 m sample.
    np.testing.assert_array_equal(out[2], out[3])
    assert out[2, 5] == pytest.approx(1 + (Z[5] - 5) * 0.2, abs=1e-6)


def test_single_sample_profile_fills_only_its_own_level():
    depth = [[Z[7], np.nan], [100.0, np.nan], [Z[7] + 1e-3, np.nan], [Z[7] + 5e-7, np.nan]]
    out = align_to_levels(depth, [[4.5, np.nan]] * 4)
    assert valid_levels(out[0]) == [7] and out[0, 7] == 4.5
    assert valid_levels(out[1]) == [] and valid_levels(out[2]) == []
    assert valid_levels(out[3]) == [7]  # within the 1e-6 m tolerance


def test_samples_on_level_depths_are_returned_exactly():
    t = np.linspace(28.0, 1.5, 50).astype(np.float32)
    out = align_to_levels(GLORYS_DEPTHS[None], t[None])
    np.testing.assert_array_equal(out[0], t)


def random_profiles(rng, n):
    """Awkward profiles: gaps, NaNs, duplicates, unsorted rows, negatives, samples on levels."""
    n_lev = 60
    depth = np.full((n, n_lev), np.nan)
    for_each = rng.integers(0, n_lev + 1, size=n)
    start = rng.choice([0.0, 0.3, 4.0, 50.0, 900.0], size=n)
    gaps = rng.choice([0.5, 3.0, 12.0, 40.0, 250.0], size=n)
    steps = rng.exponential(1.0, size=(n, n_lev)) * gaps[:, None]
    depth[:] = start[:, None] + np.cumsum(steps, axis=1)
    depth[np.arange(n_lev)[None, :] >= for_each[:, None]] = np.nan
    depth[rng.random((n, n_lev)) < 0.05] = np.nan
    depth = np.where(rng.random((n, n_lev)) < 0.2, np.round(depth), depth)  # duplicates after rounding
    on_level = rng.random((n, n_lev)) < 0.05
    depth[on_level] = rng.choice(Z, size=on_level.sum())
    depth[rng.random((n, n_lev)) < 0.01] *= -1
    temp = 25 - 0.01 * np.nan_to_num(depth) + rng.normal(0, 0.5, size=(n, n_lev))
    temp[rng.random((n, n_lev)) < 0.05] = np.nan
    temp[rng.random((n, n_lev)) < 0.02] = 0.0
    shuffle = rng.random(n) < 0.3
    perm = np.argsort(rng.random((n, n_lev)), axis=1)
    depth[shuffle] = np.take_along_axis(depth, perm, axis=1)[shuffle]
    temp[shuffle] = np.take_along_axis(temp, perm, axis=1)[shuffle]
    return depth.astype(np.float32), temp.astype(np.float32)


@pytest.mark.parametrize("block", [2048, 7])
def test_random_profiles_match_a_per_profile_loop(block):
    rng = np.random.default_rng(42)
    depth, temp = random_profiles(rng, 600)
    out = align_to_levels(depth, temp, block=block)
    expect = np.stack([reference_align(d, t) for d, t in zip(depth, temp)])
    assert np.isfinite(expect).sum() > 5000  # the case is not vacuous
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expect))
    np.testing.assert_allclose(out, expect, rtol=0, atol=2e-5, equal_nan=True)


def test_real_argo_file_matches_the_loop(real_data):
    path = real_data / "13857_prof.nc"
    import xarray as xr

    with xr.open_dataset(path) as ds:  # pressure stands in for depth here; the rule is what is tested
        pres, temp = ds["PRES"].values, ds["TEMP"].values
    out = align_to_levels(pres, temp)
    expect = np.stack([reference_align(d, t) for d, t in zip(pres, temp)])
    assert np.isfinite(expect).sum() > 1000
    np.testing.assert_allclose(out, expect, rtol=0, atol=2e-5, equal_nan=True)


def test_real_glorys_column_aligns_onto_itself(real_data):
    path = real_data / "cmems_glo12_thetao_point_profile.nc"
    import xarray as xr

    with xr.open_dataset(path) as ds:
        depth = ds["depth"].values
        thetao = ds["thetao"].values[:, :, 0, 0]
    out = align_to_levels(np.broadcast_to(depth, thetao.shape), thetao)
    np.testing.assert_array_equal(out, thetao.astype(np.float32))  # NaN bottom levels included


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be equal"):
        align_to_levels(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ascending"):
        align_to_levels(np.zeros((1, 3)), np.zeros((1, 3)), levels=[5.0, 1.0])
