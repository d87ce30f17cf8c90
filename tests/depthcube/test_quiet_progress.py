"""Progress off a terminal: `depthcube demo` and `depthcube export geotiff` in CI or a log file print
one line per phase, never a redrawn tqdm bar (which, captured, is hundreds of `\\r` updates)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_piped(*args: str) -> subprocess.CompletedProcess:
    """The CLI with stdout and stderr both pipes (no terminal), as under CI or `| tee`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm"}
    out = subprocess.run([sys.executable, "-m", "depthcube", *args], capture_output=True, timeout=300,
                         env=env, stdin=subprocess.DEVNULL)
    # decoded by hand: text=True would turn a bar's "\r" redraws into newlines
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(), out.stderr.decode())


def assert_one_phase_line(stderr: str, desc: str, unit: str, total: int) -> None:
    assert "\r" not in stderr and "it/s" not in stderr, stderr[:500]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    assert re.fullmatch(rf"{desc}: {total}/{total} {unit}s in \d+\.\d s", lines[0]), lines[0]


def test_demo_without_terminal_prints_one_line(tmp_path):
    out = run_piped("demo", str(tmp_path / "demo"), "--preset", "tiny")
    assert out.returncode == 0, out.stderr
    files = sum(1 for _ in (tmp_path / "demo").glob("*/*.nc"))
    # tiny preset: 10 OSTIA days + 2 GLORYS snapshots + 2 EN4 months (hand count from its dates)
    assert files == 14
    assert_one_phase_line(out.stderr, "demo products", "file", files)


def test_demo_quiet_prints_nothing(tmp_path):
    out = run_piped("demo", str(tmp_path / "demo"), "--preset", "tiny", "--quiet")
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_export_without_terminal_prints_one_line(tiny_cube, tmp_path):
    out = run_piped("export", "geotiff", str(tiny_cube), str(tmp_path / "tifs"), "--preset", "argo_real",
                    "--limit", "5")
    assert out.returncode == 0, out.stderr
    assert_one_phase_line(out.stderr, "export geotiff", "window", 5)
    assert "5 windows" in out.stdout
