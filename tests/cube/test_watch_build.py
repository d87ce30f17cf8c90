"""Watching a build (issue 14 item 5): the dask dashboard link, one cluster per build, no
``INFO distributed`` lines in the progress output, a bar on a terminal and one line per phase
elsewhere, and ``make cube`` printing the cube summary once."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from depthcube.cli import main

REPO = Path(__file__).resolve().parents[2]
SUMMARY_HEADER = re.compile(r"^cube \S+$", re.MULTILINE)  # first line of cube.open.describe
PHASE_LINE = re.compile(r"^build: (read\+regrid|rasterise profiles): (\d+)/(\d+) tasks in [\d.]+ s$", re.MULTILINE)


def _config(demo: Path, output: Path, path: Path) -> str:
    data = {"output": str(output),
            "inputs": {"ostia": [f"{demo}/ostia/*.nc"], "glorys": [f"{demo}/glorys/*.nc"], "en4": [f"{demo}/en4/*.nc"]},
            "chunks": {"days": 4}, "patches": {"tile_size": 16}}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_local_cluster_build_without_a_terminal(tiny_demo, tmp_path):
    """Output piped (not a TTY): the dashboard link first, one line per phase, no distributed INFO
    lines, and the summary once."""
    cfg = _config(tiny_demo, tmp_path / "cube.zarr", tmp_path / "cube.yaml")
    run = subprocess.run([sys.executable, "-m", "depthcube", "build", cfg, "--local-cluster", "1"],
                         capture_output=True, text=True, env=_env(), timeout=240)
    assert run.returncode == 0, run.stderr
    err = run.stderr
    assert "INFO" not in err and "distributed." not in err, err
    assert re.search(r"^dask dashboard: http://[\w.:\[\]-]+/status$", err, re.MULTILINE), err
    phases = PHASE_LINE.findall(err)
    # 10 daily OSTIA days in chunks of 4 -> 3 chunks, 2 GLORYS files, 2 EN4 files; 3 rasterise chunks.
    assert phases == [("read+regrid", "7", "7"), ("rasterise profiles", "3", "3")], err
    assert "\r" not in err and "%|" not in err  # no bar drawn into a log
    assert err.index("dask dashboard") < err.index("build: read+regrid")
    assert len(SUMMARY_HEADER.findall(run.stdout)) == 1, run.stdout


def test_local_cluster_build_starts_one_cluster(tiny_demo, tmp_path, monkeypatch, capsys):
    import distributed

    started = []

    class CountingCluster(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            started.append(kwargs.get("n_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", CountingCluster)
    cfg = _config(tiny_demo, tmp_path / "cube.zarr", tmp_path / "cube.yaml")
    assert main(["build", cfg, "--local-cluster", "1"]) == 0
    assert started == [1]  # phase a and phase b ran on the same cluster
    err = capsys.readouterr().err
    assert len(PHASE_LINE.findall(err)) == 2 and err.count("dask dashboard: http://") == 1


def test_scheduler_build_prints_a_dashboard_link_that_serves_the_dashboard(tiny_demo, tmp_path, capsys):
    from distributed import Client, LocalCluster

    cfg = _config(tiny_demo, tmp_path / "cube.zarr", tmp_path / "cube.yaml")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster:
        with Client(cluster):
            assert main(["build", cfg, "--scheduler", cluster.scheduler_address, "-q"]) == 0
            quiet = capsys.readouterr()
            assert "dashboard" not in quiet.err and quiet.out.count("\n") == 1  # -q: the status line only
            assert main(["build", cfg, "--scheduler", cluster.scheduler_address, "--rebuild"]) == 0
            link = re.search(r"^dask dashboard: (\S+)$", capsys.readouterr().err, re.MULTILINE).group(1)
            with urllib.request.urlopen(link, timeout=30) as page:  # 127.0.0.1: the cluster above
                body = page.read().decode()
            assert page.status == 200 and "Dask needs bokeh" not in body and "bokeh" in body.lower()


def _run_in_terminal(argv: list[str], timeout: float = 240) -> str:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal of 120 columns; all it wrote."""
    main_fd, term_fd = pty.openpty()
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=term_fd, stderr=term_fd, env=_env())
    os.close(term_fd)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main_fd)
        rc = proc.wait(timeout=30)
    assert rc == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_on_a_terminal_the_bar_is_drawn_and_no_log_line_breaks_into_it(tiny_demo, tmp_path):
    cfg = _config(tiny_demo, tmp_path / "cube.zarr", tmp_path / "cube.yaml")
    out = _run_in_terminal([sys.executable, "-m", "depthcube", "build", cfg, "--local-cluster", "1"])
    assert "INFO" not in out and "distributed." not in out, out
    assert "build: read+regrid: 100%" in out and "build: rasterise profiles: 100%" in out and "7/7" in out, out
    assert not PHASE_LINE.search(out.replace("\r\n", "\n"))  # the bar, not the log line
    assert len(SUMMARY_HEADER.findall(out.replace("\r\n", "\n"))) == 1


def test_make_cube_prints_the_summary_once():
    """Of the commands ``make cube`` runs, exactly one prints the cube summary (build, not -q)."""
    plan = subprocess.run(["make", "-n", "-C", str(REPO), "cube"], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    commands = [line for line in plan.stdout.splitlines() if "depthcube " in line]
    printing = [c for c in commands if re.search(r"depthcube (info|index) ", c)
                or (re.search(r"depthcube build ", c) and not re.search(r"\s(-q|--quiet)\b", c))]
    assert len(printing) == 1, commands


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_one_line_per_phase_unless_on_a_terminal(tty, monkeypatch, capsys):
    from cube import progress

    monkeypatch.setattr(progress, "interactive", lambda: tty)
    with progress.Progress(5, "phase", unit="file") as bar:
        for _ in range(5):
            bar.update()
    err = capsys.readouterr().err
    if tty:
        assert "phase: 100%" in err and "5/5" in err
    else:
        assert re.fullmatch(r"phase: 5/5 files in [\d.]+ s\n", err)
