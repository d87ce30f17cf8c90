"""What transparent huge pages do to collating a batch (the stack of a batch's samples).

A collated argo batch is hundreds of MB of fresh memory (32 samples: x and y are 105 MB each);
with 4 KB pages the kernel's page faults on that memory cost more than the copy itself. numpy asks
for huge pages for large arrays by itself; torch does only with ``THP_MEM_ALLOC_ENABLE=1``, which
:mod:`loaders.stream` sets by default (``os.environ.setdefault``, so ``THP_MEM_ALLOC_ENABLE=0``
opts out). This times ``torch.stack`` of one batch of ``y``-shaped samples into fresh memory with
the setting off and on (each in its own subprocess, torch and BLAS pinned to one thread, interleaved
rounds, medians), against stacking into a reused buffer (no page faults: the floor). Run:

    .venv/bin/python -m bench.huge_pages [--batch 32] [--rounds 5]

With ``--stream CUBE`` it times a whole ``CubeStream`` instead (:func:`run_stream`): the three
passes of :mod:`bench.assembly_ab` with the batch memory (:class:`loaders.batching.BatchMemory`)
on 2 MB pages (``DEPTHCUBE_BATCH_HUGE_PAGES=1``) and on 4 KB pages (the default). On this
project's VMs a fresh 2 MB page is slow to touch the first time, which the first pass pays for
its batch memory; the passes after it reuse that memory either way:

    .venv/bin/python -m bench.huge_pages --stream data/cube.zarr --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MEASURE = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
batch, reps = int(sys.argv[1]), int(sys.argv[2])
samples = [torch.from_numpy(np.random.default_rng(i).random((50, 128, 128), np.float32)) for i in range(batch)]
def ms(f):
    f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps * 1000
out = torch.empty((batch, 50, 128, 128))
print(json.dumps({"fresh_ms": ms(lambda: torch.stack(samples)), "reused_ms": ms(lambda: torch.stack(samples, out=out))}))
"""


def run(batch: int = 32, rounds: int = 5, reps: int = 10) -> dict:
    """Median ms per stacked batch: fresh memory with huge pages off and on, and a reused buffer."""
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    for _ in range(rounds):
        for setting in runs:
            env = {**os.environ, "THP_MEM_ALLOC_ENABLE": setting, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-c", MEASURE, str(batch), str(reps)], env=env,
                                 capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(out.stdout))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("fresh_ms", "reused_ms")} for s, rs in runs.items()}
    mb = batch * 50 * 128 * 128 * 4 / 1e6
    return {"batch": batch, "batch_mb": mb, "fresh_ms_thp_off": med["0"]["fresh_ms"],
            "fresh_ms_thp_on": med["1"]["fresh_ms"], "reused_ms": med["1"]["reused_ms"],
            "off_over_on": med["0"]["fresh_ms"] / med["1"]["fresh_ms"]}


def run_stream(cube: str, rounds: int = 3, preset: str = "argo_real", samples: int = 256) -> dict:
    """Samples/s of the three passes of :mod:`bench.assembly_ab` (this tree, 0 workers, batch 32)
    with the batch memory on 2 MB pages and on 4 KB pages (``DEPTHCUBE_BATCH_HUGE_PAGES`` 1 and
    0), each run a fresh process, interleaved rounds, medians."""
    from bench.assembly_ab import PASSES, ROOT, measure

    runs: dict[str, list[dict]] = {"1": [], "0": []}
    for _ in range(rounds):
        for setting in runs:
            runs[setting].append(measure(ROOT, cube, preset, samples, env={"DEPTHCUBE_BATCH_HUGE_PAGES": setting}))
    return {("on" if s == "1" else "off"): {p: statistics.median(r[p] for r in rs) for p in PASSES}
            for s, rs in runs.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stream", metavar="CUBE", help="time CubeStream passes over CUBE instead (see run_stream)")
    args = ap.parse_args(argv)
    if args.stream:
        r = run_stream(args.stream, args.rounds)
        print(f"argo_real, 0 workers, batch 32, samples/s (medians of {args.rounds} rounds):")
        for setting, passes in r.items():
            print(f"  batch memory on {'2 MB' if setting == 'on' else '4 KB'} pages  " + "  ".join(f"{k} {v:7.1f}" for k, v in passes.items()))
        return r
    r = run(args.batch, args.rounds)
    print(f"torch.stack of {r['batch']} y samples ({r['batch_mb']:.0f} MB), median ms per batch:")
    print(f"  fresh memory, THP_MEM_ALLOC_ENABLE=0  {r['fresh_ms_thp_off']:8.1f}")
    print(f"  fresh memory, THP_MEM_ALLOC_ENABLE=1  {r['fresh_ms_thp_on']:8.1f}   ({r['off_over_on']:.2f}x faster)")
    print(f"  reused buffer (no page faults)        {r['reused_ms']:8.1f}")
    return r


if __name__ == "__main__":
    main()
