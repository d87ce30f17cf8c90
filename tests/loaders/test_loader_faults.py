"""Faults while streaming: a window that cannot be built, skip-and-count or fail, a worker that
dies or hangs. The cube is the analytic one (tests/_cubes.py); faults are injected by a
CubeStream subclass that fails on chosen (patch, centre day) windows, in whichever process
builds them."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _cubes import make_analytic_cube
from loaders.config import DatasetConfig, XConfig
from loaders.stream import CubeStream, SampleError, StreamLoader

CONFIG = DatasetConfig(window_days=3, x=XConfig(source="argo"), block_size=4)


class FaultyStream(CubeStream):
    """Fails on chosen windows: ``bad`` raise OSError, ``crash`` kill the process, ``hang`` sleep,
    ``poison`` read a corrupt profile sum that would put inf into x."""

    def __init__(self, *args, bad=(), crash=(), hang=(), poison=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bad, self.crash, self.hang, self.poison = set(bad), set(crash), set(hang), set(poison)

    def read_window(self, w, north_up=False):
        key = (w.patch, str(w.centre))
        if key in self.crash:
            os._exit(3)
        if key in self.hang:
            time.sleep(3600)
        if key in self.bad:
            raise OSError(f"simulated unreadable chunk for {key}")
        win = super().read_window(w, north_up=north_up)
        if key in self.poison:
            pixels, count, total = win.profiles  # the stream's sparse sums: pixel 0 gets a corrupt one
            if not len(pixels) or pixels[0] != 0:
                pixels, count, total = (np.insert(pixels, 0, 0), np.insert(count, 0, 0, axis=0),
                                        np.insert(total, 0, 0, axis=0))
            count[0, 0], total[0, 0] = 1, np.inf
            win.profiles = pixels, count, total
        return win


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("faults") / "cube.zarr")


def keys(stream: CubeStream, indices) -> list[tuple[int, str]]:
    return [(stream.windows[int(i)].patch, str(stream.windows[int(i)].centre)) for i in indices]


def chosen(cube, n: int, seed: int = 1) -> list[tuple[int, str]]:
    stream = CubeStream(cube, CONFIG, split="all")
    pick = np.random.default_rng(seed).choice(len(stream), n, replace=False)
    return keys(stream, pick)


def delivered(batches) -> list[tuple[int, str]]:
    out = []
    for b in batches:
        out += list(zip(b["info"]["patch"].tolist(), b["info"]["day"]))
    return out


def test_a_failing_window_names_the_cube_patch_and_day(cube):
    (patch, day), = chosen(cube, 1)
    stream = FaultyStream(cube, CONFIG, split="all", shuffle=False, bad=[(patch, day)])
    with pytest.raises(SampleError) as info:
        for _ in stream:
            pass
    message = str(info.value)
    assert f"patch {patch}" in message and day in message and str(cube) in message
    assert "OSError" in message and "simulated unreadable chunk" in message


def test_a_failing_window_in_a_worker_reaches_the_training_process(cube):
    (patch, day), = chosen(cube, 1, seed=2)
    stream = FaultyStream(cube, CONFIG, split="all", bad=[(patch, day)])
    loader = StreamLoader(stream, batch_size=4, num_workers=2, timeout=120)
    with pytest.raises(SampleError) as info:
        for _ in loader:
            pass
    assert f"patch {patch}" in str(info.value) and day in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_and_count_delivers_every_other_window_once(cube, workers):
    bad = chosen(cube, 5, seed=3)
    poison = chosen(cube, 1, seed=4)
    assert not set(poison) & set(bad)
    cfg = DatasetConfig(window_days=3, x=XConfig(source="argo"), block_size=4, on_error="skip")
    stream = FaultyStream(cube, cfg, split="all", bad=bad, poison=poison)
    loader = StreamLoader(stream, batch_size=4, num_workers=workers, timeout=120 if workers else 0)
    got = delivered(loader)
    expected = set(keys(stream, range(len(stream)))) - set(bad) - set(poison)
    assert sorted(got) == sorted(expected)          # each good window exactly once
    assert loader.skipped == len(bad) + len(poison)


def test_resume_after_skips_yields_exactly_the_rest(cube):
    bad = chosen(cube, 6, seed=5)
    cfg = DatasetConfig(window_days=3, x=XConfig(source="none"), block_size=4, on_error="skip")
    stream = FaultyStream(cube, cfg, split="all", bad=bad)
    loader = StreamLoader(stream, batch_size=3, num_workers=2, timeout=120)
    first = []
    for k, batch in enumerate(loader):
        first += delivered([batch])
        if k == 4:
            loader.commit()
            state = loader.state_dict()
            break
    resumed = FaultyStream(cube, cfg, split="all", bad=bad)
    resumed.load_state_dict(state)
    rest = delivered(StreamLoader(resumed, batch_size=3, num_workers=2, timeout=120))
    expected = set(keys(stream, range(len(stream)))) - set(bad)
    assert sorted(first + rest) == sorted(expected)


@pytest.mark.timeout(120)
def test_a_worker_that_dies_raises_instead_of_hanging(cube):
    # Worker 0 dies on its first window, before sending anything (a worker that dies right after
    # sending a batch can surface as ConnectionResetError instead: also an error, not a hang).
    crash = keys(CubeStream(cube, CONFIG, split="all", shuffle=False), [0])
    stream = FaultyStream(cube, CONFIG, split="all", shuffle=False, crash=crash)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        for _ in DataLoader(stream, batch_size=4, num_workers=2):
            pass
    assert time.monotonic() - started < 60


@pytest.mark.timeout(120)
def test_a_stuck_worker_is_caught_by_the_dataloader_timeout(cube):
    hang = chosen(cube, 1, seed=7)
    stream = FaultyStream(cube, CONFIG, split="all", hang=hang)
    with pytest.raises(RuntimeError, match="timed out"):
        for _ in StreamLoader(stream, batch_size=4, num_workers=2, timeout=2):
            pass


def test_non_finite_values_never_reach_a_sample(cube):
    poison = chosen(cube, 1, seed=8)
    stream = FaultyStream(cube, CONFIG, split="all", shuffle=False, poison=poison)
    with pytest.raises(SampleError, match="x holds 1 non-finite values"):
        for sample in stream:
            assert all(torch.isfinite(v).all() for v in sample.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
