"""What a build may write, and the one line it says when it cannot (issue 10, part 1).

Outputs: a path that is not a depthcube cube (a folder of user files, the current folder, a
file, another program's Zarr store, an empty folder) is never deleted or replaced, with or
without ``--rebuild``; a cube that cannot be brought up to date in place is replaced only with
``--rebuild``; ``<cube>.partial`` and ``<cube>.old`` that depthcube did not make are left alone.
Every refusal is one line and exit 2, and every byte of the user's files is still there after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import zarr

from _ncfixtures import copy_netcdf, write_glorys
from conftest import tiny_cube_config, write_tiny_config as write_config
from test_bad_inputs import CASES, assert_same_cube, demo_copy, ostia
from cube.build import build
from depthcube.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "depthcube", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("depthcube build: error: "), lines[0]
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256 of its bytes), to prove nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> Path:
    """A folder as users have them: results, a notes file, a nested folder, a hidden file."""
    (path / "runs" / "2024").mkdir(parents=True)
    (path / "notes.txt").write_text("do not delete\n")
    (path / "runs" / "2024" / "metrics.json").write_text(json.dumps({"rmse": 0.41}))
    (path / ".hidden").write_bytes(os.urandom(1000))
    return path


@pytest.fixture
def demo(tiny_demo, tmp_path) -> Path:
    return demo_copy(tiny_demo, tmp_path / "demo")


# --------------------------------------------------------------------------------------------
# 1. Nothing that is not a depthcube cube is deleted or replaced
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rebuild", [False, True])
def test_folder_of_user_files_is_never_replaced(demo, tmp_path, rebuild):
    results = user_folder(tmp_path / "results")
    before = tree_digest(results)
    args = ["build", str(write_config(demo, results)), "-q"] + (["--rebuild"] if rebuild else [])
    line = one_error_line(run_cli(*args))
    assert f"{results} exists and is not a depthcube cube" in line
    assert tree_digest(results) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "results"]  # no .partial, no .lock


def test_current_folder_as_output_is_refused_not_built_into_dot_dot_partial(demo, tmp_path):
    work = user_folder(tmp_path / "work")
    before = tree_digest(work)
    line = one_error_line(run_cli("build", str(write_config(demo, tmp_path / "unused")), "-o", ".", "-q", cwd=work))
    assert f"{work} exists and is not a depthcube cube" in line
    assert tree_digest(work) == before
    assert not (work / "..partial").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["demo", "work"]


@pytest.mark.parametrize("make", ["file", "foreign_zarr", "empty_folder"])
def test_file_foreign_zarr_store_or_empty_folder_is_refused(demo, tmp_path, capsys, make):
    out = tmp_path / "out.zarr"
    if make == "file":
        out.write_bytes(b"my data\n")
    else:
        out.mkdir()
        if make == "foreign_zarr":  # another program's Zarr v3 group, no depthcube contract
            (out / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"by": "me"}}))
    config = write_config(demo, out)
    before = tree_digest(tmp_path)
    assert main(["build", str(config), "-q", "--rebuild"]) == 2
    assert f"{out} exists and is not a depthcube cube" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before and out.exists()


@pytest.mark.parametrize("suffix", [".partial", ".old"])
def test_staging_names_depthcube_did_not_make_are_left_alone(demo, tmp_path, capsys, suffix):
    out = tmp_path / "cube.zarr"
    mine = user_folder(tmp_path / f"cube.zarr{suffix}")
    before = tree_digest(mine)
    assert main(["build", str(write_config(demo, out)), "-q"]) == 2
    assert f"{mine} exists and was not made by depthcube" in capsys.readouterr().err
    assert tree_digest(mine) == before and not out.exists()


def test_replacing_a_cube_needs_rebuild(demo, tmp_path, capsys):
    out = tmp_path / "cube.zarr"
    assert main(["build", str(write_config(demo, out)), "-q"]) == 0
    cube_files = tree_digest(out)
    changed = write_config(demo, out, name="other.yaml", chunks={"days": 2})  # not appendable: chunking changed
    capsys.readouterr()
    assert main(["build", str(changed), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot be brought up to date in place (the build config changed)" in err and "--rebuild" in err
    assert tree_digest(out) == cube_files
    assert main(["build", str(changed), "-q", "--rebuild"]) == 0
    assert "rebuild" not in capsys.readouterr().err
    assert zarr.open_array(str(out / "ostia" / "analysed_sst"), mode="r").chunks[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr", "demo"]


def test_depthcube_staging_of_another_plan_is_replaced(demo, tmp_path):
    """A ``.partial`` that depthcube made for other settings is its own: started again, not refused."""
    out = tmp_path / "cube.zarr"
    build(tiny_cube_config(demo, tmp_path / "other.zarr", chunks__days=2), progress=False)
    os.replace(tmp_path / "other.zarr", tmp_path / "cube.zarr.partial")
    report = build(tiny_cube_config(demo, out), progress=False)
    assert report.status == "built" and report.tasks_skipped == 0
    expected = tmp_path / "expected.zarr"
    build(tiny_cube_config(demo, expected), progress=False)
    assert_same_cube(out, expected)
    assert not (tmp_path / "cube.zarr.partial").exists()


# --------------------------------------------------------------------------------------------
# 3. One bad GLORYS file is a listed reject; 4. --strict on an up-to-date cube with rejects
# --------------------------------------------------------------------------------------------


def point_extract_inside(real_data: Path, dst: Path, lat: float, lon: float) -> Path:
    """The real 1 x 1 Copernicus Marine thetao point extract, moved to (lat, lon) inside the cube."""
    coords = {"latitude": lambda a: a * 0 + lat, "longitude": lambda a: a * 0 + lon}
    return copy_netcdf(real_data / "cmems_glo12_thetao_point_profile.nc", dst,
                       edit=lambda name, data: coords[name](data) if name in coords else data)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_glorys_point_extract_is_a_listed_reject_and_the_build_goes_on(demo, tmp_path, real_data, where):
    bad = demo / "glorys" / "cmems_glo12_thetao_point_profile.nc"
    if where == "inside":  # the tiny demo covers 43..46.2 N, 5.6..0.8 W
        point_extract_inside(real_data, bad, 44.0, -3.0)
    else:  # the real file as published, at (0 N, 0 E)
        bad.write_bytes((real_data / bad.name).read_bytes())
    out = tmp_path / "cube.zarr"
    report = build(tiny_cube_config(demo, out), progress=False)
    assert report.status == "built"
    assert report.rejects == [{"file": str(bad), "reason": "bad_grid",
                               "detail": "a 1 x 1 point extract, not a grid (at least 2 x 2 cells are needed to regrid)"}]
    assert not (tmp_path / "cube.zarr.partial").exists()
    bad.unlink()
    expected = tmp_path / "expected.zarr"
    build(tiny_cube_config(demo, expected), progress=False)
    assert_same_cube(out, expected)


def test_strict_on_an_up_to_date_cube_with_rejects_fails_naming_the_first(demo, tmp_path):
    bad = CASES["zero-byte"].make(demo)
    config = write_config(demo, tmp_path / "cube.zarr")
    assert main(["build", str(config), "-q"]) == 0
    lenient = run_cli("build", str(config), "-q")
    assert lenient.returncode == 0 and lenient.stdout.startswith("up to date:")
    line = one_error_line(run_cli("build", str(config), "-q", "--strict"))
    assert f"{bad}: unreadable" in line and "a reject of the up-to-date cube; 1 in all" in line


# --------------------------------------------------------------------------------------------
# 5. One line instead of a traceback
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 400 KiB tmpfs mounted here (the tiny cube needs about 1 MB); unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_one_line_and_the_rerun_resumes(demo, tmp_path, small_tmpfs):
    out = small_tmpfs / "cube.zarr"
    config = write_config(demo, out)
    line = one_error_line(run_cli("build", str(config), "-q"))
    assert "no space left on the device" in line and "run the same command again to resume" in line
    assert not out.exists() and (small_tmpfs / "cube.zarr.partial" / ".build" / "journal.jsonl").exists()
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_tmpfs)], check=True)
    rerun = run_cli("build", str(config), "-q")
    assert rerun.returncode == 0, rerun.stderr
    skipped = int(rerun.stdout.split(" run, ")[1].split(" skipped")[0])
    assert skipped > 0, rerun.stdout  # resumed: the tasks journaled before the disk filled are not run again
    expected = tmp_path / "expected.zarr"
    build(tiny_cube_config(demo, expected), progress=False)
    assert_same_cube(out, expected)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["cube.zarr"]


def test_read_only_output_is_one_line(demo, small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    line = one_error_line(run_cli("build", str(write_config(demo, small_tmpfs / "cube.zarr")), "-q"))
    assert f"cannot write {small_tmpfs / 'cube.zarr'}: read-only file system" in line


def test_output_under_a_regular_file_is_one_line(demo, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me\n")
    line = one_error_line(run_cli("build", str(write_config(demo, blocker / "cube.zarr")), "-q"))
    assert f"cannot create {blocker / 'cube.zarr'}: a part of the path is a file, not a folder" in line
    assert blocker.read_text() == "keep me\n"


def test_time_start_after_all_data_is_one_line(demo, tmp_path):
    config = write_config(demo, tmp_path / "cube.zarr", time={"start": "2011-01-01"})
    line = one_error_line(run_cli("build", str(config), "-q"))
    # The tiny demo's OSTIA days: 2010-01-27 .. 2010-02-05.
    assert line.endswith("time.start: 2011-01-01 leaves no day to build: the OSTIA files cover 2010-01-27..2010-02-05")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_oversized_tile_names_the_config_key(demo, tmp_path):
    line = one_error_line(run_cli("build", str(write_config(demo, tmp_path / "cube.zarr", patches={"tile_size": 64})), "-q"))
    assert "patches.tile_size: a tile of 64 x 64 cells does not fit the 32 x 48 cube grid" in line
    assert "PatchSpec" not in line and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# --------------------------------------------------------------------------------------------
# 6. A glob that matches nothing; 7. short reject reasons
# --------------------------------------------------------------------------------------------


def test_glob_matching_nothing_warns_or_fails_with_strict(demo, tmp_path):
    config = write_config(demo, tmp_path / "cube.zarr")
    text = config.read_text().replace(f"{demo}/en4/*.nc", f"{demo}/en4/EN.4.2.2.f.profiles.g10.2009*.nc")
    config.write_text(text)
    pattern = f"'{demo}/en4/EN.4.2.2.f.profiles.g10.2009*.nc'"
    line = one_error_line(run_cli("build", str(config), "-q", "--strict"))
    assert line == f"depthcube build: error: inputs.en4: no file matches {pattern}"
    assert not (tmp_path / "cube.zarr").exists()
    lenient = run_cli("build", str(config), "-q")
    assert lenient.returncode == 0
    assert f"  warning: inputs.en4: no file matches {pattern}\n" in lenient.stdout


def test_files_outside_the_region_or_time_range_have_short_reasons(demo, tmp_path, real_data):
    """The real GLORYS point extract and an OSTIA day moved off the region are ``outside_region``
    rejects with one short line (no Python repr); OSTIA days outside time.start..end are skipped
    as ``outside_time_range``, not rejected."""
    far = point_extract_inside(real_data, demo / "glorys" / "far.nc", 0.0, 0.0)
    with_grid = demo / "glorys" / "far_grid.nc"  # a 2 x 2 grid far away: passes the point check
    _two_by_two_far(demo / "glorys" / sorted(os.listdir(demo / "glorys"))[0], with_grid)
    moved = tmp_path / "moved.nc"
    copy_netcdf(ostia(demo, "20100127"), moved, edit=lambda name, data: data - 30.0 if name == "lat" else data)
    moved.replace(ostia(demo, "20100127"))
    cfg = tiny_cube_config(demo, tmp_path / "cube.zarr", time={"start": "2010-01-28", "end": "2010-02-04"},
                           grid={"region": [43.0, 46.2, -5.6, -0.8]})
    report = build(cfg, progress=False)
    reasons = {Path(r["file"]).name: (r["reason"], r["detail"]) for r in report.rejects}
    assert reasons[far.name][0] == "bad_grid"
    assert reasons[with_grid.name][0] == "outside_region"
    assert reasons[ostia(demo, "20100127").name][0] == "outside_region"
    assert reasons[with_grid.name][1].endswith("; the cube is lat 43..46.2, lon -5.6..-0.8")
    for reason, detail in reasons.values():
        assert "Bbox(" not in detail and "\n" not in detail and len(detail) < 160, detail
    assert [(Path(s["file"]).name, s["reason"]) for s in report.skipped] == [
        (ostia(demo, "20100205").name, "outside_time_range")]
    assert report.skipped[0]["detail"] == "day 2010-02-05 is not in the cube's days 2010-01-28..2010-02-04"


def _two_by_two_far(src: Path, dst: Path):
    """A GLORYS file with the times of ``src`` on a 2 x 2 cell grid at 10 N, 20 E."""
    with netCDF4.Dataset(src) as ds:
        hours = ds["time"][:].tolist()
    lat, lon = np.array([10.0, 10.0 + 1 / 12]), np.array([20.0, 20.0 + 1 / 12])
    write_glorys(dst, np.full((len(hours), 50, 2, 2), 12.0), lat, lon, hours)


# --------------------------------------------------------------------------------------------
# 8. depthcube demo --region with negative values
# --------------------------------------------------------------------------------------------


def test_demo_region_accepts_negative_values(tmp_path):
    out = run_cli("demo", str(tmp_path / "demo"), "--preset", "tiny", "--region", "-6.4,-4.8,-12,-10.4",
                  "--start", "2010-01-27", "--end", "2010-01-28", "-q")
    assert out.returncode == 0, out.stderr
    first = sorted((tmp_path / "demo" / "ostia").glob("*.nc"))[0]
    with netCDF4.Dataset(first) as ds:
        lat, lon = ds["lat"][:], ds["lon"][:]
    # 0.05 deg cell centres inside the box: -6.375 .. -4.825 N, -11.975 .. -10.425 E.
    assert (lat.min(), lat.max()) == pytest.approx((-6.375, -4.825))
    assert (lon.min(), lon.max()) == pytest.approx((-11.975, -10.425))
