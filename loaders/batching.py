"""Batches assembled in place: each sample is written straight into its slot of the batch tensors.

A plain ``DataLoader(stream, batch_size=32)`` builds every sample as its own arrays and then
``default_collate`` stacks them: for an ``argo_real`` batch that is 32 x 8 MB written twice, the
second time into 256 MB of fresh memory, and on a 2-core box the stack alone took about a third
of the time of a batch (issue 13). :meth:`loaders.stream.CubeStream.batched` gives an
``IterableDataset`` of whole batches instead, for ``DataLoader(batches, batch_size=None)``:

* the batch's tensors come from a :class:`BatchMemory`: memory of an earlier batch is used again
  once torch has let go of every tensor (and view) of it, so the training loop may keep a batch
  as long as it likes, and steady training touches no fresh pages (fresh memory costs the kernel
  zeroing it first: 16 % of an argo_real run's time before). One :func:`process_memory` serves
  every stream of the process: later epochs, a validation stream, a new stream of the same shape
  and the short last batch (the first rows of a whole batch's memory) allocate nothing new, also
  when the loop fetches the next batch before it is done with the current one (Lightning's
  fetcher does for a loader without a length): up to four sets are kept. Inside a DataLoader
  worker the
  tensors are allocated in shared memory instead, where torch would otherwise copy them to send
  them to the training process;
* :func:`loaders.sample.assemble` writes the big fields of each sample into its slot
  (:class:`BatchBuilder`), and anything it returned as its own array is copied in;
* ``info`` is collated by torch's ``default_collate``, so a batch is exactly what
  ``default_collate`` makes of the same samples: same keys, dtypes, shapes and values.

Batch boundaries are those of ``DataLoader(stream, batch_size=B, drop_last=...)``: each worker
(or the main process) cuts its own shard into runs of ``B``, the last one shorter unless
``drop_last``. Epochs, resume (``state_dict``/``load_state_dict``, also through torchdata's
``StatefulDataLoader``) and ``set_epoch`` are the stream's own.
"""

from __future__ import annotations

import mmap
import os
import weakref

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info


class BatchMemory:
    """Batch tensors whose memory is used again once nothing refers to them any more.

    Each tensor is ``torch.from_numpy`` of a fresh view of a kept numpy array; torch holds that
    view for as long as the tensor or any view of it lives, so a dead weak reference to it means
    no tensor of that batch is left and the arrays can back the next batch. The arrays lie on
    4 KB pages unless ``huge_pages`` (default: ``DEPTHCUBE_BATCH_HUGE_PAGES=1`` in the
    environment; see :func:`_batch_array`). Keeps at most
    ``keep`` sets of arrays (the most recently used; a training loop holding one batch while the
    next is built needs two per batch shape, train and validation streams of other shapes two
    more); a set still in use when more are needed is left to whoever holds it."""

    def __init__(self, keep: int = 4, huge_pages: bool | None = None):
        self.keep = keep
        self.huge_pages = (os.environ.get("DEPTHCUBE_BATCH_HUGE_PAGES", "0") == "1") if huge_pages is None else huge_pages
        self.allocations = 0  # sets of arrays allocated so far
        self._sets: list[tuple[tuple, dict[str, np.ndarray], list]] = []  # least recently used first

    def tensors(self, specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, torch.Tensor]:
        """Uninitialised tensors of the given ``{key: (shape, dtype)}``."""
        signature = tuple((k, tuple(shape), np.dtype(dtype).str) for k, (shape, dtype) in specs.items())
        for i, (sig, arrays, leases) in enumerate(self._sets):
            if sig == signature and all(ref() is None for ref in leases):
                self._sets.pop(i)
                break
        else:
            arrays = {k: _batch_array(shape, dtype, self.huge_pages) for k, (shape, dtype) in specs.items()}
            self.allocations += 1
            if len(self._sets) >= self.keep:
                self._sets.pop(0)
        views = {k: a[...] for k, a in arrays.items()}  # new objects: torch holds these, we watch them
        self._sets.append((signature, arrays, [weakref.ref(v) for v in views.values()]))
        return {k: torch.from_numpy(v) for k, v in views.items()}

    def clear(self) -> None:
        """Let go of every kept set (batches still referenced stay valid; the rest is freed)."""
        self._sets.clear()


def _batch_array(shape: tuple[int, ...], dtype, huge_pages: bool) -> np.ndarray:
    """An uninitialised array for batch memory: on 4 KB pages (anonymous memory advised
    ``MADV_NOHUGEPAGE``) unless ``huge_pages``, then ``np.empty`` (numpy asks for 2 MB pages for
    arrays of 4 MB and more). Batch memory is touched once per process and reused ever after; on
    this project's VMs a fresh 2 MB page costs far more at first touch than 4 KB pages (the first
    pass of argo_real at batch 32: 187 against 321 samples/s), later passes run the same
    (``python -m bench.huge_pages --stream data/cube.zarr``)."""
    count = int(np.prod(shape))
    nbytes = count * np.dtype(dtype).itemsize
    if huge_pages or nbytes < 2**22 or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.empty(shape, dtype)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(block, dtype, count=count).reshape(shape)


_process_memory: tuple[int, BatchMemory] | None = None


def process_memory() -> BatchMemory:
    """This process's :class:`BatchMemory`, shared by every stream in it (kept across passes and
    streams, so every epoch after the first, a validation stream or a new stream of the same
    batch shape reuses the same pages; a forked child starts its own). It stays for the life of
    the process; ``process_memory().clear()`` frees it (e.g. in a notebook, after training)."""
    global _process_memory
    if _process_memory is None or _process_memory[0] != os.getpid():
        _process_memory = (os.getpid(), BatchMemory())
    return _process_memory[1]


class BatchBuilder:
    """The tensors of one batch of up to ``capacity`` samples, filled slot by slot.

    The first sample (:meth:`add`) fixes the keys, shapes and dtypes; from then on :meth:`slot`
    is a dict of numpy views of the next slot that the sample's assembly may write into.
    ``shared=True`` allocates the tensors in shared memory (for DataLoader workers), else they
    come from ``memory`` (a :class:`BatchMemory`) when given, else from torch."""

    def __init__(self, capacity: int, shared: bool = False, memory: BatchMemory | None = None):
        if capacity < 1:
            raise ValueError(f"a batch holds at least one sample, got capacity {capacity}")
        self.capacity, self.shared, self.memory = int(capacity), shared, memory
        self.tensors: dict[str, torch.Tensor] | None = None
        self._views: dict[str, np.ndarray] = {}
        self.infos: list[dict] = []

    def __len__(self) -> int:
        return len(self.infos)

    @property
    def full(self) -> bool:
        return len(self.infos) == self.capacity

    def slot(self) -> dict[str, np.ndarray] | None:
        """Numpy views of the next free slot, by key (None before the first sample)."""
        if self.tensors is None:
            return None
        i = len(self.infos)
        return {k: v[i, ...] for k, v in self._views.items()}  # [i, ...]: a view, 0-d ones too

    def add(self, sample: dict, slot: dict[str, np.ndarray] | None = None) -> None:
        """Put one numpy sample (``info`` and arrays) into the next slot; ``slot`` is the dict
        :meth:`slot` gave, whose arrays the sample may already hold (those are not copied)."""
        if self.full:
            raise ValueError(f"the batch is full ({self.capacity} samples)")
        arrays = {k: np.asarray(v) for k, v in sample.items() if k != "info"}
        if self.tensors is None:
            self._allocate(arrays)
        elif arrays.keys() != self.tensors.keys():
            raise ValueError(f"sample keys {sorted(arrays)} differ from the batch's {sorted(self.tensors)}")
        slot = slot if slot is not None else self.slot()
        for k, v in arrays.items():
            if v is not slot[k]:
                if v.shape != slot[k].shape or v.dtype != slot[k].dtype:
                    raise ValueError(f"{k}: sample has shape {v.shape} {v.dtype}, the batch's slot "
                                     f"{slot[k].shape} {slot[k].dtype}")
                np.copyto(slot[k], v)
        self.infos.append(sample["info"])

    def _allocate(self, arrays: dict[str, np.ndarray]) -> None:
        specs = {k: ((self.capacity,) + v.shape, v.dtype) for k, v in arrays.items()}
        if self.memory is not None and not self.shared:
            tensors = self.memory.tensors(specs)
        else:
            tensors = {}
            for k, (shape, dtype) in specs.items():
                t = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype)
                tensors[k] = t.share_memory_() if self.shared else t
        self.tensors = tensors
        self._views = {k: t.numpy() for k, t in tensors.items()}

    def result(self) -> dict:
        """The batch: the filled slots of every tensor (a view when short) and ``info`` collated
        by ``default_collate``, the batch ``DataLoader(batch_size=...)`` makes of these samples."""
        if not self.infos:
            raise ValueError("an empty batch")
        n = len(self.infos)
        batch = {k: (t if n == self.capacity else t[:n]) for k, t in self.tensors.items()}
        batch["info"] = default_collate(self.infos)
        return batch


class CubeBatches(IterableDataset):
    """The batches of a :class:`loaders.stream.CubeStream` (see the module docstring): for
    ``DataLoader(stream.batched(32), batch_size=None, ...)`` or torchdata's
    ``StatefulDataLoader`` the same way. ``len()`` is the number of batches without workers;
    with ``num_workers`` each worker batches its own shard (:meth:`CubeStream.num_batches`)."""

    def __init__(self, stream, batch_size: int, drop_last: bool = False, num_workers: int = 0):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.stream, self.batch_size, self.drop_last = stream, int(batch_size), bool(drop_last)
        self.num_workers = int(num_workers)

    def __iter__(self):
        return self.stream.iter_batches(self.batch_size, self.drop_last, shared=get_worker_info() is not None)

    def __len__(self) -> int:
        return self.stream.num_batches(self.batch_size, self.num_workers, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
