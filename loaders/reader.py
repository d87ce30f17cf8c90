"""Chunk-caching, dask-free reads of a published cube for window assembly.

The per-sample hot path reads Zarr chunks straight through zarr-python (no dask, no xarray
indexing) and keeps decoded chunks in a small LRU cache bounded in bytes. With the stream's
block-shuffled order (consecutive samples share a tile and neighbouring days), each chunk is
decoded once per visit and serves every sample that overlaps it.

A ``CubeReader`` is picklable: it holds only the URL; each process (DataLoader worker, DDP rank)
opens the store lazily on first use, so no zarr/fsspec handle crosses a fork or spawn. Opening
checks the cube's contract (:func:`cube.layout.check_contract`: contract version, groups,
variables, dims, dtypes), so a foreign or structurally damaged store fails in one line
(``cube.layout.ContractError``) before any sample is read. Stored times are decoded with the
contract's own decoders (:func:`cube.layout.days_from_int`, :func:`cube.layout.times_from_hours`).

Damage. Every cube array carries zarr's ``crc32c`` checksum (``cube.layout.array_compressors``);
the direct decode verifies it before decompressing, and any chunk that fails to decode, through
either path, raises :class:`ChunkError` naming the variable and the chunk key
(``ostia/analysed_sst: chunk c/0/1/2 ...``). Cubes built before the checksum still read, with a
one-time warning per array that damage there cannot be detected (rebuild to add it).

Profiles. The ``argo`` x (:meth:`CubeReader.profile_sums`) reads only the observation table of
contract v2 (``profiles/obs_*``): its index once per process (:attr:`CubeReader.profile_index`),
then the rows of the blocks a window overlaps, through the same chunk cache; rows that do not lie
in the block their index range names raise :class:`ChunkError` (a table changed under the reader,
or damaged), so a mismatch is never summed into x.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from functools import cached_property

import fsspec
import google_crc32c
import numpy as np
import pandas as pd
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from cube.layout import check_contract, days_from_int, decode_attrs, times_from_hours
from cube.tiling import PATCH_COLUMNS, column_runs

_BLOSC = Blosc()  # decodes any Blosc frame (the frame header carries its own settings)
log = logging.getLogger("depthcube.loaders")


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
    def __init__(self, url: str, cache_bytes: int = 256 * 2**20, storage_options: dict | None = None):
        self.url = str(url)
        self.cache_bytes = cache_bytes
        self.storage_options = storage_options
        self._root = None
        self._pid = None
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._arrays: dict = {}
        self.chunks_decoded = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_root=None, _cache=OrderedDict(), _cached=0, _arrays={})
        state.pop("_fs_cached", None)
        state.pop("_fs_pid", None)
        for name in ("days", "glorys_times", "patches", "ocean_mask", "bottom_level", "obs_count", "attrs",
                     "profile_index"):
            state.pop(name, None)  # cached_property values: recomputed per process
        return state

    @property
    def root(self) -> zarr.Group:
        if self._pid != os.getpid():
            # A forked DataLoader worker inherits the parent's handle and zarr event-loop state;
            # never use them across a fork: reopen in this process.
            self._root, self._pid, self._arrays = None, os.getpid(), {}
        if self._root is None:
            kwargs = {"storage_options": self.storage_options} if self.storage_options else {}
            root = zarr.open_group(self.url, mode="r", zarr_format=3, use_consolidated=True, **kwargs)
            check_contract(root, self.url)
            self._root = root
        return self._root

    # -- metadata (small, read once per process) ------------------------------------------------
    @cached_property
    def attrs(self) -> dict:
        """Root attributes, the structured ones (build, inputs, rejects, ...) parsed from JSON."""
        return decode_attrs(self.root.attrs.asdict())

    @cached_property
    def days(self) -> np.ndarray:
        return days_from_int(self.root["ostia/time"][:])

    @cached_property
    def glorys_times(self) -> np.ndarray:
        return times_from_hours(self.root["glorys/time"][:])

    @cached_property
    def patches(self) -> pd.DataFrame:
        g = self.root["patches"]
        df = pd.DataFrame({c: g[c][:] for c in PATCH_COLUMNS + ("split",)})
        df["split"] = df["split"].astype(str)
        return df

    @cached_property
    def obs_count(self) -> np.ndarray:
        return self.root["patches/obs_count"][:]

    @cached_property
    def tile(self) -> int:
        return int(self.root["patches"].attrs["tile_size"])

    @cached_property
    def ocean_mask(self) -> np.ndarray:
        return self.root["static/ocean_mask"][:]

    @cached_property
    def bottom_level(self) -> np.ndarray:
        return self.root["static/bottom_level"][:]

    # -- chunked reads ---------------------------------------------------------------------------
    def read(self, path: str, time: slice | None, rows: slice, cols: np.ndarray | slice,
             sum_time: bool = False, north_up: bool = False) -> np.ndarray:
        """``path[time, ..., rows, cols]`` assembled from cached chunks (cols may wrap: an index array).

        ``sum_time=True`` returns the sum over the time slice instead, summed chunk by chunk
        without materialising the window (the profile count/sum windows of the ``argo`` mode).
        ``north_up=True`` returns the rows reversed (row 0 = north), written that way during the
        copy out of the cache, so samples need no second flipping copy.
        """
        arr = self.array(path)
        if isinstance(cols, slice):
            return self._read_box(path, arr, time, rows, cols, sum_time, north_up)
        # A dateline-wrapping tile: read the contiguous runs and join them.
        return np.concatenate([self._read_box(path, arr, time, rows, run, sum_time, north_up)
                               for run in column_runs(cols)], axis=-1)

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
        start = self.root["profiles/obs_start"]
        return ProfileIndex(start[...], self.root["profiles/obs_stop"][...], int(start.attrs["block_days"]),
                            int(start.attrs["block_cells"]))

    def profile_sums(self, time: slice, rows: slice, cols: np.ndarray | slice,
                     north_up: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Window sums of ``profiles/count`` and ``profiles/sum``: (levels, H, W) int32 and float32.

        Read from the observation table only (``profiles/obs_*``, contract v2): the rows of the
        blocks the window overlaps (:meth:`observed_rows`), added up per pixel in day order, as
        a dense window sum would add them (so the result equals it to the bit). Only the
        ``obs_count``/``obs_sum`` chunks holding a row of the window are decoded.
        """
        h = rows.stop - rows.start
        w = len(cols) if isinstance(cols, np.ndarray) else cols.stop - cols.start
        nlev = self.array("profiles/obs_count").shape[1]
        count = np.zeros((nlev, h * w), np.int32)
        total = np.zeros((nlev, h * w), np.float32)
        at, r, c = self.observed_rows(time, rows, cols)
        if at.size:
            pix = ((h - 1 - r) if north_up else r) * w + c
            # level-major output (no transposing copy); each pixel's rows still added in day order
            np.add.at(count, (slice(None), pix), self._table_rows("profiles/obs_count", at).T)
            np.add.at(total, (slice(None), pix), self._table_rows("profiles/obs_sum", at).T)
        return count.reshape(nlev, h, w), total.reshape(nlev, h, w)

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
            day, row, col = (self._table_rows(f"profiles/obs_{f}", at) for f in ("day", "row", "col"))
            index.check_block(block, day, row, col, a, b)
            keep = (day >= time.start) & (day < time.stop) & (row >= rows.start) & (row < rows.stop) & (position[col] >= 0)
            found.append((at[keep], row[keep] - rows.start, position[col[keep]]))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def _table_rows(self, path: str, at: np.ndarray) -> np.ndarray:
        """``path[at]`` (rows of an observation-table array), from cached chunks."""
        arr = self.array(path)
        per_chunk = arr.chunks[0]
        out = np.empty((at.size,) + arr.shape[1:], arr.dtype)
        chunk_of = at // per_chunk
        for k in np.unique(chunk_of):
            sel = chunk_of == k
            block, origin = self._chunk(path, arr, (int(k),) + (0,) * (arr.ndim - 1))
            out[sel] = block[at[sel] - origin[0]]
        return out

    @property
    def _fs(self):
        if getattr(self, "_fs_pid", None) != os.getpid():
            self._fs_cached = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
            self._fs_pid = os.getpid()
        return self._fs_cached

    def _decode_direct(self, path: str, arr: zarr.Array, cidx: tuple, origin: tuple) -> np.ndarray | None:
        """One chunk read and decoded without zarr's codec pipeline, for the layout the builder
        writes (regular chunks, no shards, ``bytes`` little-endian + Blosc, '/' keys). zarr's own
        path decodes into a buffer and then copies into the output array; for the mostly-zero
        50-level profile chunks that copy costs about three times the decompression.
        Returns None for any other layout (the caller then reads through zarr)."""
        md = arr.metadata
        codecs = tuple(getattr(md, "codecs", ()))
        checksummed = len(codecs) == 3 and isinstance(codecs[2], Crc32cCodec)
        if (arr.shards is not None or len(codecs) != 2 + checksummed or not isinstance(codecs[0], BytesCodec)
                or not isinstance(codecs[1], BloscCodec) or getattr(md.chunk_key_encoding, "separator", None) != "/"):
            return None
        fs, base = self._fs
        chunk_key = chunk_name(cidx)
        shape = tuple(min(c, n - o) for c, n, o in zip(arr.chunks, arr.shape, origin))
        try:
            data = fs.cat_file(f"{base.rstrip('/')}/{path}/{chunk_key}")
        except FileNotFoundError:  # never written (all fill): zarr's write_empty_chunks=False
            return np.full(shape, arr.fill_value, dtype=arr.dtype)
        if checksummed:
            data = verified_payload(data, f"{path}: chunk {chunk_key}")
        dtype = np.dtype(arr.dtype).newbyteorder("<") if codecs[0].endian is not None else np.dtype(arr.dtype)
        full = np.frombuffer(_BLOSC.decode(data), dtype=dtype).reshape(arr.chunks)
        return full[tuple(slice(0, s) for s in shape)]

    def _read_box(self, path, arr, time, rows, cols, sum_time: bool = False, north_up: bool = False) -> np.ndarray:
        lead = [time] if time is not None else []
        sel = lead + [slice(None)] * (arr.ndim - 2 - len(lead)) + [rows, cols]
        starts = [s.start or 0 for s in sel]
        stops = [arr.shape[d] if s.stop is None else s.stop for d, s in enumerate(sel)]
        shape = [b - a for a, b in zip(starts, stops)]
        result = np.zeros(shape[1:], dtype=arr.dtype) if sum_time else np.empty(shape, dtype=arr.dtype)
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

    def _chunk(self, path, arr, cidx):
        key = (path, cidx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        origin = tuple(i * c for i, c in zip(cidx, arr.chunks))
        try:
            block = self._decode_direct(path, arr, cidx, origin)
            if block is None:
                block = arr[tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, arr.chunks, arr.shape))]
        except ChunkError:
            raise
        except (ValueError, RuntimeError) as e:  # zarr's checksum error, a corrupt Blosc frame, ...
            raise ChunkError(f"{path}: chunk {chunk_label(arr, cidx)} cannot be decoded: {type(e).__name__}: {e}") from e
        self.chunks_decoded += 1
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


def chunk_name(cidx: tuple) -> str:
    """The zarr v3 key of a chunk relative to its array ('/' separator): ``c/0/1/2``."""
    return "c/" + "/".join(str(int(i)) for i in cidx)


def chunk_label(arr: zarr.Array, cidx: tuple) -> str:
    """The stored object holding chunk ``cidx``: its key, or the shard's key and the chunk within it."""
    if arr.shards is None:
        return chunk_name(cidx)
    shard = tuple(int(i) * c // s for i, c, s in zip(cidx, arr.chunks, arr.shards))
    return f"{chunk_name(shard)} (inner chunk {tuple(int(i) for i in cidx)})"
