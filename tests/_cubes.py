"""Analytic cubes written directly through cube.store (no readers, no regridding), so loader tests
compare samples with values computed by hand from closed-form fields."""

from __future__ import annotations

import numpy as np

from cube import store
from cube.config import CubeConfig
from cube.constants import GLORYS_DEPTHS
from cube.grid import CubeGrid
from cube.index import write_patch_index
from cube.obs_table import rewrite_from_dense
from cube.layout import CONTRACT, ChunkConfig, CompressionConfig
from cube.patches import build_patches
from cube.tiling import PatchSpec, SplitSpec, assign_splits

GRID = CubeGrid(lat_south=40.0, lon_west=-20.0, resolution=0.1, nlat=32, nlon=48)
DAYS = np.arange(np.datetime64("2010-01-25"), np.datetime64("2010-02-14"), dtype="datetime64[D]")  # 20 days
SNAPSHOTS = np.array(["2010-01-25", "2010-01-30", "2010-02-04", "2010-02-09"], dtype="datetime64[s]")
TILE = 16


def sst_k(t, lat, lon):
    """OSTIA kelvin: increases northwards and with time."""
    return 280.0 + (lat - 40.0) * 2.0 + 0.01 * t + 0.001 * (lon + 20.0)


def thetao_c(s, z, lat, lon):
    """GLORYS degC: warm at the top, increases northwards, changes between snapshots."""
    return 20.0 - 0.3 * z + (lat - 40.0) * 1.5 + 0.5 * s + 0.01 * (lon + 20.0)


def ocean_and_bottom():
    ocean = np.ones((GRID.nlat, GRID.nlon), bool)
    ocean[:6, :10] = False                       # a land corner in the south-west
    bottom = np.where(ocean, 50, 0).astype(np.int8)
    bottom[10:20, 20:30] = 12                    # a shelf: only 12 valid levels
    return ocean, bottom


PROFILE_OBS = [
    # (day index, level, row, col, value degC)
    (3, 5, 20, 30, 10.0), (4, 5, 20, 30, 12.0), (4, 6, 20, 30, 0.0),  # a real 0 degC value
    (5, 5, 20, 30, 14.0),
    (9, 0, 25, 40, 18.0),
]


def make_analytic_cube(path, split: str = "patch", val_fraction: float = 0.25) -> str:
    url = str(path)
    cfg = CubeConfig(output=url, chunks=ChunkConfig(days=4), patches=PatchSpec(tile_size=TILE, invalid_threshold=0.9),
                     split=SplitSpec(method=split, val_fraction=val_fraction, seed=7))
    store.create_cube(url, days=DAYS, glorys_times=SNAPSHOTS, lat=GRID.lat, lon=GRID.lon, depth=GLORYS_DEPTHS,
                      chunking=cfg.chunks, compression=CompressionConfig(), tile=TILE,
                      attrs={"contract": CONTRACT, "status": "building"})
    root = store.open_root(url)
    ocean, bottom = ocean_and_bottom()
    t = np.arange(len(DAYS))[:, None, None]
    lat, lon = GRID.lat[None, :, None], GRID.lon[None, None, :]
    sst = sst_k(t, lat, lon).astype(np.float32)
    sst[:, ~ocean] = np.nan
    sst[7] = np.nan                              # an all-NaN day
    root["ostia/analysed_sst"][:] = sst
    z = np.arange(50)[:, None, None]
    theta = np.stack([thetao_c(s, z, GRID.lat[:, None], GRID.lon[None, :]) for s in range(len(SNAPSHOTS))]).astype(np.float32)
    theta[:, :, ~ocean] = np.nan
    theta[:, z[:, 0, 0][:, None, None] >= bottom[None]] = np.nan
    root["glorys/thetao"][:] = theta
    count = np.zeros((len(DAYS), 50, GRID.nlat, GRID.nlon), np.int32)
    total = np.zeros(count.shape, np.float32)
    for d, k, r, c, v in PROFILE_OBS:
        count[d, k, r, c] += 1
        total[d, k, r, c] += v
    root["profiles/count"][:] = count
    root["profiles/sum"][:] = total
    root["profiles/n_obs"][:] = count.sum(axis=1)
    rewrite_from_dense(url)
    root["static/ocean_mask"][:] = ocean
    root["static/bottom_level"][:] = bottom
    patches = assign_splits(build_patches(ocean, GRID, cfg.patches), cfg.split)
    write_patch_index(url, patches, GRID, cfg)
    store.write_attrs(root, {"contract": CONTRACT, "status": "complete", "build": {"grid": GRID.to_dict()}})
    store.consolidate(url)
    return url


def assert_direct_decode_equals_zarr(reader, path: str) -> None:
    """Every chunk of ``path`` decoded by the reader's zarr-bypassing path equals zarr's own read
    of the same region (edge chunks and never-written chunks included)."""
    import itertools

    arr = reader.array(path)
    grid = [range(-(-n // c)) for n, c in zip(arr.shape, arr.chunks)]
    for cidx in itertools.product(*grid):
        origin = tuple(i * c for i, c in zip(cidx, arr.chunks))
        direct = reader._decode_direct(path, arr, cidx, origin)
        expected = arr[tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, arr.chunks, arr.shape))]
        assert direct is not None and np.array_equal(direct, expected, equal_nan=True), (path, cidx)
