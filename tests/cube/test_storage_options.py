"""``storage_options`` reach every store a build touches, with no AWS_* variable set: the tiny demo's
inputs are uploaded to an S3-compatible server (moto's server mode on loopback), built from there
into ``s3://`` through ``build(cfg, storage_options=...)`` and through ``depthcube build
--storage-options/--input-storage-options``, then read back with the same options by
``open_cube`` and ``CubeStream``: the same arrays and samples as the local build of the same
inputs. The options are never written into the cube. Config keys are validated at the edge."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import tiny_cube_config, tiny_config_data, write_tiny_config
from cube.build import build
from cube.config import CubeConfig, load_cube_config
from cube.errors import ConfigError
from cube.open import open_cube
from cube.plan import recorded_config
from cube.spec import load_config
from loaders.config import DatasetConfig
from loaders.stream import CubeStream

REPO = Path(__file__).resolve().parents[2]
BUCKET = "depthcube-options"
KEY, SECRET = "options-test-key", "options-test-secret-do-not-record"
ARRAYS = ("ostia/analysed_sst", "glorys/thetao", "profiles/count", "profiles/sum", "profiles/n_obs",
          "static/ocean_mask", "static/bottom_level", "patches/obs_count")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket(tiny_demo):
    """A moto S3 server on 127.0.0.1 holding the tiny demo's inputs under ``demo/``, with every
    AWS_* variable removed (and no AWS config file), so only ``storage_options`` can reach it.
    Yields the options."""
    from moto.server import ThreadedMotoServer
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": KEY, "secret": SECRET}
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(name)
        mp.setenv("HOME", str(tiny_demo / "no-home"))  # no ~/.aws/credentials or config either
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(BUCKET)
        for product in ("ostia", "glorys", "en4"):
            fs.put([str(p) for p in sorted((tiny_demo / product).glob("*.nc"))], f"{BUCKET}/demo/{product}/")
        yield options
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _remote_config(tiny_demo: Path, output: str, storage_options: dict | None):
    """The tiny config with its inputs in the bucket (reached with ``storage_options``)."""
    inputs = {p: [f"s3://{BUCKET}/demo/{p}/*.nc"] for p in ("ostia", "glorys", "en4")}
    if storage_options:
        inputs["storage_options"] = storage_options
    return tiny_cube_config(tiny_demo, output, inputs=inputs)


def _assert_same_cube(url: str, local: Path, options: dict):
    a = zarr.open_group(url, mode="r", zarr_format=3, storage_options=options)
    b = zarr.open_group(str(local), mode="r", zarr_format=3)
    for name in ARRAYS:
        assert a[name].chunks == b[name].chunks, name
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def _assert_no_secret_in_cube(url: str, options: dict):
    """No metadata document of the cube mentions the secret (nor its build record the options)."""
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    path = url.removeprefix("s3://")
    docs = [p for p in fs.find(path) if p.endswith("zarr.json")]
    assert docs and not any(SECRET.encode() in fs.cat_file(p) for p in docs)
    config = json.loads(open_cube(url, storage_options=options).attrs["build"])["config"]
    assert "output_storage_options" not in config and "storage_options" not in config["inputs"]


def test_build_from_and_to_s3_with_storage_options_only(bucket, tiny_demo, tiny_cube):
    url = f"s3://{BUCKET}/api/cube.zarr"
    report = build(_remote_config(tiny_demo, url, bucket), storage_options=bucket, progress=False)
    assert report.status == "built" and not report.rejects and len(report.inputs) > 0
    assert all(i["url"].startswith(f"s3://{BUCKET}/demo/") for i in report.inputs)
    _assert_same_cube(url, tiny_cube, bucket)
    _assert_no_secret_in_cube(url, bucket)
    # Read back through the loaders with the same options: the local build's samples.
    tree, local = open_cube(url, storage_options=bucket), open_cube(str(tiny_cube))
    np.testing.assert_array_equal(tree["glorys/thetao"].isel(time=0).values, local["glorys/thetao"].isel(time=0).values)
    cfg = DatasetConfig(window_days=3)
    far, near = CubeStream(url, cfg, split="all", storage_options=bucket), CubeStream(str(tiny_cube), cfg, split="all")
    assert len(far) == len(near) > 0
    for i in np.linspace(0, len(far) - 1, 3).astype(int):
        s, t = far.sample(int(i)), near.sample(int(i))
        for k in ("eo", "x", "y", "x_valid_mask", "y_valid_mask", "land_mask"):
            np.testing.assert_array_equal(s[k], t[k], err_msg=k)
    # The same inputs and options again: up to date (the options are not part of what was built).
    assert build(_remote_config(tiny_demo, url, bucket), storage_options=bucket, progress=False).status == "up to date"


def test_build_command_line_storage_options(bucket, tiny_demo, tiny_cube):
    url = f"s3://{BUCKET}/cli/cube.zarr"
    config = write_tiny_config(tiny_demo, Path("unused"), name="cube-s3.yaml",
                               inputs={p: [f"s3://{BUCKET}/demo/{p}/*.nc"] for p in ("ostia", "glorys", "en4")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tiny_demo / "no-home"))
    run = subprocess.run([sys.executable, "-m", "depthcube", "build", str(config), "-o", url,
                          "--storage-options", json.dumps(bucket), "--input-storage-options", json.dumps(bucket)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"built: {url}" in run.stdout and "stored" in run.stdout  # the summary read the cube back too
    _assert_same_cube(url, tiny_cube, bucket)
    bad = subprocess.run([sys.executable, "-m", "depthcube", "build", str(config), "-o", url, "--storage-options",
                          "[1, 2]"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--storage-options: expected a JSON object" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_storage_options_in_the_yaml_config(tmp_path, tiny_demo):
    path = tmp_path / "cube.yaml"
    data = tiny_config_data(tiny_demo, tmp_path / "cube.zarr")
    data["output_storage_options"] = {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "x"}}
    data["inputs"]["storage_options"] = {"anon": True}
    import yaml

    path.write_text(yaml.safe_dump(data))
    cfg = load_cube_config(path)
    assert cfg.output_storage_options["client_kwargs"] == {"region_name": "x"}
    assert cfg.inputs.storage_options == {"anon": True}
    # Resolving relative paths keeps the inputs' options.
    assert cfg.inputs.ostia == [f"{tiny_demo}/ostia/*.nc"]
    # What the cube records has neither, so cubes built before these keys existed stay up to date.
    plain = load_config(tiny_config_data(tiny_demo, tmp_path / "cube.zarr"), CubeConfig)
    assert recorded_config(cfg) == recorded_config(plain)
    assert "output_storage_options" not in recorded_config(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("output_storage_options", "s3", "cube.yaml: output_storage_options: expected a mapping, got 's3'"),
    ("inputs.storage_options", ["anon"], "cube.yaml: inputs.storage_options: expected a mapping, got ['anon']"),
    ("output_storage_options", {1: "x"}, "cube.yaml: output_storage_options: option names must be strings, got [1]"),
])
def test_bad_storage_options_name_their_key_path(tmp_path, tiny_demo, key, value, message):
    data = tiny_config_data(tiny_demo, tmp_path / "cube.zarr")
    section, _, name = key.rpartition(".")
    (data[section] if section else data)[name] = value
    with pytest.raises(ConfigError) as e:
        load_config(data, CubeConfig, label="cube.yaml")
    assert str(e.value) == message


def test_a_store_without_credentials_is_one_line(bucket, tiny_demo, monkeypatch, tmp_path):
    """Options that reach the server but bring no credentials: ConfigError / OutputError naming the
    pattern or the output, not a botocore traceback; nothing is written."""
    import s3fs

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup (not a credential)
    s3fs.S3FileSystem.clear_instance_cache()
    endpoint_only = {"endpoint_url": bucket["endpoint_url"]}
    with pytest.raises(ConfigError, match=rf"^inputs.ostia: cannot list 's3://{BUCKET}/demo/ostia/\*.nc': "
                                          r"NoCredentialsError: .*; check inputs.storage_options$"):
        build(_remote_config(tiny_demo, str(tmp_path / "cube.zarr"), endpoint_only), progress=False)
    assert not (tmp_path / "cube.zarr").exists() and not (tmp_path / "cube.zarr.lock").exists()
    from cube.store import OutputError

    url = f"s3://{BUCKET}/nocreds/cube.zarr"
    with pytest.raises(OutputError, match=rf"^cannot reach {url}: NoCredentialsError: .*check its storage options"):
        build(tiny_cube_config(tiny_demo, url), storage_options=endpoint_only, progress=False)
    assert not s3fs.S3FileSystem(**bucket).exists(f"{BUCKET}/nocreds")
