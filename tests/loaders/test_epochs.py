"""Issue 11: epochs, DDP shards and resume in the training stacks people use (plain torch
DataLoader with persistent workers, torchdata's StatefulDataLoader, DDP ranks).

The expectations are counts and identities (each window once per epoch, the epoch number a pass
must carry, a resumed run's windows = the uninterrupted run's), never the stream's own output."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from _cubes import make_analytic_cube
from loaders import CubeStream, StreamLoader, load_dataset_config
from loaders.config import DatasetConfig, XConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = ("eo_4band_tracks", "ostia_tracks", "argo_real", "argo_synthetic_500")
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("analytic_epochs") / "cube.zarr")


def _cfg(**kw) -> DatasetConfig:
    return DatasetConfig(**{"window_days": 3, "block_size": 3, **kw})


def _epoch_of(loader) -> tuple[Counter, list[int]]:
    epochs, ids = Counter(), []
    for batch in loader:
        epochs.update(batch["info"]["epoch"].tolist())
        ids.extend(batch["info"]["index"].tolist())
    return epochs, ids


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_persistent_workers_see_every_new_epoch(analytic, context):
    """Issue 11: with persistent workers every epoch repeated epoch 0 (info['epoch'] stayed 0)."""
    stream = CubeStream(analytic, _cfg(), split="val")
    n = len(stream)
    loader = DataLoader(stream, batch_size=4, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context, timeout=120)
    passes = []
    for expected in (0, 1, 7, 8):           # two passes by themselves, then set_epoch(7), then on by itself
        if expected == 7:
            stream.set_epoch(7)
        epochs, ids = _epoch_of(loader)
        assert epochs == Counter({expected: n}) and sorted(ids) == list(range(n))
        passes.append(ids)
    assert passes[0] != passes[1] != passes[2]                   # new shuffles
    assert stream.epoch == 8


def test_each_pass_without_workers_is_the_next_epoch_with_new_corruption(analytic):
    cfg = _cfg(x=XConfig(source="synthetic_pixels", pixel_count=20))
    stream = CubeStream(analytic, cfg, split="val")
    masks = []
    for expected in (0, 1):
        batches = list(DataLoader(stream, batch_size=64))
        assert set(batches[0]["info"]["epoch"].tolist()) == {expected}
        by_index = dict(zip(batches[0]["info"]["index"].tolist(), batches[0]["x_valid_mask"]))
        masks.append(by_index[0])
    assert not torch.equal(masks[0], masks[1])                   # corruption drawn anew


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_mid_epoch_without_duplicate_or_loss(analytic, workers):
    """Issue 11: the state held consumed {} and a resumed epoch served everything again."""
    cfg = _cfg()
    kw = {"batch_size": 3, "num_workers": workers, **({"persistent_workers": True, "timeout": 120} if workers else {})}
    stream = CubeStream(analytic, cfg, split="val")
    n = len(stream)
    loader = StatefulDataLoader(stream, **kw)
    it = iter(loader)
    first = [i for _ in range(4) for i in next(it)["info"]["index"].tolist()]
    state = loader.state_dict()
    del it, loader
    resumed = StatefulDataLoader(CubeStream(analytic, cfg, split="val"), **kw)
    resumed.load_state_dict(state)
    epochs, rest = _epoch_of(resumed)
    assert len(first) == 12 and epochs == Counter({0: n - 12})
    assert sorted(first + rest) == list(range(n))                # no duplicate, none lost
    epochs, again = _epoch_of(resumed)                           # and the next pass is a whole epoch 1
    assert epochs == Counter({1: n}) and sorted(again) == list(range(n))


def test_state_taken_at_the_end_of_an_epoch_resumes_at_the_next(analytic):
    stream = CubeStream(analytic, _cfg(), split="val")
    loader = StatefulDataLoader(stream, batch_size=5)
    _epoch_of(loader)
    resumed = StatefulDataLoader(CubeStream(analytic, _cfg(), split="val"), batch_size=5)
    resumed.load_state_dict(loader.state_dict())
    epochs, ids = _epoch_of(resumed)
    assert epochs == Counter({1: len(stream)})


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("world", [2, 3])
def test_ddp_ranks_get_equal_counts_for_every_preset(tiny_cube, preset, world):
    """Issue 11: two ranks got 144 and 121 samples and the longer one blocked in its all-reduce."""
    cfg = dataclasses.replace(load_dataset_config(CONFIGS, preset), block_size=2)
    streams = [CubeStream(str(tiny_cube), cfg, split="train", rank=r, world_size=world) for r in range(world)]
    n = len(streams[0].windows)
    per_rank = [[i for w in range(2) for i in s.shard_indices(3, r, world, w, 2)] for r, s in enumerate(streams)]
    assert [len(p) for p in per_rank] == [-(-n // world)] * world         # ceil(n / world) each: padded
    assert set(sum(per_rank, [])) == set(range(n))                          # every window seen
    assert [s.num_batches(3, 2) for s in streams] == [streams[0].num_batches(3, 2)] * world
    dropped = [CubeStream(str(tiny_cube), cfg, split="train", rank=r, world_size=world, drop_last=True)
               for r in range(world)]
    kept = [i for r, s in enumerate(dropped) for i in s.rank_indices(3, r, world)]
    assert len(kept) == len(set(kept)) == world * (n // world)              # drop_last: no repeat


def test_ddp_ranks_yield_equal_batches_through_workers(analytic):
    cfg = _cfg(block_size=2)
    counts = []
    for rank in range(3):
        stream = CubeStream(analytic, cfg, split="val", rank=rank, world_size=3)
        batches = list(DataLoader(stream, batch_size=4, num_workers=2, timeout=120))
        counts.append((len(batches), sum(len(b["y"]) for b in batches)))
        assert len(batches) == stream.num_batches(4, 2)
    n = len(CubeStream(analytic, cfg, split="val").windows)
    assert counts == [(counts[0][0], -(-n // 3))] * 3


def test_resuming_a_different_layout_cube_or_split_names_what_differs(analytic, tiny_cube):
    stream = CubeStream(analytic, _cfg(), split="val")
    loader = StreamLoader(stream, batch_size=3, num_workers=0)
    it = iter(loader)
    next(it), next(it)
    loader.commit()
    state = loader.state_dict()
    with pytest.raises(ValueError, match=r"num_workers 0 \(this stream: 2\)"):
        StreamLoader(CubeStream(analytic, _cfg(), split="val"), batch_size=3, num_workers=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"world_size 1 \(this stream: 2\)"):
        CubeStream(analytic, _cfg(), split="val", rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"split 'val' \(this stream: 'train'\)"):
        CubeStream(analytic, _cfg(), split="train").load_state_dict(state)
    with pytest.raises(ValueError, match=r"of another cube .* fingerprint"):
        CubeStream(str(tiny_cube), _cfg(), split="val").load_state_dict(state)
    with pytest.raises(ValueError, match="not a CubeStream state"):
        CubeStream(analytic, _cfg(), split="val").load_state_dict({"epoch": 0, "consumed": {}})
    # the worker count is also checked where the pass runs (a plain DataLoader after load_state_dict)
    other = CubeStream(analytic, _cfg(), split="val")
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="saved with world size 1 and 0 workers per rank, this run has world size 1 and 2"):
        list(DataLoader(other, batch_size=3, num_workers=2, timeout=120))


def test_stream_loader_second_pass_is_a_whole_new_epoch(analytic):
    """Issue 11: under Lightning (no set_epoch) a second pass of StreamLoader yielded 0 batches."""
    stream = CubeStream(analytic, _cfg(), split="val")
    loader = StreamLoader(stream, batch_size=4, num_workers=2, persistent_workers=True, timeout=120)
    n = len(stream)
    for expected in (0, 1):
        epochs, ids = _epoch_of(loader)
        assert epochs == Counter({expected: n}) and sorted(ids) == list(range(n))
        assert loader.skipped == 0 and len(loader) == stream.num_batches(4, 2)
