"""Geometric augmentation: rot90 and flips, identical on every tensor and mask of a sample.

REFERENCE.md 6.7: ``k = randint(0..3)``, ``flip_h`` and ``flip_v`` each with p = 0.5; applied as
``rot90(k, axes=(-2, -1))``, then a flip of the last axis if ``flip_h``, then of axis -2 if
``flip_v``. The geometry is drawn once per sample and applied to all its spatial arrays, so x, y
and every mask stay aligned. numpy only; the dataset makes tensors afterwards.

After augmentation a sample is no longer north-up. ``coords`` (the patch centre) are left alone:
rotations and flips about the tile centre do not move it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: The spatial (..., H, W) arrays of a sample (DESIGN.md 6); scalars, coords, date, info excluded.
SPATIAL_KEYS = ("eo", "eo_valid_mask", "x", "y", "x_valid_mask", "y_valid_mask", "x_valid_mask_1d", "land_mask")


@dataclass(frozen=True)
class Geometry:
    """One dihedral transform: ``k`` quarter turns (numpy's rot90 sense), then optional flips."""

    k: int = 0
    flip_h: bool = False
    flip_v: bool = False

    def __post_init__(self):
        if self.k not in (0, 1, 2, 3):
            raise ValueError(f"Geometry.k must be 0, 1, 2 or 3 quarter turns, got {self.k!r}")

    @property
    def is_identity(self) -> bool:
        """True when applying this geometry changes nothing."""
        return self.k == 0 and not self.flip_h and not self.flip_v


def draw_geometry(rng: np.random.Generator) -> Geometry:
    """A uniform random geometry: k from {0, 1, 2, 3}, each flip with probability 0.5."""
    k = int(rng.integers(0, 4))
    flip_h, flip_v = (bool(b) for b in rng.random(2) < 0.5)
    return Geometry(k, flip_h, flip_v)


def apply_geometry(arr: np.ndarray, g: Geometry) -> np.ndarray:
    """``arr`` rotated by ``g.k`` quarter turns over its last two axes, then flipped as ``g`` says.

    Works for any leading dimensions; returns a new C-contiguous array (never a view of ``arr``).
    Odd ``k`` swaps H and W.
    """
    arr = _spatial(arr)
    out = np.rot90(arr, g.k, axes=(-2, -1))
    if g.flip_h:
        out = np.flip(out, axis=-1)
    if g.flip_v:
        out = np.flip(out, axis=-2)
    return np.array(out, order="C", copy=True)


def invert_geometry(arr: np.ndarray, g: Geometry) -> np.ndarray:
    """Undo :func:`apply_geometry` (e.g. to bring predictions back north-up)."""
    out = _spatial(arr)
    if g.flip_v:
        out = np.flip(out, axis=-2)
    if g.flip_h:
        out = np.flip(out, axis=-1)
    return np.array(np.rot90(out, -g.k, axes=(-2, -1)), order="C", copy=True)


def apply_geometry_to_sample(sample: Mapping, g: Geometry, keys: Iterable[str] = SPATIAL_KEYS) -> dict:
    """A new sample dict with ``g`` applied to each of ``keys`` present; other entries kept as they are.

    All transformed arrays must share the same trailing (H, W), so they stay pixel-aligned.
    """
    present = [key for key in keys if key in sample]
    sizes = {key: np.shape(sample[key])[-2:] for key in present}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"sample arrays disagree on their (H, W): {sizes}")
    out = dict(sample)
    for key in present:
        out[key] = apply_geometry(sample[key], g)
    return out


def _spatial(arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim < 2:
        raise ValueError(f"geometry needs an array with (..., H, W) axes, got shape {arr.shape}")
    return arr
