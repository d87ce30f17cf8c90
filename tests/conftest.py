"""Shared fixtures: the real product samples and small demo products/cubes built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Where the real product samples live: ``$DEPTHCUBE_REAL_DATA`` when set, else ``../shared/data/real``
#: beside the repository. Tests name files relative to it and take the ``real_data`` fixture.
REAL_DATA_ENV = "DEPTHCUBE_REAL_DATA"
REAL_DATA = Path(os.environ.get(REAL_DATA_ENV) or REPO.parent / "shared" / "data" / "real")


def real_data_missing() -> str | None:
    """Why the real samples cannot be used (None when they can): the folder and how it was found."""
    if REAL_DATA.is_dir():
        return None
    how = f"${REAL_DATA_ENV}" if os.environ.get(REAL_DATA_ENV) else f"the default (set ${REAL_DATA_ENV} to override)"
    return f"real product samples not found: {REAL_DATA} (from {how}) is not a folder"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real product samples; skips the test, saying where it looked, when absent
    (fails instead when ``DEPTHCUBE_REQUIRE_REAL_DATA=1``, as CI sets it, so CI never skips them)."""
    reason = real_data_missing()
    if reason and os.environ.get("DEPTHCUBE_REQUIRE_REAL_DATA") == "1":
        pytest.fail(f"{reason}; DEPTHCUBE_REQUIRE_REAL_DATA=1 requires them")
    if reason:
        pytest.skip(reason)
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """The `tiny` demo products, written once per test session."""
    from cube.demo import DemoSpec, write_demo

    out = tmp_path_factory.mktemp("demo_tiny")
    write_demo(out, DemoSpec.preset("tiny"))
    return out


@pytest.fixture(scope="session")
def tiny_cube(tiny_demo, tmp_path_factory) -> Path:
    """A cube built from the tiny demo with 16-cell tiles, once per test session."""
    from cube.build import build

    cfg = tiny_cube_config(tiny_demo, tmp_path_factory.mktemp("cube_tiny") / "cube.zarr")
    build(cfg, progress=False)
    return Path(cfg.output)


@pytest.fixture(scope="session")
def small_table_cube(tiny_demo, tmp_path_factory) -> str:
    """The tiny cube with 8-row observation-table chunks (its 125 rows fill 16 of them), so some
    table chunks a window's index ranges touch hold none of its rows."""
    from cube.build import build

    cfg = tiny_cube_config(tiny_demo, tmp_path_factory.mktemp("rows8") / "cube.zarr", chunks={"days": 4, "profile_rows": 8})
    build(cfg, progress=False)
    return cfg.output


def tiny_config_data(demo: Path, output: Path, **overrides) -> dict:
    """The tiny-demo cube config as a mapping: 4-day chunks, 16-cell tiles, no progress bar.
    ``section=value`` replaces a section, ``section__key=value`` sets one key in it."""
    data = {
        "output": str(output),
        "inputs": {"ostia": [f"{demo}/ostia/*.nc"], "glorys": [f"{demo}/glorys/*.nc"], "en4": [f"{demo}/en4/*.nc"]},
        "chunks": {"days": 4},
        "patches": {"tile_size": 16},
        "compute": {"progress": False},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return data


def tiny_cube_config(demo: Path, output: Path, **overrides):
    from cube.config import CubeConfig
    from cube.spec import load_config

    return load_config(tiny_config_data(demo, output, **overrides), CubeConfig)


def write_tiny_config(demo: Path, output: Path, name: str = "cube.yaml", **overrides) -> Path:
    """:func:`tiny_config_data` written as ``demo/name`` (for the command line)."""
    import yaml

    path = demo / name
    path.write_text(yaml.safe_dump(tiny_config_data(demo, output, **overrides)))
    return path
