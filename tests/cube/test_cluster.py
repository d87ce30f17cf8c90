"""Scale-out build: the tiny demo cube built on a dask.distributed LocalCluster of 2 worker
processes (``depthcube build --local-cluster 2`` and ``--scheduler ADDRESS``) equals the default
threaded build, value for value and chunk for chunk."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
import zarr

from depthcube.cli import main

ARRAYS = ("ostia/analysed_sst", "glorys/thetao", "profiles/count", "profiles/sum", "profiles/n_obs",
          "static/ocean_mask", "static/bottom_level", "patches/obs_count", "patches/split", "ostia/time",
          "glorys/time")


def _config(tiny_demo, output, path) -> str:
    """The conftest tiny-cube settings as a cube.yaml, so the CLI path is what runs."""
    data = {"output": str(output),
            "inputs": {"ostia": [f"{tiny_demo}/ostia/*.nc"], "glorys": [f"{tiny_demo}/glorys/*.nc"],
                       "en4": [f"{tiny_demo}/en4/*.nc"]},
            "chunks": {"days": 4}, "patches": {"tile_size": 16}, "compute": {"progress": False}}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _assert_same_cube(a_url: str, b_url: str):
    a = zarr.open_group(a_url, mode="r", zarr_format=3)
    b = zarr.open_group(b_url, mode="r", zarr_format=3)
    for name in ARRAYS:
        assert a[name].chunks == b[name].chunks and a[name].shape == b[name].shape, name
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert a.attrs["profiles"] == b.attrs["profiles"] and a.attrs["rejects"] == b.attrs["rejects"]


def test_local_cluster_of_two_processes_builds_the_same_cube(tiny_demo, tiny_cube, tmp_path):
    out = tmp_path / "cluster.zarr"
    rc = main(["build", _config(tiny_demo, out, tmp_path / "cube.yaml"), "--local-cluster", "2", "-q"])
    assert rc == 0
    _assert_same_cube(str(out), str(tiny_cube))


def test_scheduler_address_builds_the_same_cube(tiny_demo, tiny_cube, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "scheduler.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            rc = main(["build", _config(tiny_demo, out, tmp_path / "cube.yaml"), "--scheduler",
                       cluster.scheduler_address, "-q"])
            assert rc == 0 and len(client.scheduler_info()["workers"]) == 2
            # The build tasks ran in the worker processes: they imported cube.tasks to unpickle them.
            ran = client.run(lambda: "cube.tasks" in __import__("sys").modules)
            assert any(ran.values())
    _assert_same_cube(str(out), str(tiny_cube))
