"""``depthcube bench`` (registered by :mod:`depthcube.cli` through :func:`register`).

This module imports nothing heavy: the handler imports :mod:`bench.suite` (torch, the peers)
when it runs.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def register(sub) -> None:
    """Add the ``bench`` subcommand to ``depthcube``'s subparsers."""
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
    b.add_argument("--latency-ms", type=float,
                   help="latency bench: milliseconds the loopback HTTP server adds to every request (default 20)")
    b.add_argument("--remote-budget", type=float, help="latency bench: seconds per entry (default 20, quick 3)")
    b.add_argument("--no-remote", action="store_true", help="skip the latency bench (local vs loopback HTTP)")
    b.set_defaults(func=_bench)


def _bench(args) -> int:
    import dataclasses

    from .suite import BenchSettings, run_bench

    settings = BenchSettings.quick() if args.quick else BenchSettings()
    changes = {"preset": args.preset, "batch_size": args.batch_size, "peer_budget_s": args.peer_budget,
               "max_windows": args.max_windows, "latency_ms": args.latency_ms, "remote_budget_s": args.remote_budget}
    if args.workers:
        try:
            changes["workers"] = tuple(int(w) for w in args.workers.split(","))
        except ValueError:
            raise ValueError(f"--workers: expected comma-separated integers, got {args.workers!r}") from None
    if args.no_build:
        changes["build"] = False
    if args.no_remote:
        changes["remote"] = False
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    run_bench(args.cube, args.demo, args.out, settings, dataset_config=str(REPO / "configs" / "dataset.yaml"),
              quick=args.quick)
    return 0
