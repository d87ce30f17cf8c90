"""Sample corruption (tracks, rectangles, synthetic pixels), per-sample rngs and EO degradation.

Expectations are independent of the code: budgets computed by hand from REFERENCE.md 6.9, the
reference's turn recursion written as a plain loop, geometric facts any correct track must satisfy
(8-connected, stays in the grid, ends at an edge, strides 2..8), and counting arguments.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import timeit

import numpy as np
import pytest

from loaders import corruption as C
from loaders.corruption import (
    CorruptionSpec,
    observed_budget,
    observed_mask,
    rectangle_mask,
    sample_rng,
    sparse_from_dense,
    synthetic_pixels,
    track_mask,
)
from loaders.eo import EODegradation, degrade_eo_celsius, eo_dropout, eo_offset, eo_speckle

TILE = (128, 128)
#: hidden = round(f * 16384), observed = 16384 - hidden, worked out by hand:
#: 0.95 -> 15564.8 -> 15565 hidden; 0.96 -> 15728.64; 0.97 -> 15892.48; 0.98 -> 16056.32;
#: 0.975 -> 15974.4 (REFERENCE 6.9: 410); 0.99 -> 16220.16 (REFERENCE 6.9: 164); 0.995 -> 16302.08.
HAND_BUDGETS = {0.95: 819, 0.96: 655, 0.97: 492, 0.975: 410, 0.98: 328, 0.99: 164, 0.995: 82}
SWEEP = (0.95, 0.96, 0.97, 0.98, 0.99, 0.995)  # sweeps/eo_occlusion_grid_no_eodrop.yaml


def _disc(shape, centre, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


# ----------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("fraction, observed", sorted(HAND_BUDGETS.items()))
def test_observed_budget_matches_hand_numbers(fraction, observed):
    assert observed_budget(TILE, fraction) == observed


def test_observed_budget_edges_and_errors():
    assert observed_budget(TILE, 0.0) == 128 * 128
    assert observed_budget(TILE, 1.0) == 0
    assert observed_budget((10, 10), 0.5) == 50
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="mask_fraction"):
            observed_budget(TILE, bad)


# ----------------------------------------------------------------------------- tracks


@pytest.mark.parametrize("fraction", SWEEP)
def test_track_mask_hits_budget_exactly(fraction):
    ocean = ~_disc(TILE, (64, 64), 30)  # an island in the middle: starts only on ocean
    rng = np.random.default_rng(int(fraction * 1000))
    for preferred in (None, ocean):
        for _ in range(5):
            mask = track_mask(TILE, observed_budget(TILE, fraction), rng, preferred=preferred)
            assert mask.shape == TILE and mask.dtype == bool
            assert mask.sum() == HAND_BUDGETS[fraction]


def test_track_mask_clips_budget_and_handles_odd_shapes():
    rng = np.random.default_rng(0)
    assert track_mask((20, 30), 0, rng).sum() == 1
    assert track_mask((20, 30), -5, rng).sum() == 1
    assert track_mask((20, 30), 10**6, rng).all()
    for shape, n in (((40, 90), 123), ((7, 300), 500), ((1, 50), 10), ((50, 1), 10), ((1, 1), 1)):
        assert track_mask(shape, n, rng).sum() == n


def test_track_mask_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="preferred"):
        track_mask(TILE, 10, rng, preferred=np.ones((64, 64), bool))
    with pytest.raises(ValueError, match="shape"):
        track_mask((0, 5), 10, rng)


def test_turn_recursion_matches_reference_loop():
    """Several walks advanced together in one flat array equal the reference's per-step loop."""
    k = np.array([5, 40, 1, 17])
    y0, x0 = np.array([3.0, 50.0, 7.0, 0.0]), np.array([4.0, 60.0, 9.0, 0.0])
    heading0, turn0 = np.array([0.1, 2.0, 4.0, 6.0]), np.array([0.0, 0.01, -0.02, 0.005])
    seg, ys, xs, hd, tn = C._advance(y0, x0, heading0, turn0, k, np.random.default_rng(5))
    noise = np.random.default_rng(5).standard_normal(k.sum())  # the same draws, in walk order
    i = 0
    for b in range(k.size):
        y, x, heading, turn = y0[b], x0[b], heading0[b], turn0[b]
        for _ in range(k[b]):
            turn = 0.94 * turn + 0.06 * (0.06 * noise[i])
            heading += turn
            y, x = y + math.sin(heading), x + math.cos(heading)
            assert seg[i] == b
            assert tn[i] == pytest.approx(turn, abs=1e-12)
            assert hd[i] == pytest.approx(heading, abs=1e-12)
            # float32 sin/cos: a few 1e-7 per step
            assert (ys[i], xs[i]) == pytest.approx((y, x), abs=1e-4)
            i += 1


def test_path_dedup_keeps_first_visits_in_order():
    """The vectorised de-duplication (with its shortcut for straight walks) equals a seen-set loop."""
    rng = np.random.default_rng(21)
    for shape in (TILE, (20, 20)):
        pix, track, span = C._walk(rng.integers(0, shape[0] * shape[1], 200), shape, rng)
        expected = []
        for b in range(200):
            seen = set()
            expected.append([p for p in pix[track == b].tolist() if not (p in seen or seen.add(p))])
        for spans in (span, np.full_like(span, np.inf)):
            flat, lengths = C._dedup_paths(pix, track, spans, shape)
            assert [part.tolist() for part in np.split(flat, np.cumsum(lengths)[:-1])] == expected


def test_fill_segments_interpolates_between_rounded_endpoints():
    r, c, t = C._fill_segments(np.array([0, 0, 2, 5]), np.array([0, 3, 4, 4]), np.array([0, 0, 0, 1]))
    # (0,0)->(0,3): 3 sub-steps; (0,3)->(2,4): t = 0, 1/2 -> (0,3), (1, 3.5 -> 4); (2,4) ends track 0
    assert list(zip(r.tolist(), c.tolist(), t.tolist())) == [
        (0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (1, 4, 0), (2, 4, 0), (5, 4, 1),
    ]


@pytest.mark.parametrize("shape", [TILE, (50, 80)])
def test_single_tracks_are_connected_sparse_curves_ending_at_an_edge(shape):
    h, w = shape
    rng = np.random.default_rng(11)
    strides, deviations = [], []
    for _ in range(300):
        start = (int(rng.integers(0, h)), int(rng.integers(0, w)))
        path, kept = C._track_pixels(shape, start, rng)
        r, c = path[:, 0], path[:, 1]
        assert tuple(path[0]) == start
        assert r.min() >= 0 and r.max() < h and c.min() >= 0 and c.max() < w
        assert len({(a, b) for a, b in path.tolist()}) == len(path)  # de-duplicated
        # 8-connected: every step moves to one of the 8 neighbours
        assert np.all(np.maximum(np.abs(np.diff(r)), np.abs(np.diff(c))) == 1)
        # edge termination: the next unit step would leave [0, H-1] x [0, W-1]
        assert min(r[-1], c[-1], h - 1 - r[-1], w - 1 - c[-1]) <= 1
        assert kept[0] == 0 and kept[-1] < len(path)
        step = np.diff(kept)
        assert np.all((step >= 2) & (step <= 8))
        strides.extend(step.tolist())
        if len(path) >= 60:
            deviations.append(_max_deviation_from_chord(path.astype(float)))
            _assert_gentle_bends(path.astype(float))
    assert set(strides) == set(range(2, 9))  # stride randint(2, 9): all of 2..8, nothing else
    # curved, not straight lines: a good share of the long tracks bow away from their chord
    assert np.mean(np.array(deviations) > 2.0) > 0.2


def _max_deviation_from_chord(p):
    d = p[-1] - p[0]
    normal = np.array([-d[1], d[0]]) / np.hypot(*d)
    return np.abs((p - p[0]) @ normal).max()


def _assert_gentle_bends(p):
    """Momentum-smoothed curvature: 10-pixel chords turn by well under 45 degrees."""
    chords = p[10::10] - p[:-10:10]
    norms = np.linalg.norm(chords, axis=1)
    cos = np.sum(chords[1:] * chords[:-1], axis=1) / (norms[1:] * norms[:-1])
    assert np.all(cos > math.cos(math.radians(45)))


def test_tracks_start_only_in_preferred_region_but_walk_out_of_it():
    region = _disc(TILE, (30, 90), 6)
    rng = np.random.default_rng(3)
    for n in (410, 164, 2000):
        mask, starts = C._track_mask_and_starts(TILE, n, rng, preferred=region)
        assert starts.size > 0
        assert region.ravel()[starts].all()
        assert mask.sum() == n
        assert (mask & ~region).any()  # tracks are walks, not confined to the start region


def test_empty_preferred_means_anywhere():
    rng = np.random.default_rng(4)
    mask, starts = C._track_mask_and_starts(TILE, 410, rng, preferred=np.zeros(TILE, bool))
    assert mask.sum() == 410
    rows = starts // 128
    assert rows.min() < 32 and rows.max() > 96  # spread over the tile


def test_track_mask_is_reproducible_per_seed_epoch_and_sample():
    def draw(seed, epoch, index, stream="x"):
        return track_mask(TILE, 410, sample_rng(seed, epoch, index, stream))

    first = draw(7, 0, 3)
    assert np.array_equal(first, draw(7, 0, 3))
    for other in (draw(7, 1, 3), draw(7, 0, 4), draw(8, 0, 3), draw(7, 0, 3, "eo")):
        assert not np.array_equal(first, other)


def test_sample_rng_is_independent_of_python_hash_seed():
    code = "from loaders.corruption import sample_rng; print(sample_rng(7, 2, 5, 'tracks').integers(0, 2**62))"
    here = int(sample_rng(7, 2, 5, "tracks").integers(0, 2**62))
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == here


def test_sample_rng_rejects_negative_or_fractional_parts():
    for args in ((-1, 0, 0), (0, -1, 0), (0, 0, 1.5)):
        with pytest.raises(ValueError):
            sample_rng(*args)


def test_fallback_rows_and_columns_meet_the_budget():
    rng = np.random.default_rng(9)
    mask = track_mask((16, 16), 100, rng, max_attempts=0)
    assert mask.sum() == 100
    # each fallback line keeps its first pixel: column 0 of a row, row 0 of a column
    assert mask[:, 0].any() or mask[0, :].any()
    # a nearly full tile from tracks alone forces the fallback eventually; still exact
    assert track_mask((8, 8), 63, rng).sum() == 63


def test_track_mask_timing(capsys):
    """Not a timed assertion: prints the mean time per 128 x 128 mask at mask_fraction 0.975."""
    rng = np.random.default_rng(0)
    n = 1000
    seconds = timeit.timeit(lambda: track_mask(TILE, 410, rng), number=n)
    with capsys.disabled():
        print(f"\ntrack_mask((128, 128), 410): {seconds / n * 1e3:.3f} ms per mask ({n / seconds:.0f} masks/s)")


# ----------------------------------------------------------------------------- rectangles


def test_rectangles_cover_at_least_the_target_by_whole_rectangles():
    rng = np.random.default_rng(1)
    for target in (1, 50, 4000, 15974):
        hidden = rectangle_mask(TILE, target, rng, size_min=2, size_max=5)
        assert target <= hidden.sum() < target + 25  # overshoot below one 5 x 5 rectangle
        # a union of >= 2 x 2 rectangles: every hidden pixel lies in a fully hidden 2 x 2 block
        blocks = hidden[:-1, :-1] & hidden[1:, :-1] & hidden[:-1, 1:] & hidden[1:, 1:]
        covered = np.zeros_like(hidden)
        for dr in (0, 1):
            for dc in (0, 1):
                covered[dr : dr + 127, dc : dc + 127] |= blocks
        assert np.array_equal(covered, hidden)


def test_one_rectangle_has_inclusive_random_sides():
    """A target of one pixel takes exactly one rectangle: a solid h x w block with h, w in 2..5."""
    rng = np.random.default_rng(2)
    sides = set()
    for _ in range(400):
        hidden = rectangle_mask((32, 32), 1, rng, size_min=2, size_max=5)
        rows, cols = np.flatnonzero(hidden.any(axis=1)), np.flatnonzero(hidden.any(axis=0))
        h, w = rows.size, cols.size
        assert hidden.sum() == h * w and np.ptp(rows) == h - 1 and np.ptp(cols) == w - 1
        sides.add((h, w))
    assert sides == {(h, w) for h in range(2, 6) for w in range(2, 6)}


def test_rectangle_edge_cases():
    rng = np.random.default_rng(3)
    assert not rectangle_mask(TILE, 0, rng).any()
    assert rectangle_mask((10, 10), 500, rng).all()
    assert rectangle_mask((3, 3), 9, rng, size_min=4, size_max=9).all()  # sides capped at the tile
    with pytest.raises(ValueError, match="size_min"):
        rectangle_mask(TILE, 10, rng, size_min=5, size_max=2)


# ----------------------------------------------------------------------------- synthetic pixels


@pytest.mark.parametrize("n, lo, hi", [(20, 18, 22), (500, 450, 550), (250, 225, 275), (1, 1, 2), (3, 2, 4)])
def test_synthetic_pixel_counts_stay_in_the_clamp_and_on_candidates(n, lo, hi):
    candidates = ~_disc(TILE, (64, 64), 40)
    counts, masks = [], []
    for epoch in range(300):
        mask = synthetic_pixels(candidates, n, sample_rng(7, epoch, 12, "synthetic"))
        assert not (mask & ~candidates).any()
        counts.append(int(mask.sum()))
        masks.append(mask)
    assert min(counts) >= lo and max(counts) <= hi
    if n >= 20:  # sigma = 0.1 n: the +-10 % clamp binds about a third of the time
        assert min(counts) == lo and max(counts) == hi
        assert abs(np.mean(counts) - n) < 0.02 * n
    # fresh every epoch (the reference froze the pattern per index)
    assert not all(np.array_equal(masks[0], m) for m in masks[1:5])


def test_synthetic_pixels_limited_by_candidates():
    candidates = np.zeros((16, 16), bool)
    candidates[3, 4:9] = True
    mask = synthetic_pixels(candidates, 100, np.random.default_rng(0))
    assert np.array_equal(mask, candidates)
    assert not synthetic_pixels(np.zeros((8, 8), bool), 5, np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match=">= 1"):
        synthetic_pixels(candidates, 0, np.random.default_rng(0))


# ----------------------------------------------------------------------------- spec and application


def test_observed_mask_dispatch():
    valid = ~_disc(TILE, (64, 64), 20)
    rng = np.random.default_rng(0)
    tracks = observed_mask(CorruptionSpec("tracks", mask_fraction=0.99), valid, rng)
    assert tracks.sum() == 164
    rect = observed_mask(CorruptionSpec("rectangles", mask_fraction=0.975), valid, rng)
    assert (~rect).sum() >= 15974
    synth = observed_mask(CorruptionSpec("synthetic_pixels", pixel_count=50), valid, rng)
    assert 45 <= synth.sum() <= 55 and not (synth & ~valid).any()
    assert not observed_mask(CorruptionSpec("none"), valid, rng).any()
    with pytest.raises(ValueError, match="argo"):
        observed_mask(CorruptionSpec("argo"), valid, rng)


def test_corruption_spec_validates():
    for kwargs in ({"source": "holes"}, {"mask_fraction": 1.2}, {"rect_min": 0}, {"rect_min": 6}, {"pixel_count": 0}):
        with pytest.raises(ValueError):
            CorruptionSpec(**kwargs)


def test_sparse_from_dense_applies_one_pattern_to_all_levels():
    y = np.array([[[1.0, 2.0], [3.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]]], dtype=np.float32)
    y_valid = np.array([[[True, True], [True, True]], [[True, False], [True, True]]])
    observed = np.array([[True, True], [False, True]])
    x, x_valid = sparse_from_dense(y, y_valid, observed)
    assert x.dtype == np.float32
    assert x_valid.tolist() == [[[True, True], [False, True]], [[True, False], [False, True]]]
    assert x.tolist() == [[[1.0, 2.0], [0.0, 0.0]], [[5.0, 0.0], [0.0, 8.0]]]  # a real 0 stays valid


# ----------------------------------------------------------------------------- EO degradation


def test_eo_offset_adds_one_scalar():
    eo = np.linspace(-1.5, 30.0, 64, dtype=np.float32).reshape(1, 8, 8)
    eo[0, 0, 0] = np.nan
    rng = np.random.default_rng(0)
    shifts = []
    for _ in range(200):
        out = eo_offset(eo, rng)
        diff = (out - eo)[np.isfinite(eo)]
        assert out.dtype == np.float32 and np.isnan(out[0, 0, 0])
        assert np.ptp(diff) < 1e-5  # one scalar for the whole field
        shifts.append(float(diff[0]))
    assert -2.0 <= min(shifts) and max(shifts) <= 2.0
    assert min(shifts) < -1.5 and max(shifts) > 1.5  # spread over U(-2, 2)


def test_eo_speckle_ratio_stays_in_clamp():
    eo = np.full((1, 64, 64), 20.0)
    rng = np.random.default_rng(1)
    ratio = eo_speckle(eo, rng) / eo
    assert ratio.min() >= 0.9 and ratio.max() <= 1.1
    assert 0.009 < ratio.std() < 0.011  # sigma 0.01, the clamp far away
    wide = eo_speckle(eo, rng, sigma=0.5) / eo
    assert wide.min() == pytest.approx(0.9) and wide.max() == pytest.approx(1.1)  # clamp binds
    assert np.unique(ratio).size > 1000  # per pixel, not one factor


def test_eo_dropout():
    eo = np.arange(16.0).reshape(1, 4, 4) + 1
    rng = np.random.default_rng(2)
    assert not eo_dropout(eo, rng, 1.0).any()
    assert np.array_equal(eo_dropout(eo, rng, 0.0), eo)
    dropped = sum(not eo_dropout(eo, rng, 0.3).any() for _ in range(2000))
    assert abs(dropped - 600) < 5 * math.sqrt(2000 * 0.3 * 0.7)
    with pytest.raises(ValueError):
        eo_dropout(eo, rng, 1.5)


def test_eo_degradation_spec():
    eo = np.full((1, 8, 8), 10.0, dtype=np.float32)
    rng = np.random.default_rng(3)
    assert np.array_equal(degrade_eo_celsius(eo, EODegradation(), rng), eo)  # all off by default
    out = degrade_eo_celsius(eo, EODegradation(offset=True, offset_range=(1.0, 1.0)), rng)
    assert np.allclose(out, 11.0)
    out = degrade_eo_celsius(eo, EODegradation(speckle=True), rng)
    assert np.all((out >= 9.0) & (out <= 11.0)) and np.unique(out).size > 1
    with pytest.raises(ValueError):
        EODegradation(dropout_p=2.0)
