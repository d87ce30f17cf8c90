"""train/: condition, losses, masks, data module, loop, checkpoint/resume and the PNG.

Expected values are computed by hand here (small tensors, the non-leap calendar, the unit sphere)
or come from an independent run (resume is checked against an uninterrupted run of the same config).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _cubes import make_analytic_cube
from cube.errors import ConfigError
from loaders.config import DatasetConfig, XConfig
from train.config import LoaderConfig, LossConfig, ModelConfig, TrainConfig, load_train_config
from train.data import DataModule, to_device
from train.model import (Baseline, build_condition, coord_features, date_features, further_mask, loss_terms,
                         masked_mse)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("analytic_train") / "cube.zarr")


def _batch(b=2, c=50, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xm = torch.rand((b, c, h, w), generator=g) < 0.1
    return {"eo": torch.randn((b, 1, h, w), generator=g), "x": torch.randn((b, c, h, w), generator=g) * xm,
            "x_valid_mask": xm, "y": torch.randn((b, c, h, w), generator=g),
            "y_valid_mask": torch.rand((b, c, h, w), generator=g) < 0.9,
            "coords": torch.tensor([[44.0, -3.0], [45.0, -2.0]])[:b], "date": torch.tensor([20100131, 20100705])[:b]}


# --------------------------------------------------------------------------------------------
# Inputs and losses


def test_condition_is_eo_x_and_collapsed_mask_52_channels():
    b = _batch()
    b["x_valid_mask"][:] = False
    b["x_valid_mask"][0, 7, 3, 4] = True                          # one observation, level 7
    b["x_valid_mask"][0, 20, 3, 4] = True                         # and level 20 of the same pixel
    cond = build_condition(b["eo"], b["x"], b["x_valid_mask"])
    assert cond.shape == (2, 52, 8, 8)
    assert torch.equal(cond[:, 0], b["eo"][:, 0]) and torch.equal(cond[:, 1:51], b["x"])
    expected = torch.zeros(2, 8, 8)
    expected[0, 3, 4] = 1.0
    assert torch.equal(cond[:, 51], expected)


def test_masked_mse_matches_hand_computation():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[2.0, 2.0], [0.0, 10.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]]])
    # (1-2)^2 + (2-2)^2 + (3-0)^2 over 3 masked entries; the unmasked error of 36 is ignored.
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 0 + 9) / 3)
    assert masked_mse(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_date_features_non_leap_calendar_and_feb29_rejected():
    f = date_features(torch.tensor([20100101, 20101231, 20120301, 20100701]))
    doy = torch.tensor([0, 364, 59, 181], dtype=torch.float32)           # Mar 1 = day 59 even in 2012
    angle = 2 * math.pi * doy / 365
    assert torch.allclose(f, torch.stack([torch.sin(angle), torch.cos(angle)], 1), atol=1e-6)
    with pytest.raises(ValueError, match="20120229"):
        date_features(torch.tensor([20120229]))
    with pytest.raises(ValueError):
        date_features(torch.tensor([20101301]))


def test_coord_features_unit_sphere():
    f = coord_features(torch.tensor([[0.0, 0.0], [90.0, 123.0], [0.0, 90.0], [-30.0, 180.0]]))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0],
                             [-math.cos(math.pi / 6), 0.0, -0.5]])
    assert torch.allclose(f, expected, atol=1e-6)


def test_ambient_mode_targets_x_on_observed_and_thins_the_condition():
    b = _batch(seed=3)
    loss = LossConfig(mode="ambient", further_drop_prob=0.5, shared_spatial_mask=True, min_kept_observed_pixels=4)
    cond, target, mask, kept = loss_terms(b, loss, torch.Generator().manual_seed(0))
    observed = b["x_valid_mask"] & b["y_valid_mask"]
    assert torch.equal(target, b["x"]) and torch.equal(mask, observed)
    assert not (kept & ~observed).any()                                  # only observed entries are kept
    assert kept.sum() < observed.sum()                                   # some were dropped
    # shared spatial draw: a pixel is kept at every observed level or at none
    pix = kept.any(1, keepdim=True)
    assert torch.equal(kept, observed & pix)
    assert torch.equal(cond[:, 1:51], b["x"] * kept) and torch.equal(cond[:, 51], pix[:, 0].float())
    standard = loss_terms(b, LossConfig(mode="standard"))
    assert torch.equal(standard[1], b["y"]) and torch.equal(standard[2], b["y_valid_mask"])


def test_further_mask_keeps_min_observed_pixels():
    observed = torch.zeros(2, 3, 6, 6, dtype=torch.bool)
    observed[0, :, :2, :] = True                                          # 12 observed pixels in sample 0
    observed[1, 1, 5, 5] = True                                           # 1 in sample 1
    kept = further_mask(observed, 1.0, shared_spatial=True, min_kept=4, generator=torch.Generator().manual_seed(1))
    assert kept.any(1)[0].sum() == 4 and kept.any(1)[1].sum() == 1       # drop-all still keeps min(4, n)
    assert torch.equal(further_mask(observed, 0.0, min_kept=4), observed)
    per_entry = further_mask(observed, 1.0, shared_spatial=False, min_kept=5, generator=torch.Generator().manual_seed(2))
    assert per_entry[0].sum() == 5 and per_entry[1].sum() == 1


@pytest.mark.parametrize("kind", ["unet", "diffusion"])
def test_loss_decreases_on_a_fixed_batch(kind):
    torch.manual_seed(0)
    b = _batch(h=16, w=16)
    # A learnable target: y is a smooth function of eo, so a few steps must reduce the loss.
    b["y"] = b["eo"].expand(-1, 50, -1, -1) * torch.linspace(1, 0.2, 50)[None, :, None, None]
    model = Baseline(50, ModelConfig(kind=kind, base_channels=8, levels=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        g.manual_seed(0)  # same diffusion noise/timesteps every step: a fixed objective
        loss = model.training_loss(b, LossConfig(), g)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and all(b < a for a, b in zip(losses, losses[1:]))
    assert model.predict(b, torch.Generator().manual_seed(0)).shape == (2, 50, 16, 16)


def test_unet_handles_tiles_not_divisible_by_its_poolings():
    model = Baseline(3, ModelConfig(base_channels=4, levels=3))
    b = _batch(c=3, h=20, w=12)
    assert model.predict(b).shape == (2, 3, 20, 12)


# --------------------------------------------------------------------------------------------
# Config and data module


def test_train_config_file_loads_and_bad_keys_are_named():
    cfg = load_train_config(REPO / "configs" / "train.yaml")
    assert Path(cfg.data.cube).is_absolute() and cfg.data.cube.endswith("data/cube.zarr")
    with pytest.raises(ConfigError, match=r"loss\.mode"):
        load_train_config({"loss": {"mode": "bogus"}})
    with pytest.raises(ConfigError, match=r"run: unknown key\(s\) \['max_stepz'\]"):
        load_train_config({"run": {"max_stepz": 3}})
    with pytest.raises(ConfigError, match=r"loader\.batch_size"):
        load_train_config({"loader": {"batch_size": "eight"}})


def _data(cube, train_split: str = "all", **loader) -> DataModule:
    ds = DatasetConfig(window_days=3, x=XConfig(source="synthetic_pixels", pixel_count=30), block_size=4)
    return DataModule(str(cube), ds, LoaderConfig(**{"batch_size": 2, "num_workers": 0, **loader}), torch.device("cpu"),
                      train_split=train_split, val_split="val")


def test_loader_kwargs_follow_workers_and_device(cube):
    kw = _data(cube, num_workers=2, prefetch_factor=3).loader_kwargs(train=True)
    assert kw["num_workers"] == 2 and kw["persistent_workers"] and kw["prefetch_factor"] == 3
    assert kw["pin_memory"] is False                                      # CPU: nothing to pin for
    kw0 = _data(cube).loader_kwargs(train=False)
    assert "persistent_workers" not in kw0 and "prefetch_factor" not in kw0 and kw0["batch_size"] == 4
    batch = to_device({"y": torch.ones(2), "info": {"a": 1}}, torch.device("cpu"))
    assert batch["info"] == {"a": 1}


def test_set_epoch_reaches_persistent_workers(cube):
    dm = _data(cube, num_workers=1, persistent_workers=True, batch_size=4)
    loader = dm.train_loader()
    orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        orders.append(sum((b["info"]["index"].tolist() for b in loader), []))
    stream = loader.stream
    assert orders[0] == stream.shard_indices(0, 0, 1).tolist()
    assert orders[1] == stream.shard_indices(1, 0, 1).tolist() != orders[0]


# --------------------------------------------------------------------------------------------
# Loop, checkpoint/resume, PNG


def _cfg(out: Path, max_steps: int, **run) -> TrainConfig:
    return load_train_config({
        "model": {"base_channels": 4, "levels": 2},
        "loss": {"mode": "ambient", "further_drop_prob": 0.3},
        "run": {"out_dir": str(out), "max_steps": max_steps, "log_every": 2, "val_every": 100,
                "checkpoint_every": 3, "val_batches": 1, "threads": 1, **run},
    }, base=out)


def _recording(trainer):
    seen = []
    step = trainer.train_step

    def train_step(batch):
        seen.append(batch["info"]["index"].tolist())
        return step(batch)

    trainer.train_step = train_step
    return seen


def test_checkpoint_resume_restores_state_and_continues_with_the_next_batch(cube, tmp_path):
    from train.loop import Trainer

    def data():  # the val split as training windows: 36 windows = 9 batches of 4 per epoch
        return _data(cube, train_split="val", batch_size=4)

    quiet = dict(echo=lambda *a: None)
    # Uninterrupted reference: 12 steps, across the end of epoch 0.
    ref = Trainer(_cfg(tmp_path / "ref", 12), data=data(), **quiet)
    assert len(ref.loader.stream) == 36
    ref_batches = _recording(ref)
    ref.fit()
    assert ref.epoch == 1
    # Interrupted run: 6 steps (checkpoint every 3), then a new Trainer resumes from it to step 12.
    first = Trainer(_cfg(tmp_path / "run", 6), data=data(), **quiet)
    first.fit()
    resumed = Trainer(_cfg(tmp_path / "run", 12), data=data(), **quiet)
    assert resumed.step == 6 and resumed.epoch == 0
    for a, b in zip(first.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    opt_a, opt_b = first.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"]) for k in opt_a)
    assert resumed.loader.state_dict() == first.loader.state_dict()
    assert resumed.loader.state_dict()["dataset_state"]["consumed"] == {0: 6 * 4}
    resumed_batches = _recording(resumed)
    resumed.fit()
    assert resumed_batches == ref_batches[6:]                             # the same next batch, and all after it
    for a, b in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)                            # and the same weights at the end


def test_fit_logs_validates_and_writes_the_png(cube, tmp_path):
    import json

    from train.loop import Trainer

    lines = []
    trainer = Trainer(_cfg(tmp_path / "png", 4, val_every=4, plot_level=5), data=_data(cube), echo=lines.append)
    metrics = trainer.fit()
    png = Path(metrics["png"])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("samples/s" in line and "data wait" in line for line in lines)
    records = [json.loads(x) for x in (tmp_path / "png" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "samples_per_s" in r]
    assert logged and all(0.0 <= r["data_wait_fraction"] <= 1.0 and r["samples_per_s"] > 0 for r in logged)
    assert any("val_loss" in r and np.isfinite(r["val_loss"]) for r in records)
    assert (tmp_path / "png" / "checkpoints" / "last.pt").exists()


def test_cli_registers_train_and_bench_without_importing_torch():
    code = ("import sys, train.cli; assert 'torch' not in sys.modules, 'torch imported';"
            "from depthcube.cli import make_parser; p = make_parser();"
            "a = p.parse_args(['train', 'configs/train.yaml', '--max-steps', '2']); assert a.max_steps == 2;"
            "b = p.parse_args(['bench', '--quick']); assert b.quick; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_fit_writes_tensorboard_scalars_beside_metrics(cube, tmp_path):
    """Issue 14.6: loss, val loss, samples/s and data-wait share as TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.loop import Trainer

    trainer = Trainer(_cfg(tmp_path / "tb", 4, val_every=4), data=_data(cube), echo=lambda *a: None)
    trainer.fit()
    trainer.close()
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/samples_per_s", "train/data_wait_fraction"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]          # log_every 2, 4 steps
    import json
    logged = [json.loads(x) for x in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in logged if "val_loss" in r]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx(val)


def test_resume_with_another_worker_count_or_split_is_one_clear_error(cube, tmp_path):
    from train.loop import Trainer

    quiet = dict(echo=lambda *a: None)
    Trainer(_cfg(tmp_path / "run", 3), data=_data(cube, batch_size=4), **quiet).fit()
    with pytest.raises(ValueError, match=r"num_workers 0 \(this stream: 2\)"):
        Trainer(_cfg(tmp_path / "run", 6), data=_data(cube, batch_size=4, num_workers=2), **quiet)
    with pytest.raises(ValueError, match=r"split 'all' \(this stream: 'val'\)"):
        Trainer(_cfg(tmp_path / "run", 6), data=_data(cube, train_split="val", batch_size=4), **quiet)
