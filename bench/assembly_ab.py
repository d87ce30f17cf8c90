"""Samples/s of this tree's loaders against another git revision's, on the same cube, interleaved.

Each round runs every preset once with the old code and once with the new, each in a fresh
subprocess (``PYTHONPATH`` set to that tree: the revision is exported with ``git archive``), 0
DataLoader workers, batch 32, OpenMP/BLAS/torch pinned to one thread before import, and times two
passes over one stream: the first (cold: chunks decoded, batch memory touched for the first time),
then a second (what every later epoch of a training run looks like; on the demo the decoded cache
then holds the cube). Both after their first batch; the report is the median over the rounds. Run
(after ``make cube``):

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
stream = CubeStream(cube, load_dataset_config("configs/dataset.yaml", preset), split="all")
loader = StreamLoader(stream, batch_size=32, num_workers=0)
rates = []
for epoch in range(2):  # a cold first pass, then a second one over the same stream
    n, t_first = 0, None
    for batch in loader:
        if t_first is None:
            t_first, n_first = time.perf_counter(), len(batch["y"])
        n += len(batch["y"])
        if n >= limit:
            break
    rates.append((n - n_first) / (time.perf_counter() - t_first))
print(json.dumps({"samples": n - n_first, "samples_per_s": rates[0], "second_pass_samples_per_s": rates[1]}))
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


def measure(tree: Path, cube: str, preset: str, samples: int) -> tuple[float, float]:
    """(samples/s of a fresh process's first pass, of its second pass) with the code in ``tree``."""
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", MEASURE, cube, preset, str(samples)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["samples_per_s"], r["second_pass_samples_per_s"]


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
    rates: dict = {p: {"old": [], "new": [], "old_second": [], "new_second": []} for p in args.presets}
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
                    first, second = measure(tree, cubes[which], preset, args.samples)
                    rates[preset][which].append(first)
                    rates[preset][f"{which}_second"].append(second)
                    print(f"round {r + 1} {preset:16s} {which}: {first:7.1f} samples/s first pass, "
                          f"{second:7.1f} second", flush=True)
    med = statistics.median
    report = {p: {"old_median": med(v["old"]), "new_median": med(v["new"]), "speedup": med(v["new"]) / med(v["old"]),
                  "old_second_median": med(v["old_second"]), "new_second_median": med(v["new_second"]),
                  "second_pass_speedup": med(v["new_second"]) / med(v["old_second"]), **v}
              for p, v in rates.items()}
    print(f"{'preset':16s} {'old/s':>8s} {'new/s':>8s} {'new/old':>8s} | second pass: {'old/s':>8s} {'new/s':>8s} "
          f"{'new/old':>8s}   (medians of {args.rounds} rounds)")
    for p, v in report.items():
        print(f"{p:16s} {v['old_median']:8.1f} {v['new_median']:8.1f} {v['speedup']:8.2f} | "
              f"{'':13s}{v['old_second_median']:8.1f} {v['new_second_median']:8.1f} {v['second_pass_speedup']:8.2f}")
    return report


if __name__ == "__main__":
    main()
