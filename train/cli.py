"""``depthcube train`` and ``depthcube bench`` (registered by cube/cli.py through :func:`register`).

This module imports no torch: the handlers import their layer when they run, so ``depthcube
--help`` and the cube commands stay light.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def register(sub) -> None:
    """Add the ``train`` and ``bench`` subcommands to ``depthcube``'s subparsers."""
    t = sub.add_parser("train", help="train the baseline model on a cube (CPU or CUDA)",
                       description="Train the baseline U-Net (or x0 diffusion) on the cube named in CONFIG; logs loss, "
                                   "samples/s and data-wait, validates with a PNG, checkpoints and resumes.")
    t.add_argument("config", help="training config YAML (see configs/train.yaml)")
    t.add_argument("--cube", help="cube path or URL (overrides data.cube)")
    t.add_argument("--out-dir", help="run folder (overrides run.out_dir)")
    t.add_argument("--max-steps", type=int, help="overrides run.max_steps")
    t.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (overrides run.device)")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run folder")
    t.set_defaults(func=_train)

    b = sub.add_parser("bench", help="benchmark CubeStream against the reference loader, xbatcher and the zarr limit",
                       description="Measure samples/s, MB/s, time to first batch and peak RSS of CubeStream and its "
                                   "peers on the same windows, plus cube build, rasterisation and track-mask "
                                   "throughput; print a table and write JSON.")
    b.add_argument("--cube", help="cube to read (default: build one from --demo)")
    b.add_argument("--demo", help="raw demo products the cube was built from (peer 1 and the build benchmark)")
    b.add_argument("--out", default="bench/results.json", help="JSON output path (default: %(default)s)")
    b.add_argument("--quick", action="store_true", help="smoke run on a tiny temporary demo and cube (seconds)")
    b.add_argument("--preset", default="argo_real", help="dataset preset of configs/dataset.yaml (default: %(default)s)")
    b.add_argument("--batch-size", type=int, help="batch size of every loader (default 8, quick 4)")
    b.add_argument("--workers", help="comma-separated DataLoader worker counts (default 0,2)")
    b.add_argument("--peer-budget", type=float, help="seconds per slow-peer run (default 45, quick 2)")
    b.add_argument("--max-windows", type=int, help="only the first N windows of the epoch order")
    b.add_argument("--no-build", action="store_true", help="skip the cube build benchmark")
    b.set_defaults(func=_bench)


def _train(args) -> int:
    import dataclasses

    from .config import load_train_config
    from .loop import train

    cfg = load_train_config(args.config)
    run = {k: v for k, v in (("out_dir", args.out_dir and str(Path(args.out_dir).resolve())),
                             ("max_steps", args.max_steps), ("device", args.device)) if v is not None}
    if args.fresh:
        run["resume"] = False
    data = {"cube": args.cube} if args.cube else {}
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run), data=dataclasses.replace(cfg.data, **data))
    metrics = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    print("done: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def _bench(args) -> int:
    import dataclasses

    from .bench import BenchSettings, run_bench

    settings = BenchSettings.quick() if args.quick else BenchSettings()
    changes = {"preset": args.preset, "batch_size": args.batch_size, "peer_budget_s": args.peer_budget,
               "max_windows": args.max_windows}
    if args.workers:
        try:
            changes["workers"] = tuple(int(w) for w in args.workers.split(","))
        except ValueError:
            raise ValueError(f"--workers: expected comma-separated integers, got {args.workers!r}") from None
    if args.no_build:
        changes["build"] = False
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    run_bench(args.cube, args.demo, args.out, settings, dataset_config=str(REPO / "configs" / "dataset.yaml"),
              quick=args.quick)
    return 0
