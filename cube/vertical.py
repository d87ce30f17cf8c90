"""Vertical alignment of in-situ profiles onto the 50 GLORYS levels (REFERENCE.md 3.6 step 3).

The reference rule, kept exactly (DESIGN.md 4), for each profile independently:

1. keep samples whose depth and temperature are finite and depth >= 0; sort by depth;
2. collapse duplicate depths by averaging their temperatures;
3. for each target level ``z``: ``left`` = the last observed depth ``< z``, ``right`` = the first
   ``>= z`` (both clipped to the first / last observation), ``d_near = min(|z-left|, |z-right|)``;
4. accept ``z`` iff ``depth_min <= z <= depth_max`` (no extrapolation) and
   ``d_near <= max(0.10 z, 10 m)``; a 1-sample profile instead accepts only a level within
   1e-6 m of its depth;
5. accepted levels get ``np.interp(z, depths, temps)`` (piecewise linear), the rest NaN.

So a profile starting at ~4 m leaves levels 0-3 (0.49-3.82 m) empty and a 4-2000 m profile fills
levels 4..39 (REFERENCE.md 11.9).

Vectorised over profiles: no per-profile Python loop. Profiles go in blocks (bounded memory);
within a block the valid samples are flattened, sorted per profile, de-duplicated with
``bincount``, and the bracketing samples of every level are found from one ``searchsorted`` of the
samples into the (sorted) level axis plus a per-profile cumulative histogram, so every comparison
is exact (no offset tricks that could round a depth onto a level).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from cube.constants import DEPTH_CUTOFF_ABSOLUTE_M, DEPTH_CUTOFF_RELATIVE, GLORYS_DEPTHS

#: Profiles per block: about 60 MB of temporaries for 400-level EN4 rows.
BLOCK_PROFILES = 2048
#: A 1-sample profile fills a level only this close to its depth (the reference's tolerance).
SINGLE_SAMPLE_TOLERANCE_M = 1e-6


def align_to_levels(depth: ArrayLike, temp: ArrayLike, levels: ArrayLike = GLORYS_DEPTHS,
                    block: int = BLOCK_PROFILES) -> np.ndarray:
    """Interpolate profiles ``depth, temp (P, L)`` onto ``levels`` by the reference rule.

    Returns ``(P, len(levels))`` float32, NaN where a level is not accepted (module docstring).
    NaN samples (missing or QC-rejected) are ignored; a real 0 degC stays 0. ``levels`` must
    be strictly ascending and non-negative (metres, positive down).
    """
    depth = np.asarray(depth, dtype=np.float64)
    temp = np.asarray(temp, dtype=np.float64)
    z = _check_levels(levels)
    if depth.ndim != 2 or depth.shape != temp.shape:
        raise ValueError(f"depth {depth.shape} and temp {temp.shape} must be equal (n_prof, n_levels) arrays")
    out = np.full((depth.shape[0], z.size), np.nan, dtype=np.float32)
    for s in range(0, depth.shape[0], block):
        out[s:s + block] = _align_block(depth[s:s + block], temp[s:s + block], z)
    return out


def _check_levels(levels) -> np.ndarray:
    z = np.asarray(levels, dtype=np.float64)
    if z.ndim != 1 or z.size == 0 or not np.all(np.diff(z) > 0) or z[0] < 0:
        raise ValueError(f"levels must be a non-empty, strictly ascending, non-negative 1-D axis, got {z!r}")
    return z


def _unique_samples(depth: np.ndarray, temp: np.ndarray):
    """Valid samples sorted per profile with duplicate depths averaged.

    Returns flat ``(row, depth, temp)`` of the unique samples, ordered by (row, depth).
    """
    ok = np.isfinite(depth) & np.isfinite(temp) & (depth >= 0)
    d = np.where(ok, depth, np.inf)
    t = temp
    if not np.all(d[:, 1:] >= d[:, :-1]):  # most files are already sorted: skip the sort then
        order = np.argsort(d, axis=1, kind="stable")
        d = np.take_along_axis(d, order, axis=1)
        t = np.take_along_axis(temp, order, axis=1)
    keep = np.isfinite(d)  # row-major boolean indexing keeps (row, depth) order
    rows = np.broadcast_to(np.arange(d.shape[0])[:, None], d.shape)[keep]
    d, t = d[keep], t[keep]
    first = np.ones(d.size, dtype=bool)
    first[1:] = (d[1:] != d[:-1]) | (rows[1:] != rows[:-1])
    group = np.cumsum(first) - 1
    t_mean = np.bincount(group, weights=t) / np.bincount(group)
    return rows[first], d[first], t_mean


def _align_block(depth: np.ndarray, temp: np.ndarray, z: np.ndarray) -> np.ndarray:
    n_prof, n_lev = depth.shape[0], z.size
    rows, d, t = _unique_samples(depth, temp)
    out = np.full((n_prof, n_lev), np.nan, dtype=np.float32)
    if d.size == 0:
        return out
    n = np.bincount(rows, minlength=n_prof)
    start = (np.cumsum(n) - n)[:, None]
    n = n[:, None]
    # below[p, m] = samples of profile p with depth < z[m]: a sample lies below z[m] exactly when
    # m >= (number of levels <= its depth), so count samples per (profile, that number) and cumsum.
    first_above = np.searchsorted(z, d, side="right")
    hist = np.bincount(rows * (n_lev + 1) + first_above, minlength=n_prof * (n_lev + 1))
    below = np.cumsum(hist.reshape(n_prof, n_lev + 1), axis=1)[:, :n_lev]
    has = n > 0
    last = np.maximum(n - 1, 0)
    left = np.where(has, start + np.clip(below - 1, 0, last), 0)
    right = np.where(has, start + np.minimum(below, last), 0)
    dl, dr, tl, tr = d[left], d[right], t[left], t[right]
    zz = z[None, :]
    d_min, d_max = d[np.where(has, start, 0)], d[np.where(has, start + last, 0)]
    in_range = np.where(n >= 2, (d_min <= zz) & (zz <= d_max), np.abs(zz - d_min) <= SINGLE_SAMPLE_TOLERANCE_M)
    d_near = np.minimum(np.abs(zz - dl), np.abs(zz - dr))
    cutoff = np.maximum(DEPTH_CUTOFF_RELATIVE * zz, DEPTH_CUTOFF_ABSOLUTE_M)
    accept = has & in_range & (d_near <= cutoff)
    with np.errstate(invalid="ignore", divide="ignore"):
        # np.interp: exactly the sample's value on a sample depth, else linear between brackets.
        value = np.where(dr == zz, tr, np.where(dr == dl, tl, tl + (zz - dl) * (tr - tl) / (dr - dl)))
    out[accept] = value[accept]
    return out
