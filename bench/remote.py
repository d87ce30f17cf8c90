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
``bytes`` fetched (the server's counts over that run, worker start-up included) per sample.
Every entry has the loader keys of the rest of the bench (samples/s, peak RSS, the largest
worker's USS). ``ratios`` divide each remote samples/s by the same entry's local one.

Each entry runs until ``budget_s`` passed or ``max_windows`` samples were delivered, whichever
comes first (a fresh stream per entry, epoch 0: every entry starts at the same window).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import time
from pathlib import Path

from loaders import load_dataset_config
from loaders.stream import CubeStream

#: The orders measured: the stream's default block shuffle, and every window shuffled alone.
ORDERS = ("sorted", "random")


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
    """``CubeStream`` at ``url`` through a DataLoader, until the budget or ``max_windows`` samples."""
    from .suite import _loader, measure_loader

    stream = CubeStream(url, cfg, "all", shuffle=True, **extra)
    n_batches = -(-(max_windows or len(stream)) // batch_size)
    r = measure_loader(FirstBatches(_loader(stream, batch_size, workers), n_batches), budget_s, workers,
                       f"CubeStream{' ' + str(extra) if extra else ''} through a torch DataLoader")
    r["cache_mb"] = stream.reader.cache_bytes / 2**20
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


def bench_remote(cube: str, settings, dataset_config: str, latency_ms: float, echo=print) -> dict:
    """Every entry of the latency bench (see the module docstring); the server lives for this call."""
    from .serve import LoopbackServer

    cfg = load_dataset_config(dataset_config, settings.preset)
    cube_path = Path(cube)
    budget, limit = settings.remote_budget_s, settings.remote_max_windows
    out: dict = {"latency_ms": latency_ms, "prefetch_supported": prefetch_supported(), "orders": {}}
    with LoopbackServer(cube_path.parent, delay_s=latency_ms / 1000) as server:
        remote_url = f"{server.url}/{cube_path.name}"
        for order in ORDERS:
            ocfg, entries = order_config(cfg, order), {}
            for where, url in (("local", str(cube_path)), ("remote", remote_url)):
                for workers in settings.workers:
                    for suffix, extra in stream_variants().items():
                        name = f"{where}_cubestream_w{workers}{suffix}"
                        echo(f"  {order}: {name} ...")
                        entries[name] = _counted(server, where, lambda: bench_stream(
                            url, ocfg, workers, settings.batch_size, budget, limit, extra))
                echo(f"  {order}: {where}_raw_reads ...")
                entries[f"{where}_raw_reads"] = _counted(server, where,
                                                         lambda: bench_raw_reads(url, ocfg, budget, limit))
            out["orders"][order] = {"block_size": ocfg.block_size, "loaders": entries}
        # insitubatch last: its residency (GBs of whole fields) would stay in this process's RSS
        # and inflate the peak RSS of every depthcube entry measured after it.
        for order, o in out["orders"].items():
            o["loaders"].update(_insitubatch_entries(server, cube_path, remote_url, order, settings, echo))
            o["ratios"] = remote_ratios(o["loaders"])
    return out


def _insitubatch_entries(server, cube_path: Path, remote_url: str, order: str, settings, echo) -> dict:
    """Peer 3 (insitubatch) on the same arrays, locally and over the same server."""
    from .insitu import bench_insitubatch

    out = {}
    for where, url in (("local", cube_path.resolve().as_uri()), ("remote", remote_url)):
        echo(f"  {order}: {where}_insitubatch ...")
        out[f"{where}_insitubatch"] = _counted(server, where, lambda: bench_insitubatch(
            url, order, settings.remote_budget_s, settings.remote_max_windows))
    return out


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
