"""A cube served read-only over HTTP (the loopback server of ``bench/serve.py``) opens with
``CubeStream`` and ``open_cube`` and gives the local cube's samples and values; ``storage_options``
reach the HTTP filesystem (a header the server requires, as a store needs its credentials)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.serve import LoopbackServer
from cube.open import open_cube
from loaders.config import DatasetConfig, XConfig
from loaders.stream import CubeStream


@pytest.fixture(scope="module")
def served(tiny_cube):
    """The tiny cube's folder over loopback HTTP; yields (server, cube URL)."""
    with LoopbackServer(tiny_cube.parent) as server:
        yield server, f"{server.url}/{tiny_cube.name}"


def test_stream_over_http_equals_the_local_cube(served, tiny_cube):
    server, url = served
    cfg = DatasetConfig(window_days=3, x=XConfig(source="argo"))
    far, near = CubeStream(url, cfg, split="all", shuffle=False), CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    assert len(far) == len(near) > 0
    before = server.stats()["requests"]
    for i in np.linspace(0, len(far) - 1, 4).astype(int):
        s, t = far.sample(int(i)), near.sample(int(i))
        for k in ("eo", "x", "y", "x_valid_mask", "y_valid_mask", "eo_valid_mask", "land_mask"):
            np.testing.assert_array_equal(s[k], t[k], err_msg=k)
    assert server.stats()["requests"] > before  # the samples came over HTTP, not from a local path
    batch = next(iter(far))  # the IterableDataset path
    assert tuple(batch["y"].shape[-2:]) == (16, 16)


def test_open_cube_over_http_equals_the_local_cube(served, tiny_cube):
    _, url = served
    far, near = open_cube(url), open_cube(str(tiny_cube))
    for name in ("ostia/analysed_sst", "glorys/thetao", "profiles/n_obs", "static/ocean_mask"):
        np.testing.assert_array_equal(far[name].values, near[name].values, err_msg=name)
    assert far.attrs["contract"] == near.attrs["contract"]


def test_storage_options_reach_the_http_filesystem(tiny_cube):
    cfg = DatasetConfig(window_days=3)
    with LoopbackServer(tiny_cube.parent, require_headers={"X-Token": "secret"}) as server:
        url = f"{server.url}/{tiny_cube.name}"
        options = {"headers": {"X-Token": "secret"}}
        s = CubeStream(url, cfg, split="all", storage_options=options).sample(0)
        np.testing.assert_array_equal(s["y"], CubeStream(str(tiny_cube), cfg, split="all").sample(0)["y"])
        np.testing.assert_array_equal(open_cube(url, storage_options=options)["static/ocean_mask"].values,
                                      open_cube(str(tiny_cube))["static/ocean_mask"].values)
        with pytest.raises(Exception, match="403|Forbidden|no cube"):
            CubeStream(url, cfg, split="all")                           # without them the server refuses
