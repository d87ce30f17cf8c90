"""Every cube array carries zarr v3's crc32c checksum: a damaged chunk is an error, never garbage.

The damage is done by hand to a built cube (16 bytes flipped inside one stored OSTIA chunk) and
must be caught through plain xarray, zarr, the loaders' direct Blosc decode and the stream.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec

from conftest import tiny_cube_config
from cube.build import build
from loaders.config import DatasetConfig, XConfig
from loaders.reader import ChunkError, CubeReader
from loaders.stream import CubeStream, SampleError

CHUNK = "ostia/analysed_sst/c/1/0/0"      # days 4..7 of the tiny cube, tile rows/cols 0..15


def _every_array(group: zarr.Group, prefix: str = ""):
    for name, arr in group.arrays():
        yield prefix + name, arr
    for name, sub in group.groups():
        yield from _every_array(sub, f"{prefix}{name}/")


def flip_bytes(path, n: int = 16) -> None:
    """Invert ``n`` bytes in the middle of a stored chunk (the size stays the same)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged(tiny_cube, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(tiny_cube, cube)
    assert (cube / CHUNK).is_file()
    flip_bytes(cube / CHUNK)
    return cube


def test_every_array_of_a_built_cube_has_the_checksum(tiny_cube):
    root = zarr.open_group(str(tiny_cube), mode="r")
    arrays = dict(_every_array(root))
    assert {"ostia/analysed_sst", "glorys/thetao", "profiles/count", "static/ocean_mask", "patches/row0"} <= set(arrays)
    for path, arr in arrays.items():
        assert isinstance(arr.metadata.codecs[-1], Crc32cCodec), path


def test_plain_xarray_raises_on_a_damaged_chunk(damaged):
    sst = xr.open_datatree(damaged, engine="zarr")["ostia/analysed_sst"]
    sst.isel(time=slice(0, 4)).values                           # undamaged chunks still read
    with pytest.raises(ValueError, match="checksum"):
        sst.isel(time=slice(4, 8), lat=slice(0, 16), lon=slice(0, 16)).values


def test_loader_direct_decode_names_the_variable_and_chunk(damaged):
    reader = CubeReader(str(damaged))
    reader.read("ostia/analysed_sst", slice(0, 4), slice(0, 16), slice(0, 16))
    with pytest.raises(ChunkError) as info:
        reader.read("ostia/analysed_sst", slice(4, 5), slice(0, 16), slice(0, 16))
    assert str(info.value).startswith("ostia/analysed_sst: chunk c/1/0/0: damaged: its crc32c checksum does not match")


def test_stream_sample_error_names_the_variable_and_chunk(damaged):
    stream = CubeStream(str(damaged), DatasetConfig(window_days=1, x=XConfig(source="argo")), split="all")
    hit = [i for i in range(len(stream)) if stream.windows[i].rows.start == 0 and stream.windows[i].cols == slice(0, 16)
           and 4 <= stream.windows[i].time.start < 8]
    assert hit
    with pytest.raises(SampleError) as info:
        stream._sample_or_skip(hit[0], 0, 0, 0)  # (index, epoch, shard, position)
    message = str(info.value)
    assert "ostia/analysed_sst: chunk c/1/0/0" in message and "checksum" in message and f"patch {stream.windows[hit[0]].patch}" in message


def test_sharded_layout_names_the_shard_and_the_inner_chunk(tiny_demo, tmp_path):
    """The direct decode reads sharded cubes too (issue 13 item 3) and checks each inner chunk's crc32c."""
    cfg = tiny_cube_config(tiny_demo, tmp_path / "cube.zarr", chunks={"days": 4, "shard_tiles": 2})
    build(cfg, progress=False)
    shard = tmp_path / "cube.zarr" / "ostia" / "analysed_sst" / "c" / "1" / "0" / "0"
    flip_bytes(shard)
    reader = CubeReader(cfg.output)
    with pytest.raises(ChunkError, match=r"^ostia/analysed_sst: chunk c/1/0/0 \(inner chunk \(1, [01], [01]\)\): "
                                         r"damaged: its crc32c checksum does not match"):
        reader.read("ostia/analysed_sst", slice(4, 5), slice(0, 32), slice(0, 32))     # the whole shard


def test_a_cube_built_before_checksums_still_reads_and_warns(tiny_demo, tmp_path, monkeypatch, caplog):
    """Decision: old cubes (Blosc only) open as before; the loaders say damage is undetectable there."""
    from zarr.codecs import BloscCodec

    import cube.index
    import cube.store

    def blosc_only(cfg):
        return (BloscCodec(cname=cfg.cname, clevel=cfg.clevel, shuffle=cfg.shuffle),)

    monkeypatch.setattr(cube.store, "array_compressors", blosc_only)
    monkeypatch.setattr(cube.index, "array_compressors", blosc_only)
    cfg = tiny_cube_config(tiny_demo, tmp_path / "old.zarr")
    build(cfg, progress=False)
    monkeypatch.undo()
    assert not any(isinstance(c, Crc32cCodec) for c in zarr.open_array(f"{cfg.output}/ostia/analysed_sst").metadata.codecs)
    stream = CubeStream(cfg.output, DatasetConfig(window_days=1, x=XConfig(source="argo")), split="all")
    with caplog.at_level(logging.WARNING, logger="depthcube.loaders"):
        sample = stream.sample(0)
    expected = xr.open_datatree(cfg.output, engine="zarr")["ostia/analysed_sst"]
    assert np.isfinite(sample["eo"]).all() and expected.size
    assert any("has no crc32c checksum" in r.message and "--rebuild" in r.message for r in caplog.records)
