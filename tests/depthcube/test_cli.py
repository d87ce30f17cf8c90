"""The command line as a user meets it: help texts, one-line errors, info, index rebuild and export."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from depthcube.cli import main

DEMO_OPTIONS = ("--preset", "--region", "--start", "--end", "--seed", "--glorys-monthly", "--quiet")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "depthcube", *args], capture_output=True, text=True, timeout=300)


def test_demo_help_documents_every_option():
    out = run_cli("demo", "--help")
    assert out.returncode == 0
    for option in DEMO_OPTIONS:
        assert option in out.stdout


@pytest.mark.parametrize("args, words", [
    (("demo", "/tmp/x", "--preset", "huge"), "invalid choice"),
    (("demo", "/tmp/x", "--region", "1,2,3"), "4 comma-separated numbers"),
    (("demo", "/tmp/x", "--seed", "abc"), "invalid int value"),
    (("demo", "/tmp/x", "--start", "2010-03-01", "--end", "2010-01-01"), "end"),
    (("build", "/nonexistent/cube.yaml"), "not found"),
])
def test_bad_option_values_give_one_line_errors(args, words):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert words in lines[0] and "Traceback" not in out.stderr


def test_bad_config_key_is_named(tmp_path):
    cfg = tmp_path / "cube.yaml"
    cfg.write_text("grid: {resolution: fine}\n")
    out = run_cli("build", str(cfg))
    assert out.returncode == 2 and "grid.resolution" in out.stderr and "Traceback" not in out.stderr


def test_info_index_rebuild_and_export(tiny_cube, tmp_path, capsys):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(tiny_cube, cube)
    assert main(["info", str(cube)]) == 0
    summary = capsys.readouterr().out
    assert "tiles" in summary and "profiles" in summary and "days" in summary
    assert main(["index", str(cube), "--split", "window", "--val-fraction", "0.5", "--export", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert {"patch", "row0", "col0", "lat0", "lat1", "lon0", "lon1", "invalid_fraction", "split", "wkt"} <= set(table.columns)
    assert set(table["split"]) == {"train", "val"}
    assert main(["index", str(cube), "--export", str(tmp_path / "p.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "p.parquet").shape[0] == table.shape[0]
    from cube.layout import decode_attrs
    from loaders import open_cube

    tree = open_cube(str(cube))
    assert decode_attrs(tree["patches"].attrs)["split_config"]["method"] == "window"
    assert decode_attrs(tree.attrs)["build"]["config"]["split"]["method"] == "window"
