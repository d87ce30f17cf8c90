"""``CubeStream``: the torch IterableDataset that feeds training from a cube.

Order and sharding. The split's windows are sorted by (patch, day) and cut into blocks of
``block_size`` consecutive windows (same tile, neighbouring days: they share Zarr chunks). Each
epoch shuffles the *block order* with ``(seed, epoch)`` (a short last block stays last). DDP
ranks get equal contiguous slices of that order, ``DistributedSampler`` semantics: by default
(``drop_last=False``) the order is padded to ``world_size * ceil(N / world_size)`` by repeating
its first windows, so every window is seen and every rank yields the same number of samples;
``drop_last=True`` cuts it to ``world_size * floor(N / world_size)`` instead. Within a rank,
consecutive runs of ``block_size`` samples are dealt round-robin to the DataLoader workers. The
worker layout depends only on the per-rank count, so every rank also yields the same number of
batches (no rank waits for ever in its last all-reduce). Without DDP nothing is padded or cut.

Epochs. ``set_epoch(e)`` pins the next pass to epoch ``e``; otherwise each new pass over the
stream (each ``iter()``, in every worker) starts the next epoch by itself, so plain loops and
Lightning (which calls ``set_epoch`` on samplers only) get a new shuffle and new corruption
draws every epoch. The epoch state lives in a small shared-memory tensor that the stream
carries to its workers (fork, forkserver and spawn), so ``set_epoch`` in the training process
reaches persistent DataLoader workers too. Each worker (or the main process, without workers)
counts its own passes.

Randomness. Corruption and augmentation of window ``i`` in epoch ``e`` use
``sample_rng(seed, e, i)``: reproducible, and new every epoch (REFERENCE.md 11.15 fixed).

Resume. Every sample's ``info`` carries its ``shard`` (``rank * num_workers + worker``) and
``position`` in that shard. ``state_dict()`` is the position of this process's pass (epoch and
samples yielded per shard), which is what torchdata's ``StatefulDataLoader`` snapshots inside
each worker; ``load_state_dict`` makes the next pass skip exactly what was yielded. A state
taken at the very end of an epoch resumes at the next epoch. :class:`StreamLoader` (a plain
DataLoader that counts what the training loop consumed) is kept for ``skipped`` and explicit
``commit()``. A state names its cube, split, order, world size and worker count; loading it
into a stream that differs in any of them is a ``ValueError`` naming what differs.

Chunks. :meth:`CubeStream.window_chunks` lists the ``(array path, chunk index)`` that
:meth:`CubeStream.read_window` reads for one window (``depthcube bench`` decodes exactly those for
its "limit" entry); :func:`box_chunks` and :func:`table_chunk_keys` are the chunk arithmetic
behind it.

Batches. :meth:`CubeStream.batched` is the same pass as whole batches for
``DataLoader(..., batch_size=None)``: what ``DataLoader(stream, batch_size=B)`` yields, each
sample written straight into its slot of the batch (:mod:`loaders.batching`); :class:`StreamLoader`
uses it whenever it is given a ``batch_size`` and no ``collate_fn``.

Fetching. Before a block's samples are assembled, every chunk its windows need (the union of
their :meth:`CubeStream.window_chunks`) is fetched at once, the next block's chunks go in flight on
the reader's prefetch thread (``prefetch_bytes``, 0 = off), and the block's chunks are decoded on
the reader's decode pool (``decode_threads``; 1 inside DataLoader workers unless given), so a
remote store (HTTP, S3: any fsspec URL with ``storage_options``) costs about one round trip per
block, hidden behind the previous block's assembly (:class:`loaders.reader.CubeReader`). None of
this changes a sample. A store that stays down is a :class:`SampleError` naming the chunk's URL
after the reader's retries; a stalled one is caught by the DataLoader's ``timeout=``.

Workers. The stream pickles only small arrays, the cube URL and the epoch tensor; each worker
opens the store lazily, so fork, forkserver and spawn all work.

Threads. Each DataLoader worker runs one torch intra-op thread: torch's DataLoader and torchdata's
StatefulDataLoader set ``torch.set_num_threads(1)`` when a worker starts, and a pass of the stream
inside a worker (``get_worker_info()`` set) sets it again, so a collate or transform that changed it
cannot make the workers fight over the cores (issue 13: collate went from ~1 ms to 22-31 ms a
sample under load with 2 threads). The main process (0 workers) keeps its own setting.

Memory. Importing this module sets ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already
says otherwise: torch then backs large CPU tensors (collated batches) with transparent huge pages,
which made stacking a 32-sample argo batch 4x faster (``python -m bench.huge_pages``).

Faults. A window whose sample cannot be built (an unreadable chunk, a non-finite profile sum
that would reach the model: :func:`loaders.sample.assemble` masks or rejects every non-finite
value, so no finite-check pass over the tensors runs; GLORYS snapshots are checked once per tile
and snapshot, :func:`loaders.sample.finite_over_water`) raises :class:`SampleError` naming the cube, the patch and the centre
day; with ``on_error='raise'`` (default) it propagates, from a DataLoader worker too (torch
re-raises it in the training process with the worker's traceback); with ``on_error='skip'`` the
window is logged and skipped (under DDP a skip makes ranks unequal: keep ``raise`` there).
Skips happen inside workers, so the training process counts them from what it receives:
:attr:`StreamLoader.skipped`. A worker that dies (killed, segfault) makes the DataLoader raise
``RuntimeError: DataLoader worker ... exited unexpectedly`` instead of hanging; a stuck one is
caught by the DataLoader's ``timeout=`` (pass it to StreamLoader).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time as _time

# Transparent huge pages for torch's CPU tensors (PyTorch reads THP_MEM_ALLOC_ENABLE when it first
# allocates a large tensor). A collated batch is hundreds of MB of fresh memory, and with 4 KB pages
# the page faults cost more than the copy: torch.stack of 32 argo y samples (105 MB) 46.5 ms with
# the setting off, 10.5 ms on (`python -m bench.huge_pages`). numpy asks for huge pages by itself.
# A default only: THP_MEM_ALLOC_ENABLE=0 in the environment opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from cube.errors import ConfigError
from cube.tiling import block_order

from .batching import BatchBuilder, CubeBatches, process_memory
from .config import DatasetConfig
from .corruption import sample_rng
from .reader import CubeReader
from .sample import WindowData, assemble, finite_over_water, nearest_snapshots, water_column, word_mask
from .windows import Window, Windows, check_cube_serves

log = logging.getLogger("depthcube.loaders")

#: Most DataLoader workers one stream serves (one row of the shared epoch table each).
MAX_WORKERS = 256
# Columns of the shared epoch table, one row per worker (row 0 is also the main process).
_NEXT, _PINNED, _LAST, _RESUME = range(4)
STATE_FORMAT = "depthcube.CubeStream/2"


class SampleError(RuntimeError):
    """Building one window's sample failed; names the patch and the day."""


class CubeStream(IterableDataset):
    """The samples of one split of a cube as a torch ``IterableDataset`` (order, sharding, epochs
    and resume: see the module docstring). ``rank``/``world_size`` default to the
    ``torch.distributed`` process group; ``drop_last=True`` cuts the ranks to equal size instead
    of padding them. ``cache_bytes``, ``raw_cache_bytes``, ``prefetch_bytes``, ``decode_threads``
    and ``storage_options`` go to the :class:`loaders.reader.CubeReader` (None = its defaults)."""

    def __init__(self, cube: str, config: DatasetConfig | None = None, split: str = "train", *,
                 shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False, cache_bytes: int = 256 * 2**20, storage_options: dict | None = None,
                 prefetch_bytes: int | None = None, decode_threads: int | None = None,
                 raw_cache_bytes: int | None = None):
        super().__init__()
        self.config = config or DatasetConfig()
        self.split = split
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.reader = CubeReader(cube, cache_bytes=cache_bytes, storage_options=storage_options,
                                 prefetch_bytes=prefetch_bytes, decode_threads=decode_threads,
                                 raw_cache_bytes=raw_cache_bytes)
        n_days = len(self.reader.days)
        if n_days < self.config.window:
            raise ConfigError(f"window_days: a window of {self.config.window} days is longer than the "
                              f"{n_days} days of the cube {self.reader.url}")
        check_cube_serves(self.reader, self.config)
        self.windows = Windows(self.reader, self.config, split)
        self._rank, self._world = rank, world_size
        self._statics: dict = {}
        self._nearest: dict = {}  # window days -> (snapshots used, days each serves)
        self._finite: dict = {}   # patch -> finite_over_water per snapshot (int8, -1 unchecked)
        self._clock = torch.zeros((MAX_WORKERS, 4), dtype=torch.int64).share_memory_()
        self._clock[:, _LAST] = -1
        self._resume: dict | None = None   # the loaded state whose positions the next pass skips
        self._pass: dict | None = None     # this process's pass: epoch, shard, position
        self.skipped = 0

    # -- epochs ----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Pin the next pass to epoch ``epoch`` (new shuffle and corruption draws), here and in
        every DataLoader worker, persistent ones included. A loaded state of another epoch is
        forgotten."""
        rows = self._rows()
        self._clock[rows, _NEXT] = int(epoch)
        self._clock[rows, _PINNED] = 1
        if self._resume is not None and self._resume["epoch"] != int(epoch):
            self._clock[rows, _RESUME] = 0

    @property
    def epoch(self) -> int:
        """The epoch of this process's current (or last) pass, or of the next one once pinned."""
        row = self._rows().start
        if self._clock[row, _PINNED]:
            return int(self._clock[row, _NEXT])
        return max(int(self._clock[row, _LAST]), 0)

    def _rows(self) -> slice:
        """Rows of the epoch table this process owns: its own in a worker, all in the main process."""
        info = get_worker_info()
        if info is None:
            return slice(0, MAX_WORKERS)
        if info.id >= MAX_WORKERS:
            raise ValueError(f"CubeStream serves at most {MAX_WORKERS} DataLoader workers, got {info.num_workers}")
        return slice(info.id, info.id + 1)

    def next_epoch(self) -> int:
        """The epoch the next pass in this process (or worker 0) will be."""
        clock = self._clock[self._rows().start]
        return int(clock[_NEXT]) if clock[_PINNED] else int(clock[_LAST]) + 1

    def resuming(self, epoch: int) -> dict | None:
        """Positions per shard that a pass of ``epoch`` starting now skips (a loaded state), or None."""
        if self._resume is not None and self._clock[self._rows().start, _RESUME] and self._resume["epoch"] == epoch:
            return self._resume["consumed"]
        return None

    def _start_pass(self) -> tuple[int, dict | None]:
        """Epoch of the pass starting in this process, and the loaded state it resumes (or None)."""
        epoch = self.next_epoch()
        resume = self._resume if self.resuming(epoch) is not None else None
        clock = self._clock[self._rows().start]
        clock[_PINNED], clock[_LAST], clock[_RESUME] = 0, epoch, 0
        return epoch, resume

    # -- order and sharding ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples this rank yields per epoch (all windows without DDP)."""
        return self.samples_per_rank(self._dist()[1])

    def samples_per_rank(self, world_size: int) -> int:
        n = len(self.windows)
        return n // world_size if self.drop_last else -(-n // world_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Window indices of one epoch: blocks of ``block_size`` in shuffled order, a short last block last."""
        rng = np.random.default_rng([self.config.seed, epoch]) if self.shuffle else None
        return block_order(len(self.windows), self.config.block_size, rng, short_last_stays_last=True)

    def rank_indices(self, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Window indices of one DDP rank: an equal contiguous slice of the (padded or cut) epoch order."""
        order, per_rank = self.epoch_order(epoch), self.samples_per_rank(world_size)
        if len(order) == 0:
            return order
        order = np.resize(order, per_rank * world_size)  # repeats from the start when padding
        return order[rank * per_rank:(rank + 1) * per_rank]

    def shard_indices(self, epoch: int, rank: int = 0, world_size: int = 1, worker: int = 0,
                      num_workers: int = 1) -> np.ndarray:
        """Window indices of one (rank, worker) shard, in yield order: runs of ``block_size`` of the
        rank's slice dealt round-robin to its workers (disjoint, and complete together)."""
        mine = self.rank_indices(epoch, rank, world_size)
        run = np.arange(len(mine)) // self.config.block_size
        return mine[run % num_workers == worker]

    def num_batches(self, batch_size: int, num_workers: int = 0, drop_last: bool = False) -> int:
        """Batches a DataLoader with these settings yields per epoch on this rank (each worker
        batches its own shard, so this can exceed ``ceil(len / batch_size)``)."""
        rank, world = self._dist()
        workers = max(num_workers, 1)
        sizes = [len(self.shard_indices(0, rank, world, w, workers)) for w in range(workers)]
        return sum(s // batch_size if drop_last else -(-s // batch_size) for s in sizes)

    def _dist(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    @staticmethod
    def _worker() -> tuple[int, int]:
        """(worker id, DataLoader num_workers): (0, 0) in the main process."""
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 0)

    def __iter__(self):
        """One pass (one epoch) of this process's shard. The pass starts at the first ``next()``,
        so an iterator made and dropped unused (torchdata does that) uses up no epoch."""
        for index, epoch, shard, position, _ in self._visits():
            sample = self._sample_or_skip(index, epoch, shard, position)
            self._pass["position"] = position + 1  # before the yield: a snapshot taken now counts it
            if sample is not None:
                yield to_torch(sample)

    def batched(self, batch_size: int, drop_last: bool = False, num_workers: int = 0) -> "CubeBatches":
        """This stream's batches of ``batch_size``, each sample written straight into its slot
        (:mod:`loaders.batching`): ``DataLoader(stream.batched(32), batch_size=None)`` yields
        what ``DataLoader(stream, batch_size=32)`` yields, without building and then stacking
        every sample. ``num_workers`` only sets ``len()``."""
        return CubeBatches(self, batch_size, drop_last, num_workers)

    def iter_batches(self, batch_size: int, drop_last: bool = False, shared: bool = False):
        """One pass of this process's shard as batches (what :meth:`batched` iterates): runs of
        ``batch_size`` samples in yield order, the last one shorter unless ``drop_last``;
        ``shared`` allocates them in shared memory (DataLoader workers)."""
        batch, memory = None, process_memory()
        for index, epoch, shard, position, left in self._visits():
            if batch is None:  # a short last batch is the first rows of a whole one's memory
                batch = BatchBuilder(batch_size, shared=shared, memory=memory)
            slot = batch.slot()
            sample = self._sample_or_skip(index, epoch, shard, position, out=slot)
            if sample is not None:
                batch.add(sample, slot)
            self._pass["position"] = position + 1  # before the yield: a snapshot taken now counts it
            whole = len(batch) == batch_size
            if whole or (left == 1 and len(batch)):  # a whole batch, or the shard's last samples
                if whole or not drop_last:
                    yield batch.result()
                batch = None

    def _visits(self):
        """The windows of this process's pass, in order: (window index, epoch, shard, position
        in the shard, windows left in the shard from this one). The pass (epoch, resume) starts
        at the first ``next()``; the caller moves ``self._pass['position']`` past each window
        once it is done with it."""
        (rank, world), (worker, num_workers) = self._dist(), self._worker()
        if num_workers:  # a DataLoader worker: one intra-op thread (see the module docstring)
            torch.set_num_threads(1)
        epoch, resume = self._start_pass()
        workers = max(num_workers, 1)
        shard, start = rank * workers + worker, 0
        if resume is not None:
            self._check_layout(resume, world, num_workers)
            start = int(resume["consumed"].get(shard, 0))
        indices = self.shard_indices(epoch, rank, world, worker, workers)
        self._pass = {"epoch": epoch, "shard": shard, "position": start, "num_workers": num_workers}
        for positions in self._prepared_blocks(indices, start):
            for position in positions:
                yield int(indices[position]), epoch, shard, position, len(indices) - position

    def _prepared_blocks(self, indices: np.ndarray, start: int):
        """The positions ``start..`` of a shard in blocks of ``block_size``, each yielded once its
        chunks are in: all the chunks its windows need (:meth:`window_chunks`) fetched at once,
        the next block's set in flight on the prefetch thread, then this block's decoded on the
        decode pool (:meth:`CubeReader.decode`). A failure here is not raised: the windows then read
        their chunks one by one and report it as their own :class:`SampleError`."""
        b, n = self.config.block_size, len(indices)
        blocks = [range(max(lo, start), min(lo + b, n)) for lo in range(start - start % b, n, b)]
        chunks = self._block_chunks(indices, blocks[0]) if blocks else []
        for k, positions in enumerate(blocks):
            current = chunks
            chunks = self._block_chunks(indices, blocks[k + 1]) if k + 1 < len(blocks) else []
            try:
                self.reader.keep_ahead(current)
                self.reader.fetch(current)
                # the next block's own chunks: those it shares with this one are fetched and
                # decoded here already
                in_current = set(current)
                self.reader.prefetch([key for key in chunks if key not in in_current])
                self.reader.decode(current)
            except Exception as e:
                log.debug("block fetch failed (the windows retry one by one): %s: %s", type(e).__name__, e)
            yield positions

    def _block_chunks(self, indices: np.ndarray, positions: range) -> list:
        """The chunks the windows at ``positions`` need, each once."""
        keys: dict = {}
        for position in positions:
            keys.update(dict.fromkeys(self.window_chunks(int(indices[position]))))
        return list(keys)

    def _sample_or_skip(self, index: int, epoch: int, shard: int, position: int, out: dict | None = None):
        """The numpy sample of one window (written into ``out`` where it can), or None when it
        failed and ``on_error='skip'``."""
        try:
            return self.sample(index, epoch=epoch, shard=shard, position=position, out=out)
        except Exception as e:
            w = self.windows[index]
            err = SampleError(f"{self.reader.url}: window patch {w.patch} centred {w.centre}: {type(e).__name__}: {e}")
            if self.config.on_error == "raise":
                raise err from e
            self.skipped += 1
            log.warning("skipped %s", err)
            return None

    # -- one sample ------------------------------------------------------------------------------
    def sample(self, index: int, *, epoch: int | None = None, shard: int = -1, position: int = -1,
               out: dict | None = None) -> dict:
        """The numpy sample of window ``index`` (corruption drawn for ``epoch``, default current);
        ``out``: arrays of one batch slot that :func:`loaders.sample.assemble` writes into."""
        epoch = self.epoch if epoch is None else epoch
        w = self.windows[index]
        rng = sample_rng(self.config.seed, epoch, index)
        info = {"patch": w.patch, "split": w.split, "day": str(w.centre), "window_days": self.windows.window,
                "x_source": self.config.x.source, "eo_source": self.config.eo.source,
                "epoch": epoch, "index": index, "shard": shard, "position": position}
        return assemble(self.read_window(w, north_up=True), self.config, rng, centre_day=w.centre,
                        coords=(w.lat_center, w.lon_center), info=info, out=out)

    def read_window(self, w: Window, north_up: bool = False) -> WindowData:
        """The cube arrays one window needs (cube orientation, or rows reversed with ``north_up``)."""
        r = self.reader
        used, counts = self._snapshots(w)
        # each snapshot: the cached chunk itself, read-only, when the tile is one chunk (no copy)
        glorys = [r.read("glorys/thetao", slice(int(s), int(s) + 1), w.rows, w.cols, north_up=north_up,
                         copy=False)[0] for s in used]
        profiles = None
        if self.config.x.source == "argo":
            profiles = r.profile_cells(w.time, w.rows, w.cols, north_up=north_up)
        ocean, bottom, water, water_bits = self._tile_statics(w, north_up, len(glorys[0]))
        finite = all(self._finite_over_water(w, int(s), snap, water) for s, snap in zip(used, glorys))
        return WindowData(
            sst_k=(r.read("ostia/analysed_sst", w.time, w.rows, w.cols, north_up=north_up)
                   if self.config.eo.source == "ostia" else None),
            glorys=glorys, glorys_days=counts, count=None, total=None, profiles=profiles,
            ocean=ocean, bottom_level=bottom, north_up=north_up, water=water, water_bits=water_bits,
            glorys_finite=finite,
        )

    def _finite_over_water(self, w: Window, snapshot: int, values: np.ndarray, water: np.ndarray) -> bool:
        """:func:`loaders.sample.finite_over_water` of one snapshot over a tile, checked once per
        (tile, snapshot) for the stream's life (the cube is read-only; every window of the tile
        whose days are nearest to that snapshot shares the answer), kept as one byte per pair."""
        known = self._finite.get(w.patch)
        if known is None:  # -1: not checked yet
            known = self._finite[w.patch] = np.full(len(self.reader.glorys_times), -1, np.int8)
        if known[snapshot] < 0:
            known[snapshot] = finite_over_water(values, water)
        return bool(known[snapshot])

    def _snapshots(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """The GLORYS snapshots nearest to the window's days, and how many days each serves
        (read-only; kept per window days: a window's chunk list and its read both ask)."""
        key = (w.time.start, w.time.stop)
        found = self._nearest.get(key)
        if found is None:
            if len(self._nearest) >= 4096:
                self._nearest.clear()
            found = np.unique(nearest_snapshots(self.reader.days[w.time], self.reader.glorys_times), return_counts=True)
            for a in found:
                a.flags.writeable = False
            self._nearest[key] = found
        return found

    def window_chunks(self, index: int) -> list[tuple[str, tuple[int, ...]]]:
        """The ``(array path, chunk index)`` of every chunk :meth:`read_window` reads for window
        ``index``, each once, in read order.

        That is: the chunks of ``glorys/thetao`` holding the snapshots nearest to the window's days
        (all levels) over the tile's rows and columns; for ``argo`` x, the chunks of the
        observation table (``profiles/obs_day``, ``obs_row``, ``obs_col``, then ``obs_count`` and
        ``obs_sum``) that the index ranges of the window's (time block, lat block, lon block)s
        touch; and the chunks of ``ostia/analysed_sst`` over the window days and the tile (``ostia``
        eo), both sides of the dateline for a wrapping tile. The ``obs_count``/``obs_sum`` chunks
        are an upper bound: :meth:`CubeReader.profile_cells` decodes only those holding a row of
        the window. The static masks and the table's index are read once per cube, not per
        window, and are not listed.
        """
        w = self.windows[int(index)]
        keys: dict[tuple, None] = {}
        for s in self._snapshots(w)[0]:
            keys.update(self._box_keys("glorys/thetao", slice(int(s), int(s) + 1), w))
        if self.config.x.source == "argo":
            keys.update(dict.fromkeys(self._table_chunks(w)))
        if self.config.eo.source == "ostia":
            keys.update(self._box_keys("ostia/analysed_sst", w.time, w))
        return list(keys)

    def _box_keys(self, path: str, lead: slice, w: Window) -> dict[tuple, None]:
        arr = self.reader.array(path)
        return dict.fromkeys((path, k) for k in box_chunks(arr.shape, arr.chunks, lead, w.rows, w.cols))

    def _table_chunks(self, w: Window) -> list[tuple[str, tuple[int, ...]]]:
        """The observation-table chunks the index ranges of window ``w`` touch, in read order."""
        ranges = [r for _, r in self.reader.profile_index.ranges(w.time, w.rows, w.cols)]
        keys: dict[tuple, None] = {}
        for a, b in ranges:
            for f in ("day", "row", "col"):
                keys.update(dict.fromkeys(table_chunk_keys(self.reader.array(f"profiles/obs_{f}"), f, a, b)))
        for f in ("count", "sum"):
            for a, b in ranges:
                keys.update(dict.fromkeys(table_chunk_keys(self.reader.array(f"profiles/obs_{f}"), f, a, b)))
        return list(keys)

    def _tile_statics(self, w: Window, north_up: bool, n_levels: int):
        """Ocean mask, bottom level, water column and the water column as int32 words
        (:func:`loaders.sample.word_mask`) of a tile, cached for the last few tiles (consecutive
        windows of a block share their tile)."""
        key = (w.patch, north_up)
        if key not in self._statics:
            flip = slice(None, None, -1) if north_up else slice(None)
            ocean = self.reader.ocean_mask[w.rows][:, w.cols][flip]
            bottom = self.reader.bottom_level[w.rows][:, w.cols][flip]
            if len(self._statics) >= 8:
                self._statics.pop(next(iter(self._statics)))
            water = water_column(ocean, bottom, n_levels)
            self._statics[key] = (ocean, bottom, water, word_mask(water))
        return self._statics[key]

    # -- resume ----------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Identity of this stream's windows: cube grid, patches, days and the split's window rows."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256()
            h.update(np.asarray(self.reader.days).astype("datetime64[D]").astype(np.int64).tobytes())
            h.update(self.reader.patches[["row0", "col0", "lat0", "lon0"]].to_numpy(np.float64).tobytes())
            rows = self.windows.rows
            h.update(rows["patch"].to_numpy(np.int64).tobytes())
            h.update(rows["day_index"].to_numpy(np.int64).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def make_state(self, epoch: int, consumed: dict, num_workers: int) -> dict:
        """A resumable state: ``consumed`` samples (positions) per shard of epoch ``epoch``."""
        world = self._dist()[1]
        return {"format": STATE_FORMAT, "cube": self.reader.url, "fingerprint": self.fingerprint,
                "split": self.split, "n_windows": len(self.windows), "seed": self.config.seed,
                "block_size": self.config.block_size, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "world_size": world, "num_workers": int(num_workers), "epoch": int(epoch),
                "consumed": {int(k): int(v) for k, v in consumed.items()}}

    def state_dict(self) -> dict:
        """Position of this process's pass (what torchdata's StatefulDataLoader snapshots in each
        worker); before any pass, the state that the next pass starts from."""
        p = self._pass
        if p is not None:
            return self.make_state(p["epoch"], {p["shard"]: p["position"]}, p["num_workers"])
        epoch = self.next_epoch()
        return self.make_state(epoch, self.resuming(epoch) or {}, self._worker()[1])

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (or :meth:`StreamLoader.state_dict`): the next pass is the
        state's epoch and skips what it consumed; a finished epoch resumes at the next one."""
        self.check_state(state)
        epoch, consumed = int(state["epoch"]), {int(k): int(v) for k, v in state["consumed"].items()}
        rows = self._rows()
        self._resume = {**state, "epoch": epoch, "consumed": consumed}
        self._pass = None
        if get_worker_info() is None and consumed and self._epoch_done(epoch, consumed, state):
            self._clock[rows, _PINNED], self._clock[rows, _LAST] = 0, epoch  # auto: next pass is epoch + 1
        else:
            self._clock[rows, _NEXT], self._clock[rows, _PINNED] = epoch, 1
        self._clock[rows, _RESUME] = 1

    def _epoch_done(self, epoch: int, consumed: dict, state: dict) -> bool:
        world, workers = int(state["world_size"]), max(int(state["num_workers"]), 1)
        rank = self._dist()[0]
        return all(consumed.get(rank * workers + w, 0) >= len(self.shard_indices(epoch, rank, world, w, workers))
                   for w in range(workers))

    def check_state(self, state: dict, num_workers: int | None = None) -> None:
        """ValueError naming every way ``state`` does not fit this stream (cube, split, order,
        world size; worker count when ``num_workers`` is given)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a CubeStream state (format {STATE_FORMAT!r} expected, "
                             f"got {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
        mine = self.make_state(0, {}, int(state["num_workers"]) if num_workers is None else num_workers)
        keys = ["fingerprint", "split", "n_windows", "seed", "block_size", "shuffle", "drop_last", "world_size",
                "num_workers"]
        diffs = [f"{k} {state[k]!r} (this stream: {mine[k]!r})" for k in keys if state.get(k) != mine[k]]
        if diffs:
            other = " of another cube" if state.get("fingerprint") != mine["fingerprint"] else ""
            raise ValueError(f"cannot resume {self.reader.url} ({self.split}): the state is{other} from "
                             f"{state.get('cube')} and differs in " + ", ".join(diffs))

    def _check_layout(self, resume: dict, world: int, workers: int) -> None:
        """The running layout is the one the resumed state was saved with."""
        if (int(resume["world_size"]), int(resume["num_workers"])) != (world, workers):
            raise ValueError(f"cannot resume {self.reader.url} ({self.split}): the state was saved with world size "
                             f"{resume['world_size']} and {resume['num_workers']} workers per rank, this run has "
                             f"world size {world} and {workers}")

    def as_map(self) -> "CubeMap":
        """Map-style view (``ds[i]``) for indexed validation access."""
        return CubeMap(self)


class CubeMap(Dataset):
    """Indexed access to the same windows and samples as a :class:`CubeStream` (epoch fixed)."""

    def __init__(self, stream: CubeStream):
        self.stream = stream

    def __len__(self) -> int:
        return len(self.stream.windows)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return to_torch(self.stream.sample(i))


def table_chunk_keys(arr, field: str, start: int, stop: int) -> list[tuple[str, tuple[int, ...]]]:
    """``(profiles/obs_<field>, chunk index)`` of the chunks holding table rows [start, stop)."""
    per_chunk = arr.chunks[0]
    return [(f"profiles/obs_{field}", (k,) + (0,) * (arr.ndim - 1))
            for k in range(start // per_chunk, (stop - 1) // per_chunk + 1)] if stop > start else []


def box_chunks(shape: tuple[int, ...], chunks: tuple[int, ...], lead: slice, rows: slice,
               cols: np.ndarray | slice) -> list[tuple[int, ...]]:
    """Chunk indices of an array ``(lead, *middle, rows, cols)`` that ``[lead, :, ..., rows, cols]``
    touches (``cols`` an index array for a dateline-wrapping tile), in C order."""
    if isinstance(cols, slice):
        col_chunks = range(cols.start // chunks[-1], (cols.stop - 1) // chunks[-1] + 1)
    else:
        col_chunks = [int(c) for c in np.unique(np.asarray(cols) // chunks[-1])]
    per_dim = [range(lead.start // chunks[0], (lead.stop - 1) // chunks[0] + 1)]
    per_dim += [range(-(-shape[d] // chunks[d])) for d in range(1, len(shape) - 2)]
    per_dim += [range(rows.start // chunks[-2], (rows.stop - 1) // chunks[-2] + 1), col_chunks]
    return list(itertools.product(*per_dim))  # the last dimension fastest: C order


def in_place_batches(stream: CubeStream, dataloader_kwargs: dict) -> tuple[IterableDataset, dict]:
    """``(dataset, kwargs)`` for a DataLoader (or torchdata's StatefulDataLoader) that yields what
    ``DataLoader(stream, **dataloader_kwargs)`` yields, batches assembled in place: with a
    ``batch_size`` (default 1) and no ``collate_fn``, :meth:`CubeStream.batched` (``drop_last``
    moved into it) under ``batch_size=None``; otherwise the stream and the arguments as given."""
    batch_size = dataloader_kwargs.get("batch_size", 1)
    if batch_size is None or dataloader_kwargs.get("collate_fn") is not None:
        return stream, dataloader_kwargs
    kwargs = {k: v for k, v in dataloader_kwargs.items() if k != "drop_last"}
    batches = stream.batched(batch_size, bool(dataloader_kwargs.get("drop_last", False)), kwargs.get("num_workers", 0))
    return batches, {**kwargs, "batch_size": None}


def _stop_workers(loader: DataLoader, iterator) -> None:
    """Shut a DataLoader iterator's worker processes down at once (and forget it when the loader
    keeps persistent workers, so the next epoch starts fresh ones)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    if getattr(loader, "_iterator", None) is iterator:
        loader._iterator = None


def _as_list(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def to_torch(sample: dict) -> dict:
    """numpy sample -> tensors (bool masks stay bool, ``date`` int64, ``info`` untouched)."""
    out = {}
    for k, v in sample.items():
        if k == "info":
            out[k] = v
        elif isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        else:
            out[k] = torch.as_tensor(v)
    return out


class StreamLoader:
    """A plain DataLoader over a :class:`CubeStream` that counts what the training loop consumed.

    With a ``batch_size`` (default 1, as DataLoader) and no ``collate_fn`` the DataLoader runs
    over :meth:`CubeStream.batched` (``batch_size=None``): the same batches, each sample written
    straight into the batch instead of stacked afterwards.

    ``for batch in loader`` yields collated batches; each batch is counted as consumed when the
    next one is requested (so a checkpoint taken inside the loop body excludes the batch being
    processed only if the step did not finish: call ``loader.commit()`` after the optimiser step
    to count it immediately). ``state_dict()`` is a :meth:`CubeStream.make_state` of what was
    consumed. Epochs: ``stream.set_epoch(e)`` or ``loader.set_epoch(e)``, or nothing (each
    pass starts the next epoch). torchdata's ``StatefulDataLoader(stream)`` does the same
    without ``skipped`` and ``commit``.
    """

    def __init__(self, stream: CubeStream, **dataloader_kwargs):
        self.stream = stream
        self.kwargs = dataloader_kwargs
        self._pending = None
        self.num_workers = dataloader_kwargs.get("num_workers", 0)
        self._shards = max(self.num_workers, 1)
        dataset, kwargs = in_place_batches(stream, dataloader_kwargs)
        self.loader = DataLoader(dataset, **kwargs)
        self.epoch = stream.next_epoch()
        self.consumed: dict[int, int] = {}
        self._start: dict[int, int] = {}
        self._received: dict[int, int] = {}
        self._epoch_done = False

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __iter__(self):
        self.epoch = self.stream.next_epoch()
        self.consumed = dict(self.stream.resuming(self.epoch) or {})
        self._start, self._received, self._epoch_done = dict(self.consumed), {}, False
        iterator = iter(self.loader)
        try:
            for batch in iterator:
                self.commit()
                self._pending = batch
                yield batch
        except BaseException:
            # An error (a SampleError from a worker, a dead worker) or the caller leaving the loop:
            # stop the workers now; left to garbage collection this waits 5 s per worker.
            _stop_workers(self.loader, iterator)
            raise
        self.commit()
        self._epoch_done = True

    def commit(self):
        """Count the batch last yielded as consumed (call after the optimiser step)."""
        if self._pending is not None:
            info = self._pending["info"]
            for s, p in zip(_as_list(info["shard"]), _as_list(info["position"])):
                # Up to the position after the last sample received: windows a shard skipped
                # before it (on_error='skip') are not visited again on resume.
                self.consumed[int(s)] = max(self.consumed.get(int(s), 0), int(p) + 1)
                self._received[int(s)] = self._received.get(int(s), 0) + 1
            self._pending = None

    @property
    def skipped(self) -> int:
        """Windows skipped (``on_error='skip'``) in this epoch so far, by every worker.

        Counted in the training process from the positions of the samples received: a window
        of a shard before its last received sample that did not arrive was skipped; once the
        epoch is over, so was every window after it."""
        rank, world = self.stream._dist()
        total = 0
        for worker in range(self._shards):
            shard = rank * self._shards + worker
            reached = (len(self.stream.shard_indices(self.epoch, rank, world, worker, self._shards))
                       if self._epoch_done else self.consumed.get(shard, 0))
            total += max(reached - self._start.get(shard, 0), 0) - self._received.get(shard, 0)
        return total

    def __len__(self) -> int:
        """Batches per epoch on this rank (each worker batches its own shard)."""
        return self.stream.num_batches(self.kwargs.get("batch_size", 1) or 1, self.num_workers,
                                       self.kwargs.get("drop_last", False))

    def state_dict(self) -> dict:
        return self.stream.make_state(self.epoch, self.consumed, self.num_workers)

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (before iterating); a state of another cube, split, world
        size or worker count is a ValueError naming what differs."""
        self.stream.check_state(state, num_workers=self.num_workers)
        self.stream.load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.consumed = {int(k): int(v) for k, v in state["consumed"].items()}
