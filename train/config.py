"""Training config (configs/train.yaml): frozen dataclasses loaded with :func:`cube.spec.load_config`,
so unknown keys and wrong types are rejected with their key path (``train.yaml: loss.mode: ...``).

Relative paths (cube, dataset config, run folder) resolve by the one rule of :mod:`cube.spec`, as
for ``configs/cube.yaml``: against the repository root when the file lives in ``configs/``, else
against the file's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cube.spec import check, config_base, load_config, resolve_path


@dataclass(frozen=True)
class DataSection:
    """Which cube and which sample mode: a preset of ``dataset_config`` (configs/dataset.yaml)."""

    cube: str = "data/cube.zarr"
    dataset_config: str = "configs/dataset.yaml"
    preset: str | None = "argo_real"
    train_split: Literal["train", "all"] = "train"
    val_split: Literal["val", "train", "all"] = "val"


@dataclass(frozen=True)
class LoaderConfig:
    """DataLoader settings. ``pin_memory: null`` pins only when training on CUDA; persistent workers
    and ``prefetch_factor`` apply only with workers (torch rejects them otherwise)."""

    batch_size: int = 8
    val_batch_size: int = 4
    num_workers: int = 2
    val_num_workers: int = 0
    prefetch_factor: int = 2
    persistent_workers: bool = True
    pin_memory: bool | None = None
    multiprocessing_context: Literal["fork", "forkserver", "spawn"] | None = None
    cache_mb: int = 256

    def __post_init__(self):
        check(self.batch_size >= 1 and self.val_batch_size >= 1, "batch_size/val_batch_size: must be >= 1")
        check(self.num_workers >= 0 and self.val_num_workers >= 0, "num_workers/val_num_workers: must be >= 0")
        check(self.prefetch_factor >= 1, f"prefetch_factor: must be >= 1, got {self.prefetch_factor}")
        check(self.cache_mb >= 1, f"cache_mb: must be >= 1, got {self.cache_mb}")


@dataclass(frozen=True)
class ModelConfig:
    """``unet``: a compact conditional U-Net predicting y directly. ``diffusion``: the same U-Net as
    an x0-parameterised conditional denoiser (the reference's PixelDiffusion objective), sampled
    with ``sample_steps`` deterministic DDIM steps."""

    kind: Literal["unet", "diffusion"] = "unet"
    base_channels: int = 16
    levels: int = 2
    embed_dim: int = 32
    diffusion_steps: int = 200
    sample_steps: int = 10

    def __post_init__(self):
        check(self.base_channels >= 1, f"base_channels: must be >= 1, got {self.base_channels}")
        check(1 <= self.levels <= 6, f"levels: must be in 1..6, got {self.levels}")
        check(self.embed_dim >= 2, f"embed_dim: must be >= 2, got {self.embed_dim}")
        check(self.diffusion_steps >= 2, f"diffusion_steps: must be >= 2, got {self.diffusion_steps}")
        check(1 <= self.sample_steps <= self.diffusion_steps,
               f"sample_steps: must be in 1..diffusion_steps ({self.diffusion_steps}), got {self.sample_steps}")


@dataclass(frozen=True)
class LossConfig:
    """Masked MSE (REFERENCE.md 8.3). ``standard``: target y on ``y_valid_mask``. ``ambient``: target x
    on ``x_valid_mask & y_valid_mask``; the model is conditioned on a further-thinned x (observed
    entries dropped with ``further_drop_prob``, one (B,1,H,W) draw with ``shared_spatial_mask``,
    at least ``min_kept_observed_pixels`` originally observed entries always kept)."""

    mode: Literal["standard", "ambient"] = "standard"
    further_drop_prob: float = 0.33
    shared_spatial_mask: bool = True
    min_kept_observed_pixels: int = 4

    def __post_init__(self):
        check(0.0 <= self.further_drop_prob <= 1.0, f"further_drop_prob: must be in [0, 1], got {self.further_drop_prob}")
        check(self.min_kept_observed_pixels >= 0, f"min_kept_observed_pixels: must be >= 0, got {self.min_kept_observed_pixels}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0

    def __post_init__(self):
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip: must be > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class RunConfig:
    """Loop length, logging, validation, checkpoints and device. ``precision: auto`` = bf16 autocast
    on CUDA when supported, else fp16 with a GradScaler; fp32 on CPU."""

    out_dir: str = "runs/demo"
    max_steps: int = 200
    log_every: int = 10
    val_every: int = 100
    val_batches: int = 2
    checkpoint_every: int = 50
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    plot_level: int = 0
    threads: int | None = None

    def __post_init__(self):
        check(self.max_steps >= 1, f"max_steps: must be >= 1, got {self.max_steps}")
        for name in ("log_every", "val_every", "checkpoint_every", "val_batches"):
            check(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        check(self.seed >= 0, f"seed: must be >= 0, got {self.seed}")
        check(self.plot_level >= 0, f"plot_level: must be >= 0, got {self.plot_level}")
        check(self.threads is None or self.threads >= 1, f"threads: must be >= 1 or null, got {self.threads}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataSection = field(default_factory=DataSection)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_train_config(source: str | Path | dict, base: str | Path | None = None) -> TrainConfig:
    """Load a training config from YAML (or a mapping); relative paths resolve against ``base``
    (default: the repo root for a file in ``configs/``, else the file's folder, else the cwd)."""
    cfg = load_config(source, TrainConfig)
    if base is None:
        base = Path.cwd() if isinstance(source, dict) else config_base(source)
    return resolve_paths(cfg, Path(base))


def resolve_paths(cfg: TrainConfig, base: Path) -> TrainConfig:
    """``cfg`` with its relative local paths made absolute against ``base`` (URLs untouched)."""
    data = dataclasses.replace(cfg.data, cube=resolve_path(cfg.data.cube, base),
                               dataset_config=resolve_path(cfg.data.dataset_config, base))
    run = dataclasses.replace(cfg.run, out_dir=resolve_path(cfg.run.out_dir, base))
    return dataclasses.replace(cfg, data=data, run=run)
