"""Builds killed with SIGKILL at several points, then run again, give the cube an uninterrupted build
gives: the same arrays (values, dtypes, shapes, chunks, fill values, attributes) and the same
group attributes. Meanwhile the final name never shows a partial cube, and a killed append leaves
readers the old cube.

The build runs in a child process (``python -c``) with every task stretched by a short sleep
before and after its work, so the kills land at known stages: before a task wrote, after it
wrote but before its journal line, between tasks, after the last task, just before publishing.
The test polls the build journal from outside; the builder has no test hook.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from test_append_readers import add_days
from conftest import write_tiny_config as write_config
from test_bad_inputs import CASES, demo_copy
from cube.build import build
from cube.layout import decode_attrs
from cube.config import load_cube_config

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys, time
import cube.build as builder
import cube.store as store
import cube.tasks as tasks
from cube.config import load_cube_config

delay = float(sys.argv[2])

def stretched(fn):
    def run(*args, **kwargs):
        time.sleep(delay)
        out = fn(*args, **kwargs)
        time.sleep(delay)
        return out
    return run

for name in ("task_ostia", "task_glorys", "task_profiles_a", "task_profiles_b"):
    setattr(tasks, name, stretched(getattr(tasks, name)))
builder._finish = stretched(builder._finish)
store.publish = stretched(store.publish)
report = builder.build(load_cube_config(sys.argv[1]), progress=False, rebuild="--rebuild" in sys.argv[3:])
print(report.status)
"""

DELAY = 0.12


def journal_lines(cube: Path) -> int:
    path = cube / ".build" / "journal.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def root_status(cube: Path) -> str | None:
    try:
        return json.loads((cube / "zarr.json").read_text())["attributes"].get("status")
    except (OSError, ValueError, KeyError):
        return None


def run_child(config: Path, kill_when=None, timeout: float = 120.0, rebuild: bool = False) -> bool:
    """Run a build in a child process; SIGKILL it as soon as ``kill_when()`` is true. True if killed."""
    flags = ["--rebuild"] if rebuild else []
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(config), str(DELAY), *flags], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return True
            if time.monotonic() > deadline:
                raise AssertionError("the build child did not finish")
            time.sleep(0.003)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return False


def snapshot(path: Path) -> dict:
    """Everything a user can see of a cube, excluding the builder's private ``.build`` folder."""
    root = zarr.open_group(str(path), mode="r")
    out = {}
    for name, group in [("", root), *root.groups()]:
        out[f"{name}/"] = decode_attrs(group.attrs.asdict())
        for aname, arr in group.arrays():
            key = f"{name}/{aname}" if name else aname
            out[key] = (str(arr.dtype), arr.shape, arr.chunks, str(arr.fill_value), arr.attrs.asdict(), arr[...])
    return out


def assert_same_snapshot(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, tuple):
            assert got[key][:5] == value[:5], key
            np.testing.assert_array_equal(got[key][5], value[5], err_msg=key)
        else:
            assert got[key] == value, key


@pytest.fixture
def demo(tiny_demo, tmp_path):
    """The tiny demo plus two bad files, so rejects are part of what must match."""
    folder = demo_copy(tiny_demo, tmp_path / "demo")
    CASES["zero-byte"].make(folder)
    CASES["en4-QC-rejects-everything"].make(folder)
    return folder


def test_sigkilled_build_resumes_to_the_uninterrupted_cube(demo, tmp_path):
    cube = tmp_path / "cube.zarr"
    partial = tmp_path / "cube.zarr.partial"
    config = write_config(demo, cube)
    report = build(load_cube_config(config), progress=False)
    n_tasks = report.tasks_run
    assert len(report.rejects) == 2 and n_tasks >= 10
    expected = snapshot(cube)
    shutil.rmtree(cube)

    kill_points = {
        "staging folder created": lambda: (partial / "zarr.json").exists(),
        "2 journal lines": lambda: journal_lines(partial) >= 2,
        "5 journal lines": lambda: journal_lines(partial) >= 5,
        "9 journal lines": lambda: journal_lines(partial) >= 9,
        "every task journaled": lambda: journal_lines(partial) >= 1 + n_tasks,
        "finished, not yet published": lambda: root_status(partial) == "complete",
    }
    for stage, when in kill_points.items():
        assert run_child(config, when), f"the build finished before the kill point '{stage}'"
        assert not cube.exists(), f"a cube appeared under the final name after a kill at '{stage}'"
    assert not run_child(config)
    assert not partial.exists()
    assert_same_snapshot(snapshot(cube), expected)
    # One more run is a no-op.
    assert build(load_cube_config(config), progress=False).status == "up to date"


def redate_copy(src: Path, days: int) -> Path:
    """A copy of an OSTIA file moved ``days`` days (name and time variable)."""
    import netCDF4

    day = np.datetime64(f"{src.name[:4]}-{src.name[4:6]}-{src.name[6:8]}") + np.timedelta64(days, "D")
    dst = src.with_name(str(day).replace("-", "") + src.name[8:])
    shutil.copy(src, dst)
    with netCDF4.Dataset(dst, "a") as ds:
        ds["time"][:] = ds["time"][:] + 86400 * days
    return dst


def test_sigkilled_rebuild_never_shows_a_partial_cube(demo, tmp_path):
    """A rebuild (``--rebuild``: a new first day moves the daily axis, so no append) over an existing
    cube killed at several stages: the final name holds the old complete cube or nothing, then the new cube."""
    cube, partial = tmp_path / "cube.zarr", tmp_path / "cube.zarr.partial"
    config = write_config(demo, cube)
    build(load_cube_config(config), progress=False)
    old = snapshot(cube)
    redate_copy(sorted((demo / "ostia").glob("*.nc"))[0], -1)
    reference = tmp_path / "reference.zarr"
    build(load_cube_config(write_config(demo, reference)), progress=False)
    expected = snapshot(reference)
    expected["/"]["build"]["config"]["output"] = str(cube)
    config = write_config(demo, cube)

    def final_name_is_whole() -> bool:
        status = root_status(cube) if cube.exists() else "complete"
        if status != "complete":
            # The poll can straddle the publish's renames (old cube aside, new cube in): the folder
            # seen by exists() is gone when its zarr.json is read. A partial cube at the final name
            # would stay there, so look again before calling it one.
            time.sleep(0.05)
            status = root_status(cube) if cube.exists() else "complete"
        assert status == "complete", f"the final name shows a cube with status {status!r}"
        return False

    for when in (lambda: journal_lines(partial) >= 4, lambda: root_status(partial) == "complete"):
        assert run_child(config, lambda: final_name_is_whole() or when(), rebuild=True)
        if cube.exists():
            assert_same_snapshot(snapshot(cube), old)
    assert not run_child(config, final_name_is_whole, rebuild=True)
    assert_same_snapshot(snapshot(cube), expected)


def test_sigkilled_append_leaves_readers_the_old_cube_and_resumes(demo, tmp_path):
    cube = tmp_path / "cube.zarr"
    config = write_config(demo, cube)
    build(load_cube_config(config), progress=False)
    old = snapshot(cube)
    add_days(demo, 9)
    base = journal_lines(cube)
    for extra in (2, 6):
        assert run_child(config, lambda: journal_lines(cube) >= base + extra)
        # Readers open through the consolidated metadata: they still see the old cube, whole.
        assert_same_snapshot(snapshot(cube), old)
    assert not run_child(config)

    fresh = tmp_path / "fresh.zarr"
    build(load_cube_config(write_config(demo, fresh)), progress=False)
    got, expected = snapshot(cube), snapshot(fresh)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, tuple):
            assert got[key][0] == value[0] and got[key][1] == value[1], key
            np.testing.assert_array_equal(got[key][5], value[5], err_msg=key)
    for key in ("rejects", "profiles", "inputs", "status"):
        assert got["/"][key] == expected["/"][key], key
