"""Global cube estimate (issue 13): the dense profile layout against the sparse profile table.

``python -m bench.global_estimate [--cube CUBE] [--json]`` prints (or writes as JSON) what a global
cube would store and what one training epoch would decode, for the dense ``profiles/count``/``sum``
(time, 50, lat, lon) arrays the contract-v1 loaders read and for the observation table the v2
loaders read (``cube.obs_table``):

- one row per observed (UTC day, cell): ``profiles/obs_day, obs_row, obs_col`` (obs,) int32,
  ``obs_count`` (obs, 50) int32, ``obs_sum`` (obs, 50) float32 (412 decoded bytes a row);
- sorted by (time chunk, lat chunk, lon chunk, day, row, col), indexed by ``obs_start``/``obs_stop``
  int64 per (time chunk, lat chunk, lon chunk), the obs dim chunked in ``profile_rows`` rows;
- the dense arrays stay for plain xarray, so the table layout stores both.

Nothing is guessed that can be measured: stored sizes use the bytes per value of the chunks a real
depthcube cube wrote (``--cube``; default: the ``small`` demo, ``make cube``'s, built in a temporary
folder), the table's bytes come from writing that cube's own observed rows with its codecs, the
tiles and their ocean cells come from the real OSTIA sample's land mask (REAL_OSTIA, 0.25 deg,
repeated onto the 0.1 deg grid), and the levels per profile from the real Argo samples aligned by
:func:`cube.vertical.align_to_levels`. What cannot be measured here is an assumption, printed with
the table (:func:`assumptions`): profiles uniform over ocean cells, a Poisson count per cell-day.

Reads, as the loaders do them (``loaders.stream``): every training window once, windows sorted by
(tile, day) and cut into blocks of ``block_size``; "cached" counts each chunk once per block (the
reader's LRU holds a block's chunks; a later block of the same tile is another shuffled visit),
"uncached" counts every chunk every window needs (the upper bound). Dense profiles (the v1 read
pattern): ``n_obs`` always, ``count``/``sum`` only where an observation lies in the days read;
"listed" is every ``count``/``sum`` chunk of the days read. Table: the obs chunks holding the rows
of each (tile, time chunk) read, each once per block (per window uncached).

:func:`recommend_rows` picks ``profile_rows`` from these figures (the fewest objects within the 1 %
target). :func:`demo_per_sample` measures a real cube's bytes per sample: the dense chunks from its
``n_obs`` (:func:`bench.profile_store.dense_chunks`), the table chunks from what the stream reads
(:func:`bench.profile_store.table_chunks`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench.profile_store import DENSE, TABLE

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DEPTHCUBE_REAL_DATA") or REPO.parent / "shared" / "data" / "real")
REAL_OSTIA = "20170101120000-UKMO-L4_GHRSST-SSTfnd-OSTIAanom-GLOB-v02.0-fv02.0.nc"
REAL_ARGO = ("13857_prof.nc", "D5900446_001.nc")
CONTEXT_ARRAYS = ("ostia/analysed_sst", "glorys/thetao")

#: The issue's own figures (issue 13), checked in :func:`issue_checks`.
ISSUE = {"dense_decoded_tb": 14.4, "nonzero_values_m": 251.0, "coo_gb": 3.3, "row_per_profile_gb": 1.4,
         "epoch_zeros_tb": 21.0}
#: Issue 13's target: the table decodes at most this share of the dense layout's bytes per epoch.
TARGET_OF_DENSE = 0.01
INT32, FLOAT32, INT64 = 4, 4, 8
TB, GB, MB = 1e12, 1e9, 1e6


@dataclass(frozen=True)
class CubeSpec:
    """The cube and the epoch being estimated (defaults: issue 13's global cube and ``argo_real``)."""

    n_lat: int = 1800
    n_lon: int = 3600
    resolution: float = 0.1
    start: str = "2010-01-01"
    end: str = "2024-12-31"
    tile: int = 128                 # tile = spatial chunk (configs/cube.yaml chunks.spatial null)
    chunk_days: int = 8
    levels: int = 50
    glorys_step_days: int = 7       # a GLORYS daily mean every 7 days (the reference's weekly setup)
    shard_tiles: int = 4            # chunks per shard side when sharded
    window_days: int = 7
    block_size: int = 16
    val_fraction: float = 0.15
    split_seed: int = 7
    profiles_per_month: float = 40_000.0
    profile_rows: tuple[int, ...] = (128, 256)
    cluster_fraction: float = 1.0   # profiles fall on this share of the ocean chunks (1 = all of them)
    poisson_seed: int = 0

    def __post_init__(self):
        for name in ("n_lat", "n_lon", "tile", "chunk_days", "levels", "glorys_step_days", "shard_tiles",
                     "window_days", "block_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_days < self.window_days:
            raise ValueError(f"end: {self.start}..{self.end} holds {self.n_days} days, fewer than one "
                             f"{self.window_days}-day window")
        if not 0 < self.cluster_fraction <= 1:
            raise ValueError(f"cluster_fraction: must be in (0, 1], got {self.cluster_fraction}")
        if not all(r >= 1 for r in self.profile_rows):
            raise ValueError(f"profile_rows: every value must be >= 1, got {self.profile_rows}")

    @property
    def n_days(self) -> int:
        return int((np.datetime64(self.end) - np.datetime64(self.start)).astype(int)) + 1

    @property
    def n_time_chunks(self) -> int:
        return -(-self.n_days // self.chunk_days)

    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Spatial chunks along lat and lon."""
        return -(-self.n_lat // self.tile), -(-self.n_lon // self.tile)

    @property
    def radius(self) -> int:
        """Days on each side of a window's centre (an even ``window_days`` is made odd)."""
        from cube.tiling import window_radius

        return window_radius(self.window_days)

    @property
    def n_snapshots(self) -> int:
        return (self.n_days - 1) // self.glorys_step_days + 1

    @property
    def row_bytes(self) -> int:
        """Decoded bytes of one table row: day, row, col int32 and count int32 + sum float32 per level."""
        return 3 * INT32 + self.levels * (INT32 + FLOAT32)

    def days_in_chunk(self, tc: np.ndarray) -> np.ndarray:
        return np.minimum(self.chunk_days, self.n_days - np.asarray(tc) * self.chunk_days)


@dataclass(frozen=True)
class StoredBytes:
    """Bytes a cube stores per unit, measured on the chunks it wrote (:func:`measure_stored_bytes`)."""

    source: str
    ostia_per_ocean_value: float        # OSTIA: stored bytes / (ocean cells x days) of its chunks
    glorys_per_ocean_column: float      # GLORYS: stored bytes / ocean columns of its chunks, per snapshot
    profile_empty_chunk: dict           # n_obs|count|sum: an all-zero chunk of the estimated chunk shape
    profile_per_row: dict               # n_obs|count|sum: stored bytes per observed (day, cell) beyond that
    table_per_row: dict                 # str(profile_rows) -> stored bytes of the 5 obs arrays per row
    levels_per_row: float               # profile values per observed (day, cell) in the measured cube
    rows_per_profile: float             # observed (day, cell) rows per profile used there


# --------------------------------------------------------------------------------------------
# Reads: one entry per (group, time chunk, lat chunk, lon chunk) with the days read there
# --------------------------------------------------------------------------------------------

@dataclass
class Reads:
    """What a set of windows reads of the daily profile/OSTIA arrays: entry ``i`` is group
    ``group[i]`` (a window, or a block when cached) reading time chunk ``tc[i]`` of spatial chunk
    (``latc[i]``, ``lonc[i]``), days ``lo[i]..hi[i]`` (inclusive, on the cube's day axis)."""

    group: np.ndarray
    tc: np.ndarray
    latc: np.ndarray
    lonc: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def merged(self) -> "Reads":
        """One entry per distinct (group, chunk), reading the union of its days (contiguous for
        the consecutive windows of a block)."""
        keys = np.stack([self.group, self.tc, self.latc, self.lonc], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.ravel()
        lo = np.full(len(uniq), np.iinfo(np.int64).max)
        hi = np.full(len(uniq), -1)
        np.minimum.at(lo, inv, self.lo)
        np.maximum.at(hi, inv, self.hi)
        return Reads(uniq[:, 0], uniq[:, 1], uniq[:, 2], uniq[:, 3], lo, hi)

    def regrouped(self, group_of: np.ndarray) -> "Reads":
        """The same entries with each group ``g`` renamed ``group_of[g]`` (windows -> blocks)."""
        return Reads(group_of[self.group], self.tc, self.latc, self.lonc, self.lo, self.hi)


def window_reads(latc: np.ndarray, lonc: np.ndarray, first_day: np.ndarray, last_day: np.ndarray,
                 chunk_days: int) -> Reads:
    """The entries of windows ``i`` over one spatial chunk each, days ``first_day[i]..last_day[i]``."""
    first_day, last_day = np.asarray(first_day, np.int64), np.asarray(last_day, np.int64)
    tc0, tc1 = first_day // chunk_days, last_day // chunk_days
    parts = []
    for k in range(int((tc1 - tc0).max(initial=0)) + 1):
        sel = np.flatnonzero(tc0 + k <= tc1)
        tc = tc0[sel] + k
        parts.append((sel, tc, np.maximum(first_day[sel], tc * chunk_days),
                      np.minimum(last_day[sel], tc * chunk_days + chunk_days - 1)))
    group, tc, lo, hi = (np.concatenate(p) for p in zip(*parts))
    return Reads(group, tc, np.asarray(latc)[group], np.asarray(lonc)[group], lo, hi)


def dense_read_bytes(reads: Reads, rows_per_day: np.ndarray, spec: CubeSpec) -> dict:
    """Decoded bytes of the dense arrays for ``reads`` (each entry is one chunk read once).

    ``rows_per_day`` (days, lat chunks, lon chunks): observed (day, cell) rows. ``n_obs`` and
    OSTIA decode every chunk read; ``count``+``sum`` "listed" every chunk, "read" only those with
    an observation among the days read (the v1 loaders' ``profile_sums``)."""
    cum = np.concatenate([np.zeros((1,) + rows_per_day.shape[1:], np.int64), np.cumsum(rows_per_day, axis=0)])
    observed = (cum[reads.hi + 1, reads.latc, reads.lonc] - cum[reads.lo, reads.latc, reads.lonc]) > 0
    values = spec.days_in_chunk(reads.tc) * _chunk_cells(reads.latc, reads.lonc, spec)  # per level
    plane = values * INT32                                      # n_obs int32, OSTIA float32
    profile_chunk = values * spec.levels * (INT32 + FLOAT32)    # count int32 + sum float32
    return {"n_obs": int(plane.sum()), "ostia": int(plane.sum()),
            "count_sum_listed": int(profile_chunk.sum()), "count_sum_read": int(profile_chunk[observed].sum())}


def _chunk_cells(latc, lonc, spec: CubeSpec) -> np.ndarray:
    """Cells of spatial chunk (latc, lonc), the last chunk of each axis clipped to the grid."""
    h = np.minimum(spec.tile, spec.n_lat - np.asarray(latc) * spec.tile)
    w = np.minimum(spec.tile, spec.n_lon - np.asarray(lonc) * spec.tile)
    return (h * w).astype(np.int64)


def table_index(rows_per_chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``obs_start``, ``obs_stop`` per (time chunk, lat chunk, lon chunk) of a table sorted by
    (time chunk, lat chunk, lon chunk, ...), from the rows in each."""
    stop = np.cumsum(rows_per_chunk.ravel()).reshape(rows_per_chunk.shape)
    return stop - rows_per_chunk, stop


def obs_chunk_spans(reads: Reads, rows_per_chunk: np.ndarray, profile_rows: int):
    """For each entry of ``reads`` whose (time chunk, spatial chunk) holds rows: its group and the
    first and last obs chunk (of ``profile_rows`` rows) holding them."""
    start, stop = table_index(rows_per_chunk)
    a, b = start[reads.tc, reads.latc, reads.lonc], stop[reads.tc, reads.latc, reads.lonc]
    hit = b > a
    return reads.group[hit], a[hit] // profile_rows, (b[hit] - 1) // profile_rows


def table_read_bytes(reads: Reads, rows_per_chunk: np.ndarray, profile_rows: int, row_bytes: int) -> int:
    """Decoded bytes of the obs chunks (``profile_rows`` rows, the last one shorter) that hold the
    rows of every (time chunk, spatial chunk) of ``reads``, each obs chunk once per group."""
    group, k0, k1 = obs_chunk_spans(reads, rows_per_chunk, profile_rows)
    pairs = [np.stack([group[k0 + j <= k1], (k0 + j)[k0 + j <= k1]], axis=1)
             for j in range(int((k1 - k0).max(initial=0)) + 1)]
    chunks = np.unique(np.concatenate(pairs), axis=0)[:, 1]
    rows = np.minimum(profile_rows, int(rows_per_chunk.sum()) - chunks * profile_rows)
    return int(rows.sum()) * row_bytes


def index_bytes(rows_per_chunk: np.ndarray) -> int:
    """Decoded bytes of the table's ``obs_start`` and ``obs_stop`` (int64 per time chunk and tile)."""
    return 2 * rows_per_chunk.size * INT64


def nearest_snapshot(day: np.ndarray, step: int, n_snapshots: int) -> np.ndarray:
    """Index of the GLORYS snapshot (one every ``step`` days from day 0) nearest to ``day``, ties
    to the earlier one (as :func:`loaders.sample.nearest_snapshots`)."""
    return np.minimum((2 * np.asarray(day) + step - 1) // (2 * step), n_snapshots - 1)


# --------------------------------------------------------------------------------------------
# The global cube
# --------------------------------------------------------------------------------------------

def real_ocean_mask(spec: CubeSpec, real_data: Path = REAL_DATA) -> np.ndarray:
    """(n_lat, n_lon) bool, row 0 south: the real OSTIA sample's water (valid SST) repeated onto
    the cube grid by the source cell containing each cube cell centre."""
    from cube.readers import open_product

    ds = open_product(real_data / REAL_OSTIA)
    water = np.isfinite(ds["analysed_sst"].values[0])
    lat, lon = ds["lat"].values, ds["lon"].values
    res = float(np.median(np.diff(lat)))
    centres_lat = -90 + spec.resolution * (np.arange(spec.n_lat) + 0.5)
    centres_lon = -180 + spec.resolution * (np.arange(spec.n_lon) + 0.5)
    i = np.clip(np.floor((centres_lat - (lat[0] - res / 2)) / res).astype(int), 0, lat.size - 1)
    j = np.clip(np.floor((centres_lon - (lon[0] - res / 2)) / res).astype(int), 0, lon.size - 1)
    return water[np.ix_(i, j)]


def train_tiles(mask: np.ndarray, spec: CubeSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """(lat chunk, lon chunk) of the training tiles (kept by ``cube.patches.build_patches``, split
    by ``cube.tiling.assign_splits``), and the number of kept tiles."""
    from cube.grid import CubeGrid
    from cube.patches import build_patches
    from cube.tiling import PatchSpec, SplitSpec, assign_splits

    grid = CubeGrid(-90.0, -180.0, spec.resolution, spec.n_lat, spec.n_lon)
    patches = build_patches(mask, grid, PatchSpec(spec.tile))
    patches = assign_splits(patches, SplitSpec(val_fraction=spec.val_fraction, seed=spec.split_seed))
    train = patches[patches["split"] == "train"]
    return (train["row0"].to_numpy() // spec.tile, train["col0"].to_numpy() // spec.tile, len(patches))


def ocean_per_chunk(mask: np.ndarray, spec: CubeSpec) -> np.ndarray:
    """Ocean cells per spatial chunk, (lat chunks, lon chunks)."""
    nlc, noc = spec.chunk_grid
    padded = np.zeros((nlc * spec.tile, noc * spec.tile), bool)
    padded[:spec.n_lat, :spec.n_lon] = mask
    return padded.reshape(nlc, spec.tile, noc, spec.tile).sum(axis=(1, 3))


def poisson_rows(spec: CubeSpec, ocean: np.ndarray, rows_per_day: float) -> np.ndarray:
    """Observed rows per (day, lat chunk, lon chunk): a seeded Poisson draw, uniform over ocean cells,
    or (``cluster_fraction`` < 1) over the ocean cells of a seeded random share of the chunks only."""
    rng = np.random.default_rng(spec.poisson_seed)
    weight = ocean.astype(np.float64)
    if spec.cluster_fraction < 1:
        weight = np.where(rng.random(ocean.shape) < spec.cluster_fraction, weight, 0.0)
    rate = rows_per_day * weight / max(weight.sum(), 1.0)
    return rng.poisson(np.broadcast_to(rate, (spec.n_days,) + rate.shape)).astype(np.int64)


def per_chunk(rows_per_day: np.ndarray, spec: CubeSpec) -> np.ndarray:
    """Rows per (time chunk, lat chunk, lon chunk) from rows per day."""
    pad = spec.n_time_chunks * spec.chunk_days - rows_per_day.shape[0]
    padded = np.concatenate([rows_per_day, np.zeros((pad,) + rows_per_day.shape[1:], rows_per_day.dtype)])
    return padded.reshape((spec.n_time_chunks, spec.chunk_days) + rows_per_day.shape[1:]).sum(axis=1)


def epoch_windows(latc: np.ndarray, lonc: np.ndarray, spec: CubeSpec):
    """Every training window (tile-major, then centre day, as ``loaders.windows``): its tile's chunk,
    first and last day, and its block."""
    centres = np.arange(spec.radius, spec.n_days - spec.radius)
    w_lat, w_lon = np.repeat(latc, centres.size), np.repeat(lonc, centres.size)
    c = np.tile(centres, len(latc))
    block = np.arange(c.size) // spec.block_size
    return w_lat, w_lon, c - spec.radius, c + spec.radius, block


def epoch_bytes(latc, lonc, rows_per_day: np.ndarray, spec: CubeSpec) -> dict:
    """Decoded bytes of one epoch, cached (per block) and uncached (per window), for every layout."""
    w_lat, w_lon, first, last, block = epoch_windows(latc, lonc, spec)
    rows_chunk = per_chunk(rows_per_day, spec)
    uncached = window_reads(w_lat, w_lon, first, last, spec.chunk_days)
    cached = uncached.regrouped(block).merged()
    tile_changes = np.r_[False, (np.diff(w_lat) != 0) | (np.diff(w_lon) != 0)]
    runs = np.cumsum(tile_changes | np.r_[False, np.diff(block) != 0])  # (block, tile) runs of windows
    out = {"windows": int(first.size), "blocks": int(block[-1] + 1) if block.size else 0}
    for name, reads in (("cached", cached), ("uncached", uncached)):
        d = dense_read_bytes(reads, rows_per_day, spec)
        d["table"] = {str(r): table_read_bytes(reads, rows_chunk, r, spec.row_bytes) + index_bytes(rows_chunk)
                      for r in spec.profile_rows}   # the index: decoded once a process
        d["glorys"] = _glorys_bytes(first, last, runs if name == "cached" else None, spec)
        out[name] = d
    return out


def _glorys_bytes(first, last, runs: np.ndarray | None, spec: CubeSpec) -> int:
    """GLORYS snapshot chunks (all levels, one tile) read: per window (``runs`` None), or once per
    run of windows sharing a block and a tile (consecutive days: its snapshots form one range)."""
    near = lambda d: nearest_snapshot(d, spec.glorys_step_days, spec.n_snapshots)  # noqa: E731
    if runs is None:
        n = near(last) - near(first) + 1
    else:
        starts = np.flatnonzero(np.r_[True, np.diff(runs) != 0])
        ends = np.r_[starts[1:], runs.size] - 1
        n = near(last[ends]) - near(first[starts]) + 1
    return int(n.sum()) * spec.levels * spec.tile ** 2 * FLOAT32


def stored(spec: CubeSpec, ocean: np.ndarray, rows_per_day: np.ndarray, sb: StoredBytes) -> dict:
    """Stored bytes and objects of every array group, dense and table, without and with sharding."""
    rows_chunk = per_chunk(rows_per_day, spec)
    written = rows_chunk > 0
    ocean_chunks = ocean > 0
    n_rows = int(rows_chunk.sum())
    size = {
        "ostia": float(ocean.sum()) * spec.n_days * sb.ostia_per_ocean_value,
        "glorys": float(ocean.sum()) * spec.n_snapshots * sb.glorys_per_ocean_column,
        "profiles_dense": sum(written.sum() * sb.profile_empty_chunk[v] + n_rows * sb.profile_per_row[v]
                              for v in ("n_obs", "count", "sum")),
    }
    for r in spec.profile_rows:   # the index stored raw: an upper bound
        size[f"table_{r}"] = n_rows * sb.table_per_row[str(r)] + index_bytes(rows_chunk)
    s = spec.shard_tiles
    objects = {
        "ostia": _objects(np.broadcast_to(ocean_chunks, written.shape), None),
        "glorys": _objects(np.broadcast_to(ocean_chunks, (spec.n_snapshots,) + ocean.shape), None),
        "profiles_dense": 3 * _objects(written, None),
    }
    sharded = {"ostia": _objects(np.broadcast_to(ocean_chunks, written.shape), s),
               "glorys": _objects(np.broadcast_to(ocean_chunks, (spec.n_snapshots,) + ocean.shape), s),
               "profiles_dense": 3 * _objects(written, s)}
    for r in spec.profile_rows:
        objects[f"table_{r}"] = 5 * -(-n_rows // r) + 2
        sharded[f"table_{r}"] = 5 * -(-n_rows // (r * s * s)) + 2   # shards of shard_tiles**2 obs chunks
    return {"bytes": size, "objects": objects, "objects_sharded": sharded, "rows": n_rows,
            "dense_chunks_written": int(written.sum())}


def _objects(written: np.ndarray, shard: int | None) -> int:
    """Stored objects of a (time, lat chunks, lon chunks) written-chunk map: chunks, or shards of
    ``shard`` x ``shard`` spatial chunks holding at least one written chunk."""
    if not shard:
        return int(written.sum())
    t, a, b = written.shape
    pa, pb = -(-a // shard) * shard, -(-b // shard) * shard
    padded = np.zeros((t, pa, pb), bool)
    padded[:, :a, :b] = written
    return int(padded.reshape(t, pa // shard, shard, pb // shard, shard).any(axis=(2, 4)).sum())


def estimate(spec: CubeSpec = CubeSpec(), sb: StoredBytes | None = None, mask: np.ndarray | None = None,
             levels_per_profile: float | None = None, cube: str | None = None) -> dict:
    """The whole estimate as a dict (see the module docstring); ``sb`` measured from ``cube`` when
    not given (one of them is needed), ``mask`` the real OSTIA water when not given."""
    if sb is None and cube is None:
        raise ValueError("estimate needs the stored bytes per value (sb) or a cube to measure them on")
    sb = sb or measure_stored_bytes(cube, spec)
    mask = real_ocean_mask(spec) if mask is None else np.asarray(mask, bool)
    levels_per_profile = real_levels_per_profile()[0] if levels_per_profile is None else levels_per_profile
    latc, lonc, kept = train_tiles(mask, spec)
    ocean = ocean_per_chunk(mask, spec)
    profiles_per_day = spec.profiles_per_month * 12 / 365.25
    rows = poisson_rows(spec, ocean, profiles_per_day * sb.rows_per_profile)
    epoch = epoch_bytes(latc, lonc, rows, spec)
    st = stored(spec, ocean, rows, sb)
    n_profiles = profiles_per_day * spec.n_days
    return {"spec": {**asdict(spec), "n_days": spec.n_days, "n_time_chunks": spec.n_time_chunks},
            "stored_bytes_source": asdict(sb), "tiles_kept": kept, "tiles_train": int(len(latc)),
            "ocean_fraction": float(mask.mean()), "profiles": n_profiles, "levels_per_profile": levels_per_profile,
            "stored": st, "epoch": epoch, "ratios": ratios(epoch, spec),
            "issue_checks": issue_checks(spec, n_profiles, levels_per_profile, st, epoch)}


def ratios(epoch: dict, spec: CubeSpec) -> dict:
    """Table / dense decoded bytes per epoch (dense = n_obs + the count/sum chunks read)."""
    out = {}
    for name in ("cached", "uncached"):
        d = epoch[name]
        dense = d["n_obs"] + d["count_sum_read"]
        out[name] = {str(r): d["table"][str(r)] / dense if dense else math.nan for r in spec.profile_rows}
    return out


def issue_checks(spec: CubeSpec, n_profiles: float, levels: float, st: dict, epoch: dict) -> dict:
    """Our figures for the issue's: dense array bytes, non-zero values, COO and per-profile tables."""
    cell_days = spec.n_lat * spec.n_lon * spec.n_days
    nonzero = n_profiles * levels
    return {
        "dense_decoded_tb": cell_days * (spec.levels * (INT32 + FLOAT32) + INT32) / TB,
        "count_sum_only_tb": cell_days * spec.levels * (INT32 + FLOAT32) / TB,
        "nonzero_values_m": nonzero / 1e6,
        "coo_gb_13B": nonzero * 13 / GB,   # day int32, level int8, row/col int16, sum float32 (count 1)
        "row_per_profile_gb": n_profiles * spec.levels * FLOAT32 / GB,
        "table_rows_decoded_gb": st["rows"] * spec.row_bytes / GB,
        "epoch_dense_read_tb": (epoch["cached"]["n_obs"] + epoch["cached"]["count_sum_read"]) / TB,
        "epoch_dense_uncached_tb": (epoch["uncached"]["n_obs"] + epoch["uncached"]["count_sum_read"]) / TB,
    }


# --------------------------------------------------------------------------------------------
# Measured on a cube
# --------------------------------------------------------------------------------------------

def real_levels_per_profile(real_data: Path = REAL_DATA) -> tuple[float, dict]:
    """Mean GLORYS levels an accepted profile fills (reference alignment) over the real Argo samples."""
    from cube.readers import open_product
    from cube.vertical import align_to_levels

    per_file = {}
    for name in REAL_ARGO:
        table = open_product(real_data / name)
        per_file[name] = np.isfinite(align_to_levels(table.depth, table.temp)).sum(axis=1)
    n = np.concatenate(list(per_file.values()))
    return float(n.mean()), {k: {"profiles": int(v.size), "mean_levels": float(v.mean())} for k, v in per_file.items()}


def demo_cube(workdir: str | None = None) -> str:
    """Write the ``small`` demo (``make cube``'s) and build its cube under ``workdir`` (a new
    temporary folder by default, left for the caller); returns the cube path."""
    from cube.build import build
    from cube.config import load_cube_config
    from cube.demo import DemoSpec, write_demo

    work = Path(workdir or tempfile.mkdtemp(prefix="depthcube-estimate-"))
    write_demo(work / "demo", DemoSpec.preset("small"))
    cfg = load_cube_config(REPO / "configs" / "cube.yaml")
    cfg = replace(cfg, output=str(work / "cube.zarr"),
                  inputs=replace(cfg.inputs, ostia=[f"{work}/demo/ostia/*.nc"], glorys=[f"{work}/demo/glorys/*.nc"],
                                 en4=[f"{work}/demo/en4/*.nc"], argo=[]))
    build(cfg, progress=False)
    return cfg.output


def _stored_chunks(cube: Path, path: str) -> dict[tuple[int, ...], int]:
    """Chunk index -> stored bytes of every chunk file of array ``path`` of a local cube."""
    root = cube / path / "c"
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = Path(dirpath, f).relative_to(root).parts
            out[tuple(int(p) for p in rel)] = (Path(dirpath) / f).stat().st_size
    return out


def _encoded_bytes(values: np.ndarray, chunks: tuple[int, ...], like) -> int:
    """Stored bytes of ``values`` written as a zarr v3 array with ``chunks`` and the codecs of ``like``."""
    import zarr
    from zarr.storage import MemoryStore

    objects: dict = {}
    arr = zarr.create_array(MemoryStore(objects), name="a", shape=values.shape, chunks=chunks, dtype=values.dtype,
                            serializer=like.serializer, compressors=like.compressors, fill_value=1)
    arr[...] = values
    return sum(len(v.to_bytes()) for k, v in objects.items() if "/c/" in k)


def measure_stored_bytes(cube: str, spec: CubeSpec) -> StoredBytes:
    """Bytes per value the local, unsharded ``cube`` stores (see :class:`StoredBytes`; one chunk
    is one file there), its table rows written with its own codecs in chunks of each
    ``spec.profile_rows``."""
    import zarr

    from cube.layout import check_contract

    path = Path(cube)
    g = zarr.open_group(str(path), mode="r")
    check_contract(g, str(cube))   # a foreign store: one line (ContractError), before anything is read
    if any(g[p].shards is not None for p in ("ostia/analysed_sst", "glorys/thetao", "profiles/count")):
        raise ValueError(f"{cube}: a sharded cube (one file holds many chunks); measure an unsharded one")
    ocean = g["static/ocean_mask"][:]
    n_obs = g["profiles/n_obs"][:]
    ct, _, cs, _ = g["profiles/count"].chunks
    ostia = _stored_chunks(path, "ostia/analysed_sst")
    ostia_values = sum(_ocean_in(ocean, k[1], k[2], cs) * min(ct, n_obs.shape[0] - k[0] * ct) for k in ostia)
    glorys = _stored_chunks(path, "glorys/thetao")
    glorys_columns = sum(_ocean_in(ocean, k[2], k[3], cs) for k in glorys)
    d, r, c = np.nonzero(n_obs)   # every observed cell-day, then in the table's sort order
    order = np.lexsort((c, r, d, c // cs, r // cs, d // ct))
    d, r, c = d[order], r[order], c[order]
    empty, per_row = {}, {}
    for v in ("n_obs", "count", "sum"):
        arr = g[f"profiles/{v}"]
        files = _stored_chunks(path, f"profiles/{v}")
        demo_shape = tuple(arr.chunks)
        estimated_shape = (spec.chunk_days,) + demo_shape[1:-2] + (spec.tile, spec.tile)
        empty_demo = _encoded_bytes(np.zeros(demo_shape, arr.dtype), demo_shape, arr)
        empty[v] = _encoded_bytes(np.zeros(estimated_shape, arr.dtype), estimated_shape, arr)
        per_row[v] = (sum(files.values()) - len(files) * empty_demo) / max(d.size, 1)
    count, total = _gather_rows(g, d, r, c, ct, cs)
    table = {}
    for rows in spec.profile_rows:
        parts = [(d.astype(np.int32), g["profiles/count"]), (r.astype(np.int32), g["profiles/count"]),
                 (c.astype(np.int32), g["profiles/count"]), (count, g["profiles/count"]), (total, g["profiles/sum"])]
        table[str(rows)] = sum(_encoded_bytes(a, (rows,) + a.shape[1:], like) for a, like in parts) / max(d.size, 1)
    used = decode_profiles_used(g)
    return StoredBytes(source=str(cube), ostia_per_ocean_value=sum(ostia.values()) / max(ostia_values, 1),
                       glorys_per_ocean_column=sum(glorys.values()) / max(glorys_columns, 1),
                       profile_empty_chunk=empty, profile_per_row=per_row, table_per_row=table,
                       levels_per_row=float(n_obs.sum()) / max(d.size, 1),
                       rows_per_profile=d.size / used if used else 1.0)


def decode_profiles_used(g) -> int:
    from cube.layout import decode_attrs

    return int(decode_attrs(g.attrs.asdict()).get("profiles", {}).get("used", 0))


def _ocean_in(ocean: np.ndarray, latc: int, lonc: int, cs: int) -> int:
    return int(ocean[latc * cs:(latc + 1) * cs, lonc * cs:(lonc + 1) * cs].sum())


def _gather_rows(g, d, r, c, ct, cs) -> tuple[np.ndarray, np.ndarray]:
    """``profiles/count`` and ``sum`` at the observed cell-days, (rows, levels), one stored chunk at a time."""
    count_arr, sum_arr = g["profiles/count"], g["profiles/sum"]
    count = np.zeros((d.size, count_arr.shape[1]), np.int32)
    total = np.zeros((d.size, count_arr.shape[1]), np.float32)
    keys = np.stack([d // ct, r // cs, c // cs], axis=1)
    for key in np.unique(keys, axis=0):
        sel = np.flatnonzero((keys == key).all(axis=1))
        box = (slice(key[0] * ct, (key[0] + 1) * ct), slice(None), slice(key[1] * cs, (key[1] + 1) * cs),
               slice(key[2] * cs, (key[2] + 1) * cs))
        cb, sb = count_arr[box], sum_arr[box]
        idx = (d[sel] - key[0] * ct, slice(None), r[sel] - key[1] * cs, c[sel] - key[2] * cs)
        count[sel], total[sel] = cb[idx[0], :, idx[2], idx[3]], sb[idx[0], :, idx[2], idx[3]]
    return count, total


# --------------------------------------------------------------------------------------------
# The demo cube, measured per sample
# --------------------------------------------------------------------------------------------

def demo_per_sample(cube: str, preset: str = "argo_real") -> dict:
    """Decoded bytes per ``preset`` training sample of ``cube``, by array, per window (uncached) and
    per block (cached: each chunk once per block of ``block_size`` windows): the dense profile
    chunks the v1 loaders decoded (:func:`bench.profile_store.dense_chunks`: ``n_obs`` over the
    window, the ``count``/``sum`` chunks holding an observation of it), the table chunks the stream
    decodes now (:func:`bench.profile_store.table_chunks`), and for context the OSTIA and GLORYS
    chunks :meth:`loaders.stream.CubeStream.window_chunks` lists."""
    from bench.profile_store import decoded_by_array, dense_chunks, table_chunks
    from loaders import CubeStream, load_dataset_config

    cfg = load_dataset_config(str(REPO / "configs" / "dataset.yaml"), preset=preset)
    stream = CubeStream(cube, cfg, split="train")
    n = len(stream.windows)
    per_window = [dense_chunks(stream, i) | table_chunks(stream, i)
                  | {k for k in stream.window_chunks(i) if k[0] in CONTEXT_ARRAYS} for i in range(n)]
    index = stream.reader.array("profiles/obs_stop")[...] - stream.reader.array("profiles/obs_start")[...]
    rows = index[index > 0]
    return {"cube": str(cube), "preset": preset, "windows": n, "block_size": cfg.block_size,
            "profile_rows": int(stream.reader.array("profiles/obs_count").chunks[0]),
            "observed_rows": int(index.sum()),
            "per_sample": {"uncached": decoded_by_array(stream, per_window, range(n)),
                           "cached": decoded_by_array(stream, per_window, [i // cfg.block_size for i in range(n)])},
            "rows_per_tile_time_chunk": {"mean": float(rows.mean()) if rows.size else 0.0,
                                         "median": float(np.median(rows)) if rows.size else 0.0,
                                         "max": int(rows.max()) if rows.size else 0,
                                         "chunks_with_rows": int(rows.size)}}


def recommend_rows(report: dict) -> dict:
    """The ``profile_rows`` to use on the global cube: the fewest table objects among the choices
    whose cached decoded bytes per epoch stay within :data:`TARGET_OF_DENSE` of the dense layout's
    (objects are what object stores charge for; the bytes only need to be far under the target),
    the fewest bytes when none does; with every choice's bytes, share and objects, and the cube's
    default (``chunks.profile_rows``)."""
    from cube.layout import ChunkConfig

    g = report["global"]
    choices = [str(r) for r in g["spec"]["profile_rows"]]
    share = g["ratios"]["cached"]
    objects = {r: g["stored"]["objects"][f"table_{r}"] for r in choices}
    under = [r for r in choices if share[r] <= TARGET_OF_DENSE]
    best = min(under, key=objects.get) if under else min(choices, key=share.get)
    return {"profile_rows": int(best), "default": ChunkConfig().profile_rows, "target_of_dense": TARGET_OF_DENSE,
            "epoch_table_bytes": {r: g["epoch"]["cached"]["table"][r] for r in choices},
            "of_dense": {r: share[r] for r in choices}, "objects": objects}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def assumptions(report: dict) -> list[str]:
    g, sb = report["global"], report["global"]["stored_bytes_source"]
    s = g["spec"]
    return [
        f"grid {s['n_lat']} x {s['n_lon']} cells ({s['resolution']} deg), {s['start']}..{s['end']} daily "
        f"({s['n_days']} days, {s['n_time_chunks']} time chunks of {s['chunk_days']} days), tiles = chunks of "
        f"{s['tile']} x {s['tile']} cells, GLORYS a daily mean every {s['glorys_step_days']} days",
        f"ocean: the real OSTIA sample's valid SST ({REAL_OSTIA}, 0.25 deg) repeated onto the grid: "
        f"{g['ocean_fraction']:.1%} of cells; tiles kept (<= 50 % land): {g['tiles_kept']}, train "
        f"(patch split {1 - s['val_fraction']:.0%}): {g['tiles_train']}",
        f"profiles: {s['profiles_per_month']:,.0f} a month (EN4) = {g['profiles'] / 1e6:.2f} M; "
        f"{sb['rows_per_profile']:.2f} observed (day, cell) rows per profile (the measured cube); "
        + ("ASSUMED uniform over ocean cells" if s["cluster_fraction"] == 1 else
           f"ASSUMED uniform over the ocean cells of {s['cluster_fraction']:.0%} of the chunks (clustered)")
        + ", Poisson per cell-day (seeded draw). Real profiles cluster (floats, repeat stations, moorings): "
        "fewer (tile, chunk) pairs hold rows (--cluster-fraction tries it)",
        f"levels per profile: {g['levels_per_profile']:.1f} (real Argo samples {', '.join(REAL_ARGO)}, reference "
        f"alignment); the measured cube's rows hold {sb['levels_per_row']:.1f} (its bytes per row are used as measured)",
        f"stored bytes per value measured on {sb['source']}: OSTIA {sb['ostia_per_ocean_value']:.3f} B per ocean "
        f"cell-day, GLORYS {sb['glorys_per_ocean_column']:.1f} B per ocean column, dense profile chunks "
        + ", ".join(f"{v} {sb['profile_empty_chunk'][v]} B empty + {sb['profile_per_row'][v]:.0f} B per row"
                    for v in ("n_obs", "count", "sum"))
        + "; table " + ", ".join(f"{sb['table_per_row'][str(r)]:.1f} B per row at {r} rows a chunk"
                                 for r in s["profile_rows"]),
        f"an epoch: every train window once ({s['window_days']}-day windows, blocks of {s['block_size']}); cached = "
        "each chunk once per block (the reader's LRU holds one block's chunks), uncached = every chunk every window",
        f"sharded: {s['shard_tiles']} x {s['shard_tiles']} spatial chunks per shard; the table's obs arrays in "
        f"shards of {s['shard_tiles'] ** 2} obs chunks; + metadata/coordinate/static objects (not counted)",
    ]


def _b(x: float) -> str:
    for unit, scale in (("TB", TB), ("GB", GB), ("MB", MB), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def _row(label: str, *cells) -> str:
    return "| " + " | ".join([label, *map(str, cells)]) + " |"


def format_report(report: dict) -> str:
    """The report as text: the global table, the issue's figures, the demo, the recommendation and
    the assumptions."""
    lines = _global_lines(report["global"]) + [""] + _issue_lines(report["global"])
    if report.get("demo"):
        lines += [""] + _demo_lines(report["demo"])
    rec = report.get("recommendation")
    if rec:
        lines += ["", _recommendation_line(rec)]
    return "\n".join(lines + ["", "Assumptions:"] + [f"- {a}" for a in assumptions(report)])


def _recommendation_line(rec: dict) -> str:
    best = rec["profile_rows"]
    target = f"{rec['target_of_dense']:.0%} target"
    why = (f"the fewest objects of those under the {target}" if rec["of_dense"][str(best)] <= rec["target_of_dense"]
           else f"none is under the {target}: the fewest bytes")
    default = "the cube's default" if best == rec["default"] else f"the cube's default is {rec['default']}"
    return (f"Recommendation: profile_rows = {best} ({default}; {why}). Per epoch, cached: "
            + "; ".join(f"{r} rows: {_b(rec['epoch_table_bytes'][r])} decoded ({rec['of_dense'][r]:.3%} of dense), "
                        f"{v:,} objects" for r, v in rec["objects"].items()))


def _global_lines(g: dict) -> list[str]:
    rows = [str(r) for r in g["spec"]["profile_rows"]]
    st, ep = g["stored"], g["epoch"]
    dense = {k: ep[k]["n_obs"] + ep[k]["count_sum_read"] for k in ("cached", "uncached")}
    objects = lambda kind, name: f"{st[kind][name]:,}"  # noqa: E731
    lines = ["Global cube estimate (issue 13)", "",
             _row("", "dense count/sum/n_obs", *(f"table, {r} rows/chunk" for r in rows)),
             "|---|---|" + "---|" * len(rows),
             _row("stored", _b(st["bytes"]["profiles_dense"]), *(_b(st["bytes"][f"table_{r}"]) for r in rows)),
             _row("objects", objects("objects", "profiles_dense"), *(objects("objects", f"table_{r}") for r in rows)),
             _row("objects, sharded", objects("objects_sharded", "profiles_dense"),
                  *(objects("objects_sharded", f"table_{r}") for r in rows))]
    for kind in ("cached", "uncached"):
        lines.append(_row(f"decoded per epoch, {kind}", _b(dense[kind]), *(_b(ep[kind]["table"][r]) for r in rows)))
    lines += [_row("table / dense, cached", 1, *(f"{g['ratios']['cached'][r]:.3%}" for r in rows)), "",
              "dense decoded if every count/sum chunk of the days read were decoded: cached "
              f"{_b(ep['cached']['n_obs'] + ep['cached']['count_sum_listed'])}"]
    for name in ("ostia", "glorys"):
        lines.append(f"context, {name}: decoded per epoch {_b(ep['cached'][name])} cached, "
                     f"{_b(ep['uncached'][name])} uncached; stored {_b(st['bytes'][name])}, "
                     f"{objects('objects', name)} objects ({objects('objects_sharded', name)} sharded)")
    lines.append(f"{ep['windows']:,} train windows in {ep['blocks']:,} blocks; {st['rows']:,} table rows; "
                 f"{st['dense_chunks_written']:,} (time chunk, tile) with rows (dense chunks written, per array)")
    return lines


def _issue_lines(g: dict) -> list[str]:
    c = g["issue_checks"]
    implied = ISSUE["nonzero_values_m"] * 1e6 / g["profiles"]
    return ["The issue's figures, ours:",
            f"- dense decoded {ISSUE['dense_decoded_tb']} TB: {c['dense_decoded_tb']:.2f} TB (count+sum+n_obs over "
            f"every cell-day; count+sum alone {c['count_sum_only_tb']:.2f} TB)",
            f"- {ISSUE['nonzero_values_m']:.0f} M non-zero values: {c['nonzero_values_m']:.0f} M "
            f"({g['levels_per_profile']:.1f} levels per profile; the issue's figure implies {implied:.1f})",
            f"- COO {ISSUE['coo_gb']} GB: {c['coo_gb_13B']:.2f} GB at the 13 B per value the issue's figure implies",
            f"- one row per profile {ISSUE['row_per_profile_gb']} GB: {c['row_per_profile_gb']:.2f} GB (50 float32); "
            f"the decided table (a row per cell-day, count and sum): {c['table_rows_decoded_gb']:.2f} GB decoded",
            f"- ~{ISSUE['epoch_zeros_tb']:.0f} TB decoded per epoch: {c['epoch_dense_read_tb']:.2f} TB cached "
            f"(each chunk once per block), {c['epoch_dense_uncached_tb']:.2f} TB uncached"]


def _demo_lines(d: dict) -> list[str]:
    u, c = d["per_sample"]["uncached"], d["per_sample"]["cached"]
    total = lambda s, paths: sum(s.get(p, 0) for p in paths)  # noqa: E731
    lines = [f"Demo cube, {d['preset']}, {d['windows']} train windows, decoded bytes per sample (measured):",
             _row("", "uncached (per window)", f"cached (per block of {d['block_size']}, per sample)"), "|---|---|---|",
             _row("dense profiles/n_obs (v1)", _b(u.get("profiles/n_obs", 0)), _b(c.get("profiles/n_obs", 0))),
             _row("dense count+sum with an observation (v1)", _b(total(u, DENSE)),
                  _b(total(c, DENSE))),
             _row(f"table, {d['profile_rows']} rows/chunk (the stream now)", _b(total(u, TABLE)),
                  _b(total(c, TABLE)))]
    for key in CONTEXT_ARRAYS:
        lines.append(_row(f"context: {key}", _b(u.get(key, 0)), _b(c.get(key, 0))))
    rt = d["rows_per_tile_time_chunk"]
    lines.append(f"{d['observed_rows']:,} table rows; rows per (tile, time chunk) with rows: mean {rt['mean']:.1f}, "
                 f"median {rt['median']:.0f}, max {rt['max']} ({rt['chunks_with_rows']} of them)")
    return lines


def run(cube: str | None = None, spec: CubeSpec = CubeSpec(), demo: bool = True) -> dict:
    """The full report: the global estimate and (``demo``) the measured demo per-sample bytes. Without
    ``cube`` the small demo is built in a temporary folder, removed afterwards."""
    if cube is None:
        with tempfile.TemporaryDirectory(prefix="depthcube-estimate-") as work:
            report = run(demo_cube(work), spec, demo)
        report["global"]["stored_bytes_source"]["source"] = "the small demo cube (make cube's; temporary)"
        if demo:
            report["demo"]["cube"] = "the small demo cube (temporary)"
        return report
    report = {"global": estimate(spec, cube=cube)}
    if demo:
        report["demo"] = demo_per_sample(cube)
    report["recommendation"] = recommend_rows(report)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.global_estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("--cube", help="a local depthcube cube to measure (default: build the small demo in a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.add_argument("--start", default=CubeSpec.start)
    p.add_argument("--end", default=CubeSpec.end)
    p.add_argument("--profiles-per-month", type=float, default=CubeSpec.profiles_per_month)
    p.add_argument("--shard-tiles", type=int, default=CubeSpec.shard_tiles)
    p.add_argument("--cluster-fraction", type=float, default=CubeSpec.cluster_fraction,
                   help="profiles only on this share of the ocean chunks (default %(default)s: all)")
    p.add_argument("--profile-rows", default=(128, 256), type=_int_list,
                   help="comma-separated obs chunk lengths (default: 128,256)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo cube's per-sample measurement")
    args = p.parse_args(argv)
    from cube.errors import DepthcubeError

    try:
        spec = CubeSpec(start=args.start, end=args.end, profiles_per_month=args.profiles_per_month,
                        shard_tiles=args.shard_tiles, cluster_fraction=args.cluster_fraction,
                        profile_rows=args.profile_rows)
        report = run(args.cube, spec, demo=not args.no_demo)
    except (ValueError, OSError, DepthcubeError) as e:
        print(f"global_estimate: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1, default=_json) if args.json else format_report(report))
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
