"""``depthcube bench``: CubeStream against its peers on the same windows, side by side in one run
(DESIGN.md 7), plus cube build, profile rasterisation and track-mask throughput.

Loaders measured (all with the same dataset preset, the same windows in the same order, the
same batch size):

* ``depthcube_w{0,2}``: ``CubeStream`` (split ``all``) through a torch DataLoader, 0 and 2 workers,
  its batches assembled in place (``stream.batched``, ``batch_size=None``); ``depthcube_collate_w0``
  the per-sample stream under torch's default collate (``DataLoader(stream, batch_size=B)``).
  At 0 workers ``depthcube_first_w0`` is the process's first batched stream (its batch memory
  touched for the first time) and ``depthcube_w0`` a second, new stream after it: empty caches,
  every chunk read and decoded again, the batch memory of the first reused (one per process),
  which is what every epoch of a training run on a cube larger than the decoded cache costs;
  the ratios use ``depthcube_w0``;
* ``peer1_reference_w{0,2}``: :class:`bench.peers.ReferenceRawDataset` on the raw demo files;
* ``peer2_xbatcher_w{0,2}``: xbatcher's torch ``MapDataset`` over the dask-opened cube, and
  ``peer2_xbatcher_nodask_w{0,2}`` over the cube opened with ``chunks=None`` (its fastest
  documented form); the peer-2 ratios use the faster of the two;
* ``limit``: the chunks the stream decodes for those windows (profile chunks without an
  observation of the window left out, as the stream leaves them out), in its order, each once,
  decoded the fastest way the layout allows, no assembly (:func:`bench.peers.decode_chunks`);
* ``write_floor``: allocating and filling tensors of the samples' shapes and dtypes, a batch to a
  tensor as the loaders' batches hold them (memory bandwidth). ``depthcube_w0_vs_decode_and_write`` compares depthcube with the
  two floors added (decode + write seconds per sample): that sum is the limit the target
  ``depthcube_vs_limit`` (0.5) is checked against, since no loader hands a sample out without
  both decoding its bytes and writing its tensors; ``depthcube_w0_vs_limit`` (decode alone) is
  reported beside it.

Threads. The run pins torch (``torch.set_num_threads(1)``), OpenMP and BLAS to one thread per
process (the ``OMP_NUM_THREADS`` family of variables, which spawned workers inherit, and
``threadpoolctl`` when installed), so a busy box does not swing intra-op thread pools; the
parallelism measured is the DataLoader's workers. dask (peer 2's dask form) keeps its own
scheduler threads: that is how it is documented to run.

Fresh memory. Before the loaders run, the process touches and frees ``warm_bytes`` (2 GiB, quick
64 MiB) once (:func:`warm_memory`): on the shared VMs the first touch of memory a process never
used runs at about 0.6 GB/s, and the first loader measured paid it for all the others. Memory
the kernel backs with fresh 2 MB pages (numpy asks for them for large arrays, so batch memory
gets them) is slower still at first touch on these VMs and is not helped by this warm-up: that
is what ``depthcube_first_w0`` pays beside ``depthcube_w0``.

Slow peers run on a prefix of the window order, capped by a time budget: every entry reports the
number of samples it measured. ``samples_per_s`` is the steady rate after the first batch (the
whole run when there is only one batch); ``time_to_first_batch_s`` includes worker start-up;
``mb_per_s`` counts the bytes of the tensors delivered (for the limit: bytes decoded). Memory is
polled every 20 ms with psutil: ``rss_main_peak_mb`` (this process, torch included),
``uss_worker_peak_mb`` (the largest worker's private memory; a depthcube worker is bounded by its
chunk cache, ``cache_mb``, plus one window's arrays, whatever the cube's size) and
``rss_peak_mb`` (main RSS + workers' USS). ``ratios`` divide depthcube's samples/s by each peer's
at the same worker count; ``targets`` compare the best of those with the issue's targets.

The latency bench (:mod:`bench.remote`, ``remote`` in the report; off with ``remote=False``)
serves the cube over loopback HTTP with ``latency_ms`` per request and compares CubeStream and
its raw reads local vs remote, in sorted and random window order, with insitubatch (peer 3,
:mod:`bench.insitu`) on the same windows and server.

``--quick`` writes a tiny demo and cube in a temp folder and runs everything with small budgets:
a smoke test of the whole benchmark, not a measurement.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, IterableDataset, Subset, get_worker_info

from cube.build import build
from cube.config import ComputeConfig, CubeConfig, InputsConfig
from cube.layout import ChunkConfig
from cube.demo import DemoSpec, write_demo
from cube.constants import GLORYS_DEPTHS
from cube.grid import CubeGrid
from cube.layout import decode_attrs
from cube.tiling import PatchSpec
from cube.rasterise import rasterise
from cube.readers import read_en4
from cube.vertical import align_to_levels
from loaders import load_dataset_config
from loaders.corruption import observed_budget, sample_rng, track_mask
from loaders.reader import CubeReader
from loaders.stream import CubeStream, in_place_batches, to_torch

from .peers import (RawWindow, ReferenceRawDataset, decode_chunks, demo_files, python_loop_rasterise, sample_plan,
                    write_floor, xbatcher_dataset)

SCHEMA = "depthcube-bench/1"
#: Keys of every ``loaders`` entry of the report.
LOADER_KEYS = ("samples", "seconds", "samples_per_s", "mb_per_s", "time_to_first_batch_s",
               "rss_peak_mb", "rss_main_peak_mb", "uss_worker_peak_mb", "workers")
TARGETS = {"depthcube_vs_peer1": 30.0, "depthcube_vs_peer2": 5.0, "depthcube_vs_limit": 0.5}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


def pin_threads() -> dict:
    """One intra-op thread per process: torch, OpenMP/BLAS (environment, inherited by spawned
    workers; and the loaded pools through ``threadpoolctl`` when it is installed). Returns what
    was pinned, for the report."""
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pools = "threadpoolctl not installed: loaded BLAS pools keep their size"
    else:
        threadpool_limits(1)
        pools = "threadpoolctl: 1"
    return {"torch_threads": torch.get_num_threads(), "env": {v: "1" for v in THREAD_VARIABLES}, "pools": pools}


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures; ``peer_budget_s`` caps each slow-peer run."""
    preset: str = "argo_real"
    split: str = "all"
    batch_size: int = 8
    workers: tuple[int, ...] = (0, 2)
    peer_budget_s: float = 45.0
    loader_budget_s: float = 120.0
    max_windows: int | None = None
    side_budget_s: float = 5.0
    rasterise_profiles: int = 20000
    build: bool = True
    tile_size: int = 128
    remote: bool = True
    latency_ms: float = 20.0
    remote_budget_s: float = 20.0
    remote_max_windows: int | None = None
    warm_bytes: int = 2 * 2**30  # fresh memory touched once before the loaders (:func:`warm_memory`)

    def __post_init__(self):
        if self.batch_size < 1 or any(w < 0 for w in self.workers) or self.tile_size < 1:
            raise ValueError(f"bench settings: batch_size and tile_size must be >= 1 and workers >= 0, got {self}")
        if self.latency_ms < 0 or self.remote_budget_s <= 0:
            raise ValueError(f"bench settings: latency_ms must be >= 0 and remote_budget_s > 0, got {self}")

    @classmethod
    def quick(cls) -> "BenchSettings":
        return cls(batch_size=4, peer_budget_s=2.0, loader_budget_s=10.0, max_windows=24, side_budget_s=0.5,
                   rasterise_profiles=2000, tile_size=16, remote_budget_s=2.0, remote_max_windows=6,
                   warm_bytes=64 * 2**20)


# --------------------------------------------------------------------------------------------
# Measurement helpers


class RssSampler:
    """Peak memory polled in a thread: this process's RSS, and each child's (DataLoader worker's)
    USS, the memory only that worker holds (forked workers share the parent's pages, which RSS
    would count again per worker). ``total`` = main RSS + the workers' USS."""
    def __init__(self, interval: float = 0.02, children: bool = True):
        import psutil

        self.proc, self.interval, self.children = psutil.Process(), interval, children
        self.main = self.worker = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._poll()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import psutil

        try:
            main = self.proc.memory_info().rss
            kids = []
            for c in self.proc.children(recursive=True) if self.children else ():
                try:
                    kids.append(c.memory_full_info().uss)
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        self.main, self.worker = max(self.main, main), max([self.worker] + kids)
        self.total = max(self.total, main + sum(kids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def report(self) -> dict:
        mb = 2.0**20
        return {"rss_peak_mb": self.total / mb, "rss_main_peak_mb": self.main / mb, "uss_worker_peak_mb": self.worker / mb}


def batch_bytes(batch) -> int:
    """Bytes of every tensor in a batch (dicts, lists and tuples walked)."""
    if isinstance(batch, torch.Tensor):
        return batch.nbytes
    if isinstance(batch, dict):
        return sum(batch_bytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_bytes(v) for v in batch)
    return 0


def batch_len(batch) -> int:
    if isinstance(batch, dict):
        return len(batch["y"])
    return len(batch)


def measure_loader(loader, budget_s: float, workers: int, what: str) -> dict:
    """Iterate ``loader`` until exhausted or ``budget_s`` passed; throughput, first batch, peak RSS."""
    with RssSampler(children=workers > 0) as rss:
        t0 = time.perf_counter()
        it = iter(loader)
        n = nbytes = n_first = 0
        t_first = t_last = None
        for batch in it:
            now = time.perf_counter()
            size = batch_len(batch)
            if t_first is None:
                t_first, n_first = now, size
            n, nbytes, t_last = n + size, nbytes + batch_bytes(batch), now
            if now - t0 > budget_s:
                break
        del it  # shuts the workers down inside the RSS window
    if t_first is None:
        raise RuntimeError(f"{what}: the loader yielded no batch")
    steady = n > n_first and t_last > t_first
    rate = (n - n_first) / (t_last - t_first) if steady else n / (t_last - t0)
    return {"what": what, "workers": workers, "samples": n, "seconds": t_last - t0, "samples_per_s": rate,
            "mb_per_s": rate * (nbytes / n) / 1e6, "time_to_first_batch_s": t_first - t0, **rss.report()}


def _loader(dataset, batch_size: int, workers: int, **kwargs):
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, **kwargs)


# --------------------------------------------------------------------------------------------
# The loader comparison


def _windows(cube: str, settings: BenchSettings, dataset_config: str):

    cfg = load_dataset_config(dataset_config, settings.preset)
    stream = CubeStream(cube, cfg, settings.split, shuffle=True)
    order = stream.shard_indices(0, 0, 1)
    if settings.max_windows:
        order = order[: settings.max_windows]
    return cfg, stream, order


class PrefixStream(IterableDataset):
    """The first windows (``order``) of a CubeStream's epoch, dealt to workers in whole blocks as the
    stream deals them (used only when ``max_windows`` cuts the epoch short)."""
    def __init__(self, stream, order):
        super().__init__()
        self.stream, self.order = stream, np.asarray(order)

    def __iter__(self):

        info = get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        b = self.stream.config.block_size
        blocks = [self.order[s:s + b] for s in range(0, len(self.order), b)][k::n]
        for i in (np.concatenate(blocks) if blocks else []):
            yield to_torch(self.stream.sample(int(i)))


def bench_depthcube(stream, order, settings: BenchSettings, workers: int, collate: bool = False) -> dict:
    """CubeStream through a DataLoader (all the split's windows, or the ``max_windows`` prefix):
    its batches assembled in place (``DataLoader(stream.batched(B), batch_size=None)``, what
    StreamLoader and the trainer run), or with ``collate`` the per-sample stream under torch's
    default collate (``DataLoader(stream, batch_size=B)``; also for a prefix)."""
    fresh = CubeStream(stream.reader.url, stream.config, stream.split, shuffle=True)
    if len(order) == len(fresh) and not collate:
        dataset, kwargs = in_place_batches(fresh, {"batch_size": settings.batch_size, "num_workers": workers})
        loader = DataLoader(dataset, **kwargs)
        what = "CubeStream.batched through a torch DataLoader (batch_size=None)"
    else:
        dataset = fresh if len(order) == len(fresh) else PrefixStream(fresh, order)
        loader, what = _loader(dataset, settings.batch_size, workers), "CubeStream through a torch DataLoader"
    r = measure_loader(loader, settings.loader_budget_s, workers, what)
    r["cache_mb"] = fresh.reader.cache_bytes / 2**20
    if workers == 0:
        r["chunks_decoded"] = fresh.reader.chunks_decoded  # the limit decodes each needed chunk once
    return r


def raw_windows(stream, order) -> list:
    """The stream's windows as the reference's (bbox, centre day) rows."""
    patches = stream.reader.patches.set_index("patch")
    out = []
    for i in order:
        w = stream.windows[int(i)]
        p = patches.loc[w.patch]
        out.append(RawWindow(float(p.lat0), float(p.lat1), float(p.lon0), float(p.lon1), w.centre, int(w.patch)))
    return out


def bench_peer1(stream, order, demo: str, settings: BenchSettings, workers: int) -> dict:

    files = demo_files(demo)
    ds = ReferenceRawDataset(files["ostia"], files["glorys"], files["en4"], raw_windows(stream, order),
                             stream.reader.tile, stream.config.window, stream.config.target_bands)
    return measure_loader(_loader(ds, settings.batch_size, workers), settings.peer_budget_s, workers,
                          "reference per-sample raw NetCDF + scipy RGI (REFERENCE.md 3)")


def bench_peer2(stream, order, settings: BenchSettings, workers: int, dask: bool = True) -> dict:
    """xbatcher over the dask-opened cube (``chunks={}``), or without dask (``chunks=None``)."""
    patch_cfg = decode_attrs(stream.reader.root["patches"].attrs.asdict()).get("patch_config", {})
    ds, index = xbatcher_dataset(stream.reader.url, stream.config.window, stream.reader.tile,
                                 patch_cfg.get("stride"), stream.config.target_bands, dask=dask)
    picks = []
    for i in order:
        w = stream.windows[int(i)]
        if not isinstance(w.cols, slice):
            raise ValueError("peer 2 cannot express dateline-wrapping tiles (xbatcher slices contiguous ranges)")
        picks.append(index[(w.time.start, w.rows.start, w.cols.start)])
    # dask's threaded scheduler cannot run in a worker forked after the parent used it (its thread
    # pool is inherited without threads and hangs), so xbatcher's workers are spawned.
    context = {"multiprocessing_context": "spawn"} if workers and dask else {}
    what = ("xbatcher MapDataset over xr.open_datatree(chunks={}) (dask)" if dask else
            "xbatcher MapDataset over xr.open_datatree(chunks=None) (no dask)")
    r = measure_loader(_loader(Subset(ds, picks), settings.batch_size, workers, **context), settings.peer_budget_s,
                       workers, what)
    return {**r, "start_method": "spawn"} if context else r


def bench_limit(stream, order) -> dict:
    """Decode floor: the chunks the stream decodes for ``order`` (:func:`bench.peers.sample_plan`)."""
    plan = sample_plan(stream, order)
    with RssSampler(children=False) as rss:
        t0 = time.perf_counter()
        nbytes = decode_chunks(stream.reader.url, plan)
        dt = time.perf_counter() - t0
    return {"what": "decode of the chunks the stream decodes, in its order, each once, no assembly", "workers": 0,
            "samples": len(order), "seconds": dt, "samples_per_s": len(order) / dt, "mb_per_s": nbytes / dt / 1e6,
            "time_to_first_batch_s": None, "chunks": len(plan), **rss.report()}


def bench_write_floor(stream, order, batch_size: int) -> dict:
    """Write floor: allocate and fill the output tensors of the windows' samples (one sample's shapes
    and dtypes), ``batch_size`` samples to a tensor as the loaders' batches hold them."""
    sample = to_torch(stream.sample(int(order[0])))
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in sample.items() if isinstance(v, torch.Tensor)}
    nbytes = sum(v.nbytes for v in sample.values() if isinstance(v, torch.Tensor))
    write_floor(shapes, batch_size, batch_size)  # warm the allocator
    with RssSampler(children=False) as rss:
        dt = write_floor(shapes, len(order), batch_size)
    return {"what": "allocate and fill batch tensors of the samples' shapes (memory bandwidth)", "workers": 0,
            "samples": len(order), "seconds": dt, "samples_per_s": len(order) / dt,
            "mb_per_s": nbytes * len(order) / dt / 1e6, "time_to_first_batch_s": None, **rss.report()}


def warm_memory(nbytes: int) -> float:
    """Touch ``nbytes`` of fresh memory once and free it; returns the seconds it took. On this
    project's VMs the first touch of memory a process has never used runs far below memory speed
    (about 0.6 GB/s against 15 GB/s for pages used before, ``np.empty(...).fill(0)`` twice), and
    whichever loader ran first paid it for the others (in one run the per-sample stream measured
    109 samples/s first and 202 second). Done once before the loaders, no entry pays it."""
    t0 = time.perf_counter()
    np.ones(nbytes // 4, np.float32)
    return time.perf_counter() - t0


def compare_loaders(cube: str, demo: str | None, settings: BenchSettings, dataset_config: str, echo=print) -> dict:
    """Every loader entry of the report (see the module docstring)."""
    cfg, stream, order = _windows(cube, settings, dataset_config)
    echo(f"  warming {settings.warm_bytes / 2**30:.2f} GiB of process memory: {warm_memory(settings.warm_bytes):.1f} s")
    out = {}
    for w in settings.workers:
        echo(f"  depthcube, {w} workers ...")
        if w == 0:
            echo("  depthcube, per-sample stream + default collate, 0 workers ...")
            out["depthcube_collate_w0"] = bench_depthcube(stream, order, settings, 0, collate=True)
            out["depthcube_first_w0"] = bench_depthcube(stream, order, settings, 0)
            echo("  depthcube, 0 workers, a second stream (every chunk decoded again) ...")
        out[f"depthcube_w{w}"] = bench_depthcube(stream, order, settings, w)
        if demo:
            echo(f"  peer 1 (reference raw NetCDF), {w} workers ...")
            out[f"peer1_reference_w{w}"] = bench_peer1(stream, order, demo, settings, w)
        echo(f"  peer 2 (xbatcher MapDataset, dask), {w} workers ...")
        out[f"peer2_xbatcher_w{w}"] = bench_peer2(stream, order, settings, w)
        echo(f"  peer 2 (xbatcher MapDataset, chunks=None), {w} workers ...")
        out[f"peer2_xbatcher_nodask_w{w}"] = bench_peer2(stream, order, settings, w, dask=False)
    echo("  limit (bare decode of the chunks the stream decodes) ...")
    out["limit"] = bench_limit(stream, order)
    echo("  write floor (allocate and fill the output tensors) ...")
    out["write_floor"] = bench_write_floor(stream, order, settings.batch_size)
    return {"windows": len(order), "window_days": cfg.window, "tile": stream.reader.tile, "loaders": out}


def ratios(loaders: dict, workers) -> dict:
    """depthcube samples/s over each peer's at the same worker count (peer 2: its faster form), and
    over the limit (decode), and over decode + write (their seconds per sample added)."""
    out = {}
    rate = lambda name: loaders.get(name, {}).get("samples_per_s")
    for w in workers:
        dc = rate(f"depthcube_w{w}")
        peers = {"peer1": rate(f"peer1_reference_w{w}"),
                 "peer2": max(filter(None, (rate(f"peer2_xbatcher_w{w}"), rate(f"peer2_xbatcher_nodask_w{w}"))),
                              default=None)}
        for peer, p in peers.items():
            if dc and p:
                out[f"depthcube_vs_{peer}_w{w}"] = dc / p
        if dc and "limit" in loaders:
            out[f"depthcube_w{w}_vs_limit"] = dc / loaders["limit"]["samples_per_s"]
    dc0, decode, write = rate("depthcube_w0"), rate("limit"), rate("write_floor")
    if dc0 and decode and write:
        out["depthcube_w0_vs_decode_and_write"] = dc0 * (1 / decode + 1 / write)
    return out


def target_checks(r: dict) -> dict:
    """Each target of the issue against the best same-worker ratio measured."""
    def best(prefix):
        vals = [v for k, v in r.items() if k.startswith(prefix)]
        return max(vals) if vals else None

    got = {"depthcube_vs_peer1": best("depthcube_vs_peer1"), "depthcube_vs_peer2": best("depthcube_vs_peer2"),
           "depthcube_vs_limit": r.get("depthcube_w0_vs_decode_and_write")}
    return {k: {"target": TARGETS[k], "measured": v, "met": v is not None and v >= TARGETS[k]} for k, v in got.items()}


# --------------------------------------------------------------------------------------------
# Build, rasterisation and track masks


def bench_build(demo: str, workdir: Path, tile_size: int = 128, echo=print) -> dict:
    """depthcube build of the demo inputs vs a plain ``xr.open_mfdataset(...).to_zarr()`` per product."""
    files = demo_files(demo)
    in_bytes = sum(os.path.getsize(f) for fs in files.values() for f in fs)
    cfg = demo_cube_config(demo, workdir / "build.zarr", tile_size)
    echo("  depthcube build ...")
    t0 = time.perf_counter()
    build(cfg, progress=False)
    t_dc = time.perf_counter() - t0
    echo("  plain open_mfdataset().to_zarr() ...")
    plain, t0 = {}, time.perf_counter()
    opts = {"ostia": {"combine": "by_coords"}, "glorys": {"combine": "by_coords"},
            "en4": {"combine": "nested", "concat_dim": "N_PROF", "data_vars": "minimal", "coords": "minimal",
                    "compat": "override"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for product, fs in files.items():
            if fs:
                with xr.open_mfdataset(fs, **opts[product]) as ds:
                    ds.to_zarr(workdir / f"plain_{product}.zarr", mode="w")
                plain[product] = len(fs)
    t_plain = time.perf_counter() - t0
    mb = in_bytes / 1e6
    return {"input_mb": mb, "input_files": {k: len(v) for k, v in files.items()},
            "depthcube": {"seconds": t_dc, "mb_per_s": mb / t_dc,
                          "what": "readers + QC + regrid + vertical alignment + rasterise + patch index"},
            "plain_open_mfdataset_to_zarr": {"seconds": t_plain, "mb_per_s": mb / t_plain,
                                             "what": "concatenate and copy, no regridding or rasterising"},
            "depthcube_vs_plain": t_plain / t_dc}


def demo_cube_config(demo: str | Path, output: str | Path, tile_size: int = 128):
    """Cube config for the demo products under ``demo`` (configs/cube.yaml defaults, ``tile_size`` tiles)."""
    chunks = ChunkConfig(days=4 if tile_size < 64 else 8)
    return CubeConfig(output=str(output), inputs=InputsConfig(**demo_files(demo)), chunks=chunks,
                      patches=PatchSpec(tile_size=tile_size), compute=ComputeConfig(progress=False))


def bench_rasterise(cube: str, demo: str, settings: BenchSettings) -> dict:
    """Profiles aligned + rasterised per second: vectorised (cube.vertical + cube.rasterise) vs the
    per-profile Python loop, on the demo EN4 profiles (repeated to ``rasterise_profiles``)."""
    reader = CubeReader(cube)
    grid = CubeGrid.from_dict(reader.attrs["build"]["grid"])
    tables = [read_en4(f) for f in demo_files(demo)["en4"]]
    day = np.concatenate([(t.day - reader.days[0]).astype(np.int64) for t in tables])
    lat, lon = np.concatenate([t.lat for t in tables]), np.concatenate([t.lon for t in tables])
    depth, temp = _stack_levels([t.depth for t in tables]), _stack_levels([t.temp for t in tables])
    # Only profiles inside the cube's days and grid, so neither side wins by skipping early.
    _, _, inside = grid.cell_index(lat, lon)
    keep = inside & (day >= 0) & (day < len(reader.days))
    if not keep.any():
        raise ValueError(f"{demo}: no EN4 profile falls inside the cube {cube}")
    reps = max(1, -(-settings.rasterise_profiles // int(keep.sum())))
    big = [np.concatenate([a[keep]] * reps) for a in (day, lat, lon, depth, temp)]

    def vectorised(d, la, lo, de, te):
        return rasterise(d, la, lo, align_to_levels(de, te), grid, len(reader.days))

    t0 = time.perf_counter()
    vectorised(*big)
    t_vec = time.perf_counter() - t0
    n_loop, t_loop, loop = _timed_loop(big, grid, len(reader.days), settings.side_budget_s)
    ref = vectorised(*(a[:n_loop] for a in big))
    agree = _same_cells(ref, loop)
    return {"profiles": len(big[0]), "depthcube_profiles_per_s": len(big[0]) / t_vec,
            "python_loop_profiles": n_loop, "python_loop_profiles_per_s": n_loop / t_loop,
            "depthcube_vs_python_loop": (len(big[0]) / t_vec) / (n_loop / t_loop), "agree": agree,
            "levels": int(GLORYS_DEPTHS.size)}


def _stack_levels(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate (P, L_i) level arrays of different files, NaN-padded to the widest L."""
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=np.nan) for p in parts])


def _timed_loop(arrays, grid, n_days: int, budget: float):
    """Run the Python loop on growing prefixes until it has taken ``budget`` seconds (or all done)."""
    n, total = 64, len(arrays[0])
    while True:
        n = min(n, total)
        t0 = time.perf_counter()
        cells = python_loop_rasterise(*(a[:n] for a in arrays), GLORYS_DEPTHS.astype(np.float64), grid.lat_south,
                                      grid.lon_west, grid.resolution, grid.nlat, grid.nlon, n_days)
        dt = time.perf_counter() - t0
        if dt >= budget or n == total:
            return n, dt, cells
        n = int(n * min(8.0, max(2.0, budget / max(dt, 1e-3))))


def _same_cells(raster, cells: dict) -> bool:
    keys = list(zip(raster.day.tolist(), raster.level.tolist(), raster.row.tolist(), raster.col.tolist()))
    if set(keys) != set(cells):
        return False
    counts = np.array([cells[k][0] for k in keys])
    sums = np.array([cells[k][1] for k in keys])
    return bool(np.array_equal(counts, raster.count) and np.allclose(sums, raster.sum, rtol=1e-5, atol=1e-3))


def bench_tracks(settings: BenchSettings, shape=(128, 128), mask_fraction: float = 0.975) -> dict:
    """Submarine-track masks (exact budget) drawn per second on a ``shape`` tile."""
    budget = observed_budget(shape, mask_fraction)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < settings.side_budget_s or n < 3:
        m = track_mask(shape, budget, sample_rng(0, 0, n))
        if int(m.sum()) != budget:
            raise RuntimeError(f"track mask has {int(m.sum())} observed pixels, expected {budget}")
        n += 1
    dt = time.perf_counter() - t0
    return {"shape": list(shape), "mask_fraction": mask_fraction, "observed_pixels": budget, "masks": n,
            "masks_per_s": n / dt}


# --------------------------------------------------------------------------------------------
# The run


def quick_inputs(workdir: Path, tile_size: int = 16) -> tuple[str, str]:
    """A tiny demo and its cube under ``workdir``: (cube, demo)."""
    demo = workdir / "demo"
    write_demo(demo, DemoSpec.preset("tiny"))
    cfg = demo_cube_config(demo, workdir / "cube.zarr", tile_size)
    build(cfg, progress=False)
    return cfg.output, str(demo)


def run_bench(cube: str | None, demo: str | None, out: str | Path | None, settings: BenchSettings,
              dataset_config: str = "configs/dataset.yaml", quick: bool = False, echo=print) -> dict:
    """Run every measurement, write JSON to ``out`` (if given) and return the report."""
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="depthcube-bench-"))
    try:
        if quick:
            echo("quick mode: writing a tiny demo and cube ...")
            cube, demo = quick_inputs(work, settings.tile_size)
        if cube is None and demo is None:
            raise ValueError("bench needs --cube (and --demo for peer 1 and the build), or --quick")
        threads = pin_threads()
        report = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": quick, "threads": threads,
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                              "torch": torch.__version__, "cuda": torch.cuda.is_available()},
                  "cube": str(cube), "demo": str(demo) if demo else None, "settings": _settings_dict(settings)}
        if demo and (settings.build or cube is None):
            echo("cube build:")
            report["build"] = bench_build(demo, work, settings.tile_size, echo)
        if cube is None:  # no cube given: benchmark the one just built from the demo
            cube = report["cube"] = str(work / "build.zarr")
        echo("loaders:")
        report.update(compare_loaders(cube, demo, settings, dataset_config, echo))
        report["ratios"] = ratios(report["loaders"], settings.workers)
        report["targets"] = target_checks(report["ratios"])
        if settings.remote:
            from .remote import bench_remote

            echo(f"latency bench (loopback HTTP, {settings.latency_ms:g} ms per request):")
            report["remote"] = bench_remote(cube, settings, dataset_config, settings.latency_ms, echo)
        if demo:
            echo("profile rasterisation ...")
            report["rasterise"] = bench_rasterise(cube, demo, settings)
        echo("track masks ...")
        report["tracks"] = bench_tracks(settings)
        report["total_seconds"] = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if quick:
        report["cube"] = report["demo"] = "(temporary, removed)"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    echo(format_table(report))
    return report


def _settings_dict(settings: BenchSettings) -> dict:
    d = asdict(settings)
    d["workers"] = list(settings.workers)
    return d


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def format_table(report: dict) -> str:
    """Human summary of a bench report."""
    lines = [f"depthcube bench ({'quick, ' if report.get('quick') else ''}{report.get('windows')} windows of "
             f"{report.get('window_days')} days, tile {report.get('tile')}, batch {report['settings']['batch_size']})",
             f"{'loader':24s} {'samples':>7s} {'samples/s':>10s} {'MB/s':>9s} {'1st batch s':>11s} "
             f"{'RSS MB':>8s} {'wrk USS MB':>10s}"]
    for name, r in report.get("loaders", {}).items():
        first = r.get("time_to_first_batch_s")
        lines.append(f"{name:24s} {r['samples']:7d} {r['samples_per_s']:10.1f} {r['mb_per_s']:9.1f} "
                     f"{'-' if first is None else f'{first:.2f}':>11s} {r['rss_peak_mb']:8.0f} {r['uss_worker_peak_mb']:9.0f}")
    lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in report.get("ratios", {}).items()))
    for k, t in report.get("targets", {}).items():
        v = t["measured"]
        lines.append(f"target {k} >= {t['target']:g}: " + ("n/a" if v is None else f"{v:.2f} ({'met' if t['met'] else 'NOT met'})"))
    if "remote" in report:
        from .remote import format_remote

        lines += format_remote(report["remote"])
    if "build" in report:
        b = report["build"]
        lines.append(f"build: depthcube {b['depthcube']['mb_per_s']:.1f} MB/s, plain open_mfdataset.to_zarr "
                     f"{b['plain_open_mfdataset_to_zarr']['mb_per_s']:.1f} MB/s ({b['input_mb']:.1f} MB of inputs)")
    if "rasterise" in report:
        r = report["rasterise"]
        lines.append(f"rasterise: {r['depthcube_profiles_per_s']:.0f} profiles/s vs Python loop "
                     f"{r['python_loop_profiles_per_s']:.0f}/s (x{r['depthcube_vs_python_loop']:.0f}, agree={r['agree']})")
    if "tracks" in report:
        lines.append(f"track masks: {report['tracks']['masks_per_s']:.1f}/s on {report['tracks']['shape']}")
    lines.append(f"total {report.get('total_seconds', 0):.0f} s")
    return "\n".join(lines)
