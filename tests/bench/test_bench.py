"""The benchmark's peers do the same work as CubeStream (checked on the tiny demo and analytic cube),
and ``depthcube bench --quick`` writes a report with the documented schema (sanity, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _cubes import make_analytic_cube
from cube.constants import GLORYS_DEPTHS, Y_STD_K
from loaders.config import DatasetConfig, XConfig, load_dataset_config
from loaders.stream import CubeStream
from bench.peers import (RawWindow, ReferenceRawDataset, align_profile, chunk_plan, demo_files,
                         python_loop_rasterise, xbatcher_dataset)
from bench.suite import LOADER_KEYS
from loaders.stream import box_chunks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def argo_stream(tiny_cube):
    return CubeStream(str(tiny_cube), load_dataset_config(REPO / "configs" / "dataset.yaml", "argo_real"), "all",
                      shuffle=False)


def test_peer1_reference_loader_reproduces_cube_samples(argo_stream, tiny_demo):
    """Peer 1 builds the sample from raw NetCDF; it must carry the same information as the cube's."""
    files = demo_files(tiny_demo)
    picks = [0, len(argo_stream) // 2]
    patches = argo_stream.reader.patches.set_index("patch")
    wins = []
    for i in picks:
        w = argo_stream.windows[i]
        p = patches.loc[w.patch]
        wins.append(RawWindow(p.lat0, p.lat1, p.lon0, p.lon1, w.centre, w.patch))
    peer = ReferenceRawDataset(files["ostia"], files["glorys"], files["en4"], wins, argo_stream.reader.tile,
                               argo_stream.config.window)
    for k, i in enumerate(picks):
        a, b = peer[k], argo_stream.sample(i)
        both = a["y_valid_mask"].numpy() & b["y_valid_mask"]
        assert both.sum() > 0.8 * b["y_valid_mask"].sum()
        # RGI at cell centres vs the cube's area-mean/linear regridding: a few millikelvin apart.
        dy = np.abs(a["y"].numpy() - b["y"])[both] * Y_STD_K
        assert np.median(dy) < 0.01 and dy.max() < 0.3
        assert np.array_equal(a["x_valid_mask"].numpy(), b["x_valid_mask"])   # same profiles, same cells
        assert np.allclose(a["x"].numpy(), b["x"], atol=1e-5)
        assert int(a["date"]) == int(b["date"]) and np.allclose(a["coords"].numpy(), b["coords"], atol=1e-4)


def test_peer2_xbatcher_transform_equals_the_stream(argo_stream):
    ds, index = xbatcher_dataset(argo_stream.reader.url, argo_stream.config.window, argo_stream.reader.tile)
    for i in (0, len(argo_stream) - 1):
        w = argo_stream.windows[i]
        got = ds[index[(w.time.start, w.rows.start, w.cols.start)]].numpy()
        s = argo_stream.sample(i)
        want = np.concatenate([s["eo"], s["x"], s["y"], s["x_valid_mask"], s["y_valid_mask"]]).astype(np.float32)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)


def test_align_profile_reference_rule_by_hand():
    levels = GLORYS_DEPTHS[:12].astype(np.float64)                         # 0.49 .. 15.8 m
    depth = np.array([4.0, 8.0, 8.0, 20.0, np.nan])
    temp = np.array([10.0, 9.0, 8.0, 5.0, 1.0])                           # duplicates at 8 m average to 8.5
    out = align_profile(depth, temp, levels)
    assert np.isnan(out[:4]).all()                                        # above the first sample: no extrapolation
    z = levels[4]                                                         # 5.078 m, between 4 and 8 m
    assert out[4] == pytest.approx(10.0 + (z - 4.0) * (8.5 - 10.0) / 4.0, abs=1e-5)
    z = levels[10]                                                        # 13.47 m, between 8 and 20 m
    assert out[10] == pytest.approx(8.5 + (z - 8.0) * (5.0 - 8.5) / 12.0, abs=1e-5)


def test_python_loop_rasterise_by_hand():
    temp = np.full((3, 3), np.nan)
    depth = np.array([[GLORYS_DEPTHS[4], GLORYS_DEPTHS[5], np.nan]] * 3, dtype=np.float64)  # on levels 4 and 5
    temp[:, :2] = [[10.0, 9.0], [12.0, 11.0], [1.0, 1.0]]
    cells = python_loop_rasterise(np.array([0, 0, 5]), np.array([40.05, 40.09, 40.0]), np.array([-19.95, -19.91, 0.0]),
                                  depth, temp, GLORYS_DEPTHS.astype(np.float64), 40.0, -20.0, 0.1, 10, 10, 3)
    # Profiles 0 and 1 share cell (0, 0) on day 0; profile 2 is outside the days (5 >= 3).
    assert cells == {(0, 4, 0, 0): (2, 22.0), (0, 5, 0, 0): (2, 20.0)}


def test_window_chunks_are_the_chunks_the_stream_reads(tmp_path):
    cube = make_analytic_cube(tmp_path / "cube.zarr")                     # chunks: 4 days, tile 16, 1 snapshot
    stream = CubeStream(cube, DatasetConfig(window_days=3, x=XConfig(source="argo")), "all", shuffle=False)
    i = next(k for k in range(len(stream)) if stream.windows[k].time.start == 2 and stream.windows[k].rows.start == 16
             and stream.windows[k].cols.start == 16)
    listed = stream.window_chunks(i)
    # Days 2..4 span day chunks 0 and 1; tile (16, 16) is spatial chunk (1, 1); days 2-4 are nearest to
    # snapshot 0 (Jan 25) or 1 (Jan 30): Jan 27 -> 0 (2.5 d tie goes earlier), Jan 28, 29 -> 1.
    assert sorted(k for k in listed if k[0] == "ostia/analysed_sst") == [("ostia/analysed_sst", (d, 1, 1)) for d in (0, 1)]
    assert sorted(k for k in listed if k[0] == "glorys/thetao") == [("glorys/thetao", (s, 0, 1, 1)) for s in (0, 1)]
    # The analytic profiles are 4 table rows (days 3, 4, 5 at cell (20, 30), day 9 at (25, 40)), all in
    # obs chunk 0: the window's blocks (0, 1, 1) and (1, 1, 1) hold rows 0..2, so chunk 0 of each column.
    table = [("profiles/obs_day", (0,)), ("profiles/obs_row", (0,)), ("profiles/obs_col", (0,)),
             ("profiles/obs_count", (0, 0)), ("profiles/obs_sum", (0, 0))]
    assert [k for k in listed if k[0].startswith("profiles/")] == table
    assert len(listed) == 9 and len(set(listed)) == 9
    assert not any(k[0].startswith("profiles/") for k in stream.window_chunks(
        next(k for k in range(len(stream)) if stream.windows[k].rows.start == 0)))  # a tile without profiles
    # The listing is what read_window decodes: reading the window cold decodes exactly those chunks
    # (days 3 and 4 are in the window, so the count/sum chunk holds some of its rows), and re-reading
    # any listed chunk after the window is a cache hit.
    before = stream.reader.chunks_decoded
    stream.read_window(stream.windows[i])
    assert stream.reader.chunks_decoded - before == len(listed)
    assert chunk_plan(stream, [i, i]) == listed                            # the plan lists each chunk once
    shape, chunks = (10, 50, 32, 48), (4, 50, 16, 16)
    wrap = box_chunks(shape[:1] + shape[2:], chunks[:1] + chunks[2:], slice(0, 1), slice(0, 16), np.r_[40:48, 0:8])
    assert sorted(wrap) == [(0, 0, 0), (0, 0, 2)]
    assert box_chunks(shape, chunks, slice(3, 5), slice(16, 32), slice(0, 16)) == [(0, 0, 1, 0), (1, 0, 1, 0)]


def test_bench_quick_writes_the_report(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "depthcube", "bench", "--quick", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=540)  # the whole quick bench; minutes on a shared 2-core box
    assert run.returncode == 0, run.stderr[-3000:]
    assert "samples/s" in run.stdout and "ratios" in run.stdout
    r = json.loads(out.read_text())
    assert r["schema"] == "depthcube-bench/1" and r["quick"] is True and r["windows"] > 0
    names = ("depthcube", "peer1_reference", "peer2_xbatcher", "peer2_xbatcher_nodask")
    expected = {f"{name}_w{w}" for name in names for w in (0, 2)} | {"limit", "write_floor", "depthcube_collate_w0",
                                                                              "depthcube_first_w0"}
    assert set(r["loaders"]) == expected
    for name, entry in r["loaders"].items():
        assert set(LOADER_KEYS) <= set(entry), name
        assert 0 < entry["samples"] <= r["windows"], name
        assert entry["samples_per_s"] > 0 and entry["mb_per_s"] > 0 and entry["rss_peak_mb"] > 0, name
        floor = name in ("limit", "write_floor")
        assert entry["time_to_first_batch_s"] is None if floor else entry["time_to_first_batch_s"] > 0
    assert r["loaders"]["depthcube_w0"]["samples"] == r["windows"]     # depthcube always covers every window
    for key in ("depthcube_vs_peer1_w0", "depthcube_vs_peer2_w2", "depthcube_w0_vs_limit",
                "depthcube_w0_vs_decode_and_write"):
        assert r["ratios"][key] > 0
    assert set(r["targets"]) == {"depthcube_vs_peer1", "depthcube_vs_peer2", "depthcube_vs_limit"}
    # the limit target is decode + write added (the two floors), not decode alone
    assert r["targets"]["depthcube_vs_limit"]["measured"] == r["ratios"]["depthcube_w0_vs_decode_and_write"]
    assert "batched" not in r["loaders"]["depthcube_collate_w0"]["what"]  # the per-sample stream, default collate
    assert r["threads"]["torch_threads"] == 1
    b = r["build"]
    assert b["input_mb"] > 0 and b["depthcube"]["mb_per_s"] > 0 and b["plain_open_mfdataset_to_zarr"]["mb_per_s"] > 0
    assert r["rasterise"]["agree"] is True and r["rasterise"]["depthcube_profiles_per_s"] > 0
    assert r["tracks"]["masks"] >= 3 and r["tracks"]["masks_per_s"] > 0
    _check_remote(r["remote"], r["settings"])


def _check_remote(remote: dict, settings: dict):
    """The latency bench's entries: every order, local and remote, CubeStream at each worker count
    (twice with prefetch when CubeStream takes it), raw reads and insitubatch; remote entries carry
    what the server counted, and a ratio to their local twin."""
    assert remote["latency_ms"] == 20 and set(remote["orders"]) == {"sorted", "random"}
    variants = ("", "_prefetch") if remote["prefetch_supported"] else ("",)
    bases = {f"cubestream_w{w}{v}" for w in settings["workers"] for v in variants} | {"raw_reads", "insitubatch"}
    for order, o in remote["orders"].items():
        preset = load_dataset_config(REPO / "configs" / "dataset.yaml", settings["preset"])
        assert o["block_size"] == (1 if order == "random" else preset.block_size)
        assert set(o["loaders"]) == {f"{where}_{b}" for where in ("local", "remote") for b in bases}, order
        for name, entry in o["loaders"].items():
            assert "error" not in entry, (order, name, entry.get("error"))
            assert set(LOADER_KEYS) <= set(entry), name
            assert 0 < entry["samples"] and entry["samples_per_s"] > 0, name
            if name.startswith("remote_"):
                assert entry["requests_per_sample"] > 0 and entry["bytes_per_sample"] > 0, name
                assert entry["requests"] == round(entry["requests_per_sample"] * entry["samples"]), name
        assert set(o["ratios"]) == {f"{b}_remote_vs_local" for b in bases}
        assert all(v > 0 for v in o["ratios"].values())


def test_remote_variants_follow_the_cubestream_signature(monkeypatch):
    """Prefetch columns appear exactly when CubeStream takes ``prefetch_bytes`` (off = 0, on = its default)."""
    import bench.remote as remote

    class Prefetching(CubeStream):
        def __init__(self, cube, config=None, split="train", *, prefetch_bytes: int = 2**28, **kwargs):
            super().__init__(cube, config, split, **kwargs)

    class Plain(CubeStream):
        def __init__(self, cube, config=None, split="train", **kwargs):
            super().__init__(cube, config, split, **kwargs)

    monkeypatch.setattr(remote, "CubeStream", Plain)
    assert not remote.prefetch_supported() and remote.stream_variants() == {"": {}}
    monkeypatch.setattr(remote, "CubeStream", Prefetching)
    assert remote.prefetch_supported()
    assert remote.stream_variants() == {"": {"prefetch_bytes": 0}, "_prefetch": {}}


def test_remote_ratios_pair_each_remote_entry_with_its_local_twin():
    from bench.remote import remote_ratios

    entries = {"local_raw_reads": {"samples_per_s": 40.0}, "remote_raw_reads": {"samples_per_s": 10.0},
               "remote_insitubatch": {"samples_per_s": 5.0}, "local_cubestream_w0": {"samples_per_s": 8.0}}
    assert remote_ratios(entries) == {"raw_reads_remote_vs_local": 0.25}
