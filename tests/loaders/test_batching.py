"""Batches assembled in place (``CubeStream.batched``, ``StreamLoader``) against torch's own batching:
``DataLoader(stream, batch_size=B)`` with the default collate over the per-sample stream is the
expectation, key by key, dtype by dtype, to the bit; and memory of a batch is never written while
anything still refers to it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from loaders import CubeStream, StreamLoader, load_dataset_config
from loaders import batching
from loaders.batching import BatchBuilder, BatchMemory, process_memory
from loaders.sample import WindowData, _dense_target, _target_zscored, _zscore, finite_over_water, water_column

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = ("eo_4band_tracks", "ostia_tracks", "argo_real", "argo_synthetic_500")


def assert_batches_equal(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for k in e:
            if k == "info":
                assert g[k].keys() == e[k].keys()
                for f in e[k]:
                    if isinstance(e[k][f], torch.Tensor):
                        assert g[k][f].dtype == e[k][f].dtype and torch.equal(g[k][f], e[k][f]), f
                    else:
                        assert g[k][f] == e[k][f], f
            else:
                assert g[k].dtype == e[k].dtype and g[k].shape == e[k].shape, k
                assert torch.equal(g[k], e[k]), k


def clone(batch: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@pytest.mark.parametrize("preset", PRESETS + ("argo_real+augment+eo_dropout",))
def test_batched_stream_gives_the_default_collate_batches(tiny_cube, preset):
    cfg = load_dataset_config(CONFIGS, preset.split("+")[0])
    if "augment" in preset:  # fields the assembly returns as new arrays, copied into the slots
        cfg = replace(cfg, augment=True, eo=replace(cfg.eo, dropout_p=0.5))
    expected = list(DataLoader(CubeStream(str(tiny_cube), cfg, split="train"), batch_size=7))
    stream = CubeStream(str(tiny_cube), cfg, split="train")
    got = [clone(b) for b in DataLoader(stream.batched(7), batch_size=None)]
    assert_batches_equal(got, expected)
    assert len(stream) % 7 and got[-1]["y"].shape[0] == len(stream) % 7  # the short last batch


def test_two_workers_and_drop_last_match_the_dataloader(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    kw = dict(num_workers=2, multiprocessing_context="fork", timeout=120)
    expected = list(DataLoader(CubeStream(str(tiny_cube), cfg, split="all"), batch_size=6, drop_last=True, **kw))
    got = list(StreamLoader(CubeStream(str(tiny_cube), cfg, split="all"), batch_size=6, drop_last=True, **kw))
    assert_batches_equal(got, expected)


def test_a_held_batch_is_never_overwritten_by_the_next_ones(tiny_cube):
    """The training loop may keep a batch (a list of losses' inputs, a view of it): memory is
    used again only once nothing refers to it."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    stream = CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    held, views, copies = [], [], []
    for i, batch in enumerate(DataLoader(stream.batched(3), batch_size=None)):
        if i % 2 == 0:
            held.append(batch)             # the whole batch kept
        else:
            views.append(batch["y"][1:])   # only a view of one tensor kept
        copies.append(clone(batch))
    assert len(copies) > 4
    for i, c in enumerate(copies):
        if i % 2 == 0:
            assert torch.equal(held[i // 2]["y"], c["y"]) and torch.equal(held[i // 2]["x"], c["x"])
        else:
            assert torch.equal(views[i // 2], c["y"][1:])


def test_later_epochs_short_batches_and_new_streams_reuse_the_first_pages(tiny_cube, monkeypatch):
    """Steady training touches no fresh memory: after the first epoch, every batch (the short
    last one included: the first rows of a whole batch's memory) and every batch of a second
    stream of the same shape in this process lies in memory the first epoch allocated."""
    monkeypatch.setattr(batching, "_process_memory", None)  # this test's process memory starts empty
    cfg = load_dataset_config(CONFIGS, "argo_real")
    stream = CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    size = next(b for b in (5, 4, 3, 7) if len(stream) % b and len(stream) > 2 * b)  # ends on a short batch

    def pointers(s):
        return [(len(b["y"]), b["y"].data_ptr(), b["x"].data_ptr()) for b in DataLoader(s.batched(size), batch_size=None)]

    first = pointers(stream)
    assert first[-1][0] < size
    whole = {p[1:] for p in first if p[0] == size}
    assert len(whole) <= 2  # the loop holds one batch while the next is built: two sets at most
    assert all(p[1:] in whole for p in first)  # the short batch too
    allocated = process_memory().allocations
    assert {p[1:] for p in pointers(stream)} <= whole
    assert {p[1:] for p in pointers(CubeStream(str(tiny_cube), cfg, split="all", shuffle=False))} <= whole
    assert process_memory().allocations == allocated

    # a loop that fetches the next batch before it is done with the current one (Lightning's
    # fetcher, for a loader without a length): three sets in use at once, and still no new
    # allocation after the first epoch
    def one_ahead(s):
        held = None
        for b in DataLoader(s.batched(size), batch_size=None):
            held = (held[1], b) if held else (None, b)
        del held
        return process_memory().allocations

    after_first = one_ahead(stream)
    assert one_ahead(stream) == one_ahead(stream) == after_first
    process_memory().clear()
    assert one_ahead(stream) > after_first  # cleared: allocated again


def test_large_batch_memory_lies_on_small_pages_unless_asked(monkeypatch):
    """Batch arrays of 4 MB and more are anonymous memory advised against huge pages (the first
    touch of a fresh 2 MB page is slow on the project's VMs); ``huge_pages=True`` or
    ``DEPTHCUBE_BATCH_HUGE_PAGES=1`` gives numpy's own allocation. Either way they are plain
    writable arrays that torch shares without a copy."""
    import mmap

    def owner(a):
        while isinstance(a, np.ndarray) and a.base is not None:
            a = a.base
        return a.obj if isinstance(a, memoryview) else a

    shape = (4, 50, 64, 128)  # 6.6 MB of float32
    assert isinstance(owner(batching._batch_array(shape, np.float32, huge_pages=False)), mmap.mmap)
    assert isinstance(owner(batching._batch_array(shape, np.float32, huge_pages=True)), np.ndarray)
    assert isinstance(owner(batching._batch_array((4, 8, 8), bool, huge_pages=False)), np.ndarray)  # small
    assert BatchMemory().huge_pages is False
    monkeypatch.setenv("DEPTHCUBE_BATCH_HUGE_PAGES", "1")
    assert BatchMemory().huge_pages is True
    for huge in (False, True):
        t = BatchMemory(huge_pages=huge).tensors({"y": (shape, np.dtype(np.float32))})["y"]
        t.fill_(2.5)
        t[1, 3, 5, 7] = -1
        assert t.shape == shape and t.dtype == torch.float32
        assert float(t.double().sum()) == 2.5 * (t.numel() - 1) - 1


def test_batch_memory_reuses_arrays_only_once_released():
    memory = BatchMemory(keep=2)
    spec = {"y": ((4, 3), np.dtype(np.float32))}
    a = memory.tensors(spec)["y"]
    first = a.data_ptr()
    view = a[1:]
    del a
    b = memory.tensors(spec)["y"]
    second = b.data_ptr()
    assert second != first  # a view of the first batch is still alive
    del b
    c = memory.tensors(spec)["y"]
    assert c.data_ptr() == second  # released: used again
    del view
    d = memory.tensors(spec)["y"]
    assert d.data_ptr() == first  # c still alive, the first set released by now
    assert memory.tensors({"y": ((5, 3), np.dtype(np.float32))})["y"].data_ptr() not in (first, second)


def test_stateful_dataloader_resumes_a_batched_stream_exactly(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "ostia_tracks")

    def loader():
        return StatefulDataLoader(CubeStream(str(tiny_cube), cfg, split="train").batched(4), batch_size=None,
                                  num_workers=2, multiprocessing_context="fork", timeout=120)

    full = [clone(b) for b in loader()]
    first = loader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    assert_batches_equal([clone(b) for b in resumed], full[3:])


def test_a_skipped_window_leaves_no_hole_in_the_batch(tiny_cube, monkeypatch):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    cfg = type(cfg)(**{**cfg.__dict__, "on_error": "skip"})
    stream = CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    bad = {3, 4}
    real = stream.read_window

    def read_window(w, north_up=False):
        if w.row in bad:
            raise OSError("unreadable chunk")
        return real(w, north_up)

    monkeypatch.setattr(stream, "read_window", read_window)
    loader = StreamLoader(stream, batch_size=4)
    got = [clone(b) for b in loader]
    indices = [i for b in got for i in b["info"]["index"].tolist()]
    assert indices == [i for i in range(len(stream)) if i not in bad]
    assert [len(b["y"]) for b in got[:-1]] == [4] * (len(got) - 1) and loader.skipped == 2


def test_builder_refuses_a_sample_of_another_shape():
    builder = BatchBuilder(2)
    builder.add({"y": np.zeros((2, 2), np.float32), "info": {"i": 0}})
    with pytest.raises(ValueError, match="y: sample has shape"):
        builder.add({"y": np.zeros((3, 2), np.float32), "info": {"i": 1}})


@pytest.mark.parametrize("snapshots", [1, 2, 3])
def test_blocked_target_equals_the_window_mean_then_zscore_to_the_bit(snapshots):
    """``_target_zscored`` (level blocks, in place) and ``_dense_target`` (its degC form) against a
    plain numpy NaN-aware weighted mean summed snapshot by snapshot, then the z-score, to the bit,
    with NaN and inf in some snapshots (the NaN-aware cells) and a seabed and land."""
    rng = np.random.default_rng(snapshots)
    levels, h, w = 11, 9, 7
    glorys = rng.normal(12, 6, (snapshots, levels, h, w)).astype(np.float32)
    glorys[0, 2, 3, 4] = np.nan
    glorys[-1, 5, 1, 1] = np.nan
    glorys[:, 7, 2, 2] = np.nan      # missing in every snapshot: invalid
    glorys[0, 0, 0, 0] = np.inf
    ocean = rng.random((h, w)) > 0.2
    bottom = rng.integers(0, levels + 1, (h, w))
    days = np.arange(1, snapshots + 1)
    win = WindowData(sst_k=None, glorys=list(glorys), glorys_days=days, count=None,
                     total=None, ocean=ocean, bottom_level=bottom, north_up=True)
    num, den = np.zeros((levels, h, w), np.float32), np.zeros((levels, h, w), np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for g, weight in zip(glorys, days.astype(np.float32)):
            ok = np.isfinite(g)
            num += np.where(ok, g, np.float32(0)) * weight
            den += ok * weight
        mean = num / den
    valid = ocean[None] & (np.arange(levels)[:, None, None] < bottom[None]) & np.isfinite(mean)
    y, y_valid = _dense_target(win)
    np.testing.assert_array_equal(y_valid, valid)
    assert y[valid].tobytes() == mean[valid].tobytes()
    for bands in ((0, levels), (1, 4), (3, 11)):
        z, v, y0 = _target_zscored(win, bands)
        np.testing.assert_array_equal(v, valid)
        expected = _zscore(mean[bands[0]:bands[1]], valid[bands[0]:bands[1]])
        assert z.tobytes() == expected.tobytes()
        assert y0[valid[0]].tobytes() == mean[0][valid[0]].tobytes()


def test_finite_over_water_looks_at_the_water_cells_only():
    levels, h, w = 3, 4, 5
    ocean = np.ones((h, w), bool)
    ocean[0, 0] = False
    bottom = np.full((h, w), 2)
    water = water_column(ocean, bottom, levels)
    snapshot = np.full((levels, h, w), 7.5, np.float32)
    snapshot[:, 0, 0] = np.nan   # land
    snapshot[2] = np.inf         # below the seabed
    assert finite_over_water(snapshot, water)
    for bad in (np.nan, np.inf, -np.inf, np.float32(3e38), np.float32(-2e30)):
        damaged = snapshot.copy()
        damaged[1, 2, 3] = bad   # one water cell
        assert not finite_over_water(damaged, water), bad


@pytest.mark.parametrize("snapshots", [1, 2, 3])
def test_target_of_snapshots_finite_over_water_equals_the_plain_mean_to_the_bit(snapshots):
    """``glorys_finite`` (the stream's per tile and snapshot check) skips the cell-by-cell finite
    check: the values and masks are still a plain numpy weighted mean over the water column and
    its z-score, bit for bit, with NaN and inf off water (land, below the seabed)."""
    rng = np.random.default_rng(10 + snapshots)
    levels, h, w = 11, 9, 7
    ocean = rng.random((h, w)) > 0.2
    bottom = rng.integers(0, levels + 1, (h, w))
    water = water_column(ocean, bottom, levels)
    glorys = rng.normal(12, 6, (snapshots, levels, h, w)).astype(np.float32)
    glorys[:, ~water] = np.nan
    glorys[0][~water & (rng.random(water.shape) > 0.5)] = np.inf
    assert all(finite_over_water(g, water) for g in glorys)
    days = np.arange(2, snapshots + 2)
    mean = glorys[0].copy()  # one snapshot is its own mean
    if snapshots > 1:
        mean[...] = 0
        for g, weight in zip(glorys, days.astype(np.float32)):
            mean += g * weight
        mean /= np.float32(days.sum())
    win = WindowData(sst_k=None, glorys=list(glorys), glorys_days=days, count=None, total=None,
                     ocean=ocean, bottom_level=bottom, north_up=True, glorys_finite=True)
    for bands in ((0, levels), (1, 4), (3, 11)):
        z, valid, y0 = _target_zscored(win, bands)
        np.testing.assert_array_equal(valid, water)
        assert z.tobytes() == _zscore(mean[bands[0]:bands[1]], water[bands[0]:bands[1]]).tobytes()
        assert y0[water[0]].tobytes() == mean[0][water[0]].tobytes()
    # the flag is the caller's promise, not checked again (what makes the check per tile pay):
    # a water cell NaN in every snapshot stays valid here, and only here
    damaged = glorys.copy()
    cell = np.unravel_index(np.flatnonzero(water)[0], water.shape)
    damaged[(slice(None),) + cell] = np.nan
    for flag, expected in ((True, True), (False, False)):
        trusted = replace(win, glorys=list(damaged), glorys_finite=flag)
        assert _target_zscored(trusted, (0, levels))[1][cell] == expected


def test_a_water_cell_damaged_in_every_snapshot_is_masked_and_nothing_else_moves(tiny_cube, tmp_path):
    """A copy of the tiny cube with one water cell NaN or inf in every GLORYS snapshot: the
    stream's per (tile, snapshot) check sees it, so that cell is invalid (y 0) in every sample of
    its tile, every value stays finite, and every other cell's y and validity are the undamaged
    cube's, bit for bit."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    clean = CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    w0 = clean.windows[0]
    water = clean.reader.ocean_mask[w0.rows][:, w0.cols] & (clean.reader.bottom_level[w0.rows][:, w0.cols] > 3)
    r, c = (int(v[0]) for v in np.nonzero(water))  # a cell of the first tile with 4 water levels
    damaged = tmp_path / "cube.zarr"
    shutil.copytree(tiny_cube, damaged)
    thetao = zarr.open_group(str(damaged), mode="r+")["glorys/thetao"]
    for s in range(thetao.shape[0]):
        thetao[s, 3, w0.rows.start + r, w0.cols.start + c] = np.nan if s % 2 else np.inf
    stream = CubeStream(str(damaged), cfg, split="all", shuffle=False)
    north = w0.rows.stop - w0.rows.start - 1 - r  # samples are north-up
    seen = 0
    for i in range(len(stream)):
        if stream.windows[i].patch != w0.patch:
            continue
        got, want = stream.sample(i, epoch=0), clean.sample(i, epoch=0)
        assert not got["y_valid_mask"][3, north, c] and got["y"][3, north, c] == 0
        assert all(np.isfinite(v).all() for k, v in got.items() if k != "info" and v.dtype.kind == "f")
        for key in ("y", "y_valid_mask"):
            other = np.ones(got[key].shape, bool)
            other[3, north, c] = False
            assert got[key][other].tobytes() == want[key][other].tobytes(), key
        seen += 1
    assert seen > 1
