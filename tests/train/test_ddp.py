"""Issue 11: ``torchrun --nproc_per_node 2 depthcube train`` on the tiny demo cube (gloo on CPU):
every rank finishes (no hang in the last all-reduce), only rank 0 writes, and resuming with
another world size is one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _config(tmp_path: Path, cube: Path, max_steps: int) -> Path:
    cfg = {"data": {"cube": str(cube), "dataset_config": str(REPO / "configs" / "dataset.yaml"), "preset": "argo_real"},
           "loader": {"batch_size": 2, "val_batch_size": 2, "num_workers": 0},
           "model": {"base_channels": 4, "levels": 2},
           "run": {"out_dir": str(tmp_path / "run"), "max_steps": max_steps, "log_every": 5, "val_every": 20,
                   "val_batches": 1, "checkpoint_every": 10, "threads": 1, "device": "cpu"}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_torchrun_two_ranks_20_steps_exit_0_and_rank_0_writes(tiny_cube, tmp_path):
    config = _config(tmp_path, tiny_cube, 20)
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "depthcube"), "train", str(config)]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 DDP ranks" in done.stdout and done.stdout.count("step     20  val loss") == 1   # rank 0 alone prints
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [5, 10, 15, 20]                # one line per interval
    # 16 train windows -> 8 per rank -> 4 steps of 2 per epoch: step 20 ends epoch 4 on both ranks
    assert records[-2]["epoch"] == 4
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 20 and len(state["loaders"]) == 2 and state["data_layout"]["world_size"] == 2
    # Resuming the 2-rank checkpoint in one process: one line naming the world size.
    again = subprocess.run([str(BIN / "depthcube"), "train", str(config), "--max-steps", "24"], cwd=tmp_path,
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "world_size 2 (this stream: 1)" in again.stderr and len(again.stderr.strip().splitlines()) == 1
