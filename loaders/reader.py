"""Chunk-caching, dask-free reads of a published cube for window assembly.

The per-sample hot path reads Zarr chunks itself (no dask, no xarray indexing; zarr-python only for
layouts the direct decode does not cover) and keeps decoded chunks in a small LRU cache bounded in bytes. With the stream's
block-shuffled order (consecutive samples share a tile and neighbouring days), each chunk is
decoded once per visit and serves every sample that overlaps it.

Fetching (issue 15). Chunks are read without zarr's pipeline for the layouts the builder writes
(:func:`direct_layout`), sharded ones included (issue 13 item 3: the shard index is read once per
shard, from the end by default, ``index_location`` honoured, crc32c-checked, and cached; then only
the inner chunk's byte range is read). :meth:`CubeReader.fetch` brings many chunks' compressed
bytes in at once (one batched ``fs.cat`` for whole objects, one ``fs.cat_ranges`` for inner chunks:
fsspec's async filesystems send them concurrently), waiting for, never repeating, a fetch already
in flight; :meth:`CubeReader.prefetch` does that for the next block on a background thread within
``prefetch_bytes``; :meth:`CubeReader.decode` decodes fetched chunks on a small thread pool (Blosc
releases the GIL), and :meth:`CubeReader.decode_ahead` starts that for the prefetched ones. Compressed bytes stay in their own bounded cache (``raw_cache_bytes``) so a
chunk evicted from the decoded cache (random window order) is decoded again without a second
fetch. Gridded chunks (last dims ``lat``, ``lon``) are stored in the decoded cache with their rows
north-up, flipped once where they are decoded, and handed out in cube orientation as a reversed
view: the samples' north-up reads (``read(..., north_up=True, copy=False)``) are then contiguous
arrays, which the sample arithmetic runs over faster than over reversed views (numpy walks
those row by row).
Transient read failures are retried with backoff (:mod:`loaders.fetch`); a store that stays down
is a :class:`loaders.fetch.FetchError` naming the URL.

A ``CubeReader`` is picklable: it holds only the URL and its settings; each process (DataLoader
worker, DDP rank) opens the store, its filesystem, threads and caches lazily on first use, so no
zarr/fsspec handle, thread or event loop crosses a fork or spawn. Opening checks the cube's contract (:func:`cube.layout.check_contract`: contract version, groups,
variables, dims, dtypes), so a foreign or structurally damaged store fails in one line
(``cube.layout.ContractError``) before any sample is read. Stored times are decoded with the
contract's own decoders (:func:`cube.layout.days_from_int`, :func:`cube.layout.times_from_hours`).

Damage. Every cube array carries zarr's ``crc32c`` checksum (``cube.layout.array_compressors``);
the direct decode verifies it before decompressing, and any chunk that fails to decode, through
either path, raises :class:`ChunkError` naming the variable and the chunk key
(``ostia/analysed_sst: chunk c/0/1/2 ...``). Cubes built before the checksum still read, with a
one-time warning per array that damage there cannot be detected (rebuild to add it).

Profiles. The ``argo`` x (:meth:`CubeReader.profile_cells`; :meth:`CubeReader.profile_sums` is
its dense form) reads only the observation table of contract v2 (``profiles/obs_*``): its index
once per process (:attr:`CubeReader.profile_index`),
then the rows of the blocks a window overlaps, through the same chunk cache; rows that do not lie
in the block their index range names raise :class:`ChunkError` (a table changed under the reader,
or damaged), so a mismatch is never summed into x.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import fsspec
import fsspec.asyn
import google_crc32c
import numpy as np
import pandas as pd
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from cube.layout import check_contract, days_from_int, decode_attrs, times_from_hours
from cube.tiling import PATCH_COLUMNS, column_runs

from .fetch import ByteCache, FetchError, Prefetcher, fetch_batch, retry_call
from .sample import spread_cells

_BLOSC = Blosc()  # decodes any Blosc frame (the frame header carries its own settings)
log = logging.getLogger("depthcube.loaders")

_INHERITED: list = []  # zarr handles a forked process inherited (see CubeReader.root)
_CLOSING: set = set()  # (pid, filesystem id) whose HTTP session is closed at process exit

#: Defaults, chosen by measurement (README "Reading from object storage"): decode threads outside
#: DataLoader workers, the prefetch bound and the compressed-bytes cache.
DEFAULT_DECODE_THREADS = 2
DEFAULT_PREFETCH_BYTES = 32 * 2**20
DEFAULT_RAW_CACHE_BYTES = 128 * 2**20


class ChunkError(ValueError):
    """One stored chunk of a cube array cannot be decoded (checksum mismatch, corrupt frame);
    the message names the array path and the chunk key."""


def has_checksum(arr: zarr.Array) -> bool:
    """Whether the array's chunks (inside shards too) carry a crc32c checksum."""
    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    inner = tuple(c for codec in codecs if isinstance(codec, ShardingCodec) for c in codec.codecs)
    return any(isinstance(c, Crc32cCodec) for c in codecs + inner)


def verified_payload(data: bytes, what: str) -> np.ndarray:
    """The bytes before a zarr ``crc32c`` trailer (a uint8 view), after checking it (ChunkError naming ``what``)."""
    view = np.frombuffer(data, np.uint8)
    if view.size < 4:
        raise ChunkError(f"{what}: {view.size} bytes, too short to hold its crc32c checksum")
    stored = int.from_bytes(view[-4:].tobytes(), "little")
    computed = google_crc32c.value(view[:-4])
    if stored != computed:
        raise ChunkError(f"{what}: damaged: its crc32c checksum does not match "
                         f"(stored {stored:#010x}, computed {computed:#010x}); rebuild the cube or restore the chunk")
    return view[:-4]


class CubeReader:
    """Chunk-cached reads of one cube (see the module docstring).

    ``cache_bytes``: decoded chunks kept (LRU); ``raw_cache_bytes``: compressed chunk bytes kept
    (LRU, separate: random window order re-decodes from it instead of fetching again);
    ``prefetch_bytes``: the prefetch thread's bound (compressed bytes in flight plus fetched and
    not yet decoded; 0 = no prefetch); ``decode_threads``: the decode pool (None = 1 inside a
    DataLoader worker, :data:`DEFAULT_DECODE_THREADS` elsewhere); ``retries``/``backoff_s``: how
    often and how patiently a transient read failure is retried (:mod:`loaders.fetch`).
    """

    def __init__(self, url: str, cache_bytes: int = 256 * 2**20, storage_options: dict | None = None, *,
                 raw_cache_bytes: int | None = None, prefetch_bytes: int | None = None,
                 decode_threads: int | None = None, retries: int = 4, backoff_s: float = 0.1):
        self.url = str(url)
        self.cache_bytes = cache_bytes
        self.storage_options = storage_options
        self.raw_cache_bytes = DEFAULT_RAW_CACHE_BYTES if raw_cache_bytes is None else int(raw_cache_bytes)
        self.prefetch_bytes = DEFAULT_PREFETCH_BYTES if prefetch_bytes is None else int(prefetch_bytes)
        self.decode_threads = decode_threads
        self.retries, self.backoff_s = int(retries), float(backoff_s)
        self._root = None
        self._pid = None
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._arrays: dict = {}
        self.chunks_decoded = 0
        self.chunks_decoded_ahead = 0  # of those, decoded on the pool while an earlier block was read
        self.requests = 0        # reads the direct path sent (objects, ranges, shard indexes; retries not counted)
        self.bytes_fetched = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_root=None, _cache=OrderedDict(), _cached=0, _arrays={})
        state.pop("_io_state", None)  # filesystem, threads, caches: made again in each process
        for name in ("days", "glorys_times", "patches", "ocean_mask", "bottom_level", "obs_count", "attrs",
                     "profile_index"):
            state.pop(name, None)  # cached_property values: recomputed per process
        return state

    @property
    def root(self) -> zarr.Group:
        if self._pid != os.getpid():
            # A forked DataLoader worker inherits the parent's handle and zarr event-loop state;
            # never use them across a fork: reopen in this process. The inherited objects are kept,
            # unused: collecting them here would close the parent's HTTP session from the child
            # (aiohttp prints "Unclosed client session").
            if self._root is not None:
                _INHERITED.append((self._root, self._arrays))
            self._root, self._pid, self._arrays = None, os.getpid(), {}
        if self._root is None:
            kwargs = {"storage_options": self.storage_options} if self.storage_options else {}
            root = self._retried(lambda: zarr.open_group(self.url, mode="r", zarr_format=3, use_consolidated=True,
                                                         **kwargs), "zarr.json")
            check_contract(root, self.url)
            self._root = root
        return self._root

    def _retried(self, read, what: str):
        """``read()``, retried like chunk reads (:func:`loaders.fetch.retry_call`) when it fails
        transiently; then a :class:`FetchError` naming the cube URL and ``what``."""
        return retry_call(read, f"{self.url}/{what}", self.retries, self.backoff_s)

    def whole(self, path: str) -> np.ndarray:
        """A small array (coordinates, patch table, static masks) read whole through zarr, retried."""
        return self._retried(lambda: self.root[path][:], path)

    # -- metadata (small, read once per process) ------------------------------------------------
    @cached_property
    def attrs(self) -> dict:
        """Root attributes, the structured ones (build, inputs, rejects, ...) parsed from JSON."""
        return decode_attrs(self.root.attrs.asdict())

    @cached_property
    def days(self) -> np.ndarray:
        return days_from_int(self.whole("ostia/time"))

    @cached_property
    def glorys_times(self) -> np.ndarray:
        return times_from_hours(self.whole("glorys/time"))

    @cached_property
    def patches(self) -> pd.DataFrame:
        df = pd.DataFrame({c: self.whole(f"patches/{c}") for c in PATCH_COLUMNS + ("split",)})
        df["split"] = df["split"].astype(str)
        return df

    @cached_property
    def obs_count(self) -> np.ndarray:
        return self.whole("patches/obs_count")

    @cached_property
    def tile(self) -> int:
        return int(self.root["patches"].attrs["tile_size"])

    @cached_property
    def ocean_mask(self) -> np.ndarray:
        return self.whole("static/ocean_mask")

    @cached_property
    def bottom_level(self) -> np.ndarray:
        return self.whole("static/bottom_level")

    # -- chunked reads ---------------------------------------------------------------------------
    def read(self, path: str, time: slice | None, rows: slice, cols: np.ndarray | slice,
             sum_time: bool = False, north_up: bool = False, out: np.ndarray | None = None,
             copy: bool = True) -> np.ndarray:
        """``path[time, ..., rows, cols]`` assembled from cached chunks (cols may wrap: an index array).

        ``sum_time=True`` returns the sum over the time slice instead, summed chunk by chunk
        without materialising the window (the profile count/sum windows of the ``argo`` mode).
        ``north_up=True`` returns the rows reversed (row 0 = north), written that way during the
        copy out of the cache, so samples need no second flipping copy. ``out`` (an array of the
        result's shape and dtype, e.g. one slot of a stacked window) is written and returned
        instead of a new array, so stacking needs no second copy. ``copy=False`` (without
        ``sum_time`` or ``out``) returns the decoded chunk itself, read-only, when the read is
        exactly one chunk's box (a tile aligned with the chunks: the builder's default), and a new
        array otherwise; a gridded chunk is then a C-contiguous array with ``north_up`` and its
        reversed view without (the cache keeps such chunks north-up).
        """
        arr = self.array(path)
        if not copy and out is None and not sum_time and isinstance(cols, slice):
            block = self._whole_chunk(path, arr, time, rows, cols)
            if block is not None:
                return block[..., ::-1, :] if north_up else block
        if isinstance(cols, slice):
            return self._read_box(path, arr, time, rows, cols, sum_time, north_up, out)
        # A dateline-wrapping tile: read the contiguous runs side by side.
        runs = column_runs(cols)
        if out is None:
            return np.concatenate([self._read_box(path, arr, time, rows, run, sum_time, north_up)
                                   for run in runs], axis=-1)
        at = 0
        for run in runs:
            width = run.stop - run.start
            self._read_box(path, arr, time, rows, run, sum_time, north_up, out[..., at:at + width])
            at += width
        return out

    def array(self, path: str) -> zarr.Array:
        """The zarr array at ``path`` (looked up once per process; warns once if it has no checksum)."""
        root = self.root
        if path not in self._arrays:
            arr = self._arrays[path] = root[path]
            if not has_checksum(arr):
                log.warning("%s: %s has no crc32c checksum (a cube built before checksums): a damaged chunk "
                            "cannot be detected; rebuild the cube (depthcube build --rebuild) to add them",
                            self.url, path)
        return self._arrays[path]

    @cached_property
    def profile_index(self) -> ProfileIndex:
        """The observation table's index (``profiles/obs_start``/``obs_stop`` and block sizes), read once per process."""
        attrs = self.root["profiles/obs_start"].attrs
        return ProfileIndex(self.whole("profiles/obs_start"), self.whole("profiles/obs_stop"),
                            int(attrs["block_days"]), int(attrs["block_cells"]))

    def profile_sums(self, time: slice, rows: slice, cols: np.ndarray | slice,
                     north_up: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Window sums of ``profiles/count`` and ``profiles/sum``: (levels, H, W) int32 and float32.

        Read from the observation table only (``profiles/obs_*``, contract v2): the rows of the
        blocks the window overlaps (:meth:`observed_rows`), added up per pixel in day order, as
        a dense window sum would add them (so the result equals it to the bit). Only the
        ``obs_count``/``obs_sum`` chunks holding a row of the window are decoded.
        """
        w = len(cols) if isinstance(cols, np.ndarray) else cols.stop - cols.start
        return spread_cells(self.profile_cells(time, rows, cols, north_up), (rows.stop - rows.start, w))

    def profile_cells(self, time: slice, rows: slice, cols: np.ndarray | slice,
                      north_up: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The window's observed pixels and their window sums, sparse: (flat pixel index ``row *
        W + col`` in the (H, W) window, rows reversed with ``north_up``, ascending; count (n,
        levels) int32; sum (n, levels) float32), one entry per pixel with a table row in the
        window, each pixel's rows added in day order. :meth:`profile_sums` is this spread over
        the window's grid, so both agree to the bit."""
        h = rows.stop - rows.start
        w = len(cols) if isinstance(cols, np.ndarray) else cols.stop - cols.start
        nlev = self.array("profiles/obs_count").shape[1]
        at, r, c = self.observed_rows(time, rows, cols)
        pixels, inverse = np.unique(((h - 1 - r) if north_up else r) * w + c, return_inverse=True)
        count = np.zeros((len(pixels), nlev), np.int32)
        total = np.zeros((len(pixels), nlev), np.float32)
        if at.size:
            row_count, row_sum = self._table_rows("profiles/obs_count", at), self._table_rows("profiles/obs_sum", at)
            # a pixel with one row takes it as it is (0 + x: -0.0 becomes 0.0, as the sum gives);
            # the others' rows are added with np.add.at, in the rows' order: each pixel's days in order
            single = np.bincount(inverse, minlength=len(pixels))[inverse] == 1
            count[inverse[single]] = row_count[single]
            total[inverse[single]] = row_sum[single] + np.float32(0)
            if not single.all():
                np.add.at(count, inverse[~single], row_count[~single])
                np.add.at(total, inverse[~single], row_sum[~single])
        return pixels, count, total

    def observed_rows(self, time: slice, rows: slice, cols: np.ndarray | slice) -> tuple[np.ndarray, ...]:
        """The table rows holding observations of the window: (row numbers in the table, window
        row, window column), every pixel's rows in day order. Reads ``obs_day``/``obs_row``/``obs_col``
        over the index ranges of the (time block, lat block, lon block)s the window overlaps
        (:meth:`ProfileIndex.ranges`); rows outside the window's days or cells are left out
        (``cols`` may be an index array: a dateline-wrapping tile)."""
        index = self.profile_index
        nlon = self.array("profiles/count").shape[-1]
        position = np.full(nlon, -1, np.int64)
        position[np.arange(cols.start, cols.stop) if isinstance(cols, slice) else cols] = np.arange(
            cols.stop - cols.start if isinstance(cols, slice) else len(cols))
        found = []
        for block, (a, b) in index.ranges(time, rows, cols):
            at = np.arange(a, b)
            day, row, col = (self._table_range(f"profiles/obs_{f}", a, b) for f in ("day", "row", "col"))
            index.check_block(block, day, row, col, a, b)
            keep = (day >= time.start) & (day < time.stop) & (row >= rows.start) & (row < rows.stop) & (position[col] >= 0)
            found.append((at[keep], row[keep] - rows.start, position[col[keep]]))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def _table_range(self, path: str, a: int, b: int) -> np.ndarray:
        """``path[a:b]`` (consecutive rows of an observation-table array), from cached chunks (read-only)."""
        arr = self.array(path)
        per_chunk = arr.chunks[0]
        parts = []
        for k in range(a // per_chunk, (b - 1) // per_chunk + 1):
            block, origin = self._chunk(path, arr, (k,) + (0,) * (arr.ndim - 1))
            parts.append(block[max(a, origin[0]) - origin[0]:min(b, origin[0] + per_chunk) - origin[0]])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)  # one chunk: a read-only view

    def _table_rows(self, path: str, at: np.ndarray) -> np.ndarray:
        """``path[at]`` (rows of an observation-table array), from cached chunks."""
        arr = self.array(path)
        per_chunk = arr.chunks[0]
        if at.size and at.min() // per_chunk == at.max() // per_chunk:  # one chunk: the usual case
            block, origin = self._chunk(path, arr, (int(at[0]) // per_chunk,) + (0,) * (arr.ndim - 1))
            return block[at - origin[0]]
        out = np.empty((at.size,) + arr.shape[1:], arr.dtype)
        chunk_of = at // per_chunk
        for k in np.unique(chunk_of):
            sel = chunk_of == k
            block, origin = self._chunk(path, arr, (int(k),) + (0,) * (arr.ndim - 1))
            out[sel] = block[at[sel] - origin[0]]
        return out

    # -- fetch and decode (issue 13 item 3, issue 15) --------------------------------------------
    @property
    def _io(self) -> "_ProcessIO":
        """This process's I/O state (filesystem, compressed-bytes cache, shard indexes, in-flight
        fetches, decode pool, prefetch thread), made on first use in each process: nothing
        thread- or loop-related crosses a fork or a pickle."""
        io = getattr(self, "_io_state", None)
        if io is None or io.pid != os.getpid():
            if io is not None:
                _INHERITED.append(io)  # a fork's: never used, never closed here (see root)
            io = self._io_state = _ProcessIO(self)
        return io

    def _layout(self, path: str, arr: zarr.Array) -> "DirectLayout | None":
        io = self._io
        if path not in io.layouts:
            io.layouts[path] = direct_layout(arr)
        return io.layouts[path]

    def fetch(self, keys, *, ahead: bool = False) -> None:
        """Bring the compressed bytes of chunks ``keys`` (``(array path, chunk index)``) into the
        cache of compressed bytes, all at once: one batched request for whole chunk objects, one
        for shard indexes not yet known, one for inner chunks of shards (see
        :mod:`loaders.fetch`). Chunks already decoded or cached are skipped; chunks another
        thread is fetching are waited for, not fetched twice. Arrays zarr must read (layouts
        :func:`direct_layout` does not cover) are left to :meth:`_chunk`. ``ahead=True`` (the
        prefetch thread) counts what it got against the prefetch budget."""
        io = self._io
        keys = [k for k in dict.fromkeys(keys) if k not in self._cache]
        mine, theirs = io.claim([k for k in keys if self._layout(k[0], self.array(k[0])) is not None])
        try:
            self._fetch_now(mine, ahead)
        finally:
            io.release(mine)
        for event in theirs:
            event.wait()
        if not ahead:
            self._fetch_now([k for k in keys if k not in io.raw and self._layout(k[0], self.array(k[0]))
                             and k not in self._cache], False)

    def _fetch_now(self, keys: list, ahead: bool) -> dict:
        """Fetch ``keys`` now (no in-flight check), store them, and return them: key -> bytes, or
        None for a chunk never written (the caller must not read "evicted" as "never written")."""
        got: dict = {}
        if not keys:
            return got
        io = self._io
        sharded = [k for k in keys if self._layout(k[0], self.array(k[0])).shards is not None]
        self._load_shard_indexes({(p, self._layout(p, self.array(p)).shard_of(c)) for p, c in sharded})
        requests, targets = [], []
        for key in keys:
            request = self._request(*key)
            if request is None:  # inside a missing shard, or an empty inner chunk: the fill value
                got[key] = None
            else:
                requests.append(request)
                targets.append(key)
        got.update(zip(targets, self._get(requests)))
        for key, data in got.items():
            io.store(key, data, ahead)
        return got

    def _get(self, requests: list) -> list:
        io = self._io
        got = fetch_batch(io.fs, requests, retries=self.retries, backoff_s=self.backoff_s, url_of=io.url_of)
        with io.counting:  # the prefetch thread counts too
            self.requests += len(requests)
            self.bytes_fetched += sum(len(d) for d in got if d is not None)
        return got

    def _request(self, path: str, cidx: tuple):
        """The read that holds chunk ``cidx`` (path, start, stop), or None when it is known empty."""
        layout = self._layout(path, self.array(path))
        if layout.shards is None:
            return (f"{self._io.base}/{path}/{chunk_name(cidx)}", None, None)
        index = self._io.shard_index[(path, layout.shard_of(cidx))]
        if index is None:
            return None
        offset, nbytes = (int(v) for v in index[layout.inner_of(cidx)])
        if offset == EMPTY and nbytes == EMPTY:
            return None
        return (f"{self._io.base}/{path}/{chunk_name(layout.shard_of(cidx))}", offset, offset + nbytes)

    def _load_shard_indexes(self, shards: set) -> None:
        """Read the index of every shard in ``shards`` not yet known, in one batch (None = no shard)."""
        io = self._io
        todo = sorted(s for s in shards if s not in io.shard_index)
        requests = []
        for path, shard in todo:
            layout = self._layout(path, self.array(path))
            start, stop = (-layout.index_bytes, None) if layout.index_at_end else (0, layout.index_bytes)
            requests.append((f"{io.base}/{path}/{chunk_name(shard)}", start, stop))
        for (path, shard), data in zip(todo, self._get(requests)):
            layout = self._layout(path, self.array(path))
            io.shard_index[(path, shard)] = None if data is None else layout.parse_index(
                data, f"{path}: shard {chunk_name(shard)}: index")

    def prefetch(self, keys) -> None:
        """Start fetching ``keys`` in the background (this process's prefetch thread, within
        ``prefetch_bytes``); replaces a prefetch not yet started. No-op when prefetch is off."""
        if self.prefetch_bytes > 0:
            self._io.prefetcher().submit([k for k in dict.fromkeys(keys) if k not in self._cache])

    def decode(self, keys) -> None:
        """Decode the chunks ``keys`` not yet cached (nor decoding ahead) on the decode pool
        (``decode_threads`` > 1; up to half the decoded cache), so :meth:`read` finds them
        decoded; their bytes should be in already (:meth:`fetch`), or each is fetched alone. With
        one decode thread chunks are decoded when first read instead."""
        threads = self.threads()
        if threads <= 1:
            return
        ahead = self._io.ahead
        todo = [key for key, _ in self._decodable([k for k in dict.fromkeys(keys) if k not in ahead],
                                                  self.cache_bytes // 2)]
        if len(todo) < 2:
            return
        blocks = self._io.pool(threads).map(lambda k: self._decode_key(*k), todo)
        for (path, cidx), block in zip(todo, blocks):
            self._remember((path, cidx), block, self._origin(self.array(path), cidx))

    def _decodable(self, keys, budget: int) -> list[tuple[tuple, int]]:
        """``(key, decoded bytes)`` of the keys not yet decoded that the direct decode covers, in
        order, up to ``budget`` decoded bytes."""
        todo = []
        for path, cidx in keys:
            arr = self.array(path)
            if (path, cidx) in self._cache or self._layout(path, arr) is None:
                continue
            nbytes = int(np.prod(arr.chunks)) * arr.dtype.itemsize
            budget -= nbytes
            if budget < 0:
                break
            todo.append(((path, cidx), nbytes))
        return todo

    def decode_ahead(self, keys) -> None:
        """Start decoding ``keys`` on the decode pool without waiting for them (the prefetch thread
        calls this for the next block's chunks once they are fetched), so decompression and the
        first writes to the decoded arrays run on another core while the current block is
        assembled; :meth:`_chunk` takes each result when the chunk is first read. Only with more
        than one decode thread; pending results stay under half the decoded cache, and
        :meth:`keep_ahead` drops those nobody will read."""
        threads = self.threads()
        if threads <= 1:
            return
        io = self._io
        with io.ahead_lock:
            pending = sum(size for _, size in io.ahead.values())
            keys = [k for k in dict.fromkeys(keys) if k not in io.ahead]
        for key, nbytes in self._decodable(keys, self.cache_bytes // 2 - pending):
            future = io.pool(threads).submit(self._decode_key, *key)
            with io.ahead_lock:
                io.ahead[key] = (future, nbytes)

    def keep_ahead(self, keys) -> None:
        """Forget chunks decoded ahead that are not among ``keys`` (the block about to be read)."""
        keep = set(keys)
        io = self._io
        with io.ahead_lock:
            for key in [k for k in io.ahead if k not in keep]:
                io.ahead.pop(key)[0].cancel()

    def threads(self) -> int:
        """Decode threads in this process: ``decode_threads``, or by default
        :data:`DEFAULT_DECODE_THREADS` in the main process and 1 in a DataLoader worker (the
        workers already use the cores)."""
        if self.decode_threads is not None:
            return max(int(self.decode_threads), 1)
        return 1 if _in_worker() else DEFAULT_DECODE_THREADS

    def _decode_key(self, path: str, cidx: tuple) -> np.ndarray:
        arr = self.array(path)
        return self._decode_direct(path, arr, cidx, self._origin(arr, cidx))

    @staticmethod
    def _origin(arr: zarr.Array, cidx: tuple) -> tuple:
        return tuple(i * c for i, c in zip(cidx, arr.chunks))

    def _decode_direct(self, path: str, arr: zarr.Array, cidx: tuple, origin: tuple) -> np.ndarray | None:
        """One chunk decoded without zarr's codec pipeline, for the layouts the builder writes
        (regular chunks, ``bytes`` little-endian + Blosc [+ crc32c], '/' keys; unsharded, or
        sharded with a ``bytes`` + crc32c index): its stored bytes (from the compressed-bytes
        cache, fetched if absent), checksum verified, Blosc-decoded straight into an array.
        zarr's own path decodes into a buffer and then copies into the output array; for the
        mostly-zero 50-level profile chunks that copy costs about three times the decompression.
        A chunk never written (a missing object or shard, an empty inner chunk) is its fill value.
        Returns None for any other layout (the caller then reads through zarr)."""
        layout = self._layout(path, arr)
        if layout is None:
            return None
        io, key = self._io, (path, cidx)
        data = io.raw.get(key, default=_ABSENT)
        if data is _ABSENT:  # not fetched yet, or evicted from the compressed-bytes cache
            data = self._fetch_now([key], ahead=False)[key]
        io.consumed(key)
        shape = tuple(min(c, n - o) for c, n, o in zip(arr.chunks, arr.shape, origin))
        if data is None:
            return _rows_north_up(arr, np.full(shape, arr.fill_value, dtype=arr.dtype))
        if layout.checksummed:
            data = verified_payload(data, f"{path}: chunk {chunk_label(arr, cidx)}")
        full = np.frombuffer(_BLOSC.decode(data), dtype=layout.dtype).reshape(arr.chunks)
        return _rows_north_up(arr, full[tuple(slice(0, s) for s in shape)])

    def _read_box(self, path, arr, time, rows, cols, sum_time: bool = False, north_up: bool = False,
                  result: np.ndarray | None = None) -> np.ndarray:
        starts, stops = _box_bounds(arr, time, rows, cols)
        shape = [b - a for a, b in zip(starts, stops)]
        if result is None:
            result = np.zeros(shape[1:], dtype=arr.dtype) if sum_time else np.empty(shape, dtype=arr.dtype)
        else:
            expected = tuple(shape[1:] if sum_time else shape)
            if result.shape != expected or result.dtype != arr.dtype:
                raise ValueError(f"{path}: out has shape {result.shape} {result.dtype}, the read is {expected} {arr.dtype}")
            if sum_time:
                result[...] = 0
        out = result[..., ::-1, :] if north_up else result  # a reversed view: the copy flips
        chunk_ranges = [range(a // c, (b - 1) // c + 1) for a, b, c in zip(starts, stops, arr.chunks)]
        for idx in np.ndindex(*[len(r) for r in chunk_ranges]):
            cidx = tuple(r[i] for r, i in zip(chunk_ranges, idx))
            block, origin = self._chunk(path, arr, cidx)
            src, dst = [], []
            for d, (a, b) in enumerate(zip(starts, stops)):
                lo, hi = max(a, origin[d]), min(b, origin[d] + block.shape[d])
                src.append(slice(lo - origin[d], hi - origin[d]))
                dst.append(slice(lo - a, hi - a))
            if sum_time:
                out[tuple(dst[1:])] += block[tuple(src)].sum(axis=0, dtype=out.dtype)
            else:
                out[tuple(dst)] = block[tuple(src)]
        return result

    def _whole_chunk(self, path, arr, time, rows, cols) -> np.ndarray | None:
        """The decoded chunk whose box is exactly ``[time, ..., rows, cols]``, or None."""
        cidx = []
        for a, b, n, c in zip(*_box_bounds(arr, time, rows, cols), arr.shape, arr.chunks):
            if a % c or b != min(a + c, n):
                return None
            cidx.append(a // c)
        block, _ = self._chunk(path, arr, tuple(cidx))
        return block

    def _chunk(self, path, arr, cidx):
        """Chunk ``cidx`` of ``path`` (any number of dims) decoded, and its origin: from the decoded
        cache, else decoded from its stored bytes (fetched if not cached), else through zarr."""
        key = (path, cidx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        origin = self._origin(arr, cidx)
        with self._io.ahead_lock:
            ahead = self._io.ahead.pop(key, None)
        if ahead is not None:
            self.chunks_decoded_ahead += 1
        try:
            block = ahead[0].result() if ahead is not None else self._decode_direct(path, arr, cidx, origin)
            if block is None:
                box = tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, arr.chunks, arr.shape))
                block = _rows_north_up(arr, arr[box])
        except (ChunkError, FetchError):
            raise
        except (ValueError, RuntimeError) as e:  # zarr's checksum error, a corrupt Blosc frame, ...
            raise ChunkError(f"{path}: chunk {chunk_label(arr, cidx)} cannot be decoded: {type(e).__name__}: {e}") from e
        return self._remember(key, block, origin)

    def _remember(self, key, block: np.ndarray, origin: tuple):
        """Put a decoded chunk into the decoded cache (evicting the least recently used)."""
        self.chunks_decoded += 1
        block.flags.writeable = False  # handed out as is by read(copy=False)
        self._cache[key] = (block, origin)
        self._cached += block.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, (old, _) = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return block, origin


class ProfileIndex:
    """The observation table's index: rows ``[start[b], stop[b])`` of ``profiles/obs_*`` are the
    observations of block ``b = (time block, lat block, lon block)``, blocks of ``days`` days and
    ``cells`` x ``cells`` cells."""

    def __init__(self, start: np.ndarray, stop: np.ndarray, days: int, cells: int):
        self.start, self.stop, self.days, self.cells = start, stop, days, cells

    def blocks(self, time: slice, rows: slice, cols: np.ndarray | slice) -> list[tuple[int, int, int]]:
        """The blocks a window overlaps, time block first (so their rows come in day order)."""
        col_blocks = (range(cols.start // self.cells, (cols.stop - 1) // self.cells + 1) if isinstance(cols, slice)
                      else np.unique(np.asarray(cols) // self.cells).tolist())
        return [(t, i, j) for t in range(time.start // self.days, (time.stop - 1) // self.days + 1)
                for i in range(rows.start // self.cells, (rows.stop - 1) // self.cells + 1) for j in col_blocks]

    def ranges(self, time: slice, rows: slice, cols: np.ndarray | slice) -> list[tuple[tuple, tuple[int, int]]]:
        """``(block, (start, stop))`` of every overlapped block holding rows, in :meth:`blocks` order."""
        found = []
        for b in self.blocks(time, rows, cols):
            a, z = int(self.start[b]), int(self.stop[b])
            if z > a:
                found.append((b, (a, z)))
        return found

    def check_block(self, block: tuple, day: np.ndarray, row: np.ndarray, col: np.ndarray, a: int, z: int) -> None:
        """ChunkError unless every row read for ``block`` lies in it: a table that does not match
        its index (changed while it was read, or damaged) must never give plausible sums."""
        t, i, j = block
        inside = (day // self.days == t) & (row // self.cells == i) & (col // self.cells == j)
        if not inside.all():
            raise ChunkError(f"profiles/obs_*: rows [{a}, {z}) do not all lie in their index block {block}: the "
                             f"observation table does not match its index (the cube changed while it was read, or "
                             f"is damaged); open it again, or rebuild it (depthcube build --rebuild)")


def _rows_north_up(arr: zarr.Array, block: np.ndarray) -> np.ndarray:
    """A decoded chunk as the decoded cache stores it: for a gridded array (dims ending ``lat``,
    ``lon``) its values copied with the rows north-up and returned as the reversed view (the
    same values in cube orientation, so every reader of the cache sees what it saw before);
    any other chunk as it is."""
    if block.ndim < 2 or tuple(getattr(arr.metadata, "dimension_names", None) or ())[-2:] != ("lat", "lon"):
        return block
    return np.ascontiguousarray(block[..., ::-1, :])[..., ::-1, :]


def _box_bounds(arr: zarr.Array, time: slice | None, rows: slice, cols: slice) -> tuple[list[int], list[int]]:
    """Start and stop, per dimension of ``arr``, of the box ``[time, ..., rows, cols]``."""
    lead = [time] if time is not None else []
    sel = lead + [slice(None)] * (arr.ndim - 2 - len(lead)) + [rows, cols]
    return [s.start or 0 for s in sel], [n if s.stop is None else s.stop for s, n in zip(sel, arr.shape)]


def chunk_name(cidx: tuple) -> str:
    """The zarr v3 key of a chunk relative to its array ('/' separator): ``c/0/1/2``."""
    return "c/" + "/".join(str(int(i)) for i in cidx)


def chunk_label(arr: zarr.Array, cidx: tuple) -> str:
    """The stored object holding chunk ``cidx``: its key, or the shard's key and the chunk within it."""
    if arr.shards is None:
        return chunk_name(cidx)
    shard = tuple(int(i) * c // s for i, c, s in zip(cidx, arr.chunks, arr.shards))
    return f"{chunk_name(shard)} (inner chunk {tuple(int(i) for i in cidx)})"


#: An inner chunk's index entry when it was never written (zarr v3 sharding: offset = nbytes = 2**64 - 1).
EMPTY = 2**64 - 1
_ABSENT = object()


@dataclass(frozen=True)
class DirectLayout:
    """How the direct decode reads one array: element dtype, crc32c trailer, and for a sharded
    array the shard shape (elements), chunks per shard and where its index sits."""
    dtype: np.dtype
    checksummed: bool
    chunks: tuple
    shards: tuple | None = None
    index_at_end: bool = True

    @property
    def per_shard(self) -> tuple:
        return tuple(s // c for s, c in zip(self.shards, self.chunks))

    @property
    def index_bytes(self) -> int:
        """A shard index: (offset, nbytes) uint64 per inner chunk, then its crc32c."""
        return int(np.prod(self.per_shard)) * 16 + 4

    def shard_of(self, cidx: tuple) -> tuple:
        return tuple(int(i) // p for i, p in zip(cidx, self.per_shard))

    def inner_of(self, cidx: tuple) -> tuple:
        return tuple(int(i) % p for i, p in zip(cidx, self.per_shard))

    def parse_index(self, data: bytes, what: str) -> np.ndarray:
        """A shard's index as (..chunks per shard.., 2) uint64, after checking its crc32c."""
        if len(data) != self.index_bytes:
            raise ChunkError(f"{what}: {len(data)} bytes, expected {self.index_bytes}")
        return np.frombuffer(verified_payload(data, what), "<u8").reshape(self.per_shard + (2,))


def _chunk_codecs(codecs: tuple) -> tuple[np.dtype | None, bool] | None:
    """(byte order applied, checksummed) for ``bytes`` + Blosc [+ crc32c] codecs, else None."""
    checksummed = len(codecs) == 3 and isinstance(codecs[2], Crc32cCodec)
    if len(codecs) != 2 + checksummed or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        return None
    return codecs[0].endian is not None, checksummed


def direct_layout(arr: zarr.Array) -> DirectLayout | None:
    """The :class:`DirectLayout` of an array the builder wrote (regular chunks, '/' keys, ``bytes``
    + Blosc [+ crc32c], unsharded or sharded with a ``bytes`` + crc32c index), or None for any
    other layout (read through zarr then)."""
    md = arr.metadata
    codecs = tuple(getattr(md, "codecs", ()))
    if getattr(getattr(md, "chunk_key_encoding", None), "separator", None) != "/":
        return None
    shards, at_end = None, True
    if arr.shards is not None:
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        sharding = codecs[0]
        index = tuple(sharding.index_codecs)
        if (len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
                or tuple(sharding.chunk_shape) != tuple(arr.chunks)
                or any(s % c for s, c in zip(arr.shards, arr.chunks))):
            return None
        shards, codecs = tuple(arr.shards), tuple(sharding.codecs)
        at_end = str(getattr(sharding.index_location, "value", sharding.index_location)) == "end"
    found = _chunk_codecs(codecs)
    if found is None:
        return None
    little, checksummed = found
    dtype = np.dtype(arr.dtype).newbyteorder("<") if little else np.dtype(arr.dtype)
    return DirectLayout(dtype, checksummed, tuple(arr.chunks), shards, at_end)


def _close_session(fs) -> None:
    try:
        session = fsspec.asyn.sync(fs.loop, fs.set_session)
        fs.close_session(fs.loop, session)
    except Exception as e:  # closing is best effort, at exit
        log.debug("closing the HTTP session failed: %s", e)


def _in_worker() -> bool:
    """Whether this process is a torch DataLoader worker."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover - torch is a loaders dependency
        return False
    return get_worker_info() is not None


class _ProcessIO:
    """One process's I/O state for a :class:`CubeReader` (never pickled, made again after a fork)."""

    def __init__(self, reader: CubeReader):
        self.pid = os.getpid()
        self.fs, base = fsspec.core.url_to_fs(reader.url, **(reader.storage_options or {}))
        self.base = base.rstrip("/")
        self.layouts: dict = {}
        self.shard_index: dict = {}
        self.raw = ByteCache(reader.raw_cache_bytes, on_evict=self.consumed)
        self._reader = weakref.ref(reader)  # the prefetch thread holds this object weakly, and it the reader
        self._lock = threading.Lock()
        self.counting = threading.Lock()
        self._inflight: dict = {}
        self._held: dict = {}           # fetched ahead, not yet decoded: key -> bytes
        self._held_bytes = 0
        self._sizes: dict = {}          # array path -> [bytes, count] of the chunks fetched
        self._pool: ThreadPoolExecutor | None = None
        self._pool_threads = 0
        self.ahead: dict = {}           # decoding ahead: key -> (future, decoded bytes)
        self.ahead_lock = threading.Lock()
        if hasattr(self.fs, "set_session") and (self.pid, id(self.fs)) not in _CLOSING:
            # fsspec's HTTP filesystem closes its aiohttp session at interpreter exit, which a
            # DataLoader worker skips (os._exit): aiohttp then prints "Unclosed client session".
            # multiprocessing runs this at the exit of the process (not when this object goes:
            # fsspec shares one filesystem instance between readers).
            _CLOSING.add((self.pid, id(self.fs)))
            multiprocessing.util.Finalize(None, _close_session, args=(self.fs,), exitpriority=10)
        self._prefetcher: Prefetcher | None = None

    def url_of(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def claim(self, keys: list) -> tuple[list, list]:
        """Split ``keys`` into those this thread fetches now (marked in flight) and the events of
        fetches already in flight elsewhere; keys already cached are dropped."""
        mine, theirs, event = [], set(), threading.Event()
        with self._lock:
            for key in keys:
                if key in self.raw:
                    continue
                if key in self._inflight:
                    theirs.add(self._inflight[key])
                else:
                    self._inflight[key] = event
                    mine.append(key)
        return mine, list(theirs)

    def release(self, keys: list) -> None:
        with self._lock:
            events = {self._inflight.pop(k) for k in keys if k in self._inflight}
        for event in events:
            event.set()

    def store(self, key, data: bytes | None, ahead: bool) -> None:
        size = 0 if data is None else len(data)
        with self._lock:
            seen = self._sizes.setdefault(key[0], [0, 0])
            seen[0] += size
            seen[1] += 1
            if ahead:
                self._held[key] = size
                self._held_bytes += size
        self.raw.put(key, data)

    def consumed(self, key) -> None:
        """``key`` was decoded or dropped from the cache: it no longer counts against the prefetch bound."""
        with self._lock:
            size = self._held.pop(key, None)
            if size is None:
                return
            self._held_bytes -= size
        if self._prefetcher is not None:
            self._prefetcher.wake()

    def held_bytes(self) -> int:
        return self._held_bytes

    def estimate(self, key) -> int:
        """Expected compressed size of a chunk of ``key``'s array: the mean of those fetched so far
        (1 MiB before any)."""
        total, n = self._sizes.get(key[0], (0, 0))
        return total // n if n else 2**20

    def pool(self, threads: int) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_threads != threads:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="depthcube-decode")
            self._pool_threads = threads
        return self._pool

    def prefetcher(self) -> Prefetcher:
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self, self._reader().prefetch_bytes)
        return self._prefetcher

    def fetch_ahead(self, keys: list) -> None:
        """The prefetch thread's fetch (counted against the prefetch bound)."""
        reader = self._reader()
        if reader is not None:
            reader.fetch(keys, ahead=True)
            reader.decode_ahead(keys)
