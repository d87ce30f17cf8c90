"""Samples/s of every configs/dataset.yaml preset through StreamLoader at batch 32 with 0 and 2
workers, over one epoch of the `make cube` demo cube. Run: .venv/bin/python bench/presets.py
"""
import time, sys
import torch
from loaders import CubeStream, StreamLoader, load_dataset_config
for preset in ['argo_real', 'argo_synthetic_500', 'ostia_tracks', 'eo_4band_tracks']:
    cfg = load_dataset_config('configs/dataset.yaml', preset)
    for nw in (0, 2):
        s = CubeStream('data/cube.zarr', cfg, split='all')
        kw = dict(batch_size=32, num_workers=nw)
        if nw: kw.update(persistent_workers=False, prefetch_factor=4)
        t = time.perf_counter(); n = 0; first = None
        for b in StreamLoader(s, **kw):
            n += b['x'].shape[0]
            if first is None: first = time.perf_counter() - t
        dt = time.perf_counter() - t
        print(f"{preset:20s} workers={nw} windows={len(s)} {n/dt:7.1f} samples/s first batch {first:.2f}s")
