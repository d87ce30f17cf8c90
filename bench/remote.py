"""The latency bench of ``depthcube bench`` (issue 15 item 5): the demo cube read from local disk
and from a loopback HTTP server that adds ``latency_ms`` to every request, side by side in one run.

The bench starts :class:`bench.serve.LoopbackServer` on the cube's folder itself and stops it at
the end. For each window order it measures, locally and remotely:

* ``cubestream_w{0,2}[_prefetch]``: ``CubeStream`` (the preset, split ``all``) through a torch
  DataLoader, 0 and 2 workers. When ``CubeStream`` accepts ``prefetch_bytes`` (detected with
  :func:`inspect.signature`, so the bench runs before and after the prefetching fetch layer) it
  runs twice: ``prefetch_bytes=0`` (off) and the stream's default (``_prefetch``);
* ``raw_reads``: :meth:`CubeStream.read_window` of the same windows in the same order, in this
  process: the windows' chunks through the stream's reader (its fetch, decode and cache), no
  sample assembly.

Orders: ``sorted`` is the stream's own epoch order (blocks of ``block_size`` consecutive windows,
block-shuffled: the default); ``random`` is the same stream with ``block_size=1`` (every window
shuffled on its own, the order that defeats chunk caches). Remote entries add ``requests`` and
``bytes`` fetched (the server's counts over that run, worker start-up included) per sample; each
order has ``distinct_chunks_per_sample``, the issue's bound on requests per sample.
Every entry has the loader keys of the rest of the bench (samples/s, peak RSS, the largest
worker's USS). ``ratios`` divide each remote samples/s by the same entry's local one.

Each entry runs until ``budget_s`` passed or ``max_windows`` samples were delivered, whichever
comes first (a fresh stream per entry, epoch 0: every entry starts at the same window). At 0
workers a ``CubeStream`` entry also has CPU ms per sample, chunks decoded and the reads its
reader sent.

One implementation serves both uses: :func:`measure_configs` runs named configurations at each
source (local, the server) with the server's counts, in interleaved rounds with medians;
:func:`bench_remote` is the ``make bench`` entry (one round, the fixed entries above) and
:func:`compare` the A/B of ``CubeStream`` options (``prefetch_bytes``, ``decode_threads``,
``raw_cache_bytes``) whose command line is ``python -m bench.fetch_ab``. The latency bench alone:
``python -m bench.remote --cube data/cube.zarr``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import time
from pathlib import Path

import numpy as np

from loaders import load_dataset_config
from loaders.stream import CubeStream

#: The orders measured: the stream's default block shuffle, and every window shuffled alone.
ORDERS = ("sorted", "random")


def stream_options(**options) -> dict:
    """The given ``CubeStream`` keywords this ``CubeStream`` takes, None left out (the stream's
    default), so the same bench measures a checkout from before an option existed."""
    params = inspect.signature(CubeStream.__init__).parameters
    return {k: v for k, v in options.items() if v is not None and k in params}


def prefetch_supported() -> bool:
    """Whether this ``CubeStream`` takes a ``prefetch_bytes`` bound (the concurrent fetch layer)."""
    return "prefetch_bytes" in inspect.signature(CubeStream.__init__).parameters


def stream_variants() -> dict[str, dict]:
    """Suffix -> extra ``CubeStream`` keywords of each variant measured."""
    if not prefetch_supported():
        return {"": {}}
    return {"": {"prefetch_bytes": 0}, "_prefetch": {}}


class FirstBatches:
    """At most ``n`` batches of ``loader`` (its workers shut down when the iterator is dropped)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def order_config(cfg, order: str):
    """The dataset config of one order: as given (``sorted``) or ``block_size=1`` (``random``)."""
    return cfg if order == "sorted" else dataclasses.replace(cfg, block_size=1)


def bench_stream(url: str, cfg, workers: int, batch_size: int, budget_s: float, max_windows: int | None,
                 extra: dict) -> dict:
    """``CubeStream`` at ``url`` through a DataLoader, until the budget or ``max_windows`` samples.

    At 0 workers the entry adds ``cpu_ms_per_sample`` (CPU time of this process, all its threads:
    for a remote entry the loopback server's too), ``chunks_decoded`` and ``requests_fetched``
    (the reads the stream's reader sent itself)."""
    from .suite import _loader, measure_loader

    stream = CubeStream(url, cfg, "all", shuffle=True, **extra)
    n_batches = -(-(max_windows or len(stream)) // batch_size)
    cpu0 = time.process_time()
    r = measure_loader(FirstBatches(_loader(stream, batch_size, workers), n_batches), budget_s, workers,
                       f"CubeStream{' ' + str(extra) if extra else ''} through a torch DataLoader")
    r["cache_mb"] = stream.reader.cache_bytes / 2**20
    if workers == 0:
        r.update(cpu_ms_per_sample=1e3 * (time.process_time() - cpu0) / r["samples"],
                 chunks_decoded=stream.reader.chunks_decoded, requests_fetched=getattr(stream.reader, "requests", None))
    return r


def bench_raw_reads(url: str, cfg, budget_s: float, max_windows: int | None) -> dict:
    """:meth:`CubeStream.read_window` of the stream's epoch order, in this process (no assembly)."""
    from .suite import RssSampler

    stream = CubeStream(url, cfg, "all", shuffle=True)
    order = stream.epoch_order(0)[:max_windows]
    nbytes, n = 0, 0
    with RssSampler(children=False) as rss:
        t0 = time.perf_counter()
        for i in order:
            data = stream.read_window(stream.windows[int(i)])
            nbytes += sum(v.nbytes for v in vars(data).values() if hasattr(v, "nbytes"))
            n += 1
            if time.perf_counter() - t0 > budget_s:
                break
        dt = time.perf_counter() - t0
    return {"what": "CubeStream.read_window of the same windows: fetch + decode through the stream's reader, "
                    "no assembly", "workers": 0, "samples": n, "seconds": dt, "samples_per_s": n / dt,
            "mb_per_s": nbytes / dt / 1e6, "time_to_first_batch_s": None, **rss.report()}


def measure_configs(server, urls: dict[str, str], configs: dict, rounds: int = 1, echo=print) -> dict:
    """Every configuration at every source, ``rounds`` times interleaved: each configuration at
    every source back to back, so a busy spell of the box hits its local and remote entries alike
    (the ratios), and each round over every configuration.

    ``urls``: source (``local``, ``remote``) -> the cube's URL there (``remote`` is ``server``'s);
    ``configs``: name -> ``run(url)`` returning one entry. Returns ``{source}_{name}`` -> entry, a
    remote one with the server's counts (:func:`_counted`); over several rounds ``samples_per_s``
    and ``cpu_ms_per_sample`` are the medians and ``samples_per_s_rounds`` lists each round's."""
    per_round = []
    for k in range(max(int(rounds), 1)):
        entries = {}
        for name, run in configs.items():
            for where, url in urls.items():
                echo(f"  {where}_{name}{f' (round {k + 1})' if rounds > 1 else ''} ...")
                entries[f"{where}_{name}"] = _counted(server, where, lambda: run(url))
        per_round.append(entries)
    return {key: median_entry([entries[key] for entries in per_round]) for key in per_round[-1]}


def median_entry(rounds: list[dict]) -> dict:
    """One configuration's entry over its rounds: the last round's, with ``samples_per_s`` (and
    ``cpu_ms_per_sample``) the median over the rounds; a single round or a failed one as it is."""
    if len(rounds) == 1 or any("error" in r for r in rounds):
        return rounds[-1]
    out = dict(rounds[-1], samples_per_s_rounds=[r["samples_per_s"] for r in rounds])
    out["samples_per_s"] = float(np.median(out["samples_per_s_rounds"]))
    if "cpu_ms_per_sample" in out:
        out["cpu_ms_per_sample"] = float(np.median([r["cpu_ms_per_sample"] for r in rounds]))
    return out


def distinct_chunks_per_sample(stream) -> float:
    """Issue 15's bound on requests per sample: the distinct chunks of each block of the stream's
    epoch-0 order (:meth:`CubeStream.window_chunks`), summed over the blocks, per window."""
    order, size = stream.epoch_order(0), stream.config.block_size
    blocks = [order[k:k + size] for k in range(0, len(order), size)]
    distinct = sum(len({c for i in block for c in stream.window_chunks(int(i))}) for block in blocks)
    return distinct / max(len(order), 1)


def bench_remote(cube: str, settings, dataset_config: str, latency_ms: float, echo=print) -> dict:
    """Every entry of the latency bench (see the module docstring); the server lives for this call."""
    from .serve import LoopbackServer

    cfg = load_dataset_config(dataset_config, settings.preset)
    cube_path = Path(cube)
    budget, limit = settings.remote_budget_s, settings.remote_max_windows
    out: dict = {"latency_ms": latency_ms, "prefetch_supported": prefetch_supported(), "orders": {}}
    with LoopbackServer(cube_path.parent, delay_s=latency_ms / 1000) as server:
        urls = {"local": str(cube_path), "remote": f"{server.url}/{cube_path.name}"}
        for order in ORDERS:
            ocfg = order_config(cfg, order)
            configs = {f"cubestream_w{workers}{suffix}": _stream_run(ocfg, workers, settings.batch_size, budget, limit, extra)
                       for workers in settings.workers for suffix, extra in stream_variants().items()}
            configs["raw_reads"] = lambda url, ocfg=ocfg: bench_raw_reads(url, ocfg, budget, limit)
            echo(f"  {order} order:")
            bound = distinct_chunks_per_sample(CubeStream(urls["local"], ocfg, "all", shuffle=True))
            out["orders"][order] = {"block_size": ocfg.block_size, "distinct_chunks_per_sample": bound,
                                    "loaders": measure_configs(server, urls, configs, echo=echo)}
        # insitubatch last: its residency (GBs of whole fields) would stay in this process's RSS
        # and inflate the peak RSS of every depthcube entry measured after it.
        for order, o in out["orders"].items():
            o["loaders"].update(_insitubatch_entries(server, cube_path, urls["remote"], order, settings, echo))
            o["ratios"] = remote_ratios(o["loaders"])
    return out


def _stream_run(cfg, workers: int, batch_size: int, budget_s: float, max_windows: int | None, extra: dict):
    """``run(url)`` of one ``CubeStream`` configuration, for :func:`measure_configs`."""
    return lambda url: bench_stream(url, cfg, workers, batch_size, budget_s, max_windows, extra)


def _insitubatch_entries(server, cube_path: Path, remote_url: str, order: str, settings, echo) -> dict:
    """Peer 3 (insitubatch) on the same arrays, locally and over the same server."""
    from .insitu import bench_insitubatch

    echo(f"  {order} order, peer 3:")
    urls = {"local": cube_path.resolve().as_uri(), "remote": remote_url}
    run = lambda url: bench_insitubatch(url, order, settings.remote_budget_s, settings.remote_max_windows)  # noqa: E731
    return measure_configs(server, urls, {"insitubatch": run}, echo=echo)


def compare(cube: str, preset: str = "argo_real", latency_ms: float = 20.0, workers=(0, 2), prefetch=(None, 0),
            decode_threads=(None,), raw_cache=(None,), cache=(None,), order: str = "sorted", max_windows: int | None = None,
            batch_size: int = 8, dataset_config: str = "configs/dataset.yaml", sources=("local", "remote"),
            rounds: int = 1, budget_s: float = float("inf"), echo=print) -> dict:
    """``CubeStream`` options side by side, local and over the loopback server (the A/B command
    line, ``python -m bench.fetch_ab``): every combination of ``workers`` x ``prefetch``
    (``prefetch_bytes``) x ``decode_threads`` x ``raw_cache`` (``raw_cache_bytes``) x ``cache``
    (``cache_bytes``, the decoded-chunk cache), None being the
    stream's default and an option this ``CubeStream`` lacks left out; each over the whole epoch of
    ``order`` (or its first ``max_windows`` windows, or ``budget_s``), ``rounds`` times interleaved.

    Returns ``{"settings", "loaders", "ratios"}``: the entries of :func:`measure_configs` (each with
    its ``options``) and remote / local per configuration (:func:`remote_ratios`)."""
    from .serve import LoopbackServer

    if order not in ORDERS:
        raise ValueError(f"order: one of {ORDERS}, got {order!r}")
    cfg = order_config(load_dataset_config(dataset_config, preset), order)
    cube_path = Path(cube).resolve()
    configs = {}
    for w, p, d, r, c in itertools.product(workers, prefetch, decode_threads, raw_cache, cache):
        options = {"workers": w, "prefetch_bytes": p, "decode_threads": d, "raw_cache_bytes": r, "cache_bytes": c}
        run = _stream_run(cfg, w, batch_size, budget_s, max_windows,
                          stream_options(prefetch_bytes=p, decode_threads=d, raw_cache_bytes=r, cache_bytes=c))
        configs[" ".join(f"{k}={v}" for k, v in options.items())] = lambda url, run=run, o=options: {**run(url), "options": o}
    with LoopbackServer(cube_path.parent, delay_s=latency_ms / 1000) as server:
        urls = {"local": str(cube_path), "remote": f"{server.url}/{cube_path.name}"}
        entries = measure_configs(server, {k: v for k, v in urls.items() if k in sources}, configs, rounds, echo)
    settings = {"cube": str(cube_path), "preset": preset, "latency_ms": latency_ms, "order": order,
                "block_size": cfg.block_size, "batch_size": batch_size, "max_windows": max_windows, "rounds": rounds}
    return {"settings": settings, "loaders": entries, "ratios": remote_ratios(entries)}


TABLE_KEYS = ("samples", "samples_per_s", "cpu_ms_per_sample", "chunks_decoded", "requests_fetched", "requests",
              "requests_per_sample", "kb_per_sample", "rss_main_peak_mb", "uss_worker_peak_mb")


def format_table(result: dict) -> str:
    """:func:`compare`'s result as a Markdown table (a row per entry), then its remote / local ratios."""
    option_keys = ("workers", "prefetch_bytes", "decode_threads", "raw_cache_bytes", "cache_bytes")
    lines = ["| source | " + " | ".join(option_keys + TABLE_KEYS) + " |", "|" + "---|" * (1 + len(option_keys + TABLE_KEYS))]
    for name, r in result["loaders"].items():
        cells = [name.split("_", 1)[0]] + [_cell(r["options"].get(k)) for k in option_keys]
        row = dict(r, kb_per_sample=r["bytes_per_sample"] / 1e3) if "bytes_per_sample" in r else r
        cells += [r["error"]] if "error" in r else [_cell(row.get(k)) for k in TABLE_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"remote / local, {name.removesuffix('_remote_vs_local')}: {v:.3f}" for name, v in result["ratios"].items()]
    return "\n".join(lines)


def _cell(value) -> str:
    """A table cell: blank for None; a float with one decimal from 10 up, else 3 significant digits."""
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, float) and abs(value) >= 10 else (
        f"{value:.3g}" if isinstance(value, float) else str(value))


def _counted(server, where: str, run) -> dict:
    """``run()``'s entry; a remote one with the server's requests and bytes per sample added."""
    server.reset_stats()
    r = run()
    if where == "remote" and "error" not in r:
        stats = server.stats()
        r.update(requests=stats["requests"], bytes_fetched=stats["bytes"],
                 requests_per_sample=stats["requests"] / r["samples"], bytes_per_sample=stats["bytes"] / r["samples"])
    return r


def remote_ratios(entries: dict) -> dict:
    """``remote_X / local_X`` samples/s for every entry measured both ways."""
    out = {}
    for name, r in entries.items():
        if name.startswith("remote_") and f"local_{name[7:]}" in entries:
            local = entries[f"local_{name[7:]}"].get("samples_per_s")
            if local and r.get("samples_per_s"):
                out[f"{name[7:]}_remote_vs_local"] = r["samples_per_s"] / local
    return out


def format_remote(remote: dict) -> list[str]:
    """Table lines of the latency bench."""
    lines = [f"latency bench: loopback HTTP, {remote['latency_ms']:g} ms per request "
             f"(prefetch {'measured' if remote['prefetch_supported'] else 'not supported by this CubeStream'})",
             f"{'order':7s} {'entry':30s} {'samples':>7s} {'samples/s':>10s} {'req/sample':>10s} {'kB/sample':>10s} "
             f"{'RSS MB':>7s} {'wrk USS MB':>10s} {'remote/local':>12s}"]
    for order, o in remote["orders"].items():
        if "distinct_chunks_per_sample" in o:
            lines.append(f"{order:7s} distinct chunks per block / block size (block {o['block_size']}): "
                         f"{o['distinct_chunks_per_sample']:.2f} a sample, the bound on req/sample")
        for name, r in o["loaders"].items():
            if "error" in r:
                lines.append(f"{order:7s} {name:30s} error: {r['error']}")
                continue
            base = name.split("_", 1)[1]
            ratio = o["ratios"].get(f"{base}_remote_vs_local") if name.startswith("remote_") else None
            req = r.get("requests_per_sample")
            kb = r.get("bytes_per_sample")
            lines.append(f"{order:7s} {name:30s} {r['samples']:7d} {r['samples_per_s']:10.1f} "
                         f"{'-' if req is None else f'{req:.1f}':>10s} {'-' if kb is None else f'{kb / 1e3:.0f}':>10s} "
                         f"{r['rss_peak_mb']:7.0f} {r['uss_worker_peak_mb']:10.0f} "
                         f"{'-' if ratio is None else f'{ratio:.2f}':>12s}")
    return lines


def main(argv=None) -> None:
    """The latency bench alone: the entries ``depthcube bench`` reports under ``remote``, with its
    settings and thread pinning."""
    import argparse
    import json

    from .suite import BenchSettings, pin_threads

    p = argparse.ArgumentParser(description="the latency bench of depthcube bench, alone")
    p.add_argument("--cube", default="data/cube.zarr")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--budget", type=float, default=20.0, help="seconds per entry (default %(default)s)")
    p.add_argument("--dataset-config", default="configs/dataset.yaml")
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    pin_threads()
    settings = dataclasses.replace(BenchSettings(), latency_ms=a.latency_ms, remote_budget_s=a.budget)
    result = bench_remote(a.cube, settings, a.dataset_config, a.latency_ms)
    print("\n".join(format_remote(result)))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
