"""Reading a cube from object storage: ``CubeStream`` samples/s on local disk against the same cube
served over loopback HTTP with latency added (issue 15), with requests and bytes per sample.

    .venv/bin/python -m bench.fetch_ab --cube data/cube.zarr --delay 0.02 --workers 0 2

:func:`run` returns the measurements as a dict (what ``depthcube bench`` can embed); the command
line prints them as a table. Each configuration is a fresh ``CubeStream`` through a plain torch
``DataLoader`` (batch 8) over one epoch of the split (or its first ``max_samples`` windows);
requests and bytes are what :class:`bench.serve.LoopbackServer` answered while the loader ran,
metadata reads of the worker processes included; memory is the peak RSS of this process and the
peak USS of a worker (:class:`bench.suite.RssSampler`). Not a timed test: numbers only.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from bench.serve import LoopbackServer
from bench.suite import RssSampler
from loaders import CubeStream, load_dataset_config


def _stream(url: str, cfg, split: str, prefetch_bytes: int | None, decode_threads: int | None,
            raw_cache_bytes: int | None = None):
    """A fresh stream; options this version of CubeStream lacks are left out (so the same script
    measures an older checkout)."""
    params = inspect.signature(CubeStream).parameters
    kwargs = {}
    if prefetch_bytes is not None and "prefetch_bytes" in params:
        kwargs["prefetch_bytes"] = prefetch_bytes
    if decode_threads is not None and "decode_threads" in params:
        kwargs["decode_threads"] = decode_threads
    if raw_cache_bytes is not None and "raw_cache_bytes" in params:
        kwargs["raw_cache_bytes"] = raw_cache_bytes
    return CubeStream(url, cfg, split, shuffle=True, **kwargs)


def measure(url: str, cfg, split: str, workers: int, prefetch_bytes: int | None, decode_threads: int | None,
            max_samples: int | None, batch_size: int, server: LoopbackServer | None,
            raw_cache_bytes: int | None = None) -> dict:
    """One configuration: samples/s over the epoch (or its first ``max_samples``), requests, bytes."""
    stream = _stream(url, cfg, split, prefetch_bytes, decode_threads, raw_cache_bytes)
    kwargs = {"persistent_workers": False, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, **kwargs)
    if server is not None:
        server.reset_stats()
    with RssSampler(children=workers > 0) as rss:
        t0, cpu0 = time.perf_counter(), time.process_time()
        n = 0
        it = iter(loader)
        for batch in it:
            n += len(batch["y"])
            if max_samples and n >= max_samples:
                break
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        del it  # the workers stop inside the sampling window
    row = {"source": "http" if server else "local", "workers": workers, "prefetch_bytes": prefetch_bytes,
           "decode_threads": decode_threads, "raw_cache_bytes": raw_cache_bytes, "samples": n, "seconds": round(seconds, 3),
           "samples_per_s": round(n / seconds, 2),
           **{k: round(v, 1) for k, v in rss.report().items()}}
    if workers == 0:  # CPU time of this process (all its threads; the server's too for HTTP)
        row["cpu_ms_per_sample"] = round(1e3 * cpu / max(n, 1), 2)
        row["chunks_decoded"] = stream.reader.chunks_decoded
        row["requests_fetched"] = getattr(stream.reader, "requests", None)
    if server is not None:
        stats = server.stats()
        row.update(requests=stats["requests"], requests_per_sample=round(stats["requests"] / max(n, 1), 3),
                   kb_per_sample=round(stats["bytes"] / max(n, 1) / 1e3, 1))
    return row


def run(cube: str = "data/cube.zarr", preset: str = "argo_real", delay_s: float = 0.02, workers=(0, 2),
        prefetch=(None, 0), decode_threads=(None,), order: str = "block", split: str = "all",
        max_samples: int | None = None, batch_size: int = 8, dataset_config: str = "configs/dataset.yaml",
        sources=("local", "http"), rounds: int = 1, raw_cache=(None,)) -> dict:
    """Measure every combination of ``sources`` x ``workers`` x ``prefetch`` x ``decode_threads`` x ``raw_cache``.

    ``prefetch``: ``prefetch_bytes`` values (None = the stream's default, 0 = off);
    ``decode_threads`` and ``raw_cache`` (``raw_cache_bytes``) likewise; ``order``: ``block`` (the stream's block-shuffled order) or
    ``random`` (blocks of one window: fully random order). Returns ``{"settings": ..., "rows":
    [...], "ratios": {...}}``: one row per configuration (samples/s, decodes and direct-path reads at
    0 workers, and for HTTP requests and kB per sample as the server counted them), and per (workers, prefetch, decode_threads) the ratio http / local.
    """
    cfg = load_dataset_config(dataset_config, preset)
    if order == "random":
        cfg = dataclasses.replace(cfg, block_size=1)
    elif order != "block":
        raise ValueError(f"order: 'block' or 'random', got {order!r}")
    cube_path = Path(cube).resolve()
    combos = list(itertools.product(workers, prefetch, decode_threads, raw_cache))
    rounds_rows = []
    for _ in range(max(int(rounds), 1)):  # rounds interleaved, so a busy spell hits every configuration
        rows = []
        if "local" in sources:
            for w, p, d, c in combos:
                rows.append(measure(str(cube_path), cfg, split, w, p, d, max_samples, batch_size, None, c))
        if "http" in sources:
            with LoopbackServer(cube_path.parent, delay_s=delay_s) as server:
                url = f"{server.url}/{cube_path.name}"
                for w, p, d, c in combos:
                    rows.append(measure(url, cfg, split, w, p, d, max_samples, batch_size, server, c))
        rounds_rows.append(rows)
    rows = [_median_row([rr[k] for rr in rounds_rows]) for k in range(len(rounds_rows[-1]))]
    ratios = {}
    for w, p, d, c in combos:
        pair = {r["source"]: r for r in rows
                if (r["workers"], r["prefetch_bytes"], r["decode_threads"], r["raw_cache_bytes"]) == (w, p, d, c)}
        if {"local", "http"} <= set(pair):
            ratios[f"workers={w} prefetch={p} decode_threads={d} raw_cache={c}"] = round(
                pair["http"]["samples_per_s"] / pair["local"]["samples_per_s"], 3)
    settings = {"cube": str(cube_path), "preset": preset, "delay_s": delay_s, "order": order, "split": split,
                "batch_size": batch_size, "max_samples": max_samples, "block_size": cfg.block_size, "rounds": rounds}
    return {"settings": settings, "rows": rows, "ratios": ratios}


def _median_row(rounds: list[dict]) -> dict:
    """The last round's row with samples/s (and CPU ms per sample) the median over the rounds."""
    row = dict(rounds[-1], samples_per_s_rounds=[r["samples_per_s"] for r in rounds])
    row["samples_per_s"] = float(np.median(row["samples_per_s_rounds"]))
    if "cpu_ms_per_sample" in row:
        row["cpu_ms_per_sample"] = float(np.median([r["cpu_ms_per_sample"] for r in rounds]))
    return row


def format_table(result: dict) -> str:
    keys = ["source", "workers", "prefetch_bytes", "decode_threads", "raw_cache_bytes", "samples", "samples_per_s",
            "cpu_ms_per_sample", "chunks_decoded",
            "requests_fetched", "requests", "requests_per_sample", "kb_per_sample", "rss_main_peak_mb",
            "uss_worker_peak_mb"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in result["rows"]:
        lines.append("| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |")
    lines += [f"http / local, {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def _none_or_int(text: str) -> int | None:
    return None if text.lower() in ("none", "default") else int(float(text))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cube", default="data/cube.zarr")
    p.add_argument("--preset", default="argo_real")
    p.add_argument("--delay", type=float, default=0.02, help="seconds added to every HTTP request")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--prefetch", type=_none_or_int, nargs="+", default=[None, 0],
                   help="prefetch_bytes values (none = the default, 0 = off)")
    p.add_argument("--decode-threads", type=_none_or_int, nargs="+", default=[None])
    p.add_argument("--raw-cache", type=_none_or_int, nargs="+", default=[None],
                   help="raw_cache_bytes values (compressed-bytes cache; none = the default)")
    p.add_argument("--order", choices=("block", "random"), default="block")
    p.add_argument("--split", default="all")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--sources", nargs="+", default=["local", "http"])
    p.add_argument("--rounds", type=int, default=1, help="repeats, interleaved; samples/s is the median")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    result = run(a.cube, a.preset, a.delay, tuple(a.workers), tuple(a.prefetch), tuple(a.decode_threads), a.order,
                 a.split, a.max_samples, sources=tuple(a.sources), rounds=a.rounds, raw_cache=tuple(a.raw_cache))
    print(json.dumps(result["settings"]))
    print(format_table(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
