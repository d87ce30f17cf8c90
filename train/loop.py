"""Training loop: steps, logging with data-wait accounting, validation, PNG, checkpoint and resume.

What one run writes under ``run.out_dir``:

* ``checkpoints/last.pt``: model, optimiser, GradScaler, the train loader's ``state_dict`` (a
  torchdata ``StatefulDataLoader`` state: epoch and samples yielded per worker; one per DDP rank),
  the data layout it fits (cube, split, world size, workers), the loss generator's state, step
  and epoch. Written atomically
  (temp file + rename), so a kill mid-write leaves the previous checkpoint intact. With
  ``run.resume`` a new run continues from it: same weights, same optimiser moments, and the
  loader yields exactly the batch that would have come next. Resuming with another cube, split,
  world size or worker count is one ``ValueError`` naming what differs.
* ``metrics.jsonl``: one JSON line per log interval (loss, samples/s, data-wait fraction) and per
  validation (val loss); the same scalars as TensorBoard events under ``tensorboard/``
  (``train/loss``, ``train/samples_per_s``, ``train/data_wait_fraction``, ``val/loss``).
* ``val_step<N>.png``: one validation sample (eo, x, y, prediction, error) at ``run.plot_level``
  with the fixed temperature colour range of the reference (``cube.constants.PLOT_TEMP_*``).

Data-wait fraction = time blocked in ``next(loader)`` / wall time of the interval. On CUDA the
step is bf16 autocast when supported, else fp16 autocast with a GradScaler; batches are pinned
and copied with ``non_blocking=True``.

DDP: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`train` joins the process
group (nccl on CUDA, gloo on CPU), each rank uses its ``LOCAL_RANK`` GPU, the model is wrapped in
``DistributedDataParallel`` and the streams shard windows by rank with equal counts, so every
rank runs the same number of steps per epoch. Loss and data wait are averaged over ranks and
samples/s summed; only rank 0 validates and writes checkpoints, metrics and the PNG.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cube.spec import to_dict
from cube.constants import PLOT_CMAP, PLOT_TEMP_MAX_C, PLOT_TEMP_MIN_C, denormalise_to_celsius

from .config import TrainConfig
from .data import DataModule, TrainLoader, to_device
from .dist import Dist
from .model import Baseline, masked_mse

log = logging.getLogger("depthcube.train")

#: Fixed error colour range (degC) of the validation PNG, so plots of different steps compare.
PLOT_ERROR_RANGE_C = 3.0
#: metrics.jsonl key -> TensorBoard scalar tag.
TENSORBOARD_TAGS = {"loss": "train/loss", "samples_per_s": "train/samples_per_s",
                    "data_wait_fraction": "train/data_wait_fraction", "val_loss": "val/loss"}


class _Objective(torch.nn.Module):
    """The model's training loss as a module ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, model: Baseline, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.training_loss(batch, self.loss, generator)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Autocast dtype: auto = bf16 on CUDA if supported else fp16, none (fp32) on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class _Meter:
    """Accumulates one logging interval."""

    steps: int = 0
    samples: int = 0
    loss: torch.Tensor | float = 0.0  # summed on the device; read once per interval (one sync)
    wait: float = 0.0
    paused: float = 0.0  # validation and checkpoint time, kept out of samples/s
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> dict:
        wall = max(time.perf_counter() - self.started - self.paused, 1e-9)
        return {"loss": float(self.loss) / max(self.steps, 1), "samples_per_s": self.samples / wall,
                "data_wait_fraction": min(self.wait / wall, 1.0)}


class Trainer:
    """Runs :class:`TrainConfig`; ``fit()`` trains to ``run.max_steps`` (resuming if asked)."""

    def __init__(self, cfg: TrainConfig, data: DataModule | None = None, echo=print, dist: Dist | None = None):
        self.cfg = cfg
        self.dist = dist or Dist()
        self.echo = echo if self.dist.is_main else (lambda *a: None)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = self.dist.device(pick_device(cfg.run.device))
        self.dist.init(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile size: let cuDNN pick the fastest kernels
        self.amp_dtype = autocast_dtype(self.device, cfg.run.precision)
        self.data = data or DataModule.from_config(cfg, self.device)
        torch.manual_seed(cfg.run.seed)
        channels = self.data.dataset.target_bands[1] - self.data.dataset.target_bands[0]
        self.model = Baseline(channels, cfg.model).to(self.device)
        self.objective = _Objective(self.model, cfg.loss)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator(self.device).manual_seed(cfg.run.seed + self.dist.rank)
        self.loader: TrainLoader = self.data.train_loader()
        self.step, self.epoch = 0, 0
        self._batches = None
        self._tensorboard = None
        self.out = Path(cfg.run.out_dir)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg.run.resume and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def data_layout(self) -> dict:
        """What a saved loader position depends on: cube, split, order, world size, workers."""
        return self.loader.stream.make_state(0, {}, self.data.loader.num_workers)

    def state_dict(self) -> dict:
        """The full training state; collective under DDP (every rank's loader state is gathered)."""
        return {"step": self.step, "epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "loaders": self.dist.gather(self.loader.state_dict()), "data_layout": self.data_layout(),
                "generators": self.dist.gather(self.generator.get_state()), "config": to_dict(self.cfg)}

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Write the full training state atomically (rank 0; every rank calls it); returns the path."""
        state = self.state_dict()
        path = Path(path or self.checkpoint_path)
        if not self.dist.is_main:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimiser, scaler, loader position, generator, step and epoch."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        if "data_layout" not in state:
            raise ValueError(f"{path}: a checkpoint of an older depthcube (no data layout): start with --fresh")
        self.loader.stream.check_state(state["data_layout"], num_workers=self.data.loader.num_workers)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loaders"][self.dist.rank])
        # a CPU byte tensor, even for a CUDA generator
        self.generator.set_state(state["generators"][self.dist.rank].cpu())
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.echo(f"resumed from {path} at step {self.step} (epoch {self.epoch})")

    # -- training --------------------------------------------------------------------------------
    def autocast(self):
        """Autocast context of the run's precision (a no-op in fp32)."""
        enabled = self.amp_dtype is not None
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=enabled)

    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimiser step on a device batch; returns the detached loss (no host sync here)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.objective(batch, self.generator)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def batches(self):
        """Endless stream of train batches; each pass over the loader is the stream's next epoch
        (a resumed loader first finishes the epoch it was saved in)."""
        if len(self.loader.stream) == 0:
            raise ValueError(f"{self.data.cube}: the {self.data.train_split!r} split has no windows")
        empty = 0
        while empty < 2:  # a resumed epoch may be already over; two empty passes would loop for ever
            n = 0
            for n, batch in enumerate(self.loader, 1):
                yield batch
            empty = 0 if n else empty + 1
        raise ValueError(f"{self.data.cube}: the {self.data.train_split!r} split yielded no sample in an epoch")

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until ``max_steps`` (default ``run.max_steps``); returns the last interval's metrics."""
        run = self.cfg.run
        max_steps = run.max_steps if max_steps is None else max_steps
        meter, last = _Meter(), {}
        # One batch stream per Trainer: a second fit() continues it (persistent workers cannot be
        # told mid-epoch what the main process already consumed).
        self._batches = self._batches or self.batches()
        it = self._batches
        while self.step < max_steps:
            t0 = time.perf_counter()
            batch = next(it)
            meter.wait += time.perf_counter() - t0
            loss = self.train_step(to_device(batch, self.device))
            self.epoch = int(batch["info"]["epoch"][0])
            self.step += 1
            meter.steps, meter.samples, meter.loss = meter.steps + 1, meter.samples + len(batch["y"]), meter.loss + loss
            if self.step % run.log_every == 0 or self.step == max_steps:
                last = self._log_interval(meter)
                meter = _Meter()
            t1 = time.perf_counter()
            if (self.step % run.val_every == 0 or self.step == max_steps) and self.dist.is_main:
                last.update(self.validate(plot=True))
            if self.step % run.checkpoint_every == 0 or self.step == max_steps:
                self.save_checkpoint()
            meter.paused += time.perf_counter() - t1
        if self._tensorboard is not None:
            self._tensorboard.flush()
        return last

    def _log_interval(self, meter: _Meter) -> dict:
        summary = meter.summary()
        loss, wait, rate = self.dist.mean([summary["loss"], summary["data_wait_fraction"], summary["samples_per_s"]])
        m = {"step": self.step, "epoch": self.epoch, "loss": loss, "samples_per_s": rate * self.dist.world_size,
             "data_wait_fraction": wait}
        self.echo(f"step {m['step']:6d}  epoch {m['epoch']:3d}  loss {m['loss']:.4f}  "
                  f"{m['samples_per_s']:7.1f} samples/s  data wait {100 * m['data_wait_fraction']:5.1f}%")
        self._metrics(m)
        return m

    def _metrics(self, record: dict) -> None:
        """Append to metrics.jsonl and write the scalars as TensorBoard events (rank 0 only)."""
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, tag in TENSORBOARD_TAGS.items():
            if key in record:
                self.tensorboard.add_scalar(tag, record[key], record["step"])

    @property
    def tensorboard(self):
        """TensorBoard writer of ``out_dir/tensorboard`` (opened on first use)."""
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.out / "tensorboard"))
        return self._tensorboard

    def close(self) -> None:
        """Close the TensorBoard writer and leave the process group."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        self.dist.barrier()
        self.dist.close()

    # -- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, plot: bool = False) -> dict:
        """Mean standard-mode masked MSE of y over ``run.val_batches`` val batches; PNG of the first."""
        self.model.eval()
        losses, first = [], None
        gen = torch.Generator(self.device).manual_seed(self.cfg.run.seed)  # same DDIM noise every time
        for i, batch in enumerate(self.data.val_loader()):
            if i >= self.cfg.run.val_batches:
                break
            batch = to_device(batch, self.device)
            with self.autocast():
                pred = self.model.predict(batch, gen).float()
            losses.append(float(masked_mse(pred, batch["y"], batch["y_valid_mask"])))
            first = first or (batch, pred)
        if not losses:
            self.echo("validation skipped: the val split has no windows")
            return {}
        m = {"step": self.step, "val_loss": float(np.mean(losses))}
        if plot:
            m["png"] = str(plot_sample(first[0], first[1], self.out / f"val_step{self.step:06d}.png",
                                       level=min(self.cfg.run.plot_level, first[1].shape[1] - 1)))
        self.echo(f"step {self.step:6d}  val loss {m['val_loss']:.4f}" + (f"  -> {m['png']}" if plot else ""))
        self._metrics(m)
        return m


def plot_sample(batch: dict, pred: torch.Tensor, path: Path, level: int = 0, index: int = 0) -> Path:
    """PNG of one sample: eo, x (observed pixels only), y, prediction and prediction - y at ``level``,
    in degC with the fixed temperature colour range (and a fixed error range)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in scripts and notebooks

    def c(t, valid=None):
        a = denormalise_to_celsius(t.detach().float().cpu().numpy())
        return np.where(valid.cpu().numpy(), a, np.nan) if valid is not None else a

    b = {k: v[index] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    y_ok = b["y_valid_mask"][level]
    panels = [("eo (surface)", c(b["eo"][0], b["land_mask"][0] > 0)),
              (f"x level {level} ({int(b['x_valid_mask'][level].sum())} obs)",
               c(b["x"][level], b["x_valid_mask"][level])),
              (f"y level {level}", c(b["y"][level], y_ok)),
              ("prediction", c(pred[index, level], y_ok))]
    fig = Figure(figsize=(17, 3.6), layout="constrained")
    axes = fig.subplots(1, 5)
    for ax, (title, img) in zip(axes, panels):
        im = ax.imshow(img, cmap=PLOT_CMAP, vmin=PLOT_TEMP_MIN_C, vmax=PLOT_TEMP_MAX_C)
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes[:4].tolist(), shrink=0.8, label="degC")
    err = panels[3][1] - panels[2][1]
    im = axes[4].imshow(err, cmap="RdBu_r", vmin=-PLOT_ERROR_RANGE_C, vmax=PLOT_ERROR_RANGE_C)
    axes[4].set_title("prediction - y", fontsize=9)
    fig.colorbar(im, ax=axes[4], shrink=0.8, label="degC")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    date = int(b["date"]) if "date" in b else 0
    fig.suptitle(f"date {date}  centre {float(b['coords'][0]):.2f}N {float(b['coords'][1]):.2f}E", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def train(cfg: TrainConfig, echo=print) -> dict:
    """Build a :class:`Trainer` for ``cfg`` (DDP under torchrun) and run it; returns the final metrics."""
    dist = Dist.from_env()
    trainer = Trainer(cfg, echo=echo, dist=dist)
    try:
        ranks = f", {dist.world_size} DDP ranks" if dist.enabled else ""
        trainer.echo(f"training on {trainer.device} ({trainer.amp_dtype or 'fp32'}{ranks}): "
                     f"{len(trainer.loader.stream)} train windows per rank, batch {cfg.loader.batch_size}, "
                     f"{cfg.loader.num_workers} workers, from step {trainer.step} -> {trainer.out}")
        return trainer.fit()
    finally:
        trainer.close()
