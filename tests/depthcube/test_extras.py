"""Dependencies by role: the core (build and open cubes) runs without torch, and a command whose
extra is missing says which one to install, in one line, exit 2. Each check runs in a fresh
interpreter whose import system refuses the blocked modules before anything imports them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Child prologue: a sys.meta_path finder that makes ``BLOCKED`` (and their submodules) unimportable,
#: as in an environment where they are not installed.
_BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
"""


def _run(code: str, blocked: tuple[str, ...] = (), cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _BLOCKER.format(blocked=blocked) + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _cli(*args, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return _run(f"from depthcube.cli import main; sys.exit(main({list(map(str, args))!r}))", blocked)


def test_builder_and_cli_import_no_torch():
    r = _run("import cube.build, cube.cli, depthcube.cli, loaders, loaders.config\n"
             "heavy = sorted(m for m in ('torch', 'torchdata', 'lightning', 'rasterio', 'pyinterp') if m in sys.modules)\n"
             "print(heavy)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_open_cube_and_build_without_torch(tiny_cube, tiny_demo, tmp_path):
    r = _run(f"from loaders import open_cube, describe\n"
             f"tree = open_cube({str(tiny_cube)!r})\n"
             f"print(tree['ostia']['analysed_sst'].shape)\n"
             f"print('torch' in sys.modules)", blocked=("torch",))
    assert r.returncode == 0, r.stderr
    shape, torch_loaded = r.stdout.strip().splitlines()
    assert shape.startswith("(") and torch_loaded == "False"
    # `depthcube build` with no torch installed
    config = tmp_path / "cube.yaml"
    config.write_text(json.dumps({"output": str(tmp_path / "c.zarr"), "patches": {"tile_size": 16},
                                  "chunks": {"days": 4}, "compute": {"progress": False},
                                  "inputs": {p: [f"{tiny_demo}/{p}/*.nc"] for p in ("ostia", "glorys", "en4")}}))
    r = _cli("build", config, "-q", blocked=("torch",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("built: ") and (tmp_path / "c.zarr" / "zarr.json").exists()


def test_loaders_name_the_stream_lazily_without_torch():
    r = _run("import loaders\n"
             "try:\n    loaders.CubeStream\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)",
             blocked=("torch",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "missing torch"


def test_train_without_torch_names_the_train_extra():
    r = _cli("train", REPO / "configs" / "train.yaml", "--max-steps", "1", blocked=("torch",))
    assert r.returncode == 2
    assert r.stderr == "depthcube train needs the 'train' extra: pip install 'depthcube[train]'\n"
    assert r.stdout == ""


def test_plot_samples_without_torch_name_the_train_extra(tiny_cube, tmp_path):
    r = _cli("plot", tiny_cube, "--out", tmp_path / "png", "--sample", "1", blocked=("torch",))
    assert r.returncode == 2
    assert r.stderr == "depthcube plot needs the 'train' extra: pip install 'depthcube[train]'\n"
    assert (tmp_path / "png" / "overview.png").stat().st_size > 0     # the cube overview needs no torch


@pytest.mark.parametrize("blocked", [("torch",), ("rasterio",)], ids=["no-torch", "no-rasterio"])
def test_export_geotiff_without_its_extra_names_it_and_writes_nothing(tiny_cube, tmp_path, blocked):
    out = tmp_path / "tiffs"
    r = _cli("export", "geotiff", tiny_cube, out, "--limit", "1", blocked=blocked)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "depthcube export geotiff needs the 'export' extra: pip install 'depthcube[export]'\n"
    assert not out.exists()


def test_s3_url_without_s3fs_names_the_s3_extra():
    r = _cli("info", "s3://no-such-bucket/cube.zarr", blocked=("s3fs",))
    assert r.returncode == 2
    assert r.stderr == "depthcube info needs the 's3' extra: pip install 'depthcube[s3]'\n"


def test_bench_without_torch_names_its_own_extra():
    r = _cli("bench", "--quick", blocked=("torch",))
    assert r.returncode == 2
    assert r.stderr == "depthcube bench needs the 'bench' extra: pip install 'depthcube[bench]'\n"


def test_the_extras_table_matches_pyproject():
    from depthcube.cli import EXTRA_MODULES

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs):
        return {re.split(r"[<>=\[;! ]", r, maxsplit=1)[0].lower() for r in reqs}

    for extra, modules in EXTRA_MODULES.items():
        assert set(modules) <= names(extras[extra]), extra          # module == distribution name for all of these
    optional = {m for modules in EXTRA_MODULES.values() for m in modules}
    assert not optional & names(project["dependencies"])            # the core installs none of them
