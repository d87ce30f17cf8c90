"""The profile store on the demo cube (issue 13 item 1): the dense ``profiles/count``/``sum``
against the observation table ``profiles/obs_*``, measured for several ``chunks.profile_rows``,
and ``CubeReader.profile_sums`` timed old against new. The global cube's figures are
:mod:`bench.global_estimate`'s (it reads per sample with :func:`dense_chunks`, :func:`table_chunks`
and :func:`decoded_by_array` from here).

Measured (a cube built from the demo inputs for each ``profile_rows``, argo_real training windows):

- stored bytes and objects of ``count`` + ``sum`` (+ ``n_obs``, which the v1 loaders also read)
  against the table (its five columns and its index);
- decoded bytes per sample: the dense chunks the v1 loaders decoded (:func:`dense_chunks`) against
  the table chunks the v2 stream decodes (:func:`table_chunks`), each chunk once over all windows
  (an unbounded cache) and per window read cold (the worst case a small cache tends to).

Run (after ``make demo``):

    .venv/bin/python -m bench.profile_store [--demo data/demo] [--rows 64 128 256 512 1024] [--out bench/results_profile_store.json]

``--old REV --only-gather`` (after ``make cube``) times ``CubeReader.profile_sums`` alone, the
code of REV on a cube REV builds from the same inputs against this tree on ``--cube``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLE = ("profiles/obs_day", "profiles/obs_row", "profiles/obs_col", "profiles/obs_count", "profiles/obs_sum")
DENSE = ("profiles/count", "profiles/sum")


def stored(cube: Path, paths) -> tuple[int, int]:
    """(bytes, objects) of the chunks of ``paths`` (their metadata documents left out)."""
    files = [p for path in paths for p in (cube / path).rglob("*") if p.is_file() and p.name != "zarr.json"]
    return sum(p.stat().st_size for p in files), len(files)


def chunk_bytes(arr, cidx) -> int:
    """Decoded bytes of chunk ``cidx`` of ``arr`` (the last chunk of an axis clipped to the shape)."""
    shape = [min(c, n - i * c) for i, c, n in zip(cidx, arr.chunks, arr.shape)]
    return int(np.prod(shape)) * np.dtype(arr.dtype).itemsize


def dense_chunks(stream, index: int) -> set:
    """The chunks the v1 loaders decoded for the argo x of window ``index``: ``n_obs`` over the
    window, and the ``count``/``sum`` chunks holding an observation of it."""
    from loaders.stream import box_chunks

    reader, w = stream.reader, stream.windows[int(index)]
    n_obs = reader.array("profiles/n_obs")
    ct, _, cr, cc = reader.array("profiles/count").chunks
    plan = {("profiles/n_obs", k) for k in box_chunks(n_obs.shape, n_obs.chunks, w.time, w.rows, w.cols)}
    d, r, c = np.nonzero(reader.read("profiles/n_obs", w.time, w.rows, w.cols))
    cols = np.arange(w.cols.start, w.cols.stop) if isinstance(w.cols, slice) else np.asarray(w.cols)
    for t, y, x in {(int(t), int(y), int(x)) for t, y, x in zip((w.time.start + d) // ct, (w.rows.start + r) // cr, cols[c] // cc)}:
        plan |= {(path, (t, 0, y, x)) for path in DENSE}
    return plan


def table_chunks(stream, index: int) -> set:
    """The observation-table chunks the v2 stream decodes for window ``index``
    (:func:`bench.peers.needed_chunks`, table chunks only)."""
    from bench.peers import needed_chunks

    return {(p, k) for p, k in needed_chunks(stream, int(index)) if p in TABLE}


def decoded_by_array(stream, chunks_per_window: list, groups) -> dict[str, float]:
    """Mean decoded bytes per window, by array, of ``chunks_per_window`` (one set of (path, chunk)
    per window) when each chunk is decoded once per group (``groups[i]``: window ``i``'s; a cache
    that holds a group's chunks and nothing after it)."""
    out: dict[str, float] = {}
    for _, path, key in {(g, p, k) for g, keys in zip(groups, chunks_per_window) for p, k in keys}:
        out[path] = out.get(path, 0) + chunk_bytes(stream.reader.array(path), key)
    return {path: v / max(len(chunks_per_window), 1) for path, v in out.items()}


def decoded_per_sample(stream, chunks_of) -> tuple[float, float]:
    """Mean decoded bytes per training window of ``chunks_of(stream, i)``: each chunk once over all
    windows (an unbounded cache), and each window read cold."""
    per_window = [chunks_of(stream, i) for i in range(len(stream.windows))]
    once = decoded_by_array(stream, per_window, [0] * len(per_window))
    cold = decoded_by_array(stream, per_window, range(len(per_window)))
    return sum(once.values()), sum(cold.values())


def measure(demo: Path, rows: int, work: Path) -> dict:
    from cube.build import build
    from cube.config import CubeConfig
    from cube.spec import load_config
    from loaders import CubeStream, load_dataset_config

    import yaml

    data = yaml.safe_load((ROOT / "configs" / "cube.yaml").read_text())
    data["inputs"] = {k: [str(demo / k / "*.nc")] for k in ("ostia", "glorys", "en4")}
    data["output"] = str(work / f"cube_rows{rows}.zarr")
    data["chunks"]["profile_rows"] = rows
    data["compute"]["progress"] = False
    cfg = load_config(data, CubeConfig)
    build(cfg, progress=False, rebuild=True)
    cube = Path(cfg.output)
    stream = CubeStream(str(cube), load_dataset_config(ROOT / "configs" / "dataset.yaml", "argo_real"), split="train")
    reader = stream.reader
    n = len(stream.windows)
    dense_epoch, dense_cold = decoded_per_sample(stream, dense_chunks)
    table_epoch, table_cold = decoded_per_sample(stream, table_chunks)
    return {
        "profile_rows": rows, "samples": n, "table_rows": int(reader.array("profiles/obs_day").shape[0]),
        "dense_bytes_stored": stored(cube, DENSE)[0], "dense_objects": stored(cube, DENSE)[1],
        "n_obs_bytes_stored": stored(cube, ("profiles/n_obs",))[0],
        "table_bytes_stored": stored(cube, TABLE + ("profiles/obs_start", "profiles/obs_stop"))[0],
        "table_objects": stored(cube, TABLE + ("profiles/obs_start", "profiles/obs_stop"))[1],
        "dense_decoded_per_sample": dense_epoch, "dense_decoded_per_cold_sample": dense_cold,
        "table_decoded_per_sample": table_epoch, "table_decoded_per_cold_sample": table_cold,
        "table_chunks_per_cold_sample": sum(len(table_chunks(stream, i)) for i in range(n)) / n,
    }


GATHER = r"""
import json, sys, time
from loaders import CubeStream, load_dataset_config
stream = CubeStream(sys.argv[1], load_dataset_config("configs/dataset.yaml", "argo_real"), split="all")
windows = [stream.windows[int(i)] for i in stream.shard_indices(0)]
best = []
for _ in range(int(sys.argv[2])):
    stream.reader._cache.clear(); stream.reader._cached = 0
    t = time.perf_counter()
    for w in windows:
        stream.reader.profile_sums(w.time, w.rows, w.cols, north_up=True)
    best.append((time.perf_counter() - t) / len(windows))
print(json.dumps({"ms_per_sample": 1e3 * min(best)}))
"""


def gather_old_new(old_rev: str, cube: str, rounds: int = 3) -> dict:
    """ms per sample of ``CubeReader.profile_sums`` alone (argo_real windows in the stream's order,
    a cold cache each pass, best of ``rounds``), the ``old_rev`` code on a cube it builds from the
    same inputs against this tree on ``cube``."""
    import os
    import subprocess
    import sys

    from bench.assembly_ab import THREAD_ENV, build_old_cube, export_revision

    def run(tree: Path, url: str) -> float:
        out = subprocess.run([sys.executable, "-c", GATHER, url, str(rounds)], cwd=tree, check=True, text=True,
                             capture_output=True, env={**os.environ, **THREAD_ENV, "PYTHONPATH": str(tree)}).stdout
        return json.loads(out.strip().splitlines()[-1])["ms_per_sample"]

    with tempfile.TemporaryDirectory() as tmp:
        tree = export_revision(old_rev, Path(tmp) / "tree")
        old = run(tree, build_old_cube(tree, Path(tmp)))
    new = run(ROOT, str(Path(cube).resolve()))
    return {"old_rev": old_rev, "old_ms_per_sample": old, "new_ms_per_sample": new, "speedup": old / new}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=str(ROOT / "data" / "demo"))
    ap.add_argument("--rows", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results_profile_store.json"))
    ap.add_argument("--old", default=None, help="also time profile_sums of this git revision (v1 reader, dense "
                                                "chunks) against this tree's on --cube")
    ap.add_argument("--cube", default=str(ROOT / "data" / "cube.zarr"))
    ap.add_argument("--only-gather", action="store_true", help="with --old: skip the layout measurements")
    args = ap.parse_args(argv)
    if args.old and args.only_gather:
        g = gather_old_new(args.old, args.cube)
        print(f"profile_sums: {g['old_ms_per_sample']:.2f} ms/sample ({args.old}) -> {g['new_ms_per_sample']:.2f} "
              f"ms/sample (this tree), {g['speedup']:.1f}x")
        return g
    with tempfile.TemporaryDirectory() as tmp:
        demo = [measure(Path(args.demo), r, Path(tmp)) for r in args.rows]
    report = {"demo": demo}
    d0 = demo[0]
    print(f"demo cube: {d0['table_rows']} table rows; dense count+sum {d0['dense_bytes_stored'] / 1e6:.2f} MB stored in "
          f"{d0['dense_objects']} objects (n_obs {d0['n_obs_bytes_stored'] / 1e6:.2f} MB); "
          f"dense decoded per sample {d0['dense_decoded_per_sample'] / 1e6:.2f} MB (cold {d0['dense_decoded_per_cold_sample'] / 1e6:.2f} MB)")
    print(f"{'rows/chunk':>10s} {'table MB':>9s} {'objects':>8s} {'kB/sample':>10s} {'kB/cold sample':>15s} {'chunks/cold sample':>19s}")
    for d in demo:
        print(f"{d['profile_rows']:10d} {d['table_bytes_stored'] / 1e6:9.3f} {d['table_objects']:8d} "
              f"{d['table_decoded_per_sample'] / 1e3:10.1f} {d['table_decoded_per_cold_sample'] / 1e3:15.1f} "
              f"{d['table_chunks_per_cold_sample']:19.2f}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
