"""The cube contract (DESIGN.md section 4) declared as data: groups, variables, dims, dtypes,
fill values, chunking and codecs. The builder creates arrays from these specs; the loaders and
tests check a cube against them. Nothing here touches storage.

Chunking (guidance, decided by measurement, see README "Cube layout"):
- spatial chunks = ``tile_size`` cells (a training window reads exactly one chunk per day block),
- all 50 depths in one chunk,
- ``days`` days per chunk for the daily groups, ``glorys_times`` snapshots per chunk for GLORYS.
Codecs: Blosc(zstd, clevel 3, byte shuffle), then a crc32c checksum of the compressed chunk, for
every array (:func:`array_compressors`): a damaged chunk is a decode error, never plausible values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ChunkConfig, CompressionConfig

CONTRACT = "depthcube cube v1"


@dataclass(frozen=True)
class VariableSpec:
    group: str
    name: str
    dims: tuple[str, ...]
    dtype: str
    fill_value: float | int | bool
    attrs: dict

    @property
    def path(self) -> str:
        return f"{self.group}/{self.name}"

    def chunks(self, sizes: dict[str, int], chunking: ChunkConfig, tile: int) -> tuple[int, ...]:
        """Chunk shape for an array with the given dimension sizes."""
        spatial = chunking.spatial or tile
        per_dim = {"lat": spatial, "lon": spatial, "depth": sizes.get("depth", 1), "patch": sizes.get("patch", 1)}
        time_chunk = chunking.glorys_times if self.group == "glorys" else chunking.days
        return tuple(min(sizes[d], per_dim.get(d, time_chunk)) if sizes[d] else 1 for d in self.dims)

    def shards(self, sizes: dict[str, int], chunking: ChunkConfig, tile: int) -> tuple[int, ...] | None:
        """Shard shape: ``shard_tiles`` chunks per side in lat/lon, one chunk along the other dims
        (so each build task, which owns whole time chunks, owns whole shards)."""
        if not chunking.shard_tiles:
            return None
        chunks = self.chunks(sizes, chunking, tile)
        return tuple(c * chunking.shard_tiles if d in ("lat", "lon") else c for d, c in zip(self.dims, chunks))


TEMPERATURE_C = {"units": "degC", "standard_name": "sea_water_potential_temperature"}

VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec("ostia", "analysed_sst", ("time", "lat", "lon"), "float32", np.nan, {
        "units": "kelvin", "standard_name": "sea_surface_foundation_temperature",
        "long_name": "OSTIA L4 analysed SST regridded onto the cube grid (area mean when coarsening, linear when refining)",
    }),
    VariableSpec("glorys", "thetao", ("time", "depth", "lat", "lon"), "float32", np.nan, {
        **TEMPERATURE_C, "long_name": "GLORYS12 potential temperature regridded onto the cube grid (NaN over land and below the seabed)",
    }),
    VariableSpec("profiles", "count", ("time", "depth", "lat", "lon"), "int32", 0, {
        "units": "1", "long_name": "number of QC-accepted, vertically aligned profile values per cell, level and UTC day",
    }),
    VariableSpec("profiles", "sum", ("time", "depth", "lat", "lon"), "float32", 0.0, {
        "units": "degC", "long_name": "sum of the profile potential temperatures counted in `count`",
        "comment": "mean = sum / count where count > 0; a real 0 degC value is valid because validity comes from count",
    }),
    VariableSpec("profiles", "n_obs", ("time", "lat", "lon"), "int32", 0, {
        "units": "1", "long_name": "profile values per cell and UTC day, all levels together (count summed over depth)",
    }),
    VariableSpec("static", "ocean_mask", ("lat", "lon"), "bool", False, {
        "long_name": "ocean (True) where the top GLORYS level is valid (OSTIA land flag when there is no GLORYS)",
    }),
    VariableSpec("static", "bottom_level", ("lat", "lon"), "int8", 0, {
        "units": "1", "long_name": "number of valid GLORYS levels in the column (0 over land)",
    }),
)


def spec(path: str) -> VariableSpec:
    for v in VARIABLES:
        if v.path == path:
            return v
    raise KeyError(path)


def array_compressors(cfg: CompressionConfig) -> tuple:
    """zarr v3 ``compressors=`` of every array: Blosc, then zarr's ``crc32c`` checksum codec.

    The checksum covers the compressed bytes, so a flipped byte anywhere in a stored chunk makes
    zarr (and the loaders' direct decode) raise instead of returning garbage. Cubes written before
    the checksum (Blosc only) still open; the loaders warn that they cannot detect damage there.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    return (BloscCodec(cname=cfg.cname, clevel=cfg.clevel, shuffle=cfg.shuffle), Crc32cCodec())


def coordinate_attrs(name: str) -> dict:
    return {
        "time": {"standard_name": "time", "axis": "T"},
        "lat": {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
        "lon": {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
        "depth": {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"},
    }.get(name, {})
