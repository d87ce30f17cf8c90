"""Same bytes, same samples: the tiny demo cube and the samples of every preset against a checked-in
digest (``tests/data/tiny_demo_digest.json``).

The digest pins what a refactoring must not change: every array of the cube, value by value, and
the first samples of every preset of ``configs/dataset.yaml`` (corruption drawn for epoch 0). The
demo products are byte-identical for one seed, so the digest is independent of this run.

A change that is *meant* to change the cube or the samples (a new codec changes no values; a new
variable or a contract bump does) regenerates it on purpose and says so in its commit:
``DEPTHCUBE_WRITE_DIGEST=1 .venv/bin/python -m pytest tests/cube/test_digest.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from loaders import CubeStream, load_dataset_config

DIGEST = Path(__file__).resolve().parents[1] / "data" / "tiny_demo_digest.json"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = ("eo_4band_tracks", "ostia_tracks", "argo_real", "argo_synthetic_500")
SAMPLES_PER_PRESET = 6


def value_digest(values) -> str:
    """sha256 of an array's dtype, shape and values (strings by their text, never by memory)."""
    a = np.asarray(values)
    h = hashlib.sha256(f"{a.shape}".encode())
    if a.dtype.kind in "OTUS":
        h.update("\x1f".join(str(v) for v in a.ravel()).encode())
        h.update(b"str")
    else:
        h.update(a.dtype.str.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cube_digest(path: Path) -> dict[str, str]:
    root = zarr.open_group(str(path), mode="r")
    out = {}

    def walk(group, prefix):
        for name, node in sorted(group.members()):
            key = f"{prefix}{name}"
            if isinstance(node, zarr.Group):
                if not name.startswith("."):
                    walk(node, key + "/")
            else:
                out[key] = value_digest(node[...])

    walk(root, "")
    return out


def sample_digest(cube: Path) -> dict[str, dict[str, str]]:
    out = {}
    for preset in PRESETS:
        stream = CubeStream(str(cube), load_dataset_config(CONFIGS, preset), split="all")
        for index in range(min(SAMPLES_PER_PRESET, len(stream.windows))):
            sample = stream.sample(index, epoch=0)
            out[f"{preset}/{index}"] = {k: value_digest(np.asarray(v)) for k, v in sorted(sample.items())
                                        if k != "info"}
    return out


@pytest.fixture(scope="module")
def digest(tiny_cube) -> dict:
    return {"cube": cube_digest(tiny_cube), "samples": sample_digest(tiny_cube)}


@pytest.fixture(scope="module")
def expected(digest) -> dict:
    if os.environ.get("DEPTHCUBE_WRITE_DIGEST") == "1":
        DIGEST.parent.mkdir(exist_ok=True)
        DIGEST.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
    return json.loads(DIGEST.read_text())


def test_every_cube_array_has_the_checked_in_values(digest, expected):
    assert sorted(digest["cube"]) == sorted(expected["cube"]), "the cube's arrays changed"
    changed = [k for k in expected["cube"] if digest["cube"][k] != expected["cube"][k]]
    assert not changed, f"arrays whose values changed: {changed}"


def test_every_preset_gives_the_checked_in_samples(digest, expected):
    assert sorted(digest["samples"]) == sorted(expected["samples"])
    changed = [f"{k}:{key}" for k, sample in expected["samples"].items()
               for key in sorted(set(sample) | set(digest["samples"][k]))
               if sample.get(key) != digest["samples"][k].get(key)]
    assert not changed, f"sample tensors that changed: {changed}"
