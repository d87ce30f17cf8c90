"""Data modules: train/val streams over the cube's patch-index splits and the DataLoader settings
that keep a GPU fed (REFERENCE.md 8.1, DESIGN.md 6).

* train: ``CubeStream(split=train, shuffle=True)`` through :class:`TrainLoader`, a torchdata
  ``StatefulDataLoader`` (its ``state_dict`` is the position of every worker, taken inside the
  workers, so a checkpoint resumes mid-epoch exactly), ``pin_memory`` on CUDA,
  ``persistent_workers`` and ``prefetch_factor`` when there are workers;
* val: ``CubeStream(split=val, shuffle=False).batched(...)`` through a plain DataLoader
  (``batch_size=None``: batches assembled in place; every validation pass starts from the first
  window, same windows and corruption every pass);
* :class:`CubeDataModule`: the same as a ``lightning.LightningDataModule``;
* :func:`to_device` moves a batch with ``non_blocking=True`` (overlaps the copy with compute when
  the batch is pinned).

Epochs need nothing here: ``CubeStream.set_epoch`` reaches persistent workers by itself, and
each pass over the stream starts the next epoch when nobody calls it (Lightning does not).
Under DDP each rank's stream takes its rank from the process group and yields as many samples
and batches as every other rank.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from loaders.config import DatasetConfig, load_dataset_config
from loaders.stream import CubeStream, in_place_batches

from .config import LoaderConfig, TrainConfig


class TrainLoader(StatefulDataLoader):
    """``StatefulDataLoader`` over a :class:`CubeStream` whose ``len()`` is the exact number of
    batches this rank yields per epoch (each worker batches its own shard), which Lightning uses
    to decide when an epoch is over. With a ``batch_size`` the loader runs over
    :meth:`CubeStream.batched` (``batch_size=None`` underneath): the same batches, each sample
    written straight into its batch; ``samples_per_batch`` is that batch size."""

    def __init__(self, stream: CubeStream, **kwargs):
        self.samples_per_batch = kwargs.get("batch_size", 1)
        self.batches_drop_last = bool(kwargs.get("drop_last", False))
        dataset, kwargs = in_place_batches(stream, kwargs)
        with warnings.catch_warnings():  # torchdata 0.11 calls a deprecated torch API on every loader
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
            super().__init__(dataset, **kwargs)
        self.stream = stream

    def __len__(self) -> int:
        return self.stream.num_batches(self.samples_per_batch or 1, self.num_workers, self.batches_drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Pin the next pass to ``epoch`` (in every worker)."""
        self.stream.set_epoch(epoch)


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
        """Shuffled, resumable loader over the train split (a StatefulDataLoader)."""
        return TrainLoader(stream or self.stream(self.train_split, shuffle=True), **self.loader_kwargs(True))

    def val_loader(self) -> DataLoader:
        """Deterministic loader over the val split (same windows and corruption every pass)."""
        dataset, kwargs = in_place_batches(self.stream(self.val_split, shuffle=False), self.loader_kwargs(False))
        return DataLoader(dataset, **kwargs)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of ``batch`` on ``device`` (non-blocking on CUDA); ``info`` and non-tensors stay."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _lightning_base():
    import lightning

    return lightning.LightningDataModule


class CubeDataModule(_lightning_base()):
    """The cube's train/val streams as a ``lightning.LightningDataModule``.

    ``CubeDataModule("data/cube.zarr", "configs/dataset.yaml", preset="argo_real", batch_size=32,
    num_workers=4)`` (or a :class:`DatasetConfig` instead of the YAML path). ``train_dataloader``
    is a :class:`TrainLoader` (torchdata ``StatefulDataLoader``): Lightning stores its state in
    every checkpoint and restores it, so ``fit(ckpt_path=...)`` from a mid-epoch checkpoint
    resumes the data position too. Each epoch Lightning starts is a new pass over the stream,
    hence a new shuffle and new corruption draws; the data module's own ``state_dict`` (the
    stream's next epoch) makes a checkpoint taken at the end of an epoch resume with a new epoch
    too (with persistent workers it may be numbered one higher than in an uninterrupted run:
    Lightning's restart starts and drops one pass). Other keyword arguments are
    :class:`LoaderConfig` fields (``prefetch_factor``, ``persistent_workers``, ``cache_mb`` ...).
    """

    def __init__(self, cube: str, dataset_config: DatasetConfig | str | Path = "configs/dataset.yaml", *,
                 preset: str | None = None, batch_size: int = 8, num_workers: int = 0,
                 train_split: str = "train", val_split: str = "val", **loader_options):
        super().__init__()
        if not isinstance(dataset_config, DatasetConfig):
            dataset_config = load_dataset_config(dataset_config, preset)
        loader = LoaderConfig(batch_size=batch_size, num_workers=num_workers, **loader_options)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.data = DataModule(str(cube), dataset_config, loader, device, train_split, val_split)
        self._train_stream: CubeStream | None = None
        self._next_epoch: int | None = None

    def train_dataloader(self) -> TrainLoader:
        loader = self.data.train_loader()
        if self._next_epoch is not None:
            loader.set_epoch(self._next_epoch)
        self._train_stream = loader.stream
        return loader

    def state_dict(self) -> dict:
        """The train stream's next epoch, saved in Lightning checkpoints: a checkpoint taken after
        an epoch's last batch holds no loader position (torchdata starts a fresh iterator), and
        without this the resumed run would replay epoch 0's order and corruption."""
        return {} if self._train_stream is None else {"next_epoch": self._train_stream.next_epoch()}

    def load_state_dict(self, state: dict) -> None:
        self._next_epoch = state.get("next_epoch")

    def val_dataloader(self) -> DataLoader:
        return self.data.val_loader()
