"""The one config mechanism (cube.spec): every spec dataclass round-trips through to_dict/from_dict,
read-back errors name the key path, and one path rule serves the cube and train configs."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest
import yaml

from cube.config import CubeConfig, load_cube_config
from cube.demo import DemoSpec
from cube.download.request import DownloadRequest
from cube.errors import ConfigError
from cube.spec import config_base, from_dict, load_config, resolve_path, to_dict
from loaders.config import DatasetConfig, load_dataset_config
from train.config import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[2]
ROOTS = (CubeConfig, DatasetConfig, TrainConfig)


def _spec_classes(roots) -> list[type]:
    """Every dataclass reachable from ``roots`` through field types (unions, tuples, lists included)."""
    seen: dict[type, None] = {}

    def walk(tp):
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if tp in seen:
                return
            seen[tp] = None
            for t in typing.get_type_hints(tp).values():
                walk(t)
        elif typing.get_origin(tp) in (typing.Union, types.UnionType, tuple, list, dict):
            for arg in typing.get_args(tp):
                walk(arg)

    for root in roots:
        walk(root)
    return list(seen)


SPEC_CLASSES = _spec_classes(ROOTS)


def _json_trip(x):
    """The plain form as stored in cube attributes / checkpoints: through JSON and back."""
    return json.loads(json.dumps(to_dict(x)))


def test_the_walk_finds_every_nested_spec():
    names = {c.__name__ for c in SPEC_CLASSES}
    # Hand list of the sections the three configs declare (an independent expectation of the walk).
    assert {"CubeConfig", "InputsConfig", "GridConfig", "TimeConfig", "ChunkConfig", "CompressionConfig",
            "ProfileQCConfig", "PatchSpec", "SplitSpec", "ComputeConfig", "DatasetConfig", "CorruptionSpec",
            "EOConfig", "TrainConfig", "DataSection", "LoaderConfig", "ModelConfig", "LossConfig",
            "OptimConfig", "RunConfig"} <= names


@pytest.mark.parametrize("cls", SPEC_CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_default_spec_round_trips(cls):
    x = cls()
    assert from_dict(cls, _json_trip(x)) == x


def _configs_in_repo():
    yield "cube.yaml", load_cube_config(REPO / "configs" / "cube.yaml")
    yield "train.yaml", load_train_config(REPO / "configs" / "train.yaml")
    presets = yaml.safe_load((REPO / "configs" / "dataset.yaml").read_text())["presets"]
    for name in presets:
        yield f"dataset.yaml:{name}", load_dataset_config(REPO / "configs" / "dataset.yaml", preset=name)


@pytest.mark.parametrize("label,cfg", list(_configs_in_repo()), ids=lambda v: v if isinstance(v, str) else "")
def test_checked_in_configs_round_trip(label, cfg):
    back = from_dict(type(cfg), _json_trip(cfg))
    assert back == cfg
    # tuples come back as tuples (JSON gave lists), so the frozen specs stay hashable
    hash(json.dumps(to_dict(back), sort_keys=True))


def test_non_default_nested_values_round_trip():
    cfg = load_config({"output": "/tmp/c.zarr", "inputs": {"ostia": ["a/*.nc"], "argo": ["s3://b/x.nc"]},
                       "grid": {"resolution": "native", "region": [10, 20, -30, -10]},
                       "time": {"start": "2020-01-01", "end": "2020-02-01"},
                       "chunks": {"days": 4, "spatial": 16, "shard_tiles": 2},
                       "patches": {"tile_size": 16, "stride": 8}, "split": {"method": "year", "val_year": 2020},
                       "profiles": {"accepted_qc": ["1"], "temperature": "insitu"}}, CubeConfig)
    assert cfg.grid.region == (10.0, 20.0, -30.0, -10.0) and cfg.patches.stride == 8
    assert from_dict(CubeConfig, _json_trip(cfg)) == cfg


def test_other_specs_round_trip():
    demo = DemoSpec.preset("tiny", seed=3)
    assert from_dict(DemoSpec, _json_trip(demo)) == demo
    req = DownloadRequest(output="/tmp/d", region=(1.0, 2.0, 3.0, 4.0), start="2020-01-01", end="2020-01-03",
                          products=("ostia", "argo"), argo_floats=(6902746,))
    assert from_dict(DownloadRequest, _json_trip(req)) == req


def test_from_dict_names_the_key_path_of_a_bad_value():
    data = _json_trip(CubeConfig())
    data["patches"]["tile_size"] = "big"
    with pytest.raises(ConfigError, match=r"^cube attrs: patches\.tile_size: expected an integer, got 'big'$"):
        from_dict(CubeConfig, data, label="cube attrs")
    data = _json_trip(TrainConfig())
    data["loss"]["moed"] = "ambient"
    with pytest.raises(ConfigError, match=r"^TrainConfig: loss: unknown key\(s\) \['moed'\]"):
        from_dict(TrainConfig, data)


def test_one_path_rule(tmp_path):
    (tmp_path / "configs").mkdir()
    assert config_base(tmp_path / "configs" / "x.yaml") == tmp_path.resolve()
    assert config_base(tmp_path / "x.yaml") == tmp_path.resolve()
    assert resolve_path("data/c.zarr", "/base") == "/base/data/c.zarr"
    assert resolve_path("/abs/c.zarr", "/base") == "/abs/c.zarr"
    assert resolve_path("s3://bucket/c.zarr", "/base") == "s3://bucket/c.zarr"
    # the cube and train configs apply the same rule to their paths
    (tmp_path / "configs" / "cube.yaml").write_text("output: out/c.zarr\ninputs: {ostia: [raw/*.nc]}\n")
    (tmp_path / "configs" / "train.yaml").write_text("data: {cube: out/c.zarr}\nrun: {out_dir: runs/r}\n")
    cube = load_cube_config(tmp_path / "configs" / "cube.yaml")
    train = load_train_config(tmp_path / "configs" / "train.yaml")
    root = tmp_path.resolve()
    assert cube.output == train.data.cube == str(root / "out" / "c.zarr")
    assert cube.inputs.ostia == [str(root / "raw" / "*.nc")]
    assert train.run.out_dir == str(root / "runs" / "r")
    assert train.data.dataset_config == str(root / "configs" / "dataset.yaml")
