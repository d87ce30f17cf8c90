"""The profile store by numbers (issue 13 item 1): the dense ``profiles/count``/``sum`` against the
observation table ``profiles/obs_*``, measured on the demo cube for several ``chunks.profile_rows``,
and the same arithmetic for a global cube.

Measured (a cube built from the demo inputs for each ``profile_rows``, argo_real windows in the
stream's order, every chunk decoded once as the stream's cache decodes it):

- stored bytes and objects of ``count`` + ``sum`` (+ ``n_obs``, which the v1 loaders also read)
  against the table (its five columns and its index);
- decoded bytes per sample: the dense chunks the v1 loaders decoded (``n_obs`` over the window,
  ``count``/``sum`` chunks holding an observation of it) against the table chunks the v2 stream
  decodes (:func:`bench.peers.needed_chunks`, table chunks only), each chunk once over the whole
  order (an unbounded cache) and per window read cold (the worst case a small cache tends to).

Global estimate (arithmetic, parameters printed; the rows figure is issue 13's): objects of the
table per ``profile_rows``, and decoded bytes per epoch when each (tile, time chunk) block is
decoded once, for both layouts. Run (after ``make demo``):

    .venv/bin/python -m bench.profile_store [--demo data/demo] [--rows 64 128 256 512 1024] [--out bench/results_profile_store.json]

``--old REV --only-gather`` (after ``make cube``) times ``CubeReader.profile_sums`` alone, the
code of REV on a cube REV builds from the same inputs against this tree on ``--cube``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLE = ("profiles/obs_day", "profiles/obs_row", "profiles/obs_col", "profiles/obs_count", "profiles/obs_sum")
DENSE = ("profiles/count", "profiles/sum")
LEVELS = 50
ROW_BYTES = 3 * 4 + 2 * LEVELS * 4       # day, row, col int32 + 50 int32 counts + 50 float32 sums


def stored(cube: Path, paths) -> tuple[int, int]:
    """(bytes, objects) of the chunks of ``paths`` (their metadata documents left out)."""
    files = [p for path in paths for p in (cube / path).rglob("*") if p.is_file() and p.name != "zarr.json"]
    return sum(p.stat().st_size for p in files), len(files)


def chunk_bytes(arr, cidx) -> int:
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
    from bench.peers import needed_chunks

    return {(p, k) for p, k in needed_chunks(stream, int(index)) if p in TABLE}


def decoded_per_sample(stream, order, chunks_of) -> tuple[float, float]:
    """Mean decoded bytes per sample (each chunk once over the whole order, as an unbounded cache
    decodes it) and mean per window read cold (no chunk shared with another window)."""
    per_window = [chunks_of(stream, i) for i in order]
    size = lambda keys: sum(chunk_bytes(stream.reader.array(p), k) for p, k in keys)  # noqa: E731
    return size(set().union(*per_window)) / len(order), sum(map(size, per_window)) / len(order)


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
    stream = CubeStream(str(cube), load_dataset_config(ROOT / "configs" / "dataset.yaml", "argo_real"), split="all")
    order = stream.shard_indices(0)
    reader = stream.reader
    n = len(order)
    dense_epoch, dense_cold = decoded_per_sample(stream, order, dense_chunks)
    table_epoch, table_cold = decoded_per_sample(stream, order, table_chunks)
    return {
        "profile_rows": rows, "samples": n, "table_rows": int(reader.array("profiles/obs_day").shape[0]),
        "dense_bytes_stored": stored(cube, DENSE)[0], "dense_objects": stored(cube, DENSE)[1],
        "n_obs_bytes_stored": stored(cube, ("profiles/n_obs",))[0],
        "table_bytes_stored": stored(cube, TABLE + ("profiles/obs_start", "profiles/obs_stop"))[0],
        "table_objects": stored(cube, TABLE + ("profiles/obs_start", "profiles/obs_stop"))[1],
        "dense_decoded_per_sample": dense_epoch, "dense_decoded_per_cold_sample": dense_cold,
        "table_decoded_per_sample": table_epoch, "table_decoded_per_cold_sample": table_cold,
        "table_chunks_per_cold_sample": sum(len(table_chunks(stream, i)) for i in order) / n,
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


def global_estimate(rows_choices, n_rows: float = 7e6, nlat: int = 1800, nlon: int = 3600, days: int = 5479,
                    tile: int = 128, days_per_chunk: int = 8, ocean_fraction: float = 0.7) -> dict:
    """Objects and decoded bytes per epoch of both layouts for a global cube (each (tile, time
    chunk) block of the ocean decoded once per epoch; a block's rows read as one range)."""
    blocks = math.ceil(days / days_per_chunk) * math.ceil(nlat / tile) * math.ceil(nlon / tile)
    ocean_blocks = blocks * ocean_fraction
    rows_per_block = n_rows / ocean_blocks
    dense_block = days_per_chunk * LEVELS * tile * tile * 4
    dense_epoch = ocean_blocks * (2 * dense_block + dense_block / LEVELS)   # count + sum + n_obs
    out = {"params": {"rows": n_rows, "nlat": nlat, "nlon": nlon, "days": days, "tile": tile,
                      "days_per_chunk": days_per_chunk, "ocean_fraction": ocean_fraction},
           "blocks": blocks, "rows_per_ocean_block": rows_per_block, "dense_decoded_per_epoch": dense_epoch,
           "table_raw_bytes": n_rows * ROW_BYTES, "by_rows": []}
    for r in rows_choices:
        chunks_per_range = 1 + (rows_per_block - 1) / r          # a range of n rows starts anywhere in a chunk
        epoch = ocean_blocks * chunks_per_range * r * ROW_BYTES
        out["by_rows"].append({"profile_rows": r, "objects": 5 * math.ceil(n_rows / r) + 2,
                               "decoded_per_epoch": epoch, "of_dense": epoch / dense_epoch})
    return out


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
    report = {"demo": demo, "global": global_estimate(args.rows)}
    d0 = demo[0]
    print(f"demo cube: {d0['table_rows']} table rows; dense count+sum {d0['dense_bytes_stored'] / 1e6:.2f} MB stored in "
          f"{d0['dense_objects']} objects (n_obs {d0['n_obs_bytes_stored'] / 1e6:.2f} MB); "
          f"dense decoded per sample {d0['dense_decoded_per_sample'] / 1e6:.2f} MB (cold {d0['dense_decoded_per_cold_sample'] / 1e6:.2f} MB)")
    print(f"{'rows/chunk':>10s} {'table MB':>9s} {'objects':>8s} {'kB/sample':>10s} {'kB/cold sample':>15s} {'chunks/cold sample':>19s}")
    for d in demo:
        print(f"{d['profile_rows']:10d} {d['table_bytes_stored'] / 1e6:9.3f} {d['table_objects']:8d} "
              f"{d['table_decoded_per_sample'] / 1e3:10.1f} {d['table_decoded_per_cold_sample'] / 1e3:15.1f} "
              f"{d['table_chunks_per_cold_sample']:19.2f}")
    g = report["global"]
    print(f"global ({g['params']}): {g['blocks']} blocks, {g['rows_per_ocean_block']:.1f} rows per ocean block, "
          f"dense decoded per epoch {g['dense_decoded_per_epoch'] / 1e12:.1f} TB, table raw {g['table_raw_bytes'] / 1e9:.2f} GB")
    print(f"{'rows/chunk':>10s} {'objects':>8s} {'decoded GB/epoch':>17s} {'of dense':>9s}")
    for r in g["by_rows"]:
        print(f"{r['profile_rows']:10d} {r['objects']:8d} {r['decoded_per_epoch'] / 1e9:17.1f} {r['of_dense']:9.2%}")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
