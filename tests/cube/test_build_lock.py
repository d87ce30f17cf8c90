"""Two builds on one output: the second one says who holds it and exits 2, nothing is corrupted,
and a lock left by a killed build does not block the next one (issue 10, part 1, item 2).

The first build runs in a child process with every task stretched by a sleep (as in
``test_interrupt``), so it is certainly still writing when the second one starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from conftest import tiny_cube_config
from test_bad_inputs import assert_same_cube, demo_copy
from test_output_safety import one_error_line, run_cli, write_config
from cube.build import build
from cube.config import load_cube_config
from cube.store import BuildLock, BuildLockedError

REPO = Path(__file__).resolve().parents[2]

SLOW_BUILD = r"""
import sys, time
import cube.build as builder
import cube.tasks as tasks
from cube.config import load_cube_config

def stretched(fn):
    def run(*args, **kwargs):
        time.sleep(0.3)
        return fn(*args, **kwargs)
    return run

for name in ("task_ostia", "task_glorys", "task_profiles_a", "task_profiles_b"):
    setattr(tasks, name, stretched(getattr(tasks, name)))
print(builder.build(load_cube_config(sys.argv[1]), progress=False).status)
"""


def start_slow_build(config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first build never got that far"
        time.sleep(0.01)


def journal_lines(staging: Path) -> int:
    path = staging / ".build" / "journal.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


@pytest.fixture
def demo(tiny_demo, tmp_path) -> Path:
    return demo_copy(tiny_demo, tmp_path / "demo")


def test_second_build_on_the_same_output_is_refused_and_the_first_finishes(demo, tmp_path):
    out = tmp_path / "cube.zarr"
    config = write_config(demo, out, compute={"progress": False, "threads": 1})
    first = start_slow_build(config)
    try:
        wait_for(lambda: journal_lines(tmp_path / "cube.zarr.partial") >= 1, first)
        second = run_cli("build", str(config), "-q")
        line = one_error_line(second)
        assert line == f"depthcube build: error: another build (pid {first.pid}) is writing {out}; wait for it to finish"
        assert first.wait(180) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    assert first.stdout.read().strip() == "built"
    expected = tmp_path / "expected.zarr"
    build(tiny_cube_config(demo, expected), progress=False)
    assert_same_cube(out, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr", "demo", "expected.zarr"]  # no .partial, no .lock


def test_lock_of_a_killed_build_does_not_block_and_the_next_build_resumes(demo, tmp_path):
    out = tmp_path / "cube.zarr"
    config = write_config(demo, out, compute={"progress": False, "threads": 1})
    first = start_slow_build(config)
    try:
        wait_for(lambda: journal_lines(tmp_path / "cube.zarr.partial") >= 2, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    stale = json.loads((tmp_path / "cube.zarr.lock").read_text())
    assert stale["pid"] == first.pid  # the file is still there, naming the dead build
    report = build(load_cube_config(config), progress=False)
    assert report.status == "built" and report.tasks_skipped >= 1  # line 1 is the plan, line 2 a task
    assert not (tmp_path / "cube.zarr.lock").exists() and not (tmp_path / "cube.zarr.partial").exists()


def test_local_lock_is_exclusive_and_released(tmp_path):
    out = str(tmp_path / "cube.zarr")
    with BuildLock(out):
        with pytest.raises(BuildLockedError, match=f"another build \\(pid {os.getpid()}\\) is writing {out}"):
            BuildLock(out).acquire()
    with BuildLock(out):  # free again
        pass
    assert not os.path.exists(out + ".lock")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("owner, taken", [
    ({"pid": "mine", "host": "this"}, False),                      # a live build of this process
    ({"pid": "dead", "host": "this"}, True),                       # its process is gone: stale
    ({"pid": 12, "host": "other-host", "age": 60}, False),         # another machine, recent
    ({"pid": 12, "host": "other-host", "age": 25 * 3600}, True),   # another machine, over 24 h old
])
def test_remote_lock_object(owner, taken):
    out = f"memory://locks-{owner['pid']}-{owner.get('age', 0)}/cube.zarr"
    fs = fsspec.filesystem("memory")
    pid = {"mine": os.getpid(), "dead": _dead_pid()}.get(owner["pid"], owner["pid"])
    host = socket.gethostname() if owner["host"] == "this" else owner["host"]
    fs.pipe_file(out.removeprefix("memory://") + ".lock",
                 json.dumps({"pid": pid, "host": host, "started": time.time() - owner.get("age", 0)}).encode())
    lock = BuildLock(out)
    if taken:
        with lock:
            held = json.loads(fs.cat_file(out.removeprefix("memory://") + ".lock"))
            assert held["pid"] == os.getpid()
        assert not fs.exists(out.removeprefix("memory://") + ".lock")
    else:
        where = "" if owner["host"] == "this" else f" on {host}"
        with pytest.raises(BuildLockedError, match=f"another build \\(pid {pid}{where}\\) is writing {out}"):
            lock.acquire()
