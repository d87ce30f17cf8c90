"""Appending a month to a cube while readers stream from it (cube/store.py visibility rules).

Readers open the cube through its consolidated metadata (``CubeReader``, ``CubeStream``,
``open_cube``). While the builder appends new OSTIA days in place, every reader, whether it opened
before the append or opens during it, must see either the old cube or the new one: the old or the
new number of days, never a day without its values, and samples identical to those of a
reference cube built from scratch.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import zarr

from _ncfixtures import ostia_name
from conftest import tiny_cube_config
from cube.build import build
from cube.layout import decode_attrs
from loaders import open_cube
from loaders.config import DatasetConfig, XConfig
from loaders.reader import CubeReader
from loaders.stream import CubeStream

N_OLD, N_NEW = 10, 28                      # the tiny demo's days, then a month more
FIRST_NEW = np.datetime64("2010-02-06")
CONFIG = DatasetConfig(window_days=3, x=XConfig(source="argo"))


def add_days(demo: Path, n: int) -> dict[int, int]:
    """OSTIA files for ``n`` days after the demo, each a re-dated copy of a demo day; returns
    new day index -> the demo day index whose field it carries (the expected cube values)."""
    source = {}
    for k in range(n):
        old = k % N_OLD
        src_day = np.datetime64("2010-01-27") + np.timedelta64(old, "D")
        new_day = FIRST_NEW + np.timedelta64(k, "D")
        dst = demo / "ostia" / ostia_name(str(new_day).replace("-", ""))
        shutil.copy(demo / "ostia" / ostia_name(str(src_day).replace("-", "")), dst)
        with netCDF4.Dataset(dst, "a") as ds:
            ds["time"][:] = ds["time"][:] + 86400 * (new_day - src_day).astype(int)
        source[N_OLD + k] = old
    return source


def _key(stream: CubeStream, i: int) -> tuple[int, str]:
    w = stream.windows[i]
    return w.patch, str(w.centre)


def _same_sample(a: dict, b: dict) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in ("eo", "x", "y", "x_valid_mask", "y_valid_mask"))


class Watcher:
    """Reader threads that check every state they see until stopped; failures are collected."""

    def __init__(self, url: str, old_sst: np.ndarray, expected_sst: np.ndarray, reference: CubeStream):
        self.url, self.old_sst, self.expected_sst, self.reference = url, old_sst, expected_sst, reference
        self.ref_index = {_key(reference, i): i for i in range(len(reference))}
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.seen: dict[int, int] = {N_OLD: 0, N_OLD + N_NEW: 0}
        self.long_lived = CubeStream(url, CONFIG, split="all", cache_bytes=1)  # opened before the append
        self.long_lived_before = {i: self.long_lived.sample(i) for i in self._probe(self.long_lived)}

    @staticmethod
    def _probe(stream: CubeStream) -> list[int]:
        """Windows at the start and the end of the stream's days (the end is where an append writes)."""
        n = len(stream)
        return sorted({0, n // 2, n - 1, n - 2})

    def check_fresh_open(self):
        reader = CubeReader(self.url, cache_bytes=1)
        n = len(reader.days)
        if n not in self.seen:
            raise AssertionError(f"a reader saw {n} days")
        self.seen[n] += 1
        sst = reader.root["ostia/analysed_sst"][:]
        if sst.shape[0] != n or not np.array_equal(sst, self.expected_sst[:n], equal_nan=True):
            raise AssertionError(f"sst of {n} days differs from the expected cube")
        if reader.obs_count.shape != (len(reader.patches), n):
            raise AssertionError(f"obs_count {reader.obs_count.shape} for {n} days")
        tree = open_cube(self.url, chunks=None)
        if tree["ostia"].sizes["time"] not in self.seen:
            raise AssertionError(f"open_cube saw {tree['ostia'].sizes['time']} days")
        stream = CubeStream(self.url, CONFIG, split="all", cache_bytes=1)
        for i in self._probe(stream):
            ref = self.reference.sample(self.ref_index[_key(stream, i)])
            if not _same_sample(stream.sample(i), ref):
                raise AssertionError(f"sample {_key(stream, i)} differs from the reference cube")

    def check_long_lived(self):
        for i, before in self.long_lived_before.items():
            if not _same_sample(self.long_lived.sample(i), before):
                raise AssertionError(f"the long-lived stream's sample {_key(self.long_lived, i)} changed")

    def wait_for(self, n_days: int, timeout: float = 60.0):
        """Until a fresh reader has seen ``n_days`` days (or a check failed)."""
        deadline = time.monotonic() + timeout
        while not self.seen[n_days] and not self.errors and time.monotonic() < deadline:
            time.sleep(0.02)

    def run(self, check):
        while not self.stop.is_set():
            try:
                check()
            except Exception as e:  # noqa: BLE001 - every failure is reported by the test
                self.errors.append(f"{check.__name__}: {type(e).__name__}: {e}")
                return

    def __enter__(self):
        self.threads = [threading.Thread(target=self.run, args=(c,), daemon=True)
                        for c in (self.check_fresh_open, self.check_long_lived)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture
def slow_tasks(monkeypatch):
    """Stretch each build task a little so the readers run many times during the append."""
    import cube.tasks as builder

    for name in ("task_ostia", "task_glorys", "task_profiles_a", "task_profiles_b"):
        fn = getattr(builder, name)

        def slow(*args, _fn=fn, **kwargs):
            out = _fn(*args, **kwargs)
            time.sleep(0.05)
            return out

        monkeypatch.setattr(builder, name, slow)


def test_readers_see_the_old_or_the_new_cube_never_a_partial_append(tiny_demo, tmp_path, slow_tasks):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cube = tmp_path / "cube.zarr"
    cfg = tiny_cube_config(demo, cube)
    assert build(cfg, progress=False).status == "built"
    old_sst = zarr.open_group(str(cube), mode="r")["ostia/analysed_sst"][:]
    source = add_days(demo, N_NEW)
    # Independent expectation of the grown cube: old days unchanged, each new day the field of
    # the demo day it was copied from; and a cube built from scratch from the same inputs.
    expected_sst = np.concatenate([old_sst, old_sst[[source[t] for t in range(N_OLD, N_OLD + N_NEW)]]])
    fresh = tmp_path / "fresh.zarr"
    build(tiny_cube_config(demo, fresh), progress=False)
    reference = CubeStream(str(fresh), CONFIG, split="all")

    with Watcher(str(cube), old_sst, expected_sst, reference) as watcher:
        watcher.wait_for(N_OLD)
        report = build(cfg, progress=False)
        watcher.wait_for(N_OLD + N_NEW)
    assert report.status == "appended"
    assert not watcher.errors, watcher.errors
    assert watcher.seen[N_OLD] > 0 and watcher.seen[N_OLD + N_NEW] > 0, watcher.seen
    # After the append: the grown cube equals the one built from scratch.
    grown = zarr.open_group(str(cube), mode="r")
    np.testing.assert_array_equal(grown["ostia/analysed_sst"][:], expected_sst)
    for path in ("ostia/analysed_sst", "ostia/time", "profiles/count", "profiles/sum", "glorys/thetao",
                 "patches/obs_count", "patches/time", "static/ocean_mask"):
        np.testing.assert_array_equal(grown[path][:], zarr.open_group(str(fresh), mode="r")[path][:], err_msg=path)


def test_append_report_and_attributes_equal_a_fresh_build(tiny_demo, tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cfg = tiny_cube_config(demo, tmp_path / "cube.zarr")
    build(cfg, progress=False)
    add_days(demo, 5)
    appended = build(cfg, progress=False)
    fresh = build(tiny_cube_config(demo, tmp_path / "fresh.zarr"), progress=False)
    assert appended.status == "appended"
    for field in ("rejects", "profiles_used", "profiles_rejected", "levels_rejected"):
        assert getattr(appended, field) == getattr(fresh, field), field
    a = decode_attrs(zarr.open_group(str(tmp_path / "cube.zarr"), mode="r").attrs.asdict())
    b = decode_attrs(zarr.open_group(str(tmp_path / "fresh.zarr"), mode="r").attrs.asdict())
    a["build"]["config"].pop("output"), b["build"]["config"].pop("output")
    assert a == b
