"""Sample assembly (DESIGN.md section 6): window arrays read from the cube -> the sample dict.

Pure numpy, a function of (window data, config, rng): no file access, no torch. Arrays arrive in
cube orientation (row 0 = south) and leave **north-up** (row 0 = north). Temperatures leave
z-scored in kelvin; invalid values are 0 and validity is carried by the masks.

One pass per field (:func:`assemble`): y's window mean and validity come from one accumulation
over the snapshots with the tile's fixed water column (``static/ocean_mask``, ``bottom_level``),
x is z-scored only where observed, and every float value that leaves is finite by construction
(a non-finite y is masked; a non-finite profile sum is a ValueError naming x), so the stream runs
no finite-check pass over the tensors.

Missing surface data (OSTIA days without a file, all-NaN days, cells NaN on some days): ``eo`` is,
per pixel, the mean over the window days on which that pixel has an OSTIA value, and the sample
carries ``eo_valid_mask`` (1, H, W) bool (a contract extension of DESIGN.md 6): True where the
pixel is ocean and has a value on at least ``eo.min_days`` days (default 1). Elsewhere eo is 0
and the mask False, so a window whose days all lack OSTIA has an all-False mask instead of a
fake 0 field over ocean. ``info['eo_days']`` counts the window days whose surface field has any
value in the tile. With ``glorys_surface`` the mask is where GLORYS level 0 is valid; an eo
dropout (``eo.dropout_p``) blanks the field and its mask together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cube.constants import CELSIUS_TO_KELVIN, Y_MEAN_K, Y_STD_K

from . import augment, corruption, eo as eo_ops
from .config import DatasetConfig


@dataclass
class WindowData:
    """Everything one sample needs, cut from the cube (one tile, one window), in cube orientation
    (row 0 = south) or already north-up (``north_up=True``, what the stream reads)."""

    sst_k: np.ndarray          # (W, H, W) OSTIA kelvin, NaN where missing
    glorys: np.ndarray | list  # (S, 50, H, W) snapshots used by the window, degC, NaN invalid (or S
    #                            (50, H, W) arrays: the stream passes read-only cached chunks)
    glorys_days: np.ndarray    # (S,) number of window days whose nearest snapshot is s
    count: np.ndarray | None   # (50, H, W) profile counts summed over the window (argo mode only)
    total: np.ndarray | None   # (50, H, W) profile sums over the window, degC
    ocean: np.ndarray          # (H, W) bool
    bottom_level: np.ndarray   # (H, W) number of valid GLORYS levels
    north_up: bool = False
    water: np.ndarray | None = None  # (50, H, W) :func:`water_column`, when the caller caches it per tile
    # The same profile sums, sparse (what the stream passes instead of count/total): flat pixel
    # index (n,), count (n, 50), sum (n, 50), from :meth:`loaders.reader.CubeReader.profile_cells`.
    profiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    water_bits: np.ndarray | None = None  # ``water`` as :func:`word_mask`, when the caller caches it
    # True when the caller checked that every snapshot is :func:`finite_over_water` (the stream
    # does, once per tile and snapshot): y is then valid exactly over ``water``, and no cell needs
    # the finite check
    glorys_finite: bool = False

    def profile_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``count`` and ``total`` (50, H, W), spread from ``profiles`` when only those are given."""
        if self.count is not None or self.profiles is None:
            return self.count, self.total
        return spread_cells(self.profiles, self.ocean.shape)

    def profile_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``profiles``, or the same sparse form gathered from ``count`` and ``total``: the pixels
        with a count at some level."""
        if self.profiles is not None:
            return self.profiles
        levels = len(self.count)
        count, total = np.reshape(self.count, (levels, -1)), np.reshape(self.total, (levels, -1))
        pixels = np.flatnonzero((count > 0).any(axis=0))
        return pixels, count[:, pixels].T, total[:, pixels].T


def spread_cells(cells: tuple[np.ndarray, np.ndarray, np.ndarray],
                 shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sparse window sums (flat pixel index (n,), count (n, levels), sum (n, levels): what
    :meth:`loaders.reader.CubeReader.profile_cells` returns) spread over the (H, W) window:
    count (levels, H, W) int32 and sum float32, zero where no pixel is listed."""
    pixels, count, total = cells
    h, w = shape
    dense_count = np.zeros((count.shape[1], h * w), np.int32)
    dense_total = np.zeros((count.shape[1], h * w), np.float32)
    dense_count[:, pixels], dense_total[:, pixels] = count.T, total.T  # level-major (pixels are distinct)
    return dense_count.reshape(-1, h, w), dense_total.reshape(-1, h, w)


def nearest_snapshots(days: np.ndarray, snapshot_times: np.ndarray) -> np.ndarray:
    """Index of the nearest snapshot for each day, by real time distance from the day's middle
    (REFERENCE.md 11.6 fixed: no YYYYMMDD integer arithmetic). Ties go to the earlier snapshot."""
    mid = days.astype("datetime64[s]") + np.timedelta64(12 * 3600, "s")
    t = snapshot_times.astype("datetime64[s]").astype(np.int64)
    m = mid.astype(np.int64)
    right = np.clip(np.searchsorted(t, m), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    return np.where(np.abs(m - t[left]) <= np.abs(t[right] - m), left, right)


#: Largest magnitude :func:`finite_over_water` accepts: a weighted mean of such values, with
#: weights (days) summing to less than 1e8, has sums below float32's largest value (3.4e38).
FINITE_BOUND = np.float32(1e30)


def finite_over_water(snapshot: np.ndarray, water: np.ndarray) -> bool:
    """True when every water cell of a (levels, H, W) snapshot is finite and smaller in magnitude
    than :data:`FINITE_BOUND`: any window mean of such snapshots is then finite over ``water``,
    so y's validity is ``water`` itself (``WindowData.glorys_finite``)."""
    return bool(np.max(np.abs(snapshot), where=water, initial=0) < FINITE_BOUND)


def surface_mean(sst_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OSTIA (days, H, W) kelvin -> per pixel the sum in degC over the days that have a value
    (added day by day, starting from 0), and how many days have one."""
    ok = np.isfinite(sst_k)
    days = np.count_nonzero(ok, axis=0)
    total, day_c = np.zeros(sst_k.shape[1:], np.float32), np.empty(sst_k.shape[1:], np.float32)
    gaps = days.min(initial=len(sst_k)) < len(sst_k)  # some pixel lacks a day (rare)
    for k in range(len(sst_k)):
        np.subtract(sst_k[k], np.float32(CELSIUS_TO_KELVIN), out=day_c)
        if gaps:
            np.copyto(day_c, np.float32(0), where=~ok[k])
        total += day_c
    return total, days


def dense_target(win: WindowData) -> tuple[np.ndarray, np.ndarray]:
    """y (50, H, W) degC and its validity: window mean of the nearest snapshot per day, valid over
    ocean and above the seabed (``bottom_level``); NaN where invalid."""
    y, valid = _dense_target(win)
    return np.where(valid, y, np.float32(np.nan)), valid


def _dense_target(win: WindowData) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`dense_target`, but values where invalid are left as they are: the window mean
    of :func:`_target_zscored` (which states the rule), in degC, over all levels."""
    y = np.empty(np.shape(win.glorys[0]), np.float32)
    _, valid, _ = _target_zscored(win, (0, 0), y_out=y)
    return y, valid


#: Levels per pass of :func:`_target_zscored`: 4 x 128 x 128 float32 is 256 kB, so a block's
#: passes (sum, validity, division, z-score) run in the core's cache instead of memory.
LEVEL_BLOCK = 4


def _target_zscored(win: WindowData, bands: tuple[int, int], z_out: np.ndarray | None = None,
                    valid_out: np.ndarray | None = None,
                    y_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y z-scored over ``bands`` (0 where invalid), y's validity over all levels, and y's level 0
    in degC (arbitrary where invalid), computed :data:`LEVEL_BLOCK` levels at a time so that each
    pass reads cached data, with no window-sized temporaries.

    y is the window mean with the tile's fixed water column: the weighted sum of the snapshots,
    accumulated snapshot by snapshot (starting from the first snapshot's term), divided by the
    total weight, valid where that sum is finite and the cell is water. Only water cells that
    some snapshot lacks (NaN or inf there; normally none, GLORYS's mask is fixed) take the
    NaN-aware mean over the snapshots that have them. A cell whose mean is not finite is invalid,
    so no NaN or inf is ever valid. With ``win.glorys_finite`` (every snapshot
    :func:`finite_over_water`, weights that are days) every water cell's sum is finite, so
    validity is ``water`` itself and the cell-by-cell check is skipped (the same values and
    masks). The z-score is :func:`_zscore`'s. ``z_out`` ((bands, H, W) float32) and
    ``valid_out`` ((levels, H, W) bool) are written instead of new arrays; ``y_out`` ((levels,
    H, W) float32) also receives y in degC (arbitrary where invalid)."""
    snaps, weights = win.glorys, np.asarray(win.glorys_days, np.float32)
    shape = snaps[0].shape
    water = win.water if win.water is not None else water_column(win.ocean, win.bottom_level, shape[0])
    hi = min(bands[1], shape[0])  # slice semantics: bands past the last level are cut (as y_c[lo:hi])
    lo = min(bands[0], hi)
    z = np.empty((hi - lo,) + shape[1:], np.float32) if z_out is None else z_out
    valid = np.empty(shape, bool) if valid_out is None else valid_out
    block = min(LEVEL_BLOCK, shape[0])
    acc, term = np.empty((block,) + shape[1:], np.float32), np.empty((block,) + shape[1:], np.float32)
    level0 = np.empty(shape[1:], np.float32)
    total_weight, partial = np.float32(weights.sum()), []
    # every water cell's sum finite (weights that are days: >= 0, summing to 1 .. 1e8): valid is water
    finite = win.glorys_finite and 0 < total_weight < 1e8 and bool((weights >= 0).all())
    if finite:
        np.copyto(valid, water)
        water_bits = win.water_bits if win.water_bits is not None else word_mask(water)
    for a in range(0, shape[0], block):
        b = min(a + block, shape[0])
        n = b - a
        if len(snaps) == 1:
            y = snaps[0][a:b]
            if y_out is not None:
                y = y_out[a:b]
                y[...] = snaps[0][a:b]
        else:
            y = acc[:n] if y_out is None else y_out[a:b]
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN sums are masked below
                np.multiply(snaps[0][a:b], weights[0], out=y, dtype=np.float32)
                for k in range(1, len(snaps)):
                    y += np.multiply(snaps[k][a:b], weights[k], out=term[:n])
        if not finite:
            np.isfinite(y, out=valid[a:b])
            valid[a:b] &= water[a:b]
            # water cells without a finite sum (normally none: GLORYS's mask is fixed): counted
            # first (valid lies within water), listed only when there are some
            if len(snaps) > 1 and np.count_nonzero(valid[a:b]) != np.count_nonzero(water[a:b]):
                partial.append(np.flatnonzero(water[a:b] & ~valid[a:b]) + a * y[0].size)
        if len(snaps) > 1:
            y /= total_weight
        if a == 0:
            level0[...] = y[0]
        za, zb = max(a, lo), min(b, hi)
        if za < zb:
            _zscore(y[za - a:zb - a], valid[za:zb], out=z[za - lo:zb - lo],
                    valid_bits=water_bits[za:zb] if finite else None)
    partial = np.concatenate(partial) if partial else np.zeros(0, np.int64)
    if len(partial):  # water cells some snapshot lacks: the NaN-aware mean
        cells = np.unravel_index(partial, shape)  # the snapshots may be views: pick, do not ravel
        mean, ok = _nan_aware_mean(np.stack([v[cells] for v in snaps]), weights)
        valid.flat[partial] = ok
        plane = shape[1] * shape[2]
        level, rest = np.divmod(partial, plane)
        first = level == 0
        level0.flat[rest[first]] = mean[first]
        if y_out is not None:
            y_out.flat[partial] = mean
        banded = (level >= lo) & (level < hi)
        zp = _zscore(mean[banded], ok[banded])
        z.reshape(hi - lo, plane)[level[banded] - lo, rest[banded]] = zp
    return z, valid, level0


def _nan_aware_mean(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, N) values -> weighted mean over the finite ones (N,), and where it is finite; summed
    snapshot by snapshot like :func:`_target_zscored`."""
    num = np.zeros(values.shape[1], np.float32)
    den = np.zeros(values.shape[1], np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for v, w in zip(values, weights):
            ok = np.isfinite(v)
            num += np.where(ok, v, np.float32(0)) * w
            den += ok * w
        mean = (num / den).astype(np.float32)
    return mean, np.isfinite(mean)


def water_column(ocean: np.ndarray, bottom_level: np.ndarray, n_levels: int) -> np.ndarray:
    """(levels, H, W) bool: ocean and above the seabed (level index < ``bottom_level``)."""
    return ocean[None] & (np.arange(n_levels)[:, None, None] < bottom_level[None])


def surface_condition(win: WindowData, cfg: DatasetConfig, y_c: np.ndarray, rng) -> np.ndarray:
    """eo (H, W) degC, NaN where invalid (``eo_valid_mask`` is where it is finite): the OSTIA window
    mean over the days on which each pixel has a value, kept over ocean where there are at least
    ``eo.min_days`` such days, or GLORYS level 0. Degradations (offset, speckle) apply after."""
    if cfg.eo.source == "glorys_surface":
        eo_c = y_c[0].copy()
    else:
        total, days = surface_mean(win.sst_k)
        kept = win.ocean & (days >= max(cfg.eo.min_days, 1))
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 where no day has a value
            eo_c = np.where(kept, total / days.astype(np.float32), np.float32(np.nan))
    return eo_ops.degrade_eo_celsius(eo_c, cfg.eo, rng)


def surface_days(win: WindowData, cfg: DatasetConfig) -> int:
    """Window days whose surface field has a value somewhere in the tile (``info['eo_days']``)."""
    if cfg.eo.source == "glorys_surface":
        return int(np.sum(win.glorys_days))
    return int(np.isfinite(win.sst_k).any(axis=(1, 2)).sum())


def sparse_input(win: WindowData, cfg: DatasetConfig, y_c: np.ndarray, y_valid: np.ndarray, rng):
    """x (50, H, W) degC with NaN where unobserved, and x_valid_mask."""
    if cfg.x.source == "argo":
        count, total = win.profile_sums()
        valid = count > 0
        x = np.full(valid.shape, np.nan, np.float32)
        seen = np.flatnonzero(valid)  # a few hundred observed voxels: divide only those
        x.flat[seen] = total.flat[seen] / count.flat[seen]
        return x, valid
    # Tracks start on ocean pixels where y is valid at some depth (REFERENCE.md 6.9 'preferred').
    observed = corruption.observed_mask(cfg.x, y_valid.any(axis=0) & win.ocean, rng)
    x, valid = corruption.sparse_from_dense(y_c, y_valid, observed)
    return np.where(valid, x, np.nan), valid


def yyyymmdd(day: np.datetime64, feb29_to_feb28: bool = True) -> int:
    """Window centre as an int YYYYMMDD; Feb 29 -> Feb 28 when asked (the model's non-leap calendar)."""
    y, m, d = (int(v) for v in str(np.datetime64(day, "D")).split("-"))
    if feb29_to_feb28 and m == 2 and d == 29:
        d = 28
    return y * 10000 + m * 100 + d


def _zscore(t_c: np.ndarray, valid: np.ndarray | None, out: np.ndarray | None = None,
            valid_bits: np.ndarray | None = None) -> np.ndarray:
    """:func:`cube.constants.normalise_celsius` in float32, 0 where invalid: into ``out`` (a
    float32 array of ``t_c``'s shape, which may be ``t_c`` itself), else into a new array.
    ``valid_bits``: ``valid`` as int32 words (-1 where valid, 0 where not, :func:`word_mask`),
    when the caller has them (``valid`` is then not read): the invalid values are cleared by one
    AND instead of a masked copy."""
    z = np.add(t_c, np.float32(CELSIUS_TO_KELVIN - Y_MEAN_K), out=out, dtype=np.float32)
    z *= np.float32(1.0 / Y_STD_K)
    if valid_bits is None:
        np.copyto(z, np.float32(0), where=~valid)
    else:  # +0.0 is all zero bits, as the masked copy writes
        bits = z.view(np.int32)
        np.bitwise_and(bits, valid_bits, out=bits)
    return z


def word_mask(mask: np.ndarray) -> np.ndarray:
    """A bool mask as int32 words: -1 (all bits set) where True, 0 where False (``valid_bits``
    of :func:`_zscore`)."""
    return np.negative(mask, dtype=np.int32)


def _sparse_input_zscored(win: WindowData, cfg: DatasetConfig, y_z: np.ndarray, y_valid: np.ndarray, rng,
                          x: np.ndarray | None = None, valid: np.ndarray | None = None):
    """x z-scored over ``cfg.target_bands`` (0 where unobserved) and x_valid_mask: the values of
    :func:`sparse_input`, z-scored only where observed. ``y_z`` is y z-scored over the bands,
    ``y_valid`` y's validity over all levels (the tracks start on any valid level). ``x`` and
    ``valid`` (float32 and bool arrays of the bands' shape) are written instead of new arrays."""
    lo, hi = cfg.target_bands
    shape = y_z.shape
    x = np.empty(shape, np.float32) if x is None else x
    valid = np.empty(shape, bool) if valid is None else valid
    if cfg.x.source == "argo":
        # the observed (level, pixel)s straight from the few observed pixels' sums
        pixels, count, total = win.profile_cells()
        level, k = np.nonzero(count[:, lo:hi].T > 0)
        seen = (level, *np.unravel_index(pixels[k], valid.shape[1:]))
        x_c = np.asarray(total[k, lo + level] / count[k, lo + level], dtype=np.float32)
        valid[...] = False
        valid[seen] = True
        if not np.isfinite(x_c).all():
            raise ValueError(f"x holds {int((~np.isfinite(x_c)).sum())} non-finite values (profile sums)")
        x[...] = 0
        x[seen] = _zscore(x_c, np.ones(len(x_c), bool))
        return x, valid
    observed = corruption.observed_mask(cfg.x, y_valid.any(axis=0) & win.ocean, rng)
    np.logical_and(y_valid[lo:hi], observed[None], out=valid)
    x[...] = 0
    np.copyto(x, y_z, where=valid)
    return x, valid


@dataclass
class WindowFields:
    """A window's fields in degC, in the window's orientation, before band selection and z-score:
    what :func:`assemble` normalises and ``loaders.export`` writes. Validity is in the masks; ``eo``
    and ``x`` are NaN where invalid, ``y`` holds arbitrary values there (use ``y_valid``)."""

    eo: np.ndarray        # (H, W)
    eo_valid: np.ndarray  # (H, W) bool
    x: np.ndarray         # (50, H, W)
    x_valid: np.ndarray   # (50, H, W) bool
    y: np.ndarray         # (50, H, W)
    y_valid: np.ndarray   # (50, H, W) bool


def window_fields(win: WindowData, cfg: DatasetConfig, rng: np.random.Generator) -> WindowFields:
    """Dense target, surface condition and sparse input of one window (rng drawn in that order:
    eo degradations, then the x corruption)."""
    y_c, y_valid, eo_c = _target_and_surface(win, cfg, rng)
    x_c, x_valid = sparse_input(win, cfg, y_c, y_valid, rng)
    return WindowFields(eo_c, np.isfinite(eo_c), x_c, x_valid, y_c, y_valid)


def _target_and_surface(win: WindowData, cfg: DatasetConfig, rng: np.random.Generator):
    """y (degC), its validity and eo (degC, NaN where invalid): the first half of
    :func:`window_fields`, which draws eo's degradations first (the x corruption next), as
    :func:`assemble` does."""
    y_c, y_valid = _dense_target(win)
    eo_c = surface_condition(win, cfg, np.where(y_valid[:1], y_c[:1], np.float32(np.nan)), rng)
    return y_c, y_valid, eo_c


def assemble(win: WindowData, cfg: DatasetConfig, rng: np.random.Generator, *, centre_day: np.datetime64,
             coords: tuple[float, float], info: dict, out: dict | None = None) -> dict:
    """The sample dict of DESIGN.md section 6 (numpy; the stream turns it into tensors).

    One pass per field: y is the window mean of :func:`_target_zscored` z-scored over the bands,
    x is z-scored only where observed (a few hundred profile voxels; tracks x is y's z-score where
    the pattern observes it), and invalid values are 0. Every float array is finite by
    construction (invalid and non-finite values are masked), so no finite-check pass follows;
    the one input that is not masked by its validity, a profile sum, is checked where it is
    gathered: a non-finite one is a ValueError naming x (the stream turns it into a SampleError).
    Random draws come in :func:`window_fields`'s order (eo degradations, then the x corruption).

    ``out`` (one slot of a batch: arrays of the sample's shapes and dtypes, by key, e.g. from
    :class:`loaders.batching.BatchBuilder`) receives ``y``, ``y_valid_mask``, ``x``,
    ``x_valid_mask`` and ``land_mask`` instead of new arrays (the returned dict then holds those
    very arrays); the values are the same either way.
    """
    out = {} if out is None else out
    if not np.isfinite(coords).all():
        raise ValueError(f"coords {tuple(coords)} are not finite")
    lo, hi = cfg.target_bands
    all_levels = lo == 0 and hi >= len(win.glorys[0])
    y_z, y_valid, y0_c = _target_zscored(win, (lo, hi), out.get("y"), out.get("y_valid_mask") if all_levels else None)
    eo_c = surface_condition(win, cfg, np.where(y_valid[:1], y0_c[None], np.float32(np.nan)), rng)
    eo_valid = np.isfinite(eo_c)
    y_valid_bands = y_valid[lo:hi]
    if "y_valid_mask" in out and not all_levels:
        np.copyto(out["y_valid_mask"], y_valid_bands)
        y_valid_bands = out["y_valid_mask"]
    x_z, x_valid = _sparse_input_zscored(win, cfg, y_z, y_valid, rng, out.get("x"), out.get("x_valid_mask"))
    land = out.get("land_mask")
    if land is None:
        land = win.ocean[None].astype(np.float32)
    else:
        np.copyto(land, win.ocean[None])

    sample = {
        "eo": _zscore(eo_c, eo_valid)[None],
        "eo_valid_mask": eo_valid[None],
        "x": x_z,
        "y": y_z,
        "x_valid_mask": x_valid,
        "y_valid_mask": y_valid_bands,
        "land_mask": land,
    }
    if cfg.eo.dropout_p > 0:  # one draw blanks the field and its mask together
        both = eo_ops.dropout_normalised_eo(np.concatenate([sample["eo"], sample["eo_valid_mask"]]), cfg.eo, rng)
        sample["eo"], sample["eo_valid_mask"] = both[:1], both[1:] > 0
    if not win.north_up:  # cube row 0 is the south edge
        sample = {k: np.ascontiguousarray(v[..., ::-1, :]) for k, v in sample.items()}
    if cfg.augment:
        sample = augment.apply_geometry_to_sample(sample, augment.draw_geometry(rng))
    sample["x_valid_mask_1d"] = sample["x_valid_mask"].any(axis=0, keepdims=True)
    sample["date"] = np.int64(yyyymmdd(centre_day, cfg.feb29_to_feb28))
    sample["coords"] = np.asarray(coords, np.float32)
    sample["info"] = {**info, "eo_days": surface_days(win, cfg)}
    return sample
