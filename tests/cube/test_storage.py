"""Object storage: build the tiny demo cube to ``s3://`` on a real S3-compatible server (moto's
server mode on loopback) and to ``memory://``, then open and stream from there; the remote cubes
must hold the same values and chunks as the local build, and stream the same samples."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest
import zarr

from conftest import tiny_cube_config
from cube.build import build
from cube.open import open_cube
from loaders.config import DatasetConfig
from loaders.stream import CubeStream

ARRAYS = ("ostia/analysed_sst", "glorys/thetao", "profiles/count", "profiles/sum", "profiles/n_obs",
          "static/ocean_mask", "static/bottom_level", "patches/obs_count")
KEY, SECRET = "depthcube-test", "depthcube-test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and env credentials; yields the s3fs storage_options."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        # These builds reach the endpoint through the standard AWS variables (botocore reads
        # AWS_ENDPOINT_URL_S3), as a cluster worker would; test_storage_options.py passes
        # storage_options instead, with no AWS variable set.
        for k, v in {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL_S3": endpoint}.items():
            mp.setenv(k, v)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        options = {"client_kwargs": {"endpoint_url": endpoint}, "key": KEY, "secret": SECRET}
        s3fs.S3FileSystem(**options).mkdir("depthcube")
        yield options
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _assert_same_cube(remote: str, local: str, storage_options: dict | None = None):
    kw = {"storage_options": storage_options} if storage_options else {}
    a = zarr.open_group(remote, mode="r", zarr_format=3, **kw)
    b = zarr.open_group(local, mode="r", zarr_format=3)
    for name in ARRAYS:
        assert a[name].chunks == b[name].chunks and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def _assert_same_samples(remote: str, local: str, storage_options: dict | None = None, n: int = 3):
    cfg = DatasetConfig(window_days=3)
    far = CubeStream(remote, cfg, split="all", storage_options=storage_options)
    near = CubeStream(local, cfg, split="all")
    assert len(far) == len(near) > 0
    for i in np.linspace(0, len(far) - 1, n).astype(int):
        s, t = far.sample(int(i)), near.sample(int(i))
        for k in ("eo", "x", "y", "x_valid_mask", "y_valid_mask", "land_mask"):
            np.testing.assert_array_equal(s[k], t[k], err_msg=k)
        assert s["x_valid_mask"].any() == t["x_valid_mask"].any()
    batch = next(iter(far))  # the IterableDataset path: torch tensors straight from the bucket
    assert tuple(batch["y"].shape[-2:]) == (16, 16)


def test_build_to_s3_then_open_and_stream(s3, tiny_demo, tiny_cube):
    url = "s3://depthcube/tiny/cube.zarr"
    report = build(tiny_cube_config(tiny_demo, url), progress=False)
    assert report.status == "built" and not report.rejects
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    assert fs.exists("depthcube/tiny/cube.zarr/zarr.json")
    assert not fs.exists("depthcube/tiny/cube.zarr.partial")          # staging removed after publishing
    tree = open_cube(url, storage_options=s3)
    local = open_cube(str(tiny_cube))
    assert tree["ostia/analysed_sst"].shape == local["ostia/analysed_sst"].shape
    assert tree.attrs["status"] == "complete"
    _assert_same_cube(url, str(tiny_cube), s3)
    _assert_same_samples(url, str(tiny_cube), s3)


def test_build_to_memory_then_open_and_stream(tiny_demo, tiny_cube):
    url = "memory://depthcube-test/tiny/cube.zarr"
    report = build(tiny_cube_config(tiny_demo, url), progress=False)
    assert report.status == "built"
    assert build(tiny_cube_config(tiny_demo, url), progress=False).status == "up to date"
    tree = open_cube(url)
    assert float(tree["glorys/thetao"].isel(time=0, depth=0).mean()) == pytest.approx(
        float(open_cube(str(tiny_cube))["glorys/thetao"].isel(time=0, depth=0).mean()))
    _assert_same_cube(url, str(tiny_cube))
    _assert_same_samples(url, str(tiny_cube))
    import fsspec

    fsspec.filesystem("memory").rm("/depthcube-test", recursive=True)  # the store is process-global
