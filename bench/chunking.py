"""Chunking measurement behind configs/cube.yaml chunks.days (README "Cube layout").

Builds the `make cube` demo with 1, 4, 8 and 16 days per chunk and times 128 samples of two
dataset presets straight from CubeStream (no DataLoader). Run: .venv/bin/python bench/chunking.py
"""
import time, subprocess, dataclasses, shutil
from cube.config import load_cube_config
from cube.layout import ChunkConfig
from cube.build import build
from loaders import CubeStream, load_dataset_config
for days in (1, 4, 8, 16):
    cfg = load_cube_config('configs/cube.yaml')
    cfg = dataclasses.replace(cfg, output=f'/tmp/chunk{days}.zarr', chunks=ChunkConfig(days=days))
    t = time.perf_counter(); build(cfg, progress=False, rebuild=True); tb = time.perf_counter() - t
    size = subprocess.run(['du', '-sm', cfg.output], capture_output=True, text=True).stdout.split()[0]
    nfiles = subprocess.run(f'find {cfg.output} -type f | wc -l', shell=True, capture_output=True, text=True).stdout.strip()
    out = []
    for preset in ('argo_real', 'ostia_tracks'):
        s = CubeStream(cfg.output, load_dataset_config('configs/dataset.yaml', preset), split='all')
        it = iter(s); t = time.perf_counter(); n = 0
        for _ in range(128):
            next(it); n += 1
        out.append(f"{preset} {n/(time.perf_counter()-t):.1f}/s decodes {s.reader.chunks_decoded}")
    print(f"days/chunk={days:2d} build {tb:5.1f}s size {size} MB files {nfiles}  " + "  ".join(out), flush=True)
