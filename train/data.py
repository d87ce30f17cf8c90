"""Data module: train/val streams over the cube's patch-index splits and the DataLoader settings
that keep a GPU fed (REFERENCE.md 8.1, DESIGN.md 6).

* train: ``CubeStream(split=train, shuffle=True)`` through :class:`TrainLoader` (a
  ``loaders.StreamLoader`` that tracks consumption for mid-epoch resume), ``pin_memory`` on CUDA,
  ``persistent_workers`` and ``prefetch_factor`` when there are workers;
* val: ``CubeStream(split=val, shuffle=False)`` through a plain DataLoader (no consumption
  tracking: every validation pass starts from the first window);
* :func:`to_device` moves a batch with ``non_blocking=True`` (overlaps the copy with compute when
  the batch is pinned).

Why :class:`TrainLoader` is more than ``StreamLoader``: with ``persistent_workers`` each worker
keeps its own copy of the stream, so ``stream.set_epoch`` in the main process would never reach
it and every epoch would repeat epoch 0's order and corruption. The epoch therefore travels in a
shared-memory tensor that each worker reads when its iterator restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

from loaders.config import DatasetConfig, load_dataset_config
from loaders.stream import CubeStream, StreamLoader

from .config import LoaderConfig, TrainConfig


class _EpochSynced(IterableDataset):
    """Wraps a CubeStream; ``shared_epoch`` (shared memory) reaches persistent workers."""

    def __init__(self, stream: CubeStream):
        super().__init__()
        self.stream = stream
        self.shared_epoch = torch.full((), stream.epoch, dtype=torch.int64).share_memory_()

    def __iter__(self):
        self.stream.set_epoch(int(self.shared_epoch))
        return iter(self.stream)


class TrainLoader(StreamLoader):
    """``StreamLoader`` whose :meth:`set_epoch` also reaches persistent DataLoader workers.

    Call ``set_epoch(e)`` before iterating epoch ``e`` and ``commit()`` after each optimiser step;
    ``state_dict()`` / ``load_state_dict()`` are the stream's (epoch + samples consumed per shard).
    Load a state before the first iteration (workers copy the stream when they start).
    """

    def __init__(self, stream: CubeStream, **dataloader_kwargs):
        super().__init__(stream, **dataloader_kwargs)
        self.synced = _EpochSynced(stream)
        self.loader = DataLoader(self.synced, **dataloader_kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` in this process and in every (persistent) worker."""
        self.stream.set_epoch(epoch)
        self.synced.shared_epoch.fill_(int(epoch))

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
        self.synced.shared_epoch.fill_(self.stream.epoch)


@dataclass
class DataModule:
    """Train and val streams of one cube, one sample mode and one set of loader settings."""

    cube: str
    dataset: DatasetConfig
    loader: LoaderConfig
    device: torch.device
    train_split: str = "train"
    val_split: str = "val"
    rank: int | None = None
    world_size: int | None = None

    def __post_init__(self):
        if "://" not in str(self.cube) and not Path(self.cube).exists():
            raise FileNotFoundError(f"{self.cube}: no cube here (run `make cube` or `depthcube build` first)")

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: torch.device, **kwargs) -> "DataModule":
        """Data module of a :class:`TrainConfig` (dataset preset loaded from its YAML)."""
        dataset = load_dataset_config(cfg.data.dataset_config, cfg.data.preset)
        return cls(cfg.data.cube, dataset, cfg.loader, device, cfg.data.train_split, cfg.data.val_split, **kwargs)

    def stream(self, split: str, shuffle: bool) -> CubeStream:
        """A fresh CubeStream of ``split`` (rank/world size passed through for DDP)."""
        return CubeStream(self.cube, self.dataset, split, shuffle=shuffle, rank=self.rank,
                          world_size=self.world_size, cache_bytes=self.loader.cache_mb * 2**20)

    def loader_kwargs(self, train: bool) -> dict:
        """DataLoader keyword arguments (pinning on CUDA; worker-only options only with workers)."""
        cfg = self.loader
        workers = cfg.num_workers if train else cfg.val_num_workers
        pin = cfg.pin_memory if cfg.pin_memory is not None else self.device.type == "cuda"
        kwargs = {"batch_size": cfg.batch_size if train else cfg.val_batch_size, "num_workers": workers,
                  "pin_memory": bool(pin and torch.cuda.is_available())}
        if workers > 0:
            kwargs.update(persistent_workers=cfg.persistent_workers, prefetch_factor=cfg.prefetch_factor)
            if cfg.multiprocessing_context:
                kwargs["multiprocessing_context"] = cfg.multiprocessing_context
        return kwargs

    def train_loader(self, stream: CubeStream | None = None) -> TrainLoader:
        """Shuffled, resumable loader over the train split."""
        return TrainLoader(stream or self.stream(self.train_split, shuffle=True), **self.loader_kwargs(True))

    def val_loader(self) -> DataLoader:
        """Deterministic loader over the val split (same windows and corruption every pass)."""
        return DataLoader(self.stream(self.val_split, shuffle=False), **self.loader_kwargs(False))


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of ``batch`` on ``device`` (non-blocking on CUDA); ``info`` and non-tensors stay."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}
