"""Issue 11: Lightning (which calls set_epoch on samplers only) over the cube: two epochs differ,
and a mid-epoch checkpoint resumes the data position (compared with an uninterrupted run)."""

from __future__ import annotations

import lightning
import pytest
import torch

from _cubes import make_analytic_cube
from loaders.config import DatasetConfig, XConfig
from train.data import CubeDataModule

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CFG = DatasetConfig(window_days=3, block_size=3, x=XConfig(source="synthetic_pixels", pixel_count=20))


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("analytic_lightning") / "cube.zarr")


class Recorder(lightning.LightningModule):
    """A one-parameter model that records what each training step saw; can checkpoint mid-epoch."""

    def __init__(self, save_at: tuple[int, int] | None = None, path=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, int, int]] = []   # (trainer epoch, stream epoch, window index)
        self.masks: dict[tuple[int, int], torch.Tensor] = {}
        self.save_at, self.path = save_at, path

    def training_step(self, batch, batch_idx):
        for e, i, m in zip(batch["info"]["epoch"].tolist(), batch["info"]["index"].tolist(), batch["x_valid_mask"]):
            self.seen.append((self.current_epoch, e, i))
            self.masks[(e, i)] = m
        if self.save_at == (self.current_epoch, batch_idx):
            self.trainer.save_checkpoint(self.path)
        return (self.w - batch["y"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**kw) -> lightning.Trainer:
    return lightning.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_two_lightning_epochs_differ_and_a_mid_epoch_checkpoint_resumes_the_data(cube, tmp_path, workers):
    def dm():
        return CubeDataModule(str(cube), CFG, batch_size=4, num_workers=workers, train_split="val",
                              persistent_workers=bool(workers))

    ckpt = tmp_path / "mid.ckpt"
    ref = Recorder(save_at=(0, 3), path=ckpt)
    _trainer(limit_val_batches=0).fit(ref, datamodule=dm())
    n = len(dm().data.stream("val", shuffle=True))
    by_epoch = [[i for (t, e, i) in ref.seen if t == k] for k in (0, 1)]
    assert [sorted(b) for b in by_epoch] == [list(range(n))] * 2                    # every window, once per epoch
    assert {e for (t, e, i) in ref.seen if t == 0} == {0} and {e for (t, e, i) in ref.seen if t == 1} == {1}
    assert by_epoch[0] != by_epoch[1]                                                # a new order
    assert not torch.equal(ref.masks[(0, 0)], ref.masks[(1, 0)])                     # and new corruption
    resumed = Recorder()
    _trainer(limit_val_batches=0).fit(resumed, datamodule=dm(), ckpt_path=ckpt)
    assert resumed.seen == ref.seen[4 * 4:]                                          # after the 4 saved steps


@pytest.mark.parametrize("workers", [0, 2])
def test_a_checkpoint_at_the_end_of_an_epoch_resumes_with_a_new_epoch(cube, tmp_path, workers):
    """Without the data module's state the resumed epoch replayed stream epoch 0 (same order and
    corruption): the loader state of a finished epoch holds no position."""
    def dm():
        return CubeDataModule(str(cube), CFG, batch_size=4, num_workers=workers, train_split="val",
                              persistent_workers=bool(workers))

    first = Recorder()
    trainer = _trainer(limit_val_batches=0)
    trainer.fit_loop.max_epochs = 1
    trainer.fit(first, datamodule=dm())
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    resumed = Recorder()
    _trainer(limit_val_batches=0).fit(resumed, datamodule=dm(), ckpt_path=tmp_path / "end.ckpt")
    epochs = {e for (_, e, _) in resumed.seen}
    assert {t for (t, _, _) in resumed.seen} == {1} and sorted(i for (_, _, i) in resumed.seen) == sorted(
        i for (_, _, i) in first.seen)
    # One whole new epoch, never a replay of epoch 0. Without workers it is exactly epoch 1; with
    # persistent workers Lightning's extra iter() on restart starts (and drops) one pass, so the
    # resumed epoch can be numbered 2: still a fresh shuffle and fresh corruption.
    assert len(epochs) == 1 and epochs != {0}
    if workers == 0:
        assert epochs == {1}
