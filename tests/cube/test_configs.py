"""Config validation at load time: unknown keys, wrong types and impossible values are rejected with
the file and the key's path in the message (``cube.yaml: grid.resolution: ...``), for the cube
build config and the dataset presets, from mappings, from the YAML files in configs/ and from
the command line; a window longer than the cube is rejected when a stream opens it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _cubes import make_analytic_cube
from cube.config import CubeConfig, load_cube_config
from cube.spec import load_config, to_dict
from cube.errors import ConfigError
from loaders.config import DatasetConfig, load_dataset_config
from loaders.stream import CubeStream

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def error(data: dict, cls=CubeConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data, cls, label="my.yaml")
    return str(info.value)


@pytest.mark.parametrize("data, where, words", [
    ({"outptu": "x.zarr"}, "my.yaml: unknown key(s) ['outptu']", "valid keys are ['output', 'inputs'"),
    ({"grid": {"resolutoin": 0.1}}, "my.yaml: grid: unknown key(s) ['resolutoin']", "['resolution', 'region']"),
    ({"chunks": {"time": 8}}, "my.yaml: chunks: unknown key(s) ['time']", "'days'"),
    ({"split": {"fraction": 0.2}}, "my.yaml: split: unknown key(s) ['fraction']", "'val_fraction'"),
])
def test_unknown_cube_keys_list_the_valid_ones(data, where, words):
    message = error(data)
    assert message.startswith(where) and words in message


@pytest.mark.parametrize("data, where", [
    ({"grid": {"resolution": "fine"}}, "my.yaml: grid.resolution: expected a number"),
    ({"grid": {"region": [0, 10, 0, "east"]}}, "my.yaml: grid.region[3]: expected a number, got 'east'"),
    ({"grid": {"region": [0, 10, 0]}}, "my.yaml: grid.region: expected 4 values, got 3"),
    ({"chunks": {"days": "8"}}, "my.yaml: chunks.days: expected an integer, got '8'"),
    ({"chunks": {"days": 7.5}}, "my.yaml: chunks.days: expected an integer, got 7.5"),
    ({"strict": "yes"}, "my.yaml: strict: expected true/false, got 'yes'"),
    ({"inputs": {"ostia": "data/*.nc"}}, "my.yaml: inputs.ostia: expected a list"),
    ({"inputs": {"ostia": [None]}}, "my.yaml: inputs.ostia[0]: expected a string, got None"),
    ({"compression": {"cname": "gzip"}}, "my.yaml: compression.cname: expected one of ['zstd'"),
    ({"patches": {"tile_size": 16.5}}, "my.yaml: patches.tile_size: expected an integer, got 16.5"),
    ({"grid": "global"}, "my.yaml: grid: expected a mapping, got str"),
])
def test_wrong_types_name_the_key_path(data, where):
    assert error(data).startswith(where), error(data)


@pytest.mark.parametrize("data, where", [
    ({"grid": {"resolution": 0}}, "my.yaml: grid.resolution: must be in (0, 10]"),
    ({"grid": {"resolution": float("nan")}}, "my.yaml: grid.resolution: expected a finite number"),
    ({"grid": {"region": [10, 0, 0, 10]}}, "my.yaml: grid.region: need -90 <= lat_min < lat_max"),
    ({"time": {"start": "2010-13-01"}}, "my.yaml: time.start: expected a date"),
    ({"time": {"start": "2010-02-01", "end": "2010-01-01"}}, "my.yaml: time: start 2010-02-01 is after end"),
    ({"chunks": {"days": 0}}, "my.yaml: chunks.days: must be in 1..366, got 0"),
    ({"chunks": {"profile_rows": 0}}, "my.yaml: chunks.profile_rows: must be >= 1, got 0"),
    ({"compression": {"clevel": 12}}, "my.yaml: compression.clevel: must be in 0..9, got 12"),
    ({"patches": {"tile_size": 0}}, "my.yaml: patches.tile_size: must be an integer >= 1, got 0"),
    ({"patches": {"invalid_threshold": 1.5}}, "my.yaml: patches.invalid_threshold: must be in [0, 1]"),
    ({"split": {"val_fraction": 1.5}}, "my.yaml: split.val_fraction: must be in [0, 1), got 1.5"),
    ({"split": {"method": "year"}}, "my.yaml: split.val_year: is required when method is 'year'"),
    ({"patches": {"tile_size": 16, "stride": 8}}, "my.yaml: split.val_year: overlapping tiles"),
    ({"profiles": {"accepted_qc": []}}, "my.yaml: profiles.accepted_qc: must name at least one QC code"),
    ({"compute": {"local_cluster": 0}}, "my.yaml: compute.local_cluster: must be >= 1, got 0"),
    # Tile geometry that cannot work: chunks that do not nest with tiles, a tile bigger than the region.
    ({"patches": {"tile_size": 128}, "chunks": {"spatial": 48}}, "my.yaml: chunks.spatial: must divide patches.tile_size (128)"),
    ({"patches": {"tile_size": 128}, "grid": {"region": [40, 46, -10, 10]}}, "my.yaml: patches.tile_size: a tile of 128 cells does not fit"),
])
def test_impossible_cube_values_name_the_key_path(data, where):
    assert error(data).startswith(where), error(data)


def test_tile_geometry_that_works_is_accepted():
    load_config({"patches": {"tile_size": 128}, "chunks": {"spatial": 64}}, CubeConfig)
    load_config({"patches": {"tile_size": 64}, "chunks": {"spatial": 128}}, CubeConfig)
    load_config({"patches": {"tile_size": 16}, "grid": {"region": [40, 41.6, -20, -18.4]}}, CubeConfig)
    load_config({"patches": {"tile_size": 128}, "grid": {"region": [-80, 80, -180, 180], "resolution": 1.0}}, CubeConfig)


@pytest.mark.parametrize("data, where", [
    ({"x": {"mask_fraction": 1.5}}, "my.yaml: x.mask_fraction: must be in [0, 1], got 1.5"),
    ({"x": {"mask_fraction": "most"}}, "my.yaml: x.mask_fraction: expected a number, got 'most'"),
    ({"x": {"source": "magic"}}, "my.yaml: x.source: must be one of"),
    ({"x": {"pixel_count": 0}}, "my.yaml: x.pixel_count: must be >= 1, got 0"),
    ({"x": {"fraction": 0.9}}, "my.yaml: x: unknown key(s) ['fraction']"),
    ({"eo": {"dropout_p": 2}}, "my.yaml: eo.dropout_p: must be in [0, 1], got 2.0"),
    ({"eo": {"offset_range": [2, -2]}}, "my.yaml: eo.offset_range: needs low <= high"),
    ({"eo": {"speckle_sigma": float("inf")}}, "my.yaml: eo.speckle_sigma: expected a finite number"),
    ({"eo": {"source": "modis"}}, "my.yaml: eo.source: expected one of ['ostia', 'glorys_surface']"),
    ({"window_days": 0}, "my.yaml: window_days: must be >= 1, got 0"),
    ({"window_days": 7.5}, "my.yaml: window_days: expected an integer, got 7.5"),
    ({"target_bands": [0, 51]}, "my.yaml: target_bands: need 0 <= start < end <= 50"),
    ({"target_bands": [3]}, "my.yaml: target_bands: expected 2 values, got 1"),
    ({"on_error": "ignore"}, "my.yaml: on_error: expected one of ['raise', 'skip']"),
    ({"seed": -1}, "my.yaml: seed: must be >= 0"),
    ({"augment": 1}, "my.yaml: augment: expected true/false, got 1"),
    ({"batch_size": 8}, "my.yaml: unknown key(s) ['batch_size']"),
])
def test_bad_dataset_values_name_the_key_path(data, where):
    assert error(data, DatasetConfig).startswith(where), error(data, DatasetConfig)


def test_yaml_files_report_file_and_key_path(tmp_path):
    cube = yaml.safe_load((CONFIGS / "cube.yaml").read_text())
    cube["patches"]["tile_size"] = 0
    (tmp_path / "cube.yaml").write_text(yaml.safe_dump(cube))
    with pytest.raises(ConfigError, match=r"^cube\.yaml: patches\.tile_size: must be an integer >= 1"):
        load_cube_config(tmp_path / "cube.yaml")

    dataset = yaml.safe_load((CONFIGS / "dataset.yaml").read_text())
    dataset["presets"]["ostia_tracks"]["x"]["mask_fraction"] = 1.5
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    with pytest.raises(ConfigError, match=r"^dataset\.yaml: presets\.ostia_tracks\.x\.mask_fraction: must be in \[0, 1\]"):
        load_dataset_config(tmp_path / "dataset.yaml", "ostia_tracks")
    load_dataset_config(tmp_path / "dataset.yaml", "argo_real")           # the other presets still load
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_dataset_config(tmp_path / "dataset.yaml", "nope")
    with pytest.raises(ConfigError, match="not found"):
        load_dataset_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("presets: {a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_dataset_config(tmp_path / "broken.yaml")


def test_the_shipped_configs_load():
    load_cube_config(CONFIGS / "cube.yaml")
    for name in yaml.safe_load((CONFIGS / "dataset.yaml").read_text())["presets"]:
        load_dataset_config(CONFIGS / "dataset.yaml", name)


def test_command_line_prints_the_key_path_on_one_line(tmp_path):
    (tmp_path / "cube.yaml").write_text("patches: {tile_size: 128}\nchunks: {spatial: 48}\n")
    out = subprocess.run([sys.executable, "-m", "depthcube", "build", str(tmp_path / "cube.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "depthcube build: error: cube.yaml: chunks.spatial: must divide patches.tile_size (128) evenly or be a "
        "multiple of it, so a tile reads whole chunks; got 48"]


def test_a_window_longer_than_the_cube_is_rejected_when_the_stream_opens(tmp_path):
    cube = make_analytic_cube(tmp_path / "cube.zarr")                 # 20 days
    with pytest.raises(ConfigError, match=r"^window_days: a window of 21 days is longer than the 20 days"):
        CubeStream(cube, DatasetConfig(window_days=20), split="all")  # even -> 21
    assert len(CubeStream(cube, DatasetConfig(window_days=19), split="all")) > 0


# Property: any edit of a valid config either loads (and round-trips) or raises ConfigError.
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=8), st.lists(st.integers(-5, 200), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(d: dict, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("cls, base", [
    (CubeConfig, to_dict(CubeConfig())),
    (DatasetConfig, to_dict(DatasetConfig())),
])
def test_any_edit_of_a_config_loads_or_raises_config_error(cls, base, data):
    edited = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(sorted(_paths(edited))))
        node = edited
        for key in path[:-1]:
            node = node[key]
        if data.draw(st.booleans()):
            node[path[-1]] = data.draw(VALUES)
        else:
            node[data.draw(st.text(min_size=1, max_size=6))] = data.draw(VALUES)   # maybe an unknown key
    try:
        cfg = load_config(edited, cls, label="fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")
        return
    assert load_config(to_dict(cfg), cls) == cfg
