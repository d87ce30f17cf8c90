"""The profile observation table (``profiles/obs_*``, contract v2, issue 13 item 1) as the builder
writes it: equal to the dense ``profiles/count``/``sum`` cell by cell, sorted and indexed by
block, CF-described; kept equal through a late profile file, new days and a lost part; and the
builder's handling of a v1 cube (its own, so ``--rebuild`` replaces it; never foreign)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import tiny_cube_config
from cube import obs_table, store
from cube.build import build
from cube.layout import CONTRACT, check_contract, spec
from cube.obs_table import FIELDS
from test_append_readers import add_days
from test_bad_inputs import assert_same_cube


def table(url) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(url), mode="r")
    return {f: root[f"profiles/obs_{f}"][...] for f in FIELDS + ("start", "stop")}


def assert_table_equals_dense(url) -> int:
    """Every (day, cell) with a nonzero count is one row with the cell's 50 counts and sums; no
    other row; rows in (time block, lat block, lon block, day, row, col) order; the index ranges
    hold exactly their blocks' rows. Returns the number of rows."""
    root = zarr.open_group(str(url), mode="r")
    count, total = root["profiles/count"][...], root["profiles/sum"][...]
    t = table(url)
    days, cells = int(root["profiles/obs_start"].attrs["block_days"]), int(root["profiles/obs_start"].attrs["block_cells"])
    d, r, c = np.nonzero(count.any(axis=1))
    block = (d // days, r // cells, c // cells)
    order = np.lexsort((c, r, d) + block[::-1])
    np.testing.assert_array_equal(t["day"], d[order])
    np.testing.assert_array_equal(t["row"], r[order])
    np.testing.assert_array_equal(t["col"], c[order])
    np.testing.assert_array_equal(t["count"], count[d, :, r, c][order])
    np.testing.assert_array_equal(t["sum"], total[d, :, r, c][order])
    assert t["start"].shape == (-(-count.shape[0] // days), -(-count.shape[2] // cells), -(-count.shape[3] // cells))
    for b in np.ndindex(*t["start"].shape):
        rows = np.arange(t["start"][b], t["stop"][b])
        inside = (t["day"] // days == b[0]) & (t["row"] // cells == b[1]) & (t["col"] // cells == b[2])
        np.testing.assert_array_equal(np.flatnonzero(inside), rows, err_msg=str(b))
    return len(t["day"])


def test_the_built_table_is_the_dense_arrays_cell_by_cell(tiny_cube):
    n = assert_table_equals_dense(tiny_cube)
    assert n > 50  # the tiny demo has profiles on most days
    t = table(tiny_cube)
    assert t["count"].sum() == zarr.open_group(str(tiny_cube), mode="r")["profiles/n_obs"][...].sum()


def test_the_table_is_cf_described_and_checked_by_the_contract(tiny_cube, tmp_path):
    ds = xr.open_datatree(tiny_cube, engine="zarr", chunks=None)["profiles"].to_dataset()
    for name in ("obs_day", "obs_row", "obs_col", "obs_count", "obs_sum", "obs_start", "obs_stop"):
        assert ds[name].attrs["long_name"] == spec(f"profiles/{name}").attrs["long_name"]
        assert "comment" in ds[name].attrs and "units" in ds[name].attrs
    assert ds["obs_count"].dims == ("obs", "depth") and ds["obs_start"].dims == ("time_block", "lat_block", "lon_block")
    assert "profiles/lat[obs_row]" in ds["obs_row"].attrs["comment"]
    # lat / lon of every row from its indices, as the comment says, are the cells' centres
    lat = ds["lat"].values[ds["obs_row"].values]
    assert ((lat > ds["lat_bnds"].values[ds["obs_row"].values, 0]) & (lat < ds["lat_bnds"].values[ds["obs_row"].values, 1])).all()
    url = tmp_path / "c.zarr"
    shutil.copytree(tiny_cube, url)
    doc = json.loads((url / "zarr.json").read_text())
    del doc["consolidated_metadata"]["metadata"]["profiles/obs_sum"]
    (url / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(Exception, match="array profiles/obs_sum missing"):
        check_contract(zarr.open_group(str(url), mode="r", use_consolidated=True), str(url))


def test_dense_fallback_gives_the_same_table_as_the_parts(tiny_cube, tmp_path):
    """A part lost from ``.build/table`` is taken from the dense arrays: the same table."""
    url = tmp_path / "c.zarr"
    shutil.copytree(tiny_cube, url)
    before = table(url)
    shutil.rmtree(url / ".build" / "table")
    obs_table.rewrite_from_dense(str(url))
    after = table(url)
    for f in before:
        np.testing.assert_array_equal(after[f], before[f], err_msg=f)


def test_a_late_profile_file_and_new_days_keep_the_table_equal_to_a_fresh_build(tiny_demo, tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    late = demo / "en4" / "EN.4.2.2.f.profiles.g10.201002.nc"
    os.replace(late, tmp_path / late.name)
    cfg = tiny_cube_config(demo, tmp_path / "cube.zarr")
    build(cfg, progress=False)
    n_january = assert_table_equals_dense(cfg.output)
    os.replace(tmp_path / late.name, late)                # February's profiles arrive late: days the cube has
    assert build(cfg, progress=False).status == "appended"
    assert assert_table_equals_dense(cfg.output) > n_january
    fresh = build(tiny_cube_config(demo, tmp_path / "fresh.zarr"), progress=False)
    assert_same_cube(Path(cfg.output), Path(fresh.output))
    add_days(demo, 6)                                     # then new days (the last day chunk grows)
    assert build(cfg, progress=False).status == "appended"
    assert_table_equals_dense(cfg.output)
    parts = sorted(p.name for p in (Path(cfg.output) / ".build" / "table").iterdir())
    assert parts == ["0-4.npz", "12-16.npz", "4-8.npz", "8-12.npz"]   # 16 days; the old "8-10" part is gone
    shutil.rmtree(fresh.output)
    build(tiny_cube_config(demo, tmp_path / "fresh.zarr"), progress=False)
    assert_same_cube(Path(cfg.output), Path(fresh.output))


def test_a_build_killed_before_the_table_resumes_and_writes_it(tiny_demo, tmp_path, monkeypatch):
    """Every profiles-b task done, the table task not: the rerun skips the rest and writes the table."""
    import cube.tasks as tasks

    real = tasks.task_profile_table

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the table")

    monkeypatch.setattr(tasks, "task_profile_table", crash)
    cfg = tiny_cube_config(tiny_demo, tmp_path / "cube.zarr")
    with pytest.raises(RuntimeError, match="killed before the table"):
        build(cfg, progress=False)
    assert not Path(cfg.output).exists()
    monkeypatch.setattr(tasks, "task_profile_table", real)
    resumed = build(cfg, progress=False)
    assert resumed.tasks_run == 1 and resumed.tasks_skipped > 0          # only the table task ran
    n = assert_table_equals_dense(cfg.output)
    journal = store.Journal(cfg.output).entries
    assert [e["rows"] for k, e in journal.items() if k.startswith("profiles-table:")] == [n]
    again = build(cfg, progress=False)
    assert again.status == "up to date" and again.tasks_run == 0


# --------------------------------------------------------------------------------------------
# A v1 cube: depthcube's own, but it must be rebuilt
# --------------------------------------------------------------------------------------------


def as_v1(path: Path) -> None:
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["contract"] = "depthcube cube v1"
    (path / "zarr.json").write_text(json.dumps(doc))


def test_a_v1_cube_needs_rebuild_and_rebuild_replaces_it(tiny_demo, tmp_path, capsys):
    from depthcube.cli import main
    from conftest import write_tiny_config

    out = tmp_path / "cube.zarr"
    config = write_tiny_config(tiny_demo, out, name=f"{tmp_path.name}.yaml")
    assert main(["build", str(config), "-q"]) == 0
    as_v1(out)
    assert store.node_kind(str(out)) == "cube"               # its own, not foreign
    frozen = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["build", str(config), "-q"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "was built with contract v1" in err[0] and "--rebuild" in err[0], err
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == frozen
    assert main(["build", str(config), "-q", "--rebuild"]) == 0
    assert zarr.open_group(str(out), mode="r").attrs["contract"] == CONTRACT
    assert_table_equals_dense(out)


def test_a_v1_staging_folder_is_started_again_not_refused(tiny_demo, tmp_path):
    cfg = tiny_cube_config(tiny_demo, tmp_path / "cube.zarr")
    build(tiny_cube_config(tiny_demo, tmp_path / "other.zarr"), progress=False)
    staging = tmp_path / "cube.zarr.partial"
    os.replace(tmp_path / "other.zarr", staging)
    as_v1(staging)
    doc = json.loads((staging / "zarr.json").read_text())
    doc["attributes"]["status"] = "building"
    (staging / "zarr.json").write_text(json.dumps(doc))
    assert store.node_kind(str(staging)) == "staging"
    report = build(cfg, progress=False)
    assert report.status == "built" and report.tasks_skipped == 0   # same plan, other contract: not resumed
    assert zarr.open_group(cfg.output, mode="r").attrs["contract"] == CONTRACT
    assert_table_equals_dense(cfg.output)
