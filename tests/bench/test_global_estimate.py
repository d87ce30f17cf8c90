"""bench.global_estimate: its arithmetic against a hand count on a tiny cube, the demo measurement
against a cell-by-cell count with plain zarr, the profile_rows recommendation, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from bench.global_estimate import (CubeSpec, StoredBytes, epoch_bytes, nearest_snapshot, poisson_rows,
                                   real_ocean_mask, stored, table_index)

REPO = Path(__file__).resolve().parents[2]

# 8 x 8 cells in 2 x 2 tiles of 4 (tile = chunk), 16 days in 2 chunks of 8, 3-day windows, blocks of 4,
# observations every 7 days -> snapshots on days 0, 7, 14.
TINY = CubeSpec(n_lat=8, n_lon=8, start="2010-01-01", end="2010-01-16", tile=4, chunk_days=8, window_days=3,
                block_size=4, glorys_step_days=7, shard_tiles=2, profile_rows=(4,))
TRAIN_TILES = (np.array([0, 1]), np.array([0, 1]))      # tiles (0, 0) and (1, 1); (0, 1), (1, 0) are val


def known_rows() -> np.ndarray:
    """Rows per (day, lat chunk, lon chunk): tile (0,0) 1 on day 0 and 2 on day 9, tile (1,1) 5 on
    day 3, val tile (0,1) 3 on day 4. Table order (time chunk, lat c, lon c): tc0 (0,0) [0,1),
    (0,1) [1,4), (1,1) [4,9); tc1 (0,0) [9,11). In obs chunks of 4 rows: 0 = [0,4), 1 = [4,8), 2 = [8,11)."""
    rows = np.zeros((16, 2, 2), np.int64)
    rows[0, 0, 0], rows[9, 0, 0], rows[3, 1, 1], rows[4, 0, 1] = 1, 2, 5, 3
    return rows


def test_table_index_is_the_sorted_row_ranges():
    start, stop = table_index(known_rows().reshape(2, 8, 2, 2).sum(axis=1))
    assert start[0].tolist() == [[0, 1], [4, 4]] and stop[0].tolist() == [[1, 4], [4, 9]]
    assert start[1, 0, 0] == 9 and stop[1, 0, 0] == 11 and stop[1, 1, 1] == 11


def test_nearest_snapshot_by_hand():
    # days 0-3 nearest day 0, 4-10 day 7, 11-15 day 14 (3.5 and 10.5 are the midpoints)
    assert nearest_snapshot(np.arange(16), 7, 3).tolist() == [0] * 4 + [1] * 7 + [2] * 5
    assert nearest_snapshot(np.array([4, 5]), 8, 3).tolist() == [0, 1]   # a tie (day 4 of 0 and 8) -> earlier


def test_epoch_bytes_match_a_hand_count():
    e = epoch_bytes(*TRAIN_TILES, known_rows(), TINY)
    assert (e["windows"], e["blocks"]) == (28, 7)          # 2 tiles x centres 1..14; blocks of 4
    plane, profile, snapshot, row = 8 * 16 * 4, 8 * 16 * 50 * 8, 50 * 16 * 4, 412
    index = 2 * 8 * 8   # obs_start + obs_stop, int64 per (2 time chunks x 2 x 2 tiles), decoded once
    u, c = e["uncached"], e["cached"]
    # Uncached: each tile reads tc0 for centres 1..8 and tc1 for 7..14: 16 chunk reads a tile.
    assert u["n_obs"] == u["ostia"] == 32 * plane
    assert u["count_sum_listed"] == 32 * profile
    # With an observation in the days read: tile (0,0) tc0 c=1 (day 0), tc1 c=8,9,10 (day 9);
    # tile (1,1) tc0 c=2,3,4 (day 3).
    assert u["count_sum_read"] == 7 * profile
    # Table: tile (0,0) c1-6 chunk 0 (4 rows), c7-8 chunks 0+2 (7), c9-14 chunk 2 (3);
    # tile (1,1) c1-8 chunks 1+2 (7), c9-14 nothing: 24 + 14 + 18 + 56 = 112 rows.
    assert u["table"]["4"] == 112 * row + index
    # GLORYS snapshots per window, summed over centres 1..14: 1,1,2,2,1,1,1,1,1,2,2,1,1,1 = 18 a tile.
    assert u["glorys"] == 36 * snapshot
    # Cached: blocks B0 (0,0) c1-4 | B1 c5-8 | B2 c9-12 | B3 (0,0) c13-14 + (1,1) c1-2 | B4 c3-6 | B5 c7-10 | B6 c11-14
    # -> (block, tile, tc): B0 tc0; B1 tc0, tc1; B2 tc1; B3 tc1, (1,1) tc0; B4 tc0; B5 tc0, tc1; B6 tc1 = 10.
    assert c["n_obs"] == c["ostia"] == 10 * plane and c["count_sum_listed"] == 10 * profile
    # observed among the days read: B0 tc0 (day 0), B1 tc1 (day 9), B2 tc1, B3 (1,1) tc0 (day 3), B4 tc0
    assert c["count_sum_read"] == 5 * profile
    # obs chunks per block: {0}, {0,2}, {2}, {2} + {1,2}, {1,2}, {1,2}, {} -> 4+7+3+7+7+7 rows
    assert c["table"]["4"] == 35 * row + index
    # snapshot ranges per (block, tile): 2, 1, 2, 1 + 1, 2, 2, 2
    assert c["glorys"] == 13 * snapshot


def test_stored_sizes_and_objects_by_hand():
    sb = StoredBytes(source="hand", ostia_per_ocean_value=2.0, glorys_per_ocean_column=100.0,
                     profile_empty_chunk={"n_obs": 10, "count": 20, "sum": 30},
                     profile_per_row={"n_obs": 1.0, "count": 2.0, "sum": 3.0}, table_per_row={"4": 50.0},
                     levels_per_row=30.0, rows_per_profile=1.0)
    st = stored(TINY, np.full((2, 2), 16), known_rows(), sb)
    # written (time chunk, tile): tc0 (0,0), (0,1), (1,1); tc1 (0,0) -> 4; 11 rows
    assert st["rows"] == 11 and st["dense_chunks_written"] == 4
    assert st["bytes"]["profiles_dense"] == pytest.approx(4 * (10 + 20 + 30) + 11 * (1 + 2 + 3))
    assert st["bytes"]["ostia"] == pytest.approx(64 * 16 * 2.0)
    assert st["bytes"]["glorys"] == pytest.approx(64 * 3 * 100.0)
    assert st["bytes"]["table_4"] == pytest.approx(11 * 50.0 + 2 * 8 * 8)   # rows + obs_start/obs_stop int64
    assert st["objects"] == {"ostia": 8, "glorys": 12, "profiles_dense": 12, "table_4": 5 * 3 + 2}
    # one 2 x 2 shard per time step; table shards of 4 obs chunks = 16 rows
    assert st["objects_sharded"] == {"ostia": 2, "glorys": 3, "profiles_dense": 6, "table_4": 5 + 2}


@pytest.mark.parametrize("cluster", [1.0, 0.5])
def test_poisson_rows_keep_the_daily_total_and_follow_the_ocean(cluster):
    spec = CubeSpec(n_lat=40, n_lon=40, tile=10, start="2010-01-01", end="2010-12-31", cluster_fraction=cluster)
    ocean = np.tile(np.array([0, 25, 50, 100]), (4, 1))          # ocean cells per chunk, one land column
    rows = poisson_rows(spec, ocean, rows_per_day=1000.0)
    total = rows.sum()
    assert abs(total - 365_000) < 5 * np.sqrt(365_000)           # Poisson: 5 sigma
    per_chunk = rows.sum(axis=0)
    assert (per_chunk[:, 0] == 0).all()                           # no profile on land
    used = per_chunk > 0
    if cluster == 1.0:
        assert used[:, 1:].all()
        expected = 365_000 * ocean / ocean.sum()
        assert np.all(np.abs(per_chunk - expected) < 5 * np.sqrt(expected) + 1)
    else:
        assert 0 < used.sum() < 12                                # only a share of the ocean chunks


def test_real_ocean_mask_puts_land_and_sea_where_they_are(real_data):
    mask = real_ocean_mask(CubeSpec(), real_data)
    assert mask.shape == (1800, 3600) and 0.6 < mask.mean() < 0.75
    cell = lambda lat, lon: mask[int((lat + 90) * 10), int((lon + 180) * 10)]  # noqa: E731
    assert cell(0.5, -25.0) and cell(-40.0, -120.0) and cell(45.0, -30.0)   # Atlantic, South Pacific
    assert not cell(23.0, 10.0) and not cell(60.0, 100.0)                  # Sahara, Siberia


def brute_force_reads(cube: str, w) -> dict[tuple, int]:
    """Decoded bytes of every chunk window ``w`` reads of the profiles, found cell by cell with
    plain zarr: v1, every ``n_obs`` chunk of a window cell and the ``count``/``sum`` chunks of an
    observed cell; v2, the ``obs_day/row/col`` chunks of the index ranges of every block holding a
    window cell and the ``obs_count``/``obs_sum`` chunks of the rows in the window."""
    root = zarr.open_group(cube, mode="r")
    n_obs, count = root["profiles/n_obs"], root["profiles/count"]
    (nt, levels, ny, nx), (ct, _, cy, cx) = count.shape, count.chunks
    start, stop = root["profiles/obs_start"], root["profiles/obs_stop"]
    bd, bc = start.attrs["block_days"], start.attrs["block_cells"]
    day, row, col = (root[f"profiles/obs_{f}"][:] for f in ("day", "row", "col"))
    rows_per_chunk = root["profiles/obs_count"].chunks[0]
    cols = np.arange(w.cols.start, w.cols.stop) if isinstance(w.cols, slice) else np.asarray(w.cols)
    d, y, x = (a.ravel() for a in np.meshgrid(np.arange(w.time.start, w.time.stop),
                                                np.arange(w.rows.start, w.rows.stop), cols, indexing="ij"))
    cells = lambda t, i, j: min(ct, nt - t * ct) * min(cy, ny - i * cy) * min(cx, nx - j * cx)  # noqa: E731
    out = {("profiles/n_obs", k): 4 * cells(*k) for k in set(zip(d // ct, y // cy, x // cx))}
    seen = n_obs[:][d, y, x] > 0
    for k in set(zip(d[seen] // ct, y[seen] // cy, x[seen] // cx)):
        out[("profiles/count", k)] = out[("profiles/sum", k)] = 4 * levels * cells(*k)
    obs_rows = lambda k: min(rows_per_chunk, day.size - k * rows_per_chunk)  # noqa: E731
    for block in set(zip(d // bd, y // bc, x // bc)):
        for k in set(np.arange(start[block], stop[block]) // rows_per_chunk):
            out.update({(f"profiles/obs_{f}", k): 4 * obs_rows(k) for f in ("day", "row", "col")})
    in_window = np.isin(day, np.unique(d)) & np.isin(row, np.unique(y)) & np.isin(col, cols)
    for k in set(np.flatnonzero(in_window) // rows_per_chunk):
        out[("profiles/obs_count", k)] = out[("profiles/obs_sum", k)] = 4 * levels * obs_rows(k)
    return out


def test_demo_per_sample_equals_a_cell_by_cell_count(small_table_cube):
    from bench.global_estimate import demo_per_sample
    from loaders import CubeStream, load_dataset_config

    d = demo_per_sample(small_table_cube)
    cfg = load_dataset_config(REPO / "configs" / "dataset.yaml", "argo_real")
    windows = CubeStream(small_table_cube, cfg, split="train").windows
    reads = [brute_force_reads(small_table_cube, windows[i]) for i in range(len(windows))]
    assert d["windows"] == len(windows) >= cfg.block_size and d["profile_rows"] == 8
    blocks: dict[int, dict] = {}
    for i, r in enumerate(reads):
        blocks.setdefault(i // cfg.block_size, {}).update(r)
    for name, groups in (("uncached", reads), ("cached", list(blocks.values()))):
        want: dict[str, float] = {}
        for group in groups:
            for (path, _), size in group.items():
                want[path] = want.get(path, 0) + size / len(windows)
        got = {p: v for p, v in d["per_sample"][name].items() if p.startswith("profiles/")}
        assert got == pytest.approx(want), name
    assert d["per_sample"]["cached"]["profiles/n_obs"] < d["per_sample"]["uncached"]["profiles/n_obs"]
    # some table chunks of a window's index ranges hold none of its rows, and those are not decoded
    assert d["per_sample"]["uncached"]["profiles/obs_count"] < d["per_sample"]["uncached"]["profiles/obs_day"] * 50
    assert d["observed_rows"] == 125 and d["rows_per_tile_time_chunk"]["max"] <= 125


def test_recommendation_is_the_fewest_objects_within_the_target():
    from bench.global_estimate import recommend_rows

    def report(shares):
        rows = list(shares)
        return {"global": {"spec": {"profile_rows": rows}, "ratios": {"cached": {str(r): s for r, s in shares.items()}},
                           "epoch": {"cached": {"table": {str(r): 1e9 * s for r, s in shares.items()}}},
                           "stored": {"objects": {f"table_{r}": 10_000_000 // r for r in rows}}}}

    assert recommend_rows(report({128: 0.0013, 256: 0.0023}))["profile_rows"] == 256   # both under 1 %
    assert recommend_rows(report({128: 0.006, 256: 0.012}))["profile_rows"] == 128     # 256 over the target
    assert recommend_rows(report({128: 0.02, 256: 0.03}))["profile_rows"] == 128       # none under: fewest bytes
    rec = recommend_rows(report({128: 0.0013, 256: 0.0023}))
    assert rec["objects"] == {"128": 78_125, "256": 39_062} and rec["default"] == 256


def test_module_json_runs(tiny_cube, real_data):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEPTHCUBE_REAL_DATA": str(real_data)}
    out = subprocess.run([sys.executable, "-m", "bench.global_estimate", "--cube", str(tiny_cube), "--json",
                          "--end", "2011-12-31"], capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    g = report["global"]
    assert g["spec"]["n_days"] == 730 and g["tiles_train"] > 0
    assert 0 < g["ratios"]["cached"]["128"] < 0.01
    assert report["recommendation"]["profile_rows"] == 256   # 128 and 256 both far under 1 %: fewer objects
    assert report["demo"]["windows"] > 0 and report["demo"]["profile_rows"] == 256
