"""Sparse-input corruption of dense samples: submarine tracks, rectangles, synthetic pixels.

These build the 2-D *observed* pattern for the ``x.source`` modes ``tracks``, ``rectangles`` and
``synthetic_pixels`` (DESIGN.md 6, REFERENCE.md 5 and 6). They are pure functions of their inputs
and a ``numpy.random.Generator`` (torchgeo-style transforms): numpy only, no torch, no I/O. The
dataset draws one generator per (seed, epoch, sample) with :func:`sample_rng`, so corruption is
fresh every epoch yet reproducible (the reference's ``default_rng(seed + idx)`` froze it,
REFERENCE.md 11.15).

Track generator (REFERENCE.md 6, vectorised): each track is a curved 2-D random walk with unit
steps and momentum-smoothed turning. A whole batch of tracks (about as many as the budget needs)
is walked at once in one flat array: the turn recursion is a linear filter (``lfilter``), heading
and positions are cumulative sums, each corrected at track boundaries, so no Python loop runs per
step or per track. Each track gets a little more than the steps a straight line needs to reach the
edge; the few that curve away get another round. Positions are rounded half-up
(``floor(p + 0.5)``): points at most one unit apart in each coordinate round to 8-neighbouring (or
equal) pixels, so the rounded walk already is the reference's per-segment rasterisation; a segment
that still jumps (floating-point ties only) is filled by interpolating between its rounded
endpoints, as the reference does. Tracks of a batch are then merged in order, a pixel counting for
the first track that keeps it, which is exactly the reference's one-track-after-another loop.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

#: AR(1) turn recursion of the reference: turn = 0.94 * turn + 0.06 * (0.06 * N(0, 1)).
TURN_MOMENTUM = 0.94
TURN_GAIN = 0.06 * 0.06
#: Sparsification stride along a track: ``rng.integers(2, 9)``, i.e. 2..8 pixels inclusive.
STRIDE_MIN, STRIDE_MAX = 2, 8
#: Largest batch of tracks walked at once (bounds memory when the yield per track collapses).
_MAX_BATCH = 1024

X_SOURCES = ("argo", "tracks", "rectangles", "synthetic_pixels", "none")


# --------------------------------------------------------------------------------------------
# Random streams and budgets


def sample_rng(seed: int, epoch: int, index: int, stream: str = "") -> np.random.Generator:
    """Generator reproducible from (seed, epoch, sample index, stream name).

    Different epochs, samples or streams give independent streams; the same arguments give the
    same stream in every process (the stream name is hashed with CRC-32, not Python's salted
    ``hash``), so DataLoader workers and resumed runs draw identical corruption.
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(value) != value or value < 0:
            raise ValueError(f"sample_rng {name} must be a non-negative integer, got {value!r}")
    tag = zlib.crc32(stream.encode("utf-8"))
    return np.random.default_rng([int(seed), int(epoch), int(index), tag])


def observed_budget(shape: tuple[int, int], mask_fraction: float) -> int:
    """Observed pixels left by hiding ``mask_fraction`` of a tile: ``H*W - round(mask_fraction*H*W)``.

    REFERENCE.md 6.9: 0.975 on 128 x 128 hides 15974 and leaves 410; 0.99 leaves 164.
    """
    h, w = _check_shape(shape)
    if not 0.0 <= mask_fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"mask_fraction must be in [0, 1], got {mask_fraction!r}")
    return h * w - round(mask_fraction * h * w)


# --------------------------------------------------------------------------------------------
# Tracks


def track_mask(
    shape: tuple[int, int],
    n_observed: int,
    rng: np.random.Generator,
    preferred: np.ndarray | None = None,
    *,
    max_attempts: int | None = None,
) -> np.ndarray:
    """Boolean (H, W) mask of submarine-track observations with exactly ``n_observed`` True.

    ``n_observed`` is clipped to [1, H*W]. Tracks start at uniform random ``preferred`` pixels
    (e.g. ocean; anywhere when ``preferred`` is None or empty), walk until they would leave the
    grid (a new track then starts) or after ``4*max(H, W)`` steps, keep every 2nd..8th pixel, and
    add only pixels not yet observed; the last track is truncated so the total is exact. After
    ``max_attempts`` tracks (default ``max(256, 8*H*W)``) full random rows and columns take over.
    """
    mask, _ = _track_mask_and_starts(shape, n_observed, rng, preferred, max_attempts)
    return mask


def _track_mask_and_starts(shape, n_observed, rng, preferred=None, max_attempts=None):
    """:func:`track_mask` plus the flat start pixel of every track drawn (for tests)."""
    h, w = _check_shape(shape)
    target = int(np.clip(n_observed, 1, h * w))
    max_attempts = max(256, 8 * h * w) if max_attempts is None else int(max_attempts)
    pool = _start_pool(preferred, (h, w))
    observed = np.zeros(h * w, dtype=bool)
    if target == h * w:  # the only mask with H*W observed pixels; no need to walk for it
        observed[:] = True
        return observed.reshape(h, w), np.empty(0, dtype=np.int64)
    covered, attempts, starts = 0, 0, []
    per_track = _expected_new_per_track((h, w))
    while covered < target and attempts < max_attempts:
        n_tracks = _batch_size(target - covered, per_track, max_attempts - attempts)
        start = pool[rng.integers(0, pool.size, n_tracks)] if pool is not None else rng.integers(0, h * w, n_tracks)
        path, lengths = _track_paths(start, (h, w), rng)
        added = _add_sparse(observed, path, lengths, target - covered, rng)
        covered, attempts = covered + added, attempts + n_tracks
        starts.append(start)
        per_track = max(added / n_tracks, 0.05)  # the yield shrinks as the tile fills up
    if covered < target:
        _fill_with_lines(observed, target - covered, (h, w), rng)
    return observed.reshape(h, w), np.concatenate(starts) if starts else np.empty(0, dtype=np.int64)


def _track_pixels(shape: tuple[int, int], start: tuple[int, int], rng: np.random.Generator):
    """One track from pixel ``start``: its dense pixel path ((L, 2) rows, cols) and kept indices.

    The dense path is the de-duplicated rasterised walk (the start pixel first); the kept indices
    are the sparsified positions along it (0, then strides of 2..8).
    """
    h, w = _check_shape(shape)
    path, lengths = _track_paths(np.array([start[0] * w + start[1]]), (h, w), rng)
    kept = _sparse_positions(lengths, rng)
    return np.stack([path // w, path % w], axis=1), kept


def _track_paths(start_flat: np.ndarray, shape: tuple[int, int], rng) -> tuple[np.ndarray, np.ndarray]:
    """Walk, rasterise and de-duplicate one track per start pixel; ragged (flat pixels, lengths)."""
    pix, track, span = _walk(start_flat, shape, rng)
    return _dedup_paths(pix, track, span, shape)


def _walk(start_flat: np.ndarray, shape: tuple[int, int], rng):
    """Curved random walks from the given flat pixels, all at once, rasterised.

    Returns the pixel of every in-grid position of every walk (start first, track-major, path
    order), the walk each belongs to, and each walk's heading span (max - min over the steps
    drawn, radians). A walk ends before its first position outside ``[0, H-1] x [0, W-1]`` or
    after ``4*max(H, W)`` steps. Each round draws, per live walk, a little more than the steps a
    straight line would need to reach the edge, so the work stays close to the track lengths;
    walks that curved away and are still inside get another round.
    """
    h, w = shape
    n, max_steps = start_flat.size, 4 * max(h, w)
    y, x = (a.astype(np.float64) for a in np.divmod(start_flat, w))
    heading, turn = rng.uniform(0.0, 2.0 * np.pi, n), np.zeros(n)
    lo, hi, done = heading.copy(), heading.copy(), np.zeros(n, dtype=np.int64)
    tracks, pixels = [np.arange(n)], [start_flat]
    alive = np.arange(n)
    while alive.size:
        k = np.minimum(np.ceil(1.15 * _distance_to_edge(y[alive], x[alive], heading[alive], shape)) + 4,
                       max_steps - done[alive]).astype(np.int64)
        seg, ys, xs, hd, tn = _advance(y[alive], x[alive], heading[alive], turn[alive], k, rng)
        start = np.cumsum(k) - k
        n_in = _steps_inside(ys, xs, start, k, shape)
        inside = np.arange(seg.size) - start[seg] < n_in[seg]
        tracks.append(alive[seg[inside]])
        pixels.append(np.floor(ys[inside] + 0.5).astype(np.int64) * w + np.floor(xs[inside] + 0.5).astype(np.int64))
        end = start + k - 1
        y[alive], x[alive], heading[alive], turn[alive] = ys[end], xs[end], hd[end], tn[end]
        lo[alive] = np.minimum(lo[alive], np.minimum.reduceat(hd, start))
        hi[alive] = np.maximum(hi[alive], np.maximum.reduceat(hd, start))
        done[alive] += k
        alive = alive[(n_in == k) & (done[alive] < max_steps)]
    track = np.concatenate(tracks)
    order = np.argsort(track, kind="stable")  # rounds were appended after one another
    return np.concatenate(pixels)[order], track[order], hi - lo


def _advance(y0, x0, heading0, turn0, k, rng):
    """Advance walk i by ``k[i]`` steps; all walks in one flat array (walk-major).

    Returns the walk of each step and the position, heading and turn after it. The reference
    recursion ``turn = 0.94 turn + 0.0036 N(0, 1); heading += turn; (y, x) += (sin, cos)(heading)``
    is a linear filter plus cumulative sums; run over the concatenation, each walk's share is
    corrected for what the walk before it carried over (its own start state replaces it).
    """
    start = np.cumsum(k) - k
    seg = np.repeat(np.arange(k.size), k)
    j = np.arange(seg.size) - start[seg]
    f = lfilter([TURN_GAIN], [1.0, -TURN_MOMENTUM], rng.standard_normal(seg.size))
    # f[start + j] = own response + 0.94**(j+1) * f[start - 1]; swap in this walk's own turn0
    turn = f + _decay(j) * (turn0 - _before(f, start))[seg]
    hd = np.cumsum(turn)
    hd += (heading0 - _before(hd, start))[seg]
    # float32 trigonometry is ~10x faster and its error is negligible for a random walk
    h32 = hd.astype(np.float32)
    ys = np.cumsum(np.sin(h32), dtype=np.float64)
    ys += (y0 - _before(ys, start))[seg]
    xs = np.cumsum(np.cos(h32), dtype=np.float64)
    xs += (x0 - _before(xs, start))[seg]
    return seg, ys, xs, hd, turn


def _before(a: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``a[start - 1]``, with 0 before the first element."""
    return np.concatenate([[0.0], a])[start]


def _decay(j: np.ndarray) -> np.ndarray:
    """``0.94 ** (j + 1)`` (the share of a turn left j + 1 steps later)."""
    return np.exp((j + 1) * math.log(TURN_MOMENTUM))


def _distance_to_edge(y, x, heading, shape) -> np.ndarray:
    """Straight-line distance from (y, x) along ``heading`` to the edge of [0, H-1] x [0, W-1]."""
    h, w = shape
    s, c = np.sin(heading), np.cos(heading)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero component gives +inf or nan
        return np.fmin(np.where(s > 0, h - 1 - y, y) / np.abs(s), np.where(c > 0, w - 1 - x, x) / np.abs(c))


def _steps_inside(ys, xs, start, k, shape) -> np.ndarray:
    """Per walk, the number of its steps before the first position outside the grid (k if none)."""
    h, w = shape
    outside = np.flatnonzero((np.abs(ys - (h - 1) / 2) > (h - 1) / 2) | (np.abs(xs - (w - 1) / 2) > (w - 1) / 2))
    pos = np.searchsorted(outside, start)
    first = np.append(outside, np.iinfo(np.int64).max)[pos]
    return np.minimum(first - start, k)


#: Walks whose heading stays within this arc (< pi/2 with a margin) advance more than sqrt(2)
#: every two steps along their mean direction, so they cannot come back to an earlier pixel
#: except the one just before: dropping consecutive repeats de-duplicates them exactly.
_STRAIGHT_SPAN = 1.4


def _dedup_paths(flat, track, span, shape) -> tuple[np.ndarray, np.ndarray]:
    """Ragged in-grid paths, jumps filled, de-duplicated keeping the first visit, in path order.

    Returns flat pixel indices of all tracks (track-major, path order) and each track's length.
    """
    h, w = shape
    r, c = np.divmod(flat, w)
    same = track[1:] == track[:-1]
    if np.any((np.maximum(np.abs(np.diff(r)), np.abs(np.diff(c))) > 1) & same):
        r, c, track = _fill_segments(r, c, track)  # floating-point ties only
        flat = r * w + c
        same = track[1:] == track[:-1]
        span = np.full_like(span, np.inf)  # filled pixels void the straightness argument
    keep = np.ones(flat.size, dtype=bool)
    keep[1:] = (flat[1:] != flat[:-1]) | ~same
    curly = np.flatnonzero(keep & (span >= _STRAIGHT_SPAN)[track])
    if curly.size:  # a walk that turned enough to loop: full de-duplication of its pixels
        _, first = np.unique(track[curly] * (h * w) + flat[curly], return_index=True)
        keep[curly] = False
        keep[curly[first]] = True
    return flat[keep], np.bincount(track[keep], minlength=span.size)


def _fill_segments(r, c, track):
    """Rasterise every segment by rounding a linear interpolation between its rounded endpoints."""
    same = np.append(track[1:] == track[:-1], False)
    dr = np.where(same, np.append(np.diff(r), 0), 0)
    dc = np.where(same, np.append(np.diff(c), 0), 0)
    n = np.maximum(np.maximum(np.abs(dr), np.abs(dc)), 1)
    seg = np.repeat(np.arange(r.size), n)
    t = (np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)) / n[seg]
    rr = np.floor(r[seg] + t * dr[seg] + 0.5).astype(np.int64)
    cc = np.floor(c[seg] + t * dc[seg] + 0.5).astype(np.int64)
    return rr, cc, track[seg]


def _sparse_positions(lengths: np.ndarray, rng) -> np.ndarray:
    """Kept positions along ragged paths: 0, then cumulative strides of 2..8 while inside.

    Returned as indices into the flat ragged array, track-major and in path order.
    """
    lengths = np.asarray(lengths)
    n_more = int(math.ceil(lengths.max(initial=0) / STRIDE_MIN))
    strides = rng.integers(STRIDE_MIN, STRIDE_MAX + 1, (lengths.size, n_more))
    pos = np.concatenate([np.zeros((lengths.size, 1), dtype=np.int64), np.cumsum(strides, axis=1)], axis=1)
    keep = pos < lengths[:, None]
    offsets = np.cumsum(lengths) - lengths
    return (pos + offsets[:, None])[keep]


def _add_sparse(observed: np.ndarray, path: np.ndarray, lengths: np.ndarray, budget: int, rng) -> int:
    """Sparsify ragged paths and add their not-yet-observed pixels in order, at most ``budget``.

    Equivalent to adding the tracks one after the other (a pixel counts for the first track that
    keeps it) with the last one tail-truncated. Returns the number of pixels added.
    """
    cand = path[_sparse_positions(lengths, rng)]
    cand = cand[~observed[cand]]
    _, first = np.unique(cand, return_index=True)
    first.sort()
    new = cand[first[:budget]]
    observed[new] = True
    return new.size


def _fill_with_lines(observed: np.ndarray, budget: int, shape: tuple[int, int], rng) -> None:
    """Reference fallback: alternate full random rows and columns, sparsified like tracks."""
    h, w = shape
    n_lines = 0
    while budget > 0:
        batch = 64
        is_row = (n_lines + np.arange(batch)) % 2 == 0
        line = np.where(is_row, rng.integers(0, h, batch), rng.integers(0, w, batch))
        along = np.arange(max(h, w))
        pix = np.where(is_row[:, None], line[:, None] * w + along, along * w + line[:, None])
        lengths = np.where(is_row, w, h)
        path = pix[along[None, :] < lengths[:, None]]
        budget -= _add_sparse(observed, path, lengths, budget, rng)
        n_lines += batch


def _start_pool(preferred, shape) -> np.ndarray | None:
    """Flat indices of the preferred start pixels; None means anywhere."""
    if preferred is None:
        return None
    preferred = np.asarray(preferred)
    if preferred.shape != tuple(shape):
        raise ValueError(f"preferred mask has shape {preferred.shape}, expected {tuple(shape)}")
    pool = np.flatnonzero(preferred)
    return pool if pool.size else None


def _expected_new_per_track(shape) -> float:
    """Prior for the pixels one track keeps: walks from a uniform start leave a square tile after
    about 0.47 * side steps (measured), then one pixel in 5 is kept."""
    h, w = shape
    return 1.0 + 0.47 * math.sqrt(h * w) / 5.0


def _batch_size(remaining: int, per_track: float, attempts_left: int) -> int:
    """Tracks to draw next: enough to meet the budget with a 15 % margin, bounded."""
    want = int(math.ceil(1.15 * remaining / per_track)) + 2
    return int(min(max(want, 4), _MAX_BATCH, attempts_left))


# --------------------------------------------------------------------------------------------
# Rectangles and synthetic pixels


def rectangle_mask(
    shape: tuple[int, int], target_hidden: int, rng: np.random.Generator, size_min: int = 2, size_max: int = 5
) -> np.ndarray:
    """Boolean HIDDEN mask: union of random axis-aligned rectangles covering >= ``target_hidden``.

    Height and width are each ``integers(size_min, size_max)`` inclusive (capped at the tile), the
    top-left corner uniform so the rectangle fits. Rectangles are added until the union reaches the
    target, so it may overshoot by less than one rectangle (reference behaviour).
    """
    h, w = _check_shape(shape)
    if not 1 <= size_min <= size_max:
        raise ValueError(f"rectangle sides need 1 <= size_min <= size_max, got {size_min}, {size_max}")
    target = int(min(max(target_hidden, 0), h * w))
    hidden = np.zeros(h * w, dtype=bool)
    covered = 0
    while covered < target:
        covered += _add_rectangles(hidden, target - covered, (h, w), size_min, size_max, rng)
    return hidden.reshape(h, w)


def _add_rectangles(hidden, budget, shape, size_min, size_max, rng) -> int:
    """Draw a batch of rectangles, keep them in order up to the first that meets ``budget``."""
    h, w = shape
    n = int(min(max(2 * budget / size_min**2, 16), 8192))
    rh = np.minimum(rng.integers(size_min, size_max + 1, n), h)
    rw = np.minimum(rng.integers(size_min, size_max + 1, n), w)
    r0 = rng.integers(0, h - rh + 1)
    c0 = rng.integers(0, w - rw + 1)
    side = min(size_max, max(h, w))
    dr, dc = np.divmod(np.arange(side * side), side)
    inside = (dr[None, :] < rh[:, None]) & (dc[None, :] < rw[:, None])
    pix = ((r0[:, None] + dr) * w + c0[:, None] + dc)[inside]
    rect = np.repeat(np.arange(n), inside.sum(axis=1))
    fresh = ~hidden[pix]
    # a pixel counts for the first rectangle of the batch that covers it
    _, first = np.unique(pix[fresh], return_index=True)
    gain = np.cumsum(np.bincount(rect[fresh][first], minlength=n))
    last = int(np.searchsorted(gain, budget)) if gain[-1] >= budget else n - 1
    hidden[pix[rect <= last]] = True
    return int(gain[last])


def synthetic_pixels(candidates: np.ndarray, n_mean: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of about ``n_mean`` distinct candidate pixels (REFERENCE.md 5, synthetic mode).

    n = rint(Normal(n_mean, max(1, 0.1 n_mean))) clipped to [max(1, floor(0.9 n_mean)),
    max(1, ceil(1.1 n_mean))], then to the number of candidates; the pixels are a uniform choice
    without replacement. A tile without candidates gives an empty mask (the reference raised).
    """
    if n_mean < 1:
        raise ValueError(f"synthetic pixel count must be >= 1, got {n_mean}")
    candidates = np.asarray(candidates, dtype=bool)
    if candidates.ndim != 2:
        raise ValueError(f"candidates must be a 2-D (H, W) mask, got shape {candidates.shape}")
    std = max(1.0, 0.1 * n_mean)
    lo, hi = max(1, math.floor(0.9 * n_mean)), max(1, math.ceil(1.1 * n_mean))
    n = int(np.clip(np.rint(rng.normal(n_mean, std)), lo, hi))
    pool = np.flatnonzero(candidates)
    chosen = rng.choice(pool, size=min(n, pool.size), replace=False)
    mask = np.zeros(candidates.size, dtype=bool)
    mask[chosen] = True
    return mask.reshape(candidates.shape)


# --------------------------------------------------------------------------------------------
# Spec and application to a sample


@dataclass(frozen=True)
class CorruptionSpec:
    """How ``x`` is made from ``y`` (DESIGN.md 6 ``x.source``; REFERENCE.md 6 and 9 defaults).

    ``mask_fraction`` is the hidden share of the tile for ``tracks`` and ``rectangles``;
    ``rect_min``/``rect_max`` the rectangle sides; ``pixel_count`` the mean synthetic pixel count.
    """

    source: str = "none"
    mask_fraction: float = 0.975
    rect_min: int = 2
    rect_max: int = 5
    pixel_count: int = 500

    def __post_init__(self):
        if self.source not in X_SOURCES:
            raise ValueError(f"x.source must be one of {X_SOURCES}, got {self.source!r}")
        if not 0.0 <= self.mask_fraction <= 1.0:
            raise ValueError(f"x.mask_fraction must be in [0, 1], got {self.mask_fraction!r}")
        if not 1 <= self.rect_min <= self.rect_max:
            raise ValueError(f"x.rect_min/rect_max need 1 <= min <= max, got {self.rect_min}, {self.rect_max}")
        if self.pixel_count < 1:
            raise ValueError(f"x.pixel_count must be >= 1, got {self.pixel_count}")


def observed_mask(spec: CorruptionSpec, valid2d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 2-D observed pattern for a corruption source, given where y is valid at any depth.

    ``tracks`` start on valid (ocean) pixels and observe exactly the budget (land pixels count
    toward it, as in the reference); ``rectangles`` observe the complement of the hidden union;
    ``synthetic_pixels`` pick valid pixels; ``none`` observes nothing. ``argo`` is not a corruption
    (x comes from real profiles) and raises.
    """
    valid2d = np.asarray(valid2d, dtype=bool)
    shape = valid2d.shape
    if spec.source == "tracks":
        return track_mask(shape, observed_budget(shape, spec.mask_fraction), rng, preferred=valid2d)
    if spec.source == "rectangles":
        hidden_target = round(spec.mask_fraction * valid2d.size)
        return ~rectangle_mask(shape, hidden_target, rng, spec.rect_min, spec.rect_max)
    if spec.source == "synthetic_pixels":
        return synthetic_pixels(valid2d, spec.pixel_count, rng)
    if spec.source == "none":
        return np.zeros(shape, dtype=bool)
    raise ValueError(f"x.source {spec.source!r} is not a corruption of y")


def sparse_from_dense(y: np.ndarray, y_valid: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, x_valid_mask)``: y where the 2-D ``observed`` pattern and y are valid, 0 elsewhere.

    The same (H, W) pattern applies to every level (REFERENCE.md 6.9); arrays are (C, H, W).
    """
    x_valid = np.asarray(y_valid, dtype=bool) & np.asarray(observed, dtype=bool)[None]
    return np.where(x_valid, y, 0).astype(np.asarray(y).dtype, copy=False), x_valid


def _check_shape(shape) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers (H, W), got {shape!r}")
    return int(shape[0]), int(shape[1])
