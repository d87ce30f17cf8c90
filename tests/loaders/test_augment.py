"""Geometric augmentation: rot90 + flips in the reference order, identical on every array.

Expected arrays are composed by hand (np.rot90 and reversed slices, literal 2 x 2 results and an
explicit index formula), never produced by the module under test.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from loaders.augment import Geometry, apply_geometry, apply_geometry_to_sample, draw_geometry, invert_geometry

ALL = [Geometry(k, fh, fv) for k, fh, fv in itertools.product(range(4), (False, True), (False, True))]


def _by_hand(a, g):
    out = np.rot90(a, g.k, axes=(-2, -1))
    if g.flip_h:
        out = out[..., ::-1]
    if g.flip_v:
        out = out[..., ::-1, :]
    return out


@pytest.mark.parametrize("g", ALL, ids=str)
def test_apply_geometry_matches_hand_composition(g):
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # distinct values, non-square
    out = apply_geometry(a, g)
    assert np.array_equal(out, _by_hand(a, g))
    assert out.flags.c_contiguous and not np.shares_memory(out, a)


def test_literal_two_by_two_results():
    a = np.array([[1, 2], [3, 4]])
    assert apply_geometry(a, Geometry(1)).tolist() == [[2, 4], [1, 3]]  # a quarter turn counter-clockwise
    assert apply_geometry(a, Geometry(1, flip_h=True)).tolist() == [[4, 2], [3, 1]]  # then mirrored left-right
    assert apply_geometry(a, Geometry(0, flip_v=True)).tolist() == [[3, 4], [1, 2]]
    assert apply_geometry(a, Geometry(2, True, True)).tolist() == [[1, 2], [3, 4]]  # half turn = both flips


def test_quarter_turn_index_formula():
    """k = 1 on (H, W) gives (W, H) with out[i, j] = a[j, W - 1 - i]."""
    h, w = 3, 5
    a = np.arange(h * w).reshape(h, w)
    out = apply_geometry(a, Geometry(1))
    assert out.shape == (w, h)
    for i in range(w):
        for j in range(h):
            assert out[i, j] == a[j, w - 1 - i]


@pytest.mark.parametrize("g", ALL, ids=str)
def test_invert_geometry_round_trips(g):
    a = np.random.default_rng(0).random((3, 6, 9))
    assert np.array_equal(invert_geometry(apply_geometry(a, g), g), a)


def test_draw_geometry_covers_all_sixteen_uniformly_and_reproducibly():
    rng = np.random.default_rng(0)
    draws = [draw_geometry(rng) for _ in range(3200)]
    counts = Counter(draws)
    assert set(counts) == set(ALL)
    assert all(130 < c < 270 for c in counts.values())  # 200 expected each; ~7 sigma bounds
    assert draw_geometry(np.random.default_rng(0)) == draws[0]


def test_geometry_validation():
    with pytest.raises(ValueError, match="quarter turns"):
        Geometry(4)
    with pytest.raises(ValueError, match="H, W"):
        apply_geometry(np.arange(5), Geometry(1))
    assert Geometry().is_identity and not Geometry(0, flip_v=True).is_identity


def _sample(h=16, w=12, c=3, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(c, h, w)).astype(np.float32)
    y_valid = rng.random((c, h, w)) > 0.1
    x_valid = y_valid & (rng.random((1, h, w)) > 0.7)
    return {
        "eo": y[:1] * 2 + 1,
        "x": np.where(x_valid, y, 0).astype(np.float32),
        "y": y,
        "x_valid_mask": x_valid,
        "y_valid_mask": y_valid,
        "x_valid_mask_1d": x_valid.any(axis=0, keepdims=True),
        "land_mask": y_valid[:1].astype(np.float32),
        "date": np.int64(20150615),
        "coords": np.array([41.5, -12.25], dtype=np.float32),
        "info": {"patch": 3, "split": "train"},
    }


@pytest.mark.parametrize("g", ALL, ids=str)
def test_sample_stays_aligned(g):
    sample = _sample()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sample.items()}
    out = apply_geometry_to_sample(sample, g)
    # the relations that tie x, y and the masks pixel by pixel survive the transform
    assert np.array_equal(out["x"], np.where(out["x_valid_mask"], out["y"], 0))
    assert np.array_equal(out["x_valid_mask_1d"], out["x_valid_mask"].any(axis=0, keepdims=True))
    assert np.array_equal(out["eo"], out["y"][:1] * 2 + 1)
    assert np.array_equal(out["land_mask"], out["y_valid_mask"][:1].astype(np.float32))
    assert not (out["x_valid_mask"] & ~out["y_valid_mask"]).any()
    for key in ("eo", "x", "y", "x_valid_mask", "y_valid_mask", "x_valid_mask_1d", "land_mask"):
        assert np.array_equal(out[key], _by_hand(sample[key], g)), key
        assert out[key].dtype == sample[key].dtype
    # scalars, coords and info untouched; the input sample not modified
    assert out["date"] == 20150615 and out["info"] is sample["info"]
    assert np.array_equal(out["coords"], [41.5, -12.25])
    for key, value in before.items():
        assert np.array_equal(sample[key], value) if isinstance(value, np.ndarray) else sample[key] == value


def test_sample_with_missing_keys_and_custom_keys():
    sample = _sample()
    del sample["eo"], sample["land_mask"]
    out = apply_geometry_to_sample(sample, Geometry(1))
    assert "eo" not in out and out["y"].shape == (3, 12, 16)
    only_y = apply_geometry_to_sample(sample, Geometry(2), keys=("y",))
    assert np.array_equal(only_y["x"], sample["x"])


def test_sample_with_mismatched_tiles_is_rejected():
    sample = _sample()
    sample["eo"] = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="disagree"):
        apply_geometry_to_sample(sample, Geometry(1))
