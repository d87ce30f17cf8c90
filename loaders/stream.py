"""``CubeStream``: the torch IterableDataset that feeds training from a cube.

Order and sharding. The split's windows are sorted by (patch, day) and cut into blocks of
``block_size`` consecutive windows (same tile, neighbouring days: they share Zarr chunks). Each
epoch shuffles the *block order* with ``(seed, epoch)`` and deals blocks round-robin to the
``world_size x num_workers`` shards (DDP rank-major, then DataLoader worker). Shards are disjoint
and together complete; each reads whole blocks, so a chunk is decoded once per visit.

Randomness. Corruption and augmentation of window ``i`` in epoch ``e`` use
``sample_rng(seed, e, i)``: reproducible, and new every epoch (REFERENCE.md 11.15 fixed).

Resume. Every sample's ``info`` carries its ``shard`` and ``position`` in that shard. The trainer
passes consumed batches to :meth:`CubeStream.track` (``StreamLoader`` does it for you);
``state_dict()`` records the epoch and the samples consumed per shard, and after
``load_state_dict`` each shard skips exactly what was consumed. Requires the same world size and
worker count on resume (checked).

Workers. The stream pickles only small arrays and the cube URL; each worker opens the store
lazily, so fork, forkserver and spawn all work.

Faults. A window whose sample cannot be built (an unreadable chunk, a non-finite value that
would reach the model) raises :class:`SampleError` naming the cube, the patch and the centre
day; with ``on_error='raise'`` (default) it propagates, from a DataLoader worker too (torch
re-raises it in the training process with the worker's traceback); with ``on_error='skip'`` the
window is logged and skipped. Skips happen inside workers, so the training process counts them
from what it receives: :attr:`StreamLoader.skipped`. A worker that dies (killed, segfault)
makes the DataLoader raise ``RuntimeError: DataLoader worker ... exited unexpectedly`` instead
of hanging; a stuck one is caught by the DataLoader's ``timeout=`` (pass it to StreamLoader).
"""

from __future__ import annotations

import logging
import time as _time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from cube.errors import ConfigError

from .config import DatasetConfig
from .corruption import sample_rng
from .reader import CubeReader
from .sample import WindowData, assemble, nearest_snapshots, water_column
from .windows import Window, Windows, check_cube_serves

log = logging.getLogger("depthcube.loaders")


class SampleError(RuntimeError):
    """Building one window's sample failed; names the patch and the day."""


class CubeStream(IterableDataset):
    def __init__(self, cube: str, config: DatasetConfig | None = None, split: str = "train", *,
                 shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 cache_bytes: int = 256 * 2**20, storage_options: dict | None = None):
        super().__init__()
        self.config = config or DatasetConfig()
        self.split = split
        self.shuffle = shuffle
        self.reader = CubeReader(cube, cache_bytes=cache_bytes, storage_options=storage_options)
        n_days = len(self.reader.days)
        if n_days < self.config.window:
            raise ConfigError(f"window_days: a window of {self.config.window} days is longer than the "
                              f"{n_days} days of the cube {self.reader.url}")
        check_cube_serves(self.reader, self.config)
        self.windows = Windows(self.reader, self.config, split)
        self._rank, self._world = rank, world_size
        self._statics: dict = {}
        self.epoch = 0
        self.consumed: dict[int, int] = {}
        self._n_shards_seen: int | None = None
        self.skipped = 0

    # -- epoch order and sharding --------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (new shuffle and corruption draws); forgets consumption."""
        if epoch != self.epoch:
            self.consumed = {}
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.windows)

    def blocks(self, epoch: int) -> list[np.ndarray]:
        n, b = len(self.windows), self.config.block_size
        blocks = [np.arange(s, min(s + b, n)) for s in range(0, n, b)]
        if self.shuffle:
            order = np.random.default_rng([self.config.seed, epoch]).permutation(len(blocks))
            blocks = [blocks[k] for k in order]
        return blocks

    def shard_indices(self, epoch: int, shard: int, n_shards: int) -> np.ndarray:
        """Window indices of one shard, in yield order (disjoint across shards, complete together)."""
        mine = self.blocks(epoch)[shard::n_shards]
        return np.concatenate(mine) if mine else np.zeros(0, np.int64)

    def _dist(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _shard(self) -> tuple[int, int]:
        rank, world = self._dist()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return rank * workers + worker, world * workers

    def __iter__(self):
        shard, n_shards = self._shard()
        if self._n_shards_seen not in (None, n_shards) and self.consumed:
            raise ValueError(f"resuming with {n_shards} shards, but the state was saved with {self._n_shards_seen}")
        indices = self.shard_indices(self.epoch, shard, n_shards)
        start = self.consumed.get(shard, 0)
        for position in range(start, len(indices)):
            sample = self._sample_or_skip(int(indices[position]), shard, position)
            if sample is not None:
                yield sample

    def _sample_or_skip(self, index: int, shard: int, position: int):
        try:
            return to_torch(check_finite(self.sample(index, shard=shard, position=position)))
        except Exception as e:
            w = self.windows[index]
            err = SampleError(f"{self.reader.url}: window patch {w.patch} centred {w.centre}: {type(e).__name__}: {e}")
            if self.config.on_error == "raise":
                raise err from e
            self.skipped += 1
            log.warning("skipped %s", err)
            return None

    # -- one sample ------------------------------------------------------------------------------
    def sample(self, index: int, *, epoch: int | None = None, shard: int = -1, position: int = -1) -> dict:
        """The numpy sample of window ``index`` (corruption drawn for ``epoch``, default current)."""
        epoch = self.epoch if epoch is None else epoch
        w = self.windows[index]
        rng = sample_rng(self.config.seed, epoch, index)
        info = {"patch": w.patch, "split": w.split, "day": str(w.centre), "window_days": self.windows.window,
                "x_source": self.config.x.source, "eo_source": self.config.eo.source,
                "epoch": epoch, "index": index, "shard": shard, "position": position}
        return assemble(self.read_window(w, north_up=True), self.config, rng, centre_day=w.centre,
                        coords=(w.lat_center, w.lon_center), info=info)

    def read_window(self, w: Window, north_up: bool = False) -> WindowData:
        """The cube arrays one window needs (cube orientation, or rows reversed with ``north_up``)."""
        r = self.reader
        days = r.days[w.time]
        nearest = nearest_snapshots(days, r.glorys_times)
        used, counts = np.unique(nearest, return_counts=True)
        glorys = np.stack([r.read("glorys/thetao", slice(int(s), int(s) + 1), w.rows, w.cols, north_up=north_up)[0]
                           for s in used])
        count = total = None
        if self.config.x.source == "argo":
            count, total = r.profile_sums(w.time, w.rows, w.cols, north_up=north_up)
        ocean, bottom, water = self._tile_statics(w, north_up, glorys.shape[1])
        return WindowData(
            sst_k=(r.read("ostia/analysed_sst", w.time, w.rows, w.cols, north_up=north_up)
                   if self.config.eo.source == "ostia" else None),
            glorys=glorys, glorys_days=counts, count=count, total=total,
            ocean=ocean, bottom_level=bottom, north_up=north_up, water=water,
        )

    def _tile_statics(self, w: Window, north_up: bool, n_levels: int):
        """Ocean mask, bottom level and water column of a tile, cached for the last few tiles
        (consecutive windows of a block share their tile)."""
        key = (w.patch, north_up)
        if key not in self._statics:
            flip = slice(None, None, -1) if north_up else slice(None)
            ocean = self.reader.ocean_mask[w.rows][:, w.cols][flip]
            bottom = self.reader.bottom_level[w.rows][:, w.cols][flip]
            if len(self._statics) >= 8:
                self._statics.pop(next(iter(self._statics)))
            self._statics[key] = (ocean, bottom, water_column(ocean, bottom, n_levels))
        return self._statics[key]

    # -- resume ----------------------------------------------------------------------------------
    def track(self, batch: dict) -> None:
        """Count a batch as consumed (call in the training process for every batch used).

        A shard is consumed up to the position after its last sample received, so windows it
        skipped before that sample (``on_error='skip'``) are not visited again on resume."""
        info = batch["info"]
        for s, p in zip(_as_list(info["shard"]), _as_list(info["position"])):
            self.consumed[int(s)] = max(self.consumed.get(int(s), 0), int(p) + 1)
        self._n_shards_seen = self._n_shards_seen or self._shard_count_hint

    _shard_count_hint: int | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": dict(self.consumed), "n_shards": self._n_shards_seen,
                "split": self.split, "n_windows": len(self.windows)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n_windows") not in (None, len(self.windows)):
            raise ValueError(f"state is for {state['n_windows']} windows, this stream has {len(self.windows)}")
        self.epoch = int(state["epoch"])
        self.consumed = {int(k): int(v) for k, v in state.get("consumed", {}).items()}
        self._n_shards_seen = state.get("n_shards")

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


def check_finite(sample: dict) -> dict:
    """The sample, or ValueError naming the first float array holding NaN or inf (the model must
    never see one; the stream turns this into a SampleError)."""
    for key, value in sample.items():
        # One reduction, no temporary: the sum of small z-scores is finite iff every value is.
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value.sum(dtype=np.float64)):
            bad = int((~np.isfinite(value)).sum())
            if bad:
                raise ValueError(f"{key} holds {bad} non-finite values")
    return sample


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
    """A DataLoader over a :class:`CubeStream` that tracks consumption for ``state_dict``.

    ``for batch in loader`` yields collated batches; each batch is counted as consumed when the
    next one is requested (so a checkpoint taken inside the loop body excludes the batch being
    processed only if the step did not finish: call ``loader.commit()`` after the optimiser step
    to count it immediately).
    """

    def __init__(self, stream: CubeStream, **dataloader_kwargs):
        self.stream = stream
        self.kwargs = dataloader_kwargs
        self._pending = None
        self._workers = max(dataloader_kwargs.get("num_workers", 0), 1)
        stream._shard_count_hint = stream._dist()[1] * self._workers
        self.loader = DataLoader(stream, **dataloader_kwargs)
        self._start: dict[int, int] = {}
        self._received: dict[int, int] = {}
        self._epoch_done = False

    def __iter__(self):
        self._start, self._received, self._epoch_done = dict(self.stream.consumed), {}, False
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
        if self._pending is not None:
            self.stream.track(self._pending)
            for s in _as_list(self._pending["info"]["shard"]):
                self._received[int(s)] = self._received.get(int(s), 0) + 1
            self._pending = None

    @property
    def skipped(self) -> int:
        """Windows skipped (``on_error='skip'``) in this epoch so far, by every worker.

        Counted in the training process from the positions of the samples received: a window
        of a shard before its last received sample that did not arrive was skipped; once the
        epoch is over, so was every window after it."""
        rank, world = self.stream._dist()
        n_shards = world * self._workers
        total = 0
        for shard in range(rank * self._workers, (rank + 1) * self._workers):
            reached = (len(self.stream.shard_indices(self.stream.epoch, shard, n_shards)) if self._epoch_done
                       else self.stream.consumed.get(shard, 0))
            total += max(reached - self._start.get(shard, 0), 0) - self._received.get(shard, 0)
        return total

    def __len__(self) -> int:
        bs = self.kwargs.get("batch_size", 1) or 1
        return -(-len(self.stream) // bs)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict):
        self.stream.load_state_dict(state)
