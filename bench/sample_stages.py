"""Where a sample's main-thread time goes: milliseconds per sample of each stage, on cached data.

Reads the first ``--samples`` windows of a preset's stream once (so every chunk is decoded and
cached), then times, over the same windows, one thread, medians of ``--rounds``:

* ``read_window``: the cube arrays of a window from the decoded cache (snapshots, profile cells,
  OSTIA days, tile statics);
* ``target``: y's window mean, validity and z-score (``loaders.sample._target_zscored``) into
  arrays of a batch slot's shapes;
* ``assemble``: the whole sample (``loaders.sample.assemble``) into a slot, y included;
* ``batched_pass``: a whole pass of ``stream.batched(32)`` (every window of the split, after the
  first passes cached the cube): read, assemble, chunk lists, batch memory and ``info``.

The bench's floors (decode, write) do none of ``read_window`` and ``assemble``. Run (after
``make cube``):

    .venv/bin/python -m bench.sample_stages [--preset argo_real] [--samples 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from loaders import CubeStream, load_dataset_config  # noqa: E402
from loaders.corruption import sample_rng  # noqa: E402
from loaders.sample import _target_zscored, assemble  # noqa: E402


def stages(cube: str, preset: str, samples: int, rounds: int, config: str = "configs/dataset.yaml") -> dict:
    """Median ms per sample of each stage (see the module docstring)."""
    torch.set_num_threads(1)
    cfg = load_dataset_config(config, preset)
    stream = CubeStream(cube, cfg, split="all", shuffle=False)
    indices = range(min(samples, len(stream)))
    slot = {k: np.asarray(v)[0].copy() for k, v in next(iter(stream.batched(1))).items() if k != "info"}
    windows = [stream.windows[i] for i in indices]
    data = [stream.read_window(w, north_up=True) for w in windows]  # decodes and caches every chunk

    def read():
        for w in windows:
            stream.read_window(w, north_up=True)

    lo, hi = cfg.target_bands
    all_levels = lo == 0 and hi >= len(data[0].glorys[0])  # as assemble: validity of every level

    def target():
        for win in data:
            _target_zscored(win, cfg.target_bands, slot["y"], slot["y_valid_mask"] if all_levels else None)

    def whole():
        for i, w, win in zip(indices, windows, data):
            assemble(win, cfg, sample_rng(cfg.seed, 0, i), centre_day=w.centre, coords=(w.lat_center, w.lon_center),
                     info={}, out=slot)

    def batches():
        for _ in stream.batched(32):
            pass

    out = {}
    for name, run, n in (("read_window", read, len(data)), ("target", target, len(data)),
                         ("assemble", whole, len(data)), ("batched_pass", batches, len(stream))):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) / n * 1000)
        out[name] = statistics.median(times)
    return {"preset": preset, "samples": len(data), "ms_per_sample": out}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", default="data/cube.zarr")
    ap.add_argument("--preset", default="argo_real")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    r = stages(args.cube, args.preset, args.samples, args.rounds)
    print(f"{r['preset']}, {r['samples']} windows, cached data, one thread: ms per sample (median of {args.rounds})")
    for name, ms in r["ms_per_sample"].items():
        print(f"  {name:12s} {ms:6.2f}")
    return r


if __name__ == "__main__":
    main()
