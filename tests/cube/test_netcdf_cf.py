"""NetCDF and CF interop of the cube (issue 14 item 3): the DataTree round-trips through NetCDF
with the same values, cf_xarray finds every axis, structured attributes are JSON strings that the
code reads back (and old cubes with dict attributes still read), bounds, flags, cell_methods."""

from __future__ import annotations

import json
import shutil

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pytest
import xarray as xr
import zarr

from cube.layout import decode_attrs, encode_attrs

GRID_GROUPS = ("ostia", "glorys", "profiles", "static")


@pytest.fixture(scope="module")
def tree(tiny_cube):
    return xr.open_datatree(str(tiny_cube), engine="zarr")


def test_datatree_round_trips_through_netcdf_with_the_same_values(tree, tmp_path):
    path = tmp_path / "cube.nc"
    tree.to_netcdf(path)
    back = xr.open_datatree(path)
    assert sorted(back.groups) == sorted(tree.groups)
    for node in tree.subtree:
        other = back[node.path]
        assert set(other.variables) == set(node.variables), node.path
        for name, var in node.variables.items():
            a, b = var.values, other[name].values
            if a.dtype.kind in "TUO":
                assert list(np.asarray(a, dtype=object).astype(str)) == list(np.asarray(b, dtype=object).astype(str))
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{node.path}/{name}")
        assert decode_attrs(other.attrs) == decode_attrs(node.attrs), node.path


def test_cf_xarray_finds_every_axis_in_every_group(tree):
    for group in GRID_GROUPS:
        ds = tree[group].to_dataset()
        expected = {"X": ["lon"], "Y": ["lat"]}
        expected.update({axis: [dim] for axis, dim in (("T", "time"), ("Z", "depth")) if dim in ds.dims})
        assert {k: sorted(v) for k, v in ds.cf.axes.items()} == expected, group
        assert ds.cf.bounds["lat"] == ["lat_bnds"] and ds.cf.bounds["lon"] == ["lon_bnds"], group
    # patches: one time series of profile counts per tile (CF featureType timeSeries): a time
    # axis, and the tile centres as latitude/longitude auxiliary coordinates.
    patches = tree["patches"].to_dataset()
    assert patches.attrs["featureType"] == "timeSeries"
    assert dict(patches.cf.axes) == {"T": ["time"]}
    assert patches.cf.coordinates["latitude"] == ["lat_center"]
    assert patches.cf.coordinates["longitude"] == ["lon_center"]
    assert patches.cf.cf_roles == {"timeseries_id": ["patch"]}


def test_every_group_has_conventions_and_title(tree):
    for node in tree.subtree:
        assert node.attrs["Conventions"] == "CF-1.10", node.path
        assert node.attrs["title"].startswith("depthcube"), node.path


def test_bounds_are_the_cell_edges_of_the_regular_grid(tree, tiny_cube):
    build = decode_attrs(tree.attrs)["build"]["grid"]
    res, south, west = build["resolution"], build["lat_south"], build["lon_west"]
    for group in GRID_GROUPS:
        ds = tree[group]
        nlat, nlon = ds.sizes["lat"], ds.sizes["lon"]
        # Hand expectation: cell k spans [south + k*res, south + (k+1)*res).
        lat_edges = south + res * np.arange(nlat + 1)
        lon_edges = west + res * np.arange(nlon + 1)
        np.testing.assert_allclose(ds["lat_bnds"].values, np.stack([lat_edges[:-1], lat_edges[1:]], 1), atol=1e-9)
        np.testing.assert_allclose(ds["lon_bnds"].values, np.stack([lon_edges[:-1], lon_edges[1:]], 1), atol=1e-9)
        assert ds["lat"].attrs["bounds"] == "lat_bnds" and ds["lon"].attrs["bounds"] == "lon_bnds"


def test_variable_attributes_flags_cell_methods_and_split_type(tree, tiny_cube):
    mask = tree["static/ocean_mask"]
    assert list(mask.attrs["flag_values"]) == [0, 1] and mask.attrs["flag_meanings"] == "land ocean"
    assert mask.attrs["standard_name"] == "sea_binary_mask"
    # flag 1 = ocean: the ocean cells are the ones with valid top-level GLORYS values.
    top_valid = np.isfinite(tree["glorys/thetao"].isel(depth=0).values).any(axis=0)
    assert np.array_equal(mask.values.astype(int) == 1, top_valid)
    assert tree["ostia/analysed_sst"].attrs["cell_methods"] == "time: mean"
    assert tree["glorys/thetao"].attrs["cell_methods"] == "time: mean"
    for name in ("count", "sum", "n_obs"):
        assert tree[f"profiles/{name}"].attrs["cell_methods"] == "time: sum"
    split_meta = json.loads((tiny_cube / "patches" / "split" / "zarr.json").read_text())
    assert split_meta["data_type"] == "string"                       # vlen UTF-8: NetCDF-4 NC_STRING


def test_structured_attributes_are_json_strings_read_back_as_dicts(tiny_cube):
    root = json.loads((tiny_cube / "zarr.json").read_text())["attributes"]
    for key in ("build", "inputs", "rejects", "profiles"):
        assert isinstance(root[key], str), key
    attrs = decode_attrs(root)
    assert attrs["build"]["config"]["patches"]["tile_size"] == 16    # conftest's tiny cube config
    assert {i["product"] for i in attrs["inputs"]} == {"ostia", "glorys", "en4"}
    patches = json.loads((tiny_cube / "patches" / "zarr.json").read_text())["attributes"]
    assert json.loads(patches["split_config"])["method"] == "patch"


def test_encode_attrs_refuses_a_structured_value_under_another_name():
    assert encode_attrs({"build": {"a": [1, 2]}, "n": np.int64(3)}) == {"build": '{"a": [1, 2]}', "n": 3}
    with pytest.raises(ValueError, match="'extra'"):
        encode_attrs({"extra": {"a": 1}})


def _with_dict_attrs(cube, dest):
    """A copy of ``cube`` at ``dest`` whose structured attributes are dicts, as cubes were written before."""
    shutil.copytree(cube, dest)
    for doc_path in (dest / "zarr.json", dest / "patches" / "zarr.json"):
        doc = json.loads(doc_path.read_text())
        doc["attributes"] = decode_attrs(doc["attributes"])
        if "build" in doc["attributes"]:
            doc["attributes"]["build"]["config"]["output"] = str(dest)  # as if built there
        for member in doc.get("consolidated_metadata", {}).get("metadata", {}).values():
            if member.get("node_type") == "group":
                member["attributes"] = decode_attrs(member.get("attributes", {}))
        doc_path.write_text(json.dumps(doc))
    return dest


def test_an_old_cube_with_dict_attributes_still_reads(tiny_cube, tiny_demo, tmp_path):
    from conftest import tiny_cube_config
    from cube.build import build
    from cube.open import describe, open_cube
    from loaders.reader import CubeReader

    old = _with_dict_attrs(tiny_cube, tmp_path / "old.zarr")
    assert isinstance(zarr.open_group(str(old), mode="r").attrs["build"], dict)
    assert CubeReader(str(old)).attrs["build"]["grid"] == CubeReader(str(tiny_cube)).attrs["build"]["grid"]
    assert describe(open_cube(str(old)), str(old)).splitlines()[3:] == \
        describe(open_cube(str(tiny_cube)), str(tiny_cube)).splitlines()[3:]  # from the grid line on
    # The builder reads the old attributes to decide "up to date", and a later write converts them.
    assert build(tiny_cube_config(tiny_demo, old), progress=False).status == "up to date"
