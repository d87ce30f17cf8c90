"""The bench's floors (issue 13 item 4): the limit decodes exactly the chunks the stream decodes,
with values equal to zarr's; the write floor fills tensors of the sample's shapes; threads pinned."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import zarr

from bench.peers import decode_chunk_direct, decode_chunks, needed_chunks, sample_plan, write_floor
from bench.suite import THREAD_VARIABLES, pin_threads
from loaders import CubeStream, load_dataset_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"


def test_the_limit_plans_exactly_the_chunks_a_cold_stream_decodes(small_table_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    order = CubeStream(small_table_cube, cfg, split="all").shard_indices(0)[:12]
    skipped = 0
    for i in order:
        planned = needed_chunks(CubeStream(small_table_cube, cfg, split="all"), int(i))
        cold = CubeStream(small_table_cube, cfg, split="all")
        assert set(planned) <= set(cold.window_chunks(int(i)))
        skipped += len(cold.window_chunks(int(i))) - len(planned)
        cold.read_window(cold.windows[int(i)], north_up=True)
        assert cold.reader.chunks_decoded == len(planned), i
    assert skipped > 0  # some table chunks of the listing hold no row of their window
    stream = CubeStream(small_table_cube, cfg, split="all")
    plan = sample_plan(stream, order)
    assert len(plan) == len(set(plan)) and set(plan) == {k for i in order for k in needed_chunks(stream, int(i))}


def test_the_limit_decodes_the_values_zarr_decodes(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    stream = CubeStream(str(tiny_cube), cfg, split="all")
    plan = sample_plan(stream, stream.shard_indices(0)[:4])
    root = zarr.open_group(str(tiny_cube), mode="r")
    total = 0
    for path, cidx in plan:
        arr = root[path]
        sel = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(cidx, arr.chunks, arr.shape))
        want = arr[sel]
        got = decode_chunk_direct(Path(tiny_cube), path, arr, cidx)
        assert got is not None, path  # the builder's layout takes the direct path
        np.testing.assert_array_equal(got[tuple(slice(0, s) for s in want.shape)], want)
        total += got.nbytes
    assert decode_chunks(str(tiny_cube), plan) == total


def test_write_floor_fills_batch_tensors_of_the_given_shapes(monkeypatch):
    made = []
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: made.append(real_empty(*a, **k)) or made[-1])
    seconds = write_floor({"y": ((3, 4, 5), torch.float32), "m": ((3, 4, 5), torch.bool)}, 5, batch_size=2)
    assert seconds > 0
    assert [(tuple(t.shape), t.dtype) for t in made] == [((b, 3, 4, 5), dtype) for b in (2, 2, 1)
                                                         for dtype in (torch.float32, torch.bool)]
    assert all(bool((t == 1).all()) for t in made)


def test_pin_threads_sets_torch_and_the_environment(monkeypatch):
    before = torch.get_num_threads()
    for var in THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)  # restored (unset or as before) after the test
    try:
        got = pin_threads()
        assert torch.get_num_threads() == 1 and got["torch_threads"] == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OPENBLAS_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
