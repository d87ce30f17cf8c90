"""CubeStream through real torch DataLoaders: worker processes (fork, forkserver, spawn), the default
collate, every dataset preset on the tiny demo cube, and the map-style view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from _cubes import make_analytic_cube
from loaders import CubeStream, StreamLoader, load_dataset_config
from loaders.config import DatasetConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = ("eo_4band_tracks", "ostia_tracks", "argo_real", "argo_synthetic_500")


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("analytic_dl") / "cube.zarr")


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_two_workers_cover_the_epoch_once_with_each_start_method(analytic, context):
    stream = CubeStream(analytic, DatasetConfig(window_days=3, block_size=5), split="all")
    loader = DataLoader(stream, batch_size=8, num_workers=2, multiprocessing_context=context, timeout=120)
    seen = [i for batch in loader for i in batch["info"]["index"].tolist()]
    assert sorted(seen) == list(range(len(stream)))


@pytest.mark.parametrize("preset", PRESETS)
def test_default_collate_runs_an_epoch_of_the_demo_cube(tiny_cube, preset):
    """REFERENCE.md 11.17: ``info`` could hold None and break the default collate; y held NaN."""
    cfg = load_dataset_config(CONFIGS, preset)
    stream = CubeStream(str(tiny_cube), cfg, split="train")
    loader = StreamLoader(stream, batch_size=4, num_workers=2)
    n, lo, hi = 0, *cfg.target_bands
    for batch in loader:
        b = batch["x"].shape[0]
        n += b
        assert batch["x"].shape == batch["y"].shape == (b, hi - lo, 16, 16)
        assert batch["eo"].shape == (b, 1, 16, 16) and batch["x_valid_mask"].dtype == torch.bool
        assert batch["date"].dtype == torch.int64 and batch["coords"].shape == (b, 2)
        assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["y"]).all()
        assert isinstance(batch["info"]["split"], list) and set(batch["info"]["split"]) == {"train"}
    assert n == len(stream) > 0


def test_map_view_gives_the_same_samples_as_the_stream(analytic):
    stream = CubeStream(analytic, DatasetConfig(window_days=3), split="val")
    view = stream.as_map()
    assert len(view) == len(stream) > 0
    by_index = {int(s["info"]["index"]): s for s in stream}
    for i in (0, len(view) - 1):
        assert torch.equal(view[i]["y"], by_index[i]["y"]) and torch.equal(view[i]["x"], by_index[i]["x"])
    with pytest.raises(IndexError):
        view[len(view)]
