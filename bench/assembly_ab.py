"""Samples/s of this tree's loaders against another git revision's, on the same cube, interleaved.

Each round runs every preset once with the old code and once with the new, each in a fresh
subprocess (``PYTHONPATH`` set to that tree: the revision is exported with ``git archive``), 0
DataLoader workers, batch 32, OpenMP/BLAS/torch pinned to one thread before import, and times
three passes, each after its first batch:

* ``first``: the first pass of the process's first stream (cold: every chunk decoded, batch
  memory touched for the first time; on this project's VMs a fresh 2 MB page costs far more than
  memory speed, so this pass swings with the machine's state);
* ``decoding``: a second stream over the same cube in the same process, its caches empty, so every
  chunk is read and decoded again: what each epoch of a training run costs once the cube is larger
  than the decoded cache (a real cube always is), with the process's memory in use;
* ``cached``: a second pass over that stream (on the demo the decoded cache then holds the cube).

The report is the median over the rounds. Run (after ``make cube``):

    .venv/bin/python -m bench.assembly_ab --old 3fac004 --rounds 3 [--cube data/cube.zarr] [--samples 256]

When the old revision reads another cube contract than the cube's (3fac004 reads v1, this tree
writes v2), the old code reads a cube the old revision builds from the same inputs
(``configs/cube.yaml`` with absolute paths, into the temporary folder), or ``--old-cube PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("argo_real", "ostia_tracks", "eo_4band_tracks")
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}

MEASURE = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from loaders import CubeStream, StreamLoader, load_dataset_config
cube, preset, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = load_dataset_config("configs/dataset.yaml", preset)
def rate(stream):
    n, t_first = 0, None
    for batch in StreamLoader(stream, batch_size=32, num_workers=0):
        if t_first is None:
            t_first, n_first = time.perf_counter(), len(batch["y"])
        n += len(batch["y"])
        if n >= limit:
            break
    return (n - n_first) / (time.perf_counter() - t_first), n - n_first
first, samples = rate(CubeStream(cube, config, split="all"))
again = CubeStream(cube, config, split="all")  # empty caches: every chunk decoded again
decoding, _ = rate(again)
cached, _ = rate(again)
print(json.dumps({"samples": samples, "first": first, "decoding": decoding, "cached": cached}))
"""


def export_revision(rev: str, into: Path) -> Path:
    """The tree of ``rev`` written under ``into`` (``git archive``; nothing in this worktree changes)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def contract_of(tree: Path) -> str:
    """The cube contract the code in ``tree`` reads (``cube.layout.CONTRACT``)."""
    out = subprocess.run([sys.executable, "-c", "from cube.layout import CONTRACT; print(CONTRACT)"], cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def build_old_cube(tree: Path, into: Path) -> str:
    """A cube built by the code in ``tree`` from the inputs of ``configs/cube.yaml`` (paths made
    absolute, keys the old code does not know left out); returns its path."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "cube.yaml").read_text())
    cfg["inputs"] = {k: [str(ROOT / g) for g in v] for k, v in cfg["inputs"].items()}
    cfg["output"] = str(into / "old_cube.zarr")
    cfg["chunks"].pop("profile_rows", None)
    cfg["compute"]["progress"] = False
    path = into / "old_cube.yaml"
    path.write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-m", "depthcube", "build", str(path), "-q"], cwd=tree, check=True,
                   env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True)
    return cfg["output"]


PASSES = ("first", "decoding", "cached")


def measure(tree: Path, cube: str, preset: str, samples: int, env: dict | None = None) -> dict[str, float]:
    """Samples/s of each pass (:data:`PASSES`) of a fresh process with the code in ``tree``
    (``env``: more environment variables for it)."""
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(tree), **(env or {})}
    out = subprocess.run([sys.executable, "-c", MEASURE, cube, preset, str(samples)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {p: r[p] for p in PASSES}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="git revision of the old code")
    ap.add_argument("--cube", default=str(ROOT / "data" / "cube.zarr"))
    ap.add_argument("--old-cube", default=None, help="the cube the old code reads (default: --cube, or one the "
                                                     "old revision builds when it reads another contract)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=256, help="samples per run after the first batch")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    args = ap.parse_args(argv)
    cube = str(Path(args.cube).resolve())
    rates: dict = {p: {f"{which}_{k}": [] for which in ("old", "new") for k in PASSES} for p in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        old = export_revision(args.old, Path(tmp) / "tree")
        old_cube = args.old_cube
        if old_cube is None:
            same = contract_of(old) == contract_of(ROOT)
            old_cube = cube if same else build_old_cube(old, Path(tmp))
        cubes = {"old": str(Path(old_cube).resolve()), "new": cube}
        for r in range(args.rounds):
            for preset in args.presets:
                for which, tree in (("old", old), ("new", ROOT)) if r % 2 == 0 else (("new", ROOT), ("old", old)):
                    got = measure(tree, cubes[which], preset, args.samples)
                    for k, v in got.items():
                        rates[preset][f"{which}_{k}"].append(v)
                    print(f"round {r + 1} {preset:16s} {which}: " + ", ".join(f"{k} {v:7.1f}" for k, v in got.items())
                          + " samples/s", flush=True)
    med = statistics.median
    report = {}
    for p, v in rates.items():
        report[p] = {**{f"{k}_median": med(x) for k, x in v.items()},
                     **{f"{k}_speedup": med(v[f"new_{k}"]) / med(v[f"old_{k}"]) for k in PASSES}, **v}
    print(f"medians of {args.rounds} rounds, samples/s old -> new (new/old)")
    print(f"{'preset':16s} " + " ".join(f"{k:>26s}" for k in PASSES))
    for p, v in report.items():
        print(f"{p:16s} " + " ".join(f"{v[f'old_{k}_median']:8.1f} -> {v[f'new_{k}_median']:6.1f} ({v[f'{k}_speedup']:5.2f}x)"
                                     for k in PASSES))
    return report


if __name__ == "__main__":
    main()
