"""The loaders' argo input read from the observation table (issue 13 item 1): x and x_valid_mask of
the stream equal an independent computation from plain xarray over the dense ``profiles/count``
and ``profiles/sum`` (window sum of sum / window sum of count, z-scored with ``cube.constants``),
on the tiny demo cube and on a global cube whose tiles wrap across the dateline; a table that
does not match its index is an error, never plausible sums; a v1 cube is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from cube import store
from cube.config import CubeConfig
from cube.constants import CELSIUS_TO_KELVIN, GLORYS_DEPTHS, Y_MEAN_K, Y_STD_K
from cube.grid import CubeGrid
from cube.index import write_patch_index
from cube.layout import CONTRACT, ChunkConfig, CompressionConfig, ContractError
from cube.obs_table import rewrite_from_dense
from cube.patches import build_patches
from cube.tiling import PatchSpec, SplitSpec, assign_splits
from loaders import CubeStream, load_dataset_config
from loaders.config import DatasetConfig, XConfig
from loaders.reader import ChunkError, CubeReader

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
ARGO_PRESETS = [p for p in ("argo_real",) if load_dataset_config(CONFIGS, p).x.source == "argo"]


def expected_x(tree: xr.DataTree, window, bands: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """x and x_valid_mask of one window from plain xarray: window sums of the dense arrays over
    the window's days and the tile's cells (``cols`` may wrap), north-up, z-scored in kelvin."""
    sel = {"time": window.time, "lat": window.rows,
           "lon": np.arange(window.cols.start, window.cols.stop) if isinstance(window.cols, slice) else window.cols}
    count = tree["profiles/count"].isel(sel).sum("time").values.astype(np.float64)
    total = tree["profiles/sum"].isel(sel).sum("time").values.astype(np.float64)
    count, total = count[bands[0]:bands[1], ::-1], total[bands[0]:bands[1], ::-1]
    valid = count > 0
    mean_c = np.divide(total, count, out=np.zeros_like(total), where=valid)
    return np.where(valid, (mean_c + CELSIUS_TO_KELVIN - Y_MEAN_K) / Y_STD_K, 0.0), valid


def assert_x_matches_dense(url: str, cfg: DatasetConfig) -> int:
    """Every window's x against :func:`expected_x`; returns how many windows had observations."""
    tree = xr.open_datatree(url, engine="zarr", chunks=None)
    stream = CubeStream(url, cfg, split="all")
    observed = 0
    for i, window in enumerate(stream.windows):
        sample = stream.sample(i, epoch=0)
        want_x, want_valid = expected_x(tree, window, cfg.target_bands)
        np.testing.assert_array_equal(sample["x_valid_mask"], want_valid, err_msg=f"window {i}")
        np.testing.assert_allclose(sample["x"], want_x, rtol=1e-6, atol=1e-6, err_msg=f"window {i}")
        observed += bool(want_valid.any())
    return observed


@pytest.mark.parametrize("preset", ARGO_PRESETS)
def test_argo_x_equals_the_dense_window_sums(tiny_cube, preset):
    assert assert_x_matches_dense(str(tiny_cube), load_dataset_config(CONFIGS, preset)) > 0


# --------------------------------------------------------------------------------------------
# A global cube: tiles wrap across the dateline
# --------------------------------------------------------------------------------------------

GLOBAL = CubeGrid(lat_south=-60.0, lon_west=-180.0, resolution=7.5, nlat=16, nlon=48)   # 48 x 7.5 = 360 deg
GLOBAL_DAYS = np.arange(np.datetime64("2010-01-01"), np.datetime64("2010-01-13"), dtype="datetime64[D]")


@pytest.fixture(scope="module")
def global_cube(tmp_path_factory) -> str:
    """A global cube written through cube.store: all ocean, 16-cell tiles every 8 columns (the last
    ones wrap: columns 40..47 then 0..7), random profile counts and sums (about 2 % of the
    (day, cell)s observed, some on several levels), the table written from the dense arrays."""
    url = str(tmp_path_factory.mktemp("global") / "cube.zarr")
    rng = np.random.default_rng(13)
    cfg = CubeConfig(output=url, chunks=ChunkConfig(days=4, profile_rows=16),
                     patches=PatchSpec(tile_size=16, stride=8, invalid_threshold=1.0),
                     split=SplitSpec(method="year", val_year=2011, seed=7))
    snapshots = GLOBAL_DAYS[::4].astype("datetime64[s]")
    store.create_cube(url, days=GLOBAL_DAYS, glorys_times=snapshots, lat=GLOBAL.lat, lon=GLOBAL.lon,
                      depth=GLORYS_DEPTHS, chunking=cfg.chunks, compression=CompressionConfig(), tile=16,
                      attrs={"contract": CONTRACT, "status": "building"})
    root = store.open_root(url)
    shape = (GLOBAL.nlat, GLOBAL.nlon)
    root["ostia/analysed_sst"][:] = (280 + 10 * rng.random((len(GLOBAL_DAYS),) + shape)).astype(np.float32)
    root["glorys/thetao"][:] = (2 + 20 * rng.random((len(snapshots), 50) + shape)).astype(np.float32)
    observed = rng.random((len(GLOBAL_DAYS), 1) + shape) < 0.02
    count = (observed * (rng.random((len(GLOBAL_DAYS), 50) + shape) < 0.3) * rng.integers(1, 4, (len(GLOBAL_DAYS), 50) + shape))
    count = count.astype(np.int32)
    root["profiles/count"][:] = count
    root["profiles/sum"][:] = (count * (-2 + 30 * rng.random(count.shape))).astype(np.float32)
    root["profiles/n_obs"][:] = count.sum(axis=1)
    ocean = np.ones(shape, bool)
    root["static/ocean_mask"][:] = ocean
    root["static/bottom_level"][:] = np.full(shape, 50, np.int8)
    rewrite_from_dense(url)
    write_patch_index(url, assign_splits(build_patches(ocean, GLOBAL, cfg.patches), cfg.split), GLOBAL, cfg)
    store.consolidate(url, {"contract": CONTRACT, "status": "complete", "build": {"grid": GLOBAL.to_dict()}})
    return url


def test_wrapping_tiles_sum_the_dense_arrays_on_both_sides_of_the_dateline(global_cube):
    cfg = DatasetConfig(window_days=3, x=XConfig(source="argo"), seed=7)
    stream = CubeStream(global_cube, cfg, split="all")
    wrapping = [w for w in stream.windows if isinstance(w.cols, np.ndarray) and w.cols[0] > w.cols[-1]]
    assert wrapping, "the fixture has tiles across the dateline"
    assert assert_x_matches_dense(global_cube, cfg) > 0


def test_profile_sums_equal_the_dense_sums_to_the_bit(global_cube):
    """count and the float32 sums of :meth:`CubeReader.profile_sums` equal the dense window sums
    added in day order (float32, as a dense sum over the days adds them), for a wrapping window."""
    reader = CubeReader(global_cube)
    root = zarr.open_group(global_cube, mode="r")
    cols = np.r_[40:48, 0:8]
    time, rows = slice(2, 7), slice(0, 16)
    count, total = reader.profile_sums(time, rows, cols, north_up=True)
    dense_count = root["profiles/count"][time][:, :, rows][..., cols]
    dense_sum = root["profiles/sum"][time][:, :, rows][..., cols]
    want_total = np.zeros(dense_sum.shape[1:], np.float32)
    for day in dense_sum:                    # float32, day after day
        want_total += day
    np.testing.assert_array_equal(count, dense_count.sum(axis=0)[:, ::-1])
    np.testing.assert_array_equal(total, want_total[:, ::-1])
    assert count.sum() > 0


def test_a_table_that_does_not_match_its_index_is_an_error(global_cube, tmp_path):
    """Rows of another block inside a block's range (a table changed under its index, or damage)
    raise ChunkError naming the table, instead of summing the wrong cells."""
    import shutil

    url = str(tmp_path / "cube.zarr")
    shutil.copytree(global_cube, url)
    root = zarr.open_group(url, mode="r+", use_consolidated=False)
    start, stop = root["profiles/obs_start"][...], root["profiles/obs_stop"][...]
    block = tuple(int(v) for v in np.argwhere(stop > start)[0])
    col = root["profiles/obs_col"]
    col[int(start[block])] = (col[int(start[block])] + 16) % 48      # a row moved to another lon block
    reader = CubeReader(url)
    t, i, j = block
    with pytest.raises(ChunkError, match=r"profiles/obs_\*: rows .* do not all lie in their index block"):
        reader.profile_sums(slice(4 * t, 4 * t + 4), slice(16 * i, 16 * i + 16), slice(16 * j, 16 * j + 16))


def test_a_v1_cube_is_refused_in_one_line_saying_rebuild(tiny_cube, tmp_path):
    import shutil

    url = tmp_path / "v1.zarr"
    shutil.copytree(tiny_cube, url)
    doc = json.loads((url / "zarr.json").read_text())
    doc["attributes"]["contract"] = "depthcube cube v1"
    (url / "zarr.json").write_text(json.dumps(doc))
    for opener in (lambda: CubeReader(str(url)).root, lambda: CubeStream(str(url), DatasetConfig(), split="all")):
        with pytest.raises(ContractError) as err:
            opener()
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{url}: built with contract v1")
        assert "depthcube build --rebuild" in message


def test_wrapping_window_reads_into_a_given_slot_equal_plain_zarr(global_cube):
    """``CubeReader.read(..., out=)`` (how the stream stacks GLORYS snapshots without a second copy)
    gives plain zarr's values for a tile across the dateline, rows north-up, and the stream's
    stacked snapshots are those values."""
    reader = CubeReader(global_cube)
    root = zarr.open_group(global_cube, mode="r")
    cols, rows = np.r_[40:48, 0:8], slice(0, 16)
    want = root["glorys/thetao"][1:2][:, :, rows][..., cols][:, :, ::-1]
    slot = np.full(want.shape, np.nan, np.float32)
    got = reader.read("glorys/thetao", slice(1, 2), rows, cols, north_up=True, out=slot)
    assert got is slot
    np.testing.assert_array_equal(slot, want)
    np.testing.assert_array_equal(reader.read("glorys/thetao", slice(1, 2), rows, cols, north_up=True), want)
    with pytest.raises(ValueError, match="out has shape"):
        reader.read("glorys/thetao", slice(1, 3), rows, cols, out=slot)

    stream = CubeStream(global_cube, DatasetConfig(window_days=3, x=XConfig(source="argo"), seed=7), split="all")
    w = next(w for w in stream.windows if isinstance(w.cols, np.ndarray) and w.cols[0] > w.cols[-1])
    win = stream.read_window(w, north_up=True)
    used, _ = stream._snapshots(w)
    for slot, s in zip(win.glorys, used):
        expected = root["glorys/thetao"][int(s)][:, w.rows][..., w.cols][:, ::-1]
        np.testing.assert_array_equal(slot, expected)
