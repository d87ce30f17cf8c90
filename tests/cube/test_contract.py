"""The cube contract (cube/layout.py): the time encoding both ways against hand-counted days and
hours, and ``check_contract`` (called by ``CubeReader`` on open) against hand-damaged cubes: a
missing group, a wrong dtype, wrong dims, a foreign zarr store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from _cubes import DAYS, SNAPSHOTS, make_analytic_cube
from cube.layout import (CONTRACT, ContractError, check_contract, days_from_int, days_to_int, hours_to_int,
                         times_from_hours)
from loaders.reader import CubeReader


# --------------------------------------------------------------------------------------------
# Time encoding
# --------------------------------------------------------------------------------------------

def test_days_since_1950_by_hand():
    # 1950 and 1951 have 365 days each; 1952 is a leap year.
    days = np.array(["1950-01-01", "1950-01-02", "1952-01-01", "1953-01-01", "1949-12-31"], "datetime64[D]")
    assert days_to_int(days).tolist() == [0, 1, 730, 730 + 366, -1]
    assert days_to_int(days).dtype == np.int64
    assert (days_from_int(np.array([0, 1, 730, 1096, -1])) == days).all()


def test_hours_since_1950_by_hand():
    times = np.array(["1950-01-01T00:00", "1950-01-01T06:00", "1950-01-02T12:00"], "datetime64[s]")
    assert hours_to_int(times).tolist() == [0, 6, 36]
    back = times_from_hours(np.array([0, 6, 36]))
    assert back.dtype == np.dtype("datetime64[s]") and (back == times).all()


def test_reader_decodes_what_the_builder_encoded(tmp_path):
    reader = CubeReader(make_analytic_cube(tmp_path / "c.zarr"))
    assert (reader.days == DAYS).all()
    assert (reader.glorys_times == SNAPSHOTS).all()


# --------------------------------------------------------------------------------------------
# check_contract on hand-damaged cubes
# --------------------------------------------------------------------------------------------

def _edit_metadata(cube: Path, edit) -> None:
    """Apply ``edit(path, metadata_dict) -> dict | None`` (None drops the node) to every node's
    metadata, in the root's consolidated metadata and in the node's own zarr.json."""
    root_json = cube / "zarr.json"
    doc = json.loads(root_json.read_text())
    nodes = doc["consolidated_metadata"]["metadata"]
    for path in list(nodes):
        new = edit(path, nodes[path])
        own = cube / path / "zarr.json"
        if new is None:
            del nodes[path]
            shutil.rmtree(cube / path, ignore_errors=True)
        else:
            nodes[path] = new
            if own.exists():
                own.write_text(json.dumps(new))
    root_json.write_text(json.dumps(doc))


def _open_error(url: str) -> str:
    with pytest.raises(ContractError) as e:
        CubeReader(url).days
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{url}: not a {CONTRACT}: ")
    assert message.endswith("rebuild it (depthcube build --rebuild)")
    return message


def test_a_good_cube_passes(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    check_contract(zarr.open_group(url, mode="r", use_consolidated=True), url)
    assert len(CubeReader(url).days) == len(DAYS)


def test_missing_group_is_named(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    _edit_metadata(Path(url), lambda path, md: None if path.split("/")[0] == "patches" else md)
    assert "group(s) ['patches'] missing" in _open_error(url)


def test_wrong_dtype_is_named(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    _edit_metadata(Path(url), lambda path, md: {**md, "data_type": "float64"} if path == "ostia/analysed_sst" else md)
    assert "ostia/analysed_sst has dtype float64, expected float32" in _open_error(url)


def test_wrong_dims_are_named(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    swapped = ["time", "depth", "lon", "lat"]
    _edit_metadata(Path(url), lambda path, md: {**md, "dimension_names": swapped} if path == "glorys/thetao" else md)
    message = _open_error(url)
    assert "glorys/thetao has dims ('time', 'depth', 'lon', 'lat'), expected ('time', 'depth', 'lat', 'lon')" in message


def test_missing_variable_is_named(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    _edit_metadata(Path(url), lambda path, md: None if path == "profiles/n_obs" else md)
    assert "array profiles/n_obs missing" in _open_error(url)


def test_foreign_zarr_store(tmp_path):
    url = str(tmp_path / "foreign.zarr")
    root = zarr.open_group(url, mode="w", zarr_format=3, attributes={"title": "someone else's data"})
    root.create_array("ostia", shape=(3,), dtype="float32")  # an array where a cube has a group
    zarr.consolidate_metadata(url)
    assert f"its contract attribute is None, expected {CONTRACT!r}" in _open_error(url)
    assert sorted(p.name for p in Path(url).iterdir()) == ["ostia", "zarr.json"]  # nothing written or removed


def test_older_contract_version(tmp_path):
    url = make_analytic_cube(tmp_path / "c.zarr")
    _edit_metadata(Path(url), lambda path, md: md)  # consolidated and own metadata stay in step
    doc = json.loads((Path(url) / "zarr.json").read_text())
    doc["attributes"]["contract"] = "depthcube cube v0"
    (Path(url) / "zarr.json").write_text(json.dumps(doc))
    assert "its contract attribute is 'depthcube cube v0'" in _open_error(url)


def test_open_cube_checks_the_contract_too(tmp_path):
    from cube.errors import DepthcubeError
    from cube.open import open_cube

    url = make_analytic_cube(tmp_path / "c.zarr")
    assert open_cube(url, chunks=None)["ostia"].sizes["time"] == len(DAYS)
    _edit_metadata(Path(url), lambda path, md: {**md, "data_type": "uint8"} if path == "static/bottom_level" else md)
    with pytest.raises(ContractError, match="static/bottom_level has dtype uint8, expected int8"):
        open_cube(url)
    with pytest.raises(DepthcubeError, match="no cube here"):
        open_cube(str(tmp_path / "absent.zarr"))
