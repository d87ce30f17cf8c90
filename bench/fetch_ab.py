"""``CubeStream`` fetch options side by side, local and over loopback HTTP with latency added
(issue 15): the command line over :func:`bench.remote.compare` (one implementation of the
measurement, shared with the latency bench of ``depthcube bench``).

    .venv/bin/python -m bench.fetch_ab --cube data/cube.zarr --latency-ms 20 --workers 0 2 --rounds 3

Prints the settings as JSON, then a Markdown table (a row per source and configuration) and the
remote / local ratios. Threads are pinned as in ``depthcube bench`` (one intra-op thread per
process). Not a timed test: numbers only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.remote import compare, format_table
from bench.suite import pin_threads


def _none_or_int(text: str) -> int | None:
    return None if text.lower() in ("none", "default") else int(float(text))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cube", default="data/cube.zarr")
    p.add_argument("--preset", default="argo_real")
    p.add_argument("--latency-ms", type=float, default=20.0, help="milliseconds added to every HTTP request")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--prefetch", type=_none_or_int, nargs="+", default=[None, 0],
                   help="prefetch_bytes values (none = the default, 0 = off)")
    p.add_argument("--decode-threads", type=_none_or_int, nargs="+", default=[None])
    p.add_argument("--raw-cache", type=_none_or_int, nargs="+", default=[None],
                   help="raw_cache_bytes values (compressed-bytes cache; none = the default)")
    p.add_argument("--cache", type=_none_or_int, nargs="+", default=[None],
                   help="cache_bytes values (decoded-chunk cache; none = the default)")
    p.add_argument("--order", choices=("sorted", "random"), default="sorted",
                   help="sorted: the stream's block-shuffled order; random: blocks of one window")
    p.add_argument("--max-samples", type=int, default=None, help="only the first N windows of the epoch order (whole batches)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sources", nargs="+", choices=("local", "remote"), default=["local", "remote"])
    p.add_argument("--rounds", type=int, default=1, help="repeats, interleaved; samples/s is the median")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    pin_threads()  # one intra-op thread per process, as in depthcube bench
    result = compare(a.cube, a.preset, a.latency_ms, a.workers, a.prefetch, a.decode_threads, a.raw_cache, a.cache, a.order,
                     a.max_samples, a.batch_size, sources=a.sources, rounds=a.rounds, echo=lambda line: None)
    print(json.dumps(result["settings"]))
    print(format_table(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
