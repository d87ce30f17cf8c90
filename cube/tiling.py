"""The cube's tiling rules (DESIGN.md 5, REFERENCE.md 2.1, 3.1, 8.1, 11): one place for them, imported
by the builder (``cube.patches``, ``cube.index``) and the loaders (``loaders.windows``, ``loaders.reader``,
``loaders.export``) alike. Pure numpy/pandas; imports nothing from ``cube/`` but ``cube.errors``.

- the tile and split specs (:class:`PatchSpec`, :class:`SplitSpec`) and the patch table's columns
  (:data:`PATCH_COLUMNS`);
- the dateline column rule: a tile's columns wrap modulo ``nlon`` on a global grid
  (:func:`tile_columns`, :func:`tile_column_selector`, :func:`column_runs`), and a tile crossing the
  dateline has its east edge unwrapped past 180 for drawing (:func:`unwrapped_east`);
- the odd-window rule (:func:`odd_window`, :func:`window_radius`, :func:`window_days_slice`);
- splits (:func:`assign_splits`) and the training rows, patch x window-centre day
  (:func:`sample_rows`);
- the block order of an epoch or an export (:func:`block_order`).

The builder makes the patch table itself (:func:`cube.patches.build_patches`, which needs the cube grid).

Decisions that differ from the reference (REFERENCE.md 2.1 / 11), on purpose:

* On a global grid tiles wrap across the dateline: columns are taken modulo ``nlon``.
* ``invalid_threshold`` defaults to 0.5, the value of the reference docs' recommended command;
  the reference script's own default was 0.2.
* ``min_profiles`` counts profile observations in the window *in that patch*; the reference used
  a worldwide daily count, so rows with no profile in the patch survived (11.7).
* The ``random`` split draws its permutation with numpy (``default_rng(seed)``), not torch's
  ``random_split`` generator: same sizes and clamp as REFERENCE.md 8.1, not the same rows.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .errors import ConfigError

SPLIT_METHODS = ("patch", "window", "year", "random")
#: Methods whose split is decided per patch (stored in the patch table); the others decide per row.
PATCH_LEVEL_METHODS = ("patch", "window")

#: The patch table's columns, in order (the builder writes them, the loaders read them back; the
#: stored ``patches`` group adds ``split`` and ``obs_count``).
PATCH_COLUMNS = ("patch", "row0", "col0", "lat0", "lat1", "lon0", "lon1",
                 "lat_center", "lon_center", "invalid_fraction")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _from_dict(cls, d: dict):
    unknown = sorted(set(d) - set(cls.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are "
                          f"{sorted(cls.__dataclass_fields__)}")
    return cls(**d)


@dataclass(frozen=True)
class PatchSpec:
    """Tile geometry: ``tile_size`` x ``tile_size`` cube cells every ``stride`` cells (None = tile_size).

    Tiles whose ``invalid_fraction`` (share of non-ocean cells) exceeds ``invalid_threshold`` are
    dropped. Default 0.5 as in the reference docs' recommended command (the script default was 0.2).
    """

    tile_size: int = 128
    stride: int | None = None
    invalid_threshold: float = 0.5

    def __post_init__(self):
        if not _is_int(self.tile_size) or self.tile_size < 1:
            raise ValueError(f"PatchSpec.tile_size must be an integer >= 1, got {self.tile_size!r}")
        if self.stride is not None and (not _is_int(self.stride) or self.stride < 1):
            raise ValueError(f"PatchSpec.stride must be None or an integer >= 1, got {self.stride!r}")
        if not _is_real(self.invalid_threshold) or not 0.0 <= self.invalid_threshold <= 1.0:
            raise ValueError(f"PatchSpec.invalid_threshold must be in [0, 1], got {self.invalid_threshold!r}")

    @property
    def step(self) -> int:
        """The stride actually used (``tile_size`` when ``stride`` is None)."""
        return self.tile_size if self.stride is None else self.stride

    @property
    def overlapping(self) -> bool:
        """True when neighbouring tiles share cells (``stride < tile_size``)."""
        return self.step < self.tile_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PatchSpec":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` listing the valid ones."""
        return _from_dict(cls, d)


@dataclass(frozen=True)
class SplitSpec:
    """How rows are divided into train and val, deterministically from ``seed``.

    ``patch``: random patch-level split (reference default). ``window``: ``block_tiles`` x
    ``block_tiles`` geographic blocks of tiles go to val together. ``year``: rows whose centre day
    falls in ``val_year`` are val. ``random``: sample-level random split (leaks neighbouring days;
    kept to reproduce the reference runner). ``val_year`` with a spatial method adds a temporal
    holdout (see :func:`sample_rows`); it is required when tiles overlap (REFERENCE.md 11.19).
    """

    method: str = "patch"
    val_fraction: float = 0.15
    seed: int = 7
    block_tiles: int = 2
    val_year: int | None = None

    def __post_init__(self):
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"SplitSpec.method must be one of {SPLIT_METHODS}, got {self.method!r}")
        if not _is_real(self.val_fraction) or not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"SplitSpec.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"SplitSpec.seed must be an integer >= 0, got {self.seed!r}")
        if not _is_int(self.block_tiles) or self.block_tiles < 1:
            raise ValueError(f"SplitSpec.block_tiles must be an integer >= 1, got {self.block_tiles!r}")
        if self.val_year is not None and not _is_int(self.val_year):
            raise ValueError(f"SplitSpec.val_year must be None or an integer year, got {self.val_year!r}")
        if self.method == "year" and self.val_year is None:
            raise ValueError("SplitSpec.val_year is required when method is 'year', got None")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SplitSpec":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` listing the valid ones."""
        return _from_dict(cls, d)



# --------------------------------------------------------------------------------------------
# Dateline columns and odd windows
# --------------------------------------------------------------------------------------------

def tile_columns(col0: int, tile: int, nlon: int) -> np.ndarray:
    """The ``tile`` cube columns of a tile starting at ``col0``, modulo ``nlon`` (a tile of a global
    grid may cross the dateline: its columns then run up to ``nlon - 1`` and go on from 0)."""
    return (col0 + np.arange(tile)) % nlon


def tile_column_selector(col0: int, tile: int, nlon: int) -> slice | np.ndarray:
    """:func:`tile_columns` as a ``slice`` when they are contiguous, else the index array."""
    cols = tile_columns(col0, tile, nlon)
    return slice(col0, col0 + tile) if cols[-1] == col0 + tile - 1 else cols


def column_runs(cols: np.ndarray) -> list[slice]:
    """The contiguous runs of a column index array (two for a tile that crosses the dateline)."""
    runs = np.split(cols, np.flatnonzero(np.diff(cols) != 1) + 1)
    return [slice(int(r[0]), int(r[-1]) + 1) for r in runs]


def unwrapped_east(lon0, lon1):
    """East edge of a tile, plus 360 when the tile crosses the dateline (``lon1 <= lon0``), so a
    drawn tile keeps its true width instead of spanning the globe the other way."""
    return np.where(np.asarray(lon1) <= np.asarray(lon0), np.asarray(lon1) + 360.0, lon1)


def odd_window(window_days: int) -> int:
    """The window length actually used: an even ``window_days`` is incremented by one (REFERENCE.md 3.1)."""
    return window_days + 1 - window_days % 2


def window_radius(window_days: int) -> int:
    """Days on each side of the centre day: ``odd_window(window_days) // 2``."""
    return odd_window(window_days) // 2


def window_days_slice(centre: int, window_days: int) -> slice:
    """The days ``[centre - r, centre + r]`` of the window centred on day index ``centre``."""
    r = window_radius(window_days)
    return slice(centre - r, centre + r + 1)


def block_order(n: int, block_size: int | None, rng: np.random.Generator | None,
                short_last_stays_last: bool = False) -> np.ndarray:
    """Indices ``0..n-1`` cut into contiguous blocks of ``block_size`` (same tile, neighbouring days:
    they share cube chunks), the blocks permuted by ``rng.permutation``, order inside each block kept.
    ``short_last_stays_last``: a short last block is not permuted but stays last (the stream's epochs);
    otherwise it is permuted with the others (the export, reference 4.2). ``rng`` or ``block_size``
    None: the indices in order."""
    indices = np.arange(n, dtype=np.int64)
    if block_size is None or rng is None or n == 0:
        return indices
    whole = n - n % block_size if short_last_stays_last else n
    starts = np.arange(0, whole, block_size)
    starts = starts[rng.permutation(len(starts))]
    blocks = [indices[s:min(s + block_size, whole)] for s in starts] + [indices[whole:]]
    return np.concatenate(blocks)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def n_val_clamped(n: int, val_fraction: float) -> int:
    """Reference validation size: ``round(n * frac)`` clamped to ``[1 if frac > 0 else 0, n - 1]``,
    0 when ``n <= 1`` (REFERENCE.md 2.1 step 5, 2.3, 8.1). Python's round (half to even), as there."""
    if n <= 1:
        return 0
    lo = 1 if val_fraction > 0 else 0
    return min(max(int(round(n * val_fraction)), lo), n - 1)


def _patch_spec_of(patches: pd.DataFrame, patch_spec: PatchSpec | None) -> PatchSpec:
    if patch_spec is not None:
        return patch_spec
    if "patch_spec" in patches.attrs:
        return PatchSpec.from_dict(dict(patches.attrs["patch_spec"]))
    raise ValueError("the tile geometry of this patch table is unknown (no attrs['patch_spec'], e.g. it was "
                     "read back from CSV): pass patch_spec= to assign_splits")


def _check_overlap(spec: SplitSpec, pspec: PatchSpec) -> None:
    if pspec.overlapping and spec.method != "year" and spec.val_year is None:
        raise ValueError(
            f"tiles overlap (stride {pspec.step} < tile_size {pspec.tile_size}), so a '{spec.method}' split "
            f"would put the same cells in train and val: set SplitSpec.val_year for a temporal holdout, "
            f"or use method='year' (REFERENCE.md 11.19)")


def _random_val(n: int, spec: SplitSpec) -> np.ndarray:
    """Bool mask of the ``n_val_clamped`` items that ``default_rng(seed).permutation(n)`` puts first."""
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(spec.seed).permutation(n)[:n_val_clamped(n, spec.val_fraction)]] = True
    return val


def _window_val(patches: pd.DataFrame, spec: SplitSpec, tile: int) -> np.ndarray:
    block = spec.block_tiles * tile
    keys = np.stack([patches["row0"].to_numpy() // block, patches["col0"].to_numpy() // block], axis=1)
    # np.unique sorts the blocks south-west first, so the block numbering is independent of row order.
    _, block_id = np.unique(keys, axis=0, return_inverse=True)
    block_id = block_id.ravel()
    n_blocks = int(block_id.max()) + 1 if block_id.size else 0
    return _random_val(n_blocks, spec)[block_id]


def assign_splits(patches: pd.DataFrame, spec: SplitSpec = SplitSpec(),
                  patch_spec: PatchSpec | None = None) -> pd.DataFrame:
    """A copy of ``patches`` with a ``split`` column.

    ``patch``: exactly REFERENCE.md 2.1 step 5 - ``default_rng(seed).permutation(patch)[:n_val]``
    are ``val``, the rest ``train``, with :func:`n_val_clamped`. ``window``: tiles are grouped into
    blocks by ``(row0 // (k*tile), col0 // (k*tile))`` and whole blocks are drawn the same way.
    ``year`` / ``random`` decide per sample in :func:`sample_rows`, so every patch gets ``all``.
    The tile geometry comes from ``patch_spec`` or ``patches.attrs['patch_spec']``; overlapping
    tiles without ``val_year`` (and a method other than ``year``) raise ``ValueError``.
    """
    pspec = _patch_spec_of(patches, patch_spec)
    _check_overlap(spec, pspec)
    out = patches.copy()
    if spec.method == "patch":
        ids = out["patch"].to_numpy()
        chosen = np.random.default_rng(spec.seed).permutation(ids)[:n_val_clamped(len(ids), spec.val_fraction)]
        val = np.isin(ids, chosen)
    elif spec.method == "window":
        val = _window_val(out, spec, pspec.tile_size)
    else:
        out["split"] = "all"
        return out
    out["split"] = np.where(val, "val", "train")
    return out


# --------------------------------------------------------------------------------------------
# Sample rows
# --------------------------------------------------------------------------------------------

def _check_days(days) -> np.ndarray:
    days = np.asarray(days)
    if days.ndim != 1 or not np.issubdtype(days.dtype, np.datetime64):
        raise ValueError(f"days must be a 1-D datetime64 array, got {days.dtype} with shape {days.shape}")
    days = days.astype("datetime64[D]")
    if days.size > 1 and not (np.diff(days) == np.timedelta64(1, "D")).all():
        raise ValueError("days must be the cube's contiguous daily axis (consecutive days, ascending)")
    return days


def _window_sums(values: np.ndarray, centres: np.ndarray, r: int) -> np.ndarray:
    """Sum over ``[c - r, c + r]`` along the last axis for each centre index, via one cumsum."""
    csum = np.concatenate([np.zeros(values.shape[:-1] + (1,), np.int64),
                           np.cumsum(values, axis=-1, dtype=np.int64)], axis=-1)
    return csum[..., centres + r + 1] - csum[..., centres - r]


def _check_obs(obs_count, ids: np.ndarray, n_days: int) -> np.ndarray:
    obs = np.asarray(obs_count)
    if obs.ndim != 2 or obs.shape[1] != n_days:
        raise ValueError(f"obs_count must be (n_patch, n_days={n_days}), got shape {obs.shape}")
    if ids.size and ids.max() >= obs.shape[0]:
        raise ValueError(f"obs_count has {obs.shape[0]} patch rows but the table has patch id {ids.max()}")
    if not (np.issubdtype(obs.dtype, np.integer) or np.issubdtype(obs.dtype, np.bool_)):
        if not (np.isfinite(obs).all() and (obs == np.round(obs)).all()):
            raise ValueError("obs_count must hold whole, finite counts")
    if (obs < 0).any():
        raise ValueError("obs_count must not be negative")
    return obs[ids].astype(np.int64)


def _check_split_column(patches: pd.DataFrame, spec: SplitSpec) -> np.ndarray:
    if "split" not in patches.columns:
        raise ValueError("patches has no 'split' column: call assign_splits(patches, spec) first")
    split = patches["split"].to_numpy().astype(str)
    allowed = {"train", "val"} if spec.method in PATCH_LEVEL_METHODS else {"all"}
    found = set(np.unique(split))
    if not found <= allowed:
        raise ValueError(f"patches were split for another method (split values {sorted(found)}, method "
                         f"'{spec.method}' expects {sorted(allowed)}): call assign_splits(patches, spec)")
    return split


def _centres(days: np.ndarray, r: int, data_days_valid) -> np.ndarray:
    """Indices of days whose whole window lies on the axis (and holds at least one data day)."""
    centres = np.arange(r, days.size - r, dtype=np.int64)
    if data_days_valid is None:
        return centres
    valid = np.asarray(data_days_valid)
    if valid.shape != days.shape or valid.dtype != bool:
        raise ValueError(f"data_days_valid must be bool with shape {days.shape}, got {valid.dtype} {valid.shape}")
    return centres[_window_sums(valid, centres, r) > 0]


def _row_split(patch_val: np.ndarray, years: np.ndarray, spec: SplitSpec) -> np.ndarray:
    """Split code per row: 1 = val, 0 = train, -1 = left out by the temporal holdout."""
    in_val_year = years == spec.val_year
    if spec.method == "year":
        return in_val_year.astype(np.int8)
    val = _random_val(years.size, spec) if spec.method == "random" else patch_val
    codes = val.astype(np.int8)
    if spec.val_year is not None:
        # Spatio-temporal holdout: a row is used only when its patch/sample split agrees with
        # its year, so train and val never share a day even when tiles overlap.
        codes[val != in_val_year] = -1
    return codes


def sample_rows(patches: pd.DataFrame, days: np.ndarray, window_days: int, spec: SplitSpec = SplitSpec(),
                obs_count: np.ndarray | None = None, min_profiles: int = 0,
                data_days_valid: np.ndarray | None = None) -> pd.DataFrame:
    """Training rows = patch x valid window-centre day, date-major (all patches of day 0, then day 1, ...).

    ``window_days`` is made odd (:func:`odd_window`); radius ``r = window_radius(window_days)``.
    A centre day is valid when ``[d - r, d + r]`` lies inside ``days`` (the cube's contiguous daily
    axis) and, if ``data_days_valid`` (bool per day) is given, at least one window day has data.
    ``obs_count`` (row = patch id, one column per day) enables the filter ``>= min_profiles``
    observations summed over the window *in that patch* (the reference used a worldwide daily
    count, REFERENCE.md 11.7); its window sum is returned as column ``obs_count``.
    Split per row: the patch's split (``patch`` / ``window``), the centre day's year == ``val_year``
    (``year``), or ``default_rng(seed).permutation(N)[:n_val]`` over the N rows (``random``; same
    sizes as the reference's torch ``random_split``, not the same rows). With ``val_year`` set and a
    method other than ``year``, only rows whose split agrees with their year are kept (val rows in
    ``val_year``, train rows outside it). Columns: ``patch, day, day_index, split`` (categorical)
    [, ``obs_count``]. Fully vectorised.
    """
    if not _is_int(window_days) or window_days < 1:
        raise ValueError(f"window_days must be an integer >= 1, got {window_days!r}")
    if not _is_int(min_profiles) or min_profiles < 0:
        raise ValueError(f"min_profiles must be an integer >= 0, got {min_profiles!r}")
    if min_profiles > 0 and obs_count is None:
        raise ValueError("min_profiles > 0 needs obs_count (profile observations per patch per day)")
    days = _check_days(days)
    patch_split = _check_split_column(patches, spec)
    ids = patches["patch"].to_numpy().astype(np.int64)
    r = window_radius(window_days)
    centres = _centres(days, r, data_days_valid)
    keep = np.ones((centres.size, ids.size), dtype=bool)
    counts = None
    if obs_count is not None:
        counts = _window_sums(_check_obs(obs_count, ids, days.size), centres, r).T  # (centre, patch)
        keep &= counts >= min_profiles
    ci, pi = np.nonzero(keep)
    day_index = centres[ci]
    years = days[day_index].astype("datetime64[Y]").astype(np.int64) + 1970
    codes = _row_split((patch_split == "val")[pi], years, spec)
    used = codes >= 0
    rows = pd.DataFrame({
        "patch": ids[pi][used], "day": days[day_index][used], "day_index": day_index[used],
        "split": pd.Categorical.from_codes(codes[used], categories=["train", "val"]),
    })
    if counts is not None:
        rows["obs_count"] = counts[ci, pi][used]
    return rows
