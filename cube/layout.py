"""The cube contract (DESIGN.md section 4) declared as data: groups, variables, dims, dtypes,
fill values, the chunk and codec specs (:class:`ChunkConfig`, :class:`CompressionConfig`), the
attribute encoding, the time encoding both ways (:func:`days_to_int` / :func:`days_from_int`,
:func:`hours_to_int` / :func:`times_from_hours`) and :func:`check_contract`.

Part of the contract layer with :mod:`cube.tiling`; imports nothing else from ``cube/`` but
``cube.errors``. The builder (``cube.store``) creates arrays from these specs and writes time with
these encoders; the loaders (``loaders.reader.CubeReader``) and ``cube.open.open_cube`` call
:func:`check_contract` on open and decode time with the same functions. Nothing here writes:
:func:`check_contract` reads only the metadata of a zarr group it is given.

Chunking (guidance, decided by measurement, see README "Cube layout"):
- spatial chunks = ``tile_size`` cells (a training window reads exactly one chunk per day block),
- all 50 depths in one chunk,
- ``days`` days per chunk for the daily groups, ``glorys_times`` snapshots per chunk for GLORYS.
Codecs: Blosc(zstd, clevel 3, byte shuffle), then a crc32c checksum of the compressed chunk, for
every array (:func:`array_compressors`): a damaged chunk is a decode error, never plausible values.

The profile observation table (contract v2; built by ``cube.obs_table``): ``profiles/obs_day``,
``obs_row``, ``obs_col`` (obs,) and ``obs_count``, ``obs_sum`` (obs, depth), one row per observed
(UTC day, cell), rows sorted by (time block, lat block, lon block, day, row, col), and the index
``obs_start``/``obs_stop`` (time_block, lat_block, lon_block) with the block sizes as attributes
(:data:`INDEX_BLOCK_ATTRS`). The loaders read only the table; ``count``/``sum``/``n_obs`` stay
dense for plain xarray. Decided by measurement (``python -m bench.profile_store``, demo cube,
README "The profile observation table"): the dense count+sum store 2.09 MB (their zeros compress
well) against the table's 0.17 MB, so keeping both is cheap, while a training sample decodes
2.5 kB of table instead of 7.37 MB of dense chunks. ``chunks.profile_rows`` = 256: 167 kB decoded
per cold sample on the demo (128: 103 kB, 1024: 400 kB) and, for a global 2010-2024 cube (~7 M
rows; ``python -m bench.global_estimate``, README "Global cube estimate"), 140,632 table objects
(128: 281,262) and 0.23 % of the dense layout's decoded bytes per epoch (128: 0.13 %; the target
is 1 %). The table is never sharded: its object count needs no sharding, and plain chunks keep
the loaders' direct decode path.

Attributes (CF-1.10, so ``xr.open_datatree(cube, engine="zarr").to_netcdf(path)`` works and
cf_xarray finds every axis):
- every group has ``Conventions`` and ``title`` (:func:`group_attrs`); lat/lon have cell bounds
  (``lat_bnds``/``lon_bnds``, dims ``(lat|lon, bnds)``, named by the ``bounds`` attribute);
- structured attributes (:data:`JSON_ATTRS`: the build record, inputs, rejects, profile counts,
  the patch and split configs) are stored as JSON strings, because NetCDF attributes hold only
  strings and numbers; read them with :func:`decode_attrs`, which also accepts the dicts of
  cubes written before (nothing to migrate);
- ``cell_methods`` says what one stored value stands for: ``time: mean`` on the daily OSTIA
  analysis and on the GLORYS daily or monthly means, ``time: sum`` on the per-UTC-day profile
  counts and sums. The cube stores no window means: the window means of a training sample are
  computed by the loaders (tensors, not CF variables), so they carry no ``cell_methods``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import DepthcubeError
from .spec import check
from .tiling import PATCH_COLUMNS

CONTRACT = "depthcube cube v2"
#: Earlier contracts of depthcube's own cubes: the builder recognises them as its own (``--rebuild``
#: replaces them), the loaders refuse them with a one-line "rebuild" message.
OLDER_CONTRACTS = ("depthcube cube v1",)
CONVENTIONS = "CF-1.10"
BOUNDS_DIM = "bnds"

GROUP_TITLES = {
    "ostia": "depthcube: OSTIA L4 daily SST on the cube grid",
    "glorys": "depthcube: GLORYS12 potential temperature snapshots on the cube grid",
    "profiles": "depthcube: in-situ profile counts and sums per cell, GLORYS level and UTC day",
    "static": "depthcube: ocean mask and number of valid levels per column",
    "patches": "depthcube: patch index (training tiles), splits and daily profile counts per tile",
}

#: Attributes holding structured values, stored as JSON strings (NetCDF attributes cannot hold
#: dicts or lists of records).
JSON_ATTRS = frozenset({"build", "inputs", "rejects", "profiles", "patch_config", "split_config"})


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk sizes: days per chunk for daily variables, cells per spatial chunk (null = tile_size).

    ``shard_tiles`` (Zarr v3 sharding, for global cubes): spatial chunks per shard side, so one
    storage object holds ``shard_tiles**2`` chunks and the object count drops by that factor;
    null = no sharding (the demo's choice: its cube has a few hundred objects).

    ``profile_rows``: rows per chunk of the profile observation table (``profiles/obs_*``, dim
    ``obs``); see the module docstring for the measurement behind the default.
    """

    days: int = 8
    spatial: int | None = None
    glorys_times: int = 1
    shard_tiles: int | None = None
    profile_rows: int = 256

    def __post_init__(self):
        check(1 <= self.days <= 366, f"days: must be in 1..366, got {self.days}")
        check(self.spatial is None or self.spatial >= 8, f"spatial: must be >= 8 cells, got {self.spatial}")
        check(self.glorys_times >= 1, f"glorys_times: must be >= 1, got {self.glorys_times}")
        check(self.shard_tiles is None or self.shard_tiles >= 1, f"shard_tiles: must be >= 1, got {self.shard_tiles}")
        check(self.profile_rows >= 1, f"profile_rows: must be >= 1, got {self.profile_rows}")


@dataclass(frozen=True)
class CompressionConfig:
    """Blosc settings for every array (numcodecs/zarr v3 BloscCodec)."""

    cname: Literal["zstd", "lz4", "lz4hc", "zlib"] = "zstd"
    clevel: int = 3
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"] = "shuffle"

    def __post_init__(self):
        check(0 <= self.clevel <= 9, f"clevel: must be in 0..9, got {self.clevel}")



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
        """Chunk shape for an array with the given dimension sizes. The dims the table grows
        along (``obs``, ``time_block``) get a fixed chunk length whatever their size, so growing
        them (appends) never changes the chunk shape."""
        spatial = chunking.spatial or tile
        per_dim = {"lat": spatial, "lon": spatial, "depth": sizes.get("depth", 1), "patch": sizes.get("patch", 1),
                   "lat_block": sizes.get("lat_block", 1), "lon_block": sizes.get("lon_block", 1)}
        growing = {"obs": chunking.profile_rows, "time_block": INDEX_TIME_BLOCKS_PER_CHUNK}
        time_chunk = chunking.glorys_times if self.group == "glorys" else chunking.days
        return tuple(growing[d] if d in growing else min(sizes[d], per_dim.get(d, time_chunk)) if sizes[d] else 1
                     for d in self.dims)

    def shards(self, sizes: dict[str, int], chunking: ChunkConfig, tile: int) -> tuple[int, ...] | None:
        """Shard shape: ``shard_tiles`` chunks per side in lat/lon, one chunk along the other dims
        (so each build task, which owns whole time chunks, owns whole shards). Arrays without
        lat/lon (the profile table and its index) are never sharded (module docstring)."""
        if not chunking.shard_tiles or not {"lat", "lon"} <= set(self.dims):
            return None
        chunks = self.chunks(sizes, chunking, tile)
        return tuple(c * chunking.shard_tiles if d in ("lat", "lon") else c for d, c in zip(self.dims, chunks))


TEMPERATURE_C = {"units": "degC", "standard_name": "sea_water_potential_temperature"}

#: Dims of the observation table's index: the (time chunk, lat chunk, lon chunk) block of a row.
INDEX_DIMS = ("time_block", "lat_block", "lon_block")
#: Index blocks per chunk along ``time_block`` (fixed, so an append never changes the chunk shape).
INDEX_TIME_BLOCKS_PER_CHUNK = 64
#: Attributes of ``profiles/obs_start`` giving the block size: days per time block, cells per lat/lon block.
INDEX_BLOCK_ATTRS = ("block_days", "block_cells")
TABLE_COMMENT = ("one row per observed (UTC day, cell), the 50 GLORYS levels along depth: the nonzero cells of "
                 "profiles/count and profiles/sum, exactly. day = profiles/time[obs_day], lat = profiles/lat[obs_row], "
                 "lon = profiles/lon[obs_col] (cell centres; profiles/lat_bnds, lon_bnds the edges). Rows sorted by "
                 "(time block, lat block, lon block, day, row, col), blocks as profiles/obs_start says")
INDEX_COMMENT = ("rows [obs_start, obs_stop) of the profiles/obs_* table are the observations of one block: days "
                 "[t * block_days, (t + 1) * block_days) of profiles/time, rows [i * block_cells, (i + 1) * block_cells) "
                 "of profiles/lat and columns [j * block_cells, (j + 1) * block_cells) of profiles/lon")

VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec("ostia", "analysed_sst", ("time", "lat", "lon"), "float32", np.nan, {
        "units": "kelvin", "standard_name": "sea_surface_foundation_temperature",
        "long_name": "OSTIA L4 analysed SST regridded onto the cube grid (area mean when coarsening, linear when refining)",
        "cell_methods": "time: mean",
    }),
    VariableSpec("glorys", "thetao", ("time", "depth", "lat", "lon"), "float32", np.nan, {
        **TEMPERATURE_C, "long_name": "GLORYS12 potential temperature regridded onto the cube grid (NaN over land and below the seabed)",
        "cell_methods": "time: mean", "comment": "GLORYS12 daily means (snapshots) or monthly means, as the inputs were",
    }),
    VariableSpec("profiles", "count", ("time", "depth", "lat", "lon"), "int32", 0, {
        "units": "1", "long_name": "number of QC-accepted, vertically aligned profile values per cell, level and UTC day",
        "cell_methods": "time: sum",
    }),
    VariableSpec("profiles", "sum", ("time", "depth", "lat", "lon"), "float32", 0.0, {
        "units": "degC", "long_name": "sum of the profile potential temperatures counted in `count`",
        "comment": "mean = sum / count where count > 0; a real 0 degC value is valid because validity comes from count",
        "cell_methods": "time: sum",
    }),
    VariableSpec("profiles", "n_obs", ("time", "lat", "lon"), "int32", 0, {
        "units": "1", "long_name": "profile values per cell and UTC day, all levels together (count summed over depth)",
        "cell_methods": "time: sum",
    }),
    VariableSpec("profiles", "obs_day", ("obs",), "int32", 0, {
        "units": "1", "long_name": "observation table: index of the row's UTC day on profiles/time",
        "comment": TABLE_COMMENT,
    }),
    VariableSpec("profiles", "obs_row", ("obs",), "int32", 0, {
        "units": "1", "long_name": "observation table: index of the row's cell on profiles/lat (row 0 = south)",
        "comment": TABLE_COMMENT,
    }),
    VariableSpec("profiles", "obs_col", ("obs",), "int32", 0, {
        "units": "1", "long_name": "observation table: index of the row's cell on profiles/lon",
        "comment": TABLE_COMMENT,
    }),
    VariableSpec("profiles", "obs_count", ("obs", "depth"), "int32", 0, {
        "units": "1", "long_name": "observation table: profiles/count at (obs_day, :, obs_row, obs_col)",
        "comment": TABLE_COMMENT,
    }),
    VariableSpec("profiles", "obs_sum", ("obs", "depth"), "float32", 0.0, {
        "units": "degC", "long_name": "observation table: profiles/sum at (obs_day, :, obs_row, obs_col)",
        "comment": TABLE_COMMENT,
    }),
    VariableSpec("profiles", "obs_start", INDEX_DIMS, "int64", 0, {
        "units": "1", "long_name": "observation table index: first row of the block (start == stop: no row)",
        "comment": INDEX_COMMENT,
    }),
    VariableSpec("profiles", "obs_stop", INDEX_DIMS, "int64", 0, {
        "units": "1", "long_name": "observation table index: one past the last row of the block",
        "comment": INDEX_COMMENT,
    }),
    VariableSpec("static", "ocean_mask", ("lat", "lon"), "bool", False, {
        "long_name": "ocean (True) where the top GLORYS level is valid (OSTIA land flag when there is no GLORYS)",
        "standard_name": "sea_binary_mask", "units": "1", "flag_values": [0, 1], "flag_meanings": "land ocean",
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


def group_attrs(group: str) -> dict:
    """``Conventions`` and ``title`` of one of the cube's groups."""
    return {"Conventions": CONVENTIONS, "title": GROUP_TITLES[group]}


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """(n, 2) cell edges of 1-D cell centres: midpoints between neighbours, the outer edges half
    a step beyond the first and last centre (exact for the cube's regular grids). A single
    centre gets a zero-width cell (no step to take half of)."""
    c = np.asarray(centres, np.float64)
    if c.size < 2:
        return np.stack([c, c], axis=-1)
    mid = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.stack([edges[:-1], edges[1:]], axis=-1)


def json_default(o):
    """``json.dumps`` fallback for the numpy scalars, arrays, dates and paths in attributes."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.datetime64, Path)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def encode_attrs(attrs: Mapping) -> dict:
    """Attributes as stored: :data:`JSON_ATTRS` as JSON strings, everything else as plain JSON
    values (strings, numbers, lists of them). A structured value under any other name is an
    error (it would make the cube unwritable as NetCDF)."""
    out = {}
    for key, value in attrs.items():
        if key in JSON_ATTRS and not isinstance(value, str):
            out[key] = json.dumps(value, default=json_default)
            continue
        plain = json.loads(json.dumps(value, default=json_default))
        if isinstance(plain, dict) or (isinstance(plain, list) and any(isinstance(v, (dict, list)) for v in plain)):
            raise ValueError(f"attribute {key!r}: a structured value must be one of the JSON attributes "
                             f"{sorted(JSON_ATTRS)}")
        out[key] = plain
    return out


def decode_attrs(attrs: Mapping) -> dict:
    """Attributes as the code uses them: :data:`JSON_ATTRS` parsed back to dicts and lists.
    Values that are not strings (a cube written before these were JSON) are returned as they are."""
    return {k: json.loads(v) if k in JSON_ATTRS and isinstance(v, str) else v for k, v in attrs.items()}


# --------------------------------------------------------------------------------------------
# Time encoding (both ways: the builder writes it, the loaders read it back)
# --------------------------------------------------------------------------------------------

#: The epoch of every stored time coordinate: ``days since`` it for the daily groups (ostia,
#: profiles, patches), ``hours since`` it for the GLORYS snapshots.
EPOCH = np.datetime64("1950-01-01", "D")
TIME_UNITS_DAYS = "days since 1950-01-01"
TIME_UNITS_HOURS = "hours since 1950-01-01"


def days_to_int(days: np.ndarray) -> np.ndarray:
    """Calendar days -> int64 days since :data:`EPOCH` (as stored)."""
    return (np.asarray(days, dtype="datetime64[D]") - EPOCH).astype(np.int64)


def hours_to_int(times: np.ndarray) -> np.ndarray:
    """Times -> int64 whole hours since :data:`EPOCH` (as stored for GLORYS)."""
    return (np.asarray(times, dtype="datetime64[h]") - EPOCH.astype("datetime64[h]")).astype(np.int64)


def days_from_int(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`days_to_int`: datetime64[D]."""
    return EPOCH + np.asarray(stored).astype("timedelta64[D]")


def times_from_hours(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hours_to_int`: datetime64[s]."""
    return (EPOCH.astype("datetime64[h]") + np.asarray(stored).astype("timedelta64[h]")).astype("datetime64[s]")


# --------------------------------------------------------------------------------------------
# What a loader relies on
# --------------------------------------------------------------------------------------------

#: Arrays of the ``patches`` group a loader reads, with their dims (besides the patch table's
#: columns, all on ``(patch,)``).
PATCH_ARRAYS = {"split": ("patch",), "obs_count": ("patch", "time")}
#: Attributes of the ``patches`` group a loader reads.
PATCH_GROUP_ATTRS = ("tile_size", "split_config")


class ContractError(DepthcubeError):
    """A store is not a cube of this contract (or is damaged in its structure); one line, naming the store."""


def check_contract(root, where: str = "") -> None:
    """Raise :class:`ContractError` in one line unless the zarr group ``root`` is a cube of
    :data:`CONTRACT` with everything a loader relies on: the contract attribute, the five groups,
    every variable of :data:`VARIABLES` with its dims and dtype, the time coordinates, the
    patch table's columns and attributes and the observation index's block sizes. A cube of an
    :data:`OLDER_CONTRACTS` version gets its own line: built with that version, rebuild it.
    ``where`` names the store in the message."""
    contract = root.attrs.get("contract")
    if contract in OLDER_CONTRACTS:
        raise ContractError(f"{where or root.store}: built with contract {contract.rsplit(' ', 1)[-1]} ({contract!r}); "
                            f"this depthcube reads {CONTRACT!r} only: rebuild it (depthcube build --rebuild)")
    problem = _contract_problem(root)
    if problem:
        raise ContractError(f"{where or root.store}: not a {CONTRACT}: {problem}; rebuild it "
                            f"(depthcube build --rebuild)")


def _contract_problem(root) -> str | None:
    contract = root.attrs.get("contract")
    if contract != CONTRACT:
        return f"its contract attribute is {contract!r}, expected {CONTRACT!r}"
    groups = set(root.group_keys())
    missing = [g for g in GROUP_TITLES if g not in groups]
    if missing:
        return f"group(s) {missing} missing"
    expected = [(v.path, v.dims, v.dtype) for v in VARIABLES]
    expected += [(f"{g}/time", ("time",), "int64") for g in ("ostia", "glorys", "profiles")]
    expected += [(f"patches/{c}", ("patch",), None) for c in PATCH_COLUMNS]
    expected += [(f"patches/{name}", dims, None) for name, dims in PATCH_ARRAYS.items()]
    for path, dims, dtype in expected:
        problem = _array_problem(root, path, dims, dtype)
        if problem:
            return problem
    lacking = [a for a in PATCH_GROUP_ATTRS if a not in root["patches"].attrs]
    if lacking:
        return f"patches attribute(s) {lacking} missing"
    lacking = [a for a in INDEX_BLOCK_ATTRS if a not in root["profiles/obs_start"].attrs]
    return f"profiles/obs_start attribute(s) {lacking} missing" if lacking else None


def _array_problem(root, path: str, dims: tuple, dtype: str | None) -> str | None:
    group, name = path.split("/")
    if name not in set(root[group].array_keys()):
        return f"array {path} missing"
    arr = root[path]
    found_dims = tuple(arr.metadata.dimension_names or ())
    if found_dims != tuple(dims):
        return f"{path} has dims {found_dims}, expected {tuple(dims)}"
    if dtype is not None and np.dtype(arr.dtype) != np.dtype(dtype):
        return f"{path} has dtype {np.dtype(arr.dtype)}, expected {dtype}"
    return None
