"""Typed configuration: frozen dataclasses loaded from YAML and validated once, at the edge.

``load_config(path_or_mapping, Cls)`` turns a mapping into ``Cls``: unknown keys, wrong types and
impossible values raise :class:`~cube.errors.ConfigError` naming the key's path
(``cube.yaml: grid.resolution: expected a number or 'native', got 'fine'``). Dataclasses
validate their own values in ``__post_init__`` by raising ``ValueError``; the loader prefixes
the key path. ``to_dict`` gives the round-trippable form stored in the cube's attributes.

This module also declares the cube build config (:class:`CubeConfig`). Dataset and training
configs live with their layers (``loaders.config``, ``train.config``) and use the same loader.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import ConfigError
from .layout import ChunkConfig, CompressionConfig
from .tiling import PatchSpec, SplitSpec

T = typing.TypeVar("T")


def load_config(source: str | Path | dict, cls: type[T], *, label: str | None = None, prefix: str = "") -> T:
    """Build ``cls`` from a YAML file path or a mapping; every error names the key path.

    Messages read ``<label>: <key.path>: <what is wrong>``; ``label`` defaults to the file name
    (or the class name for a mapping) and ``prefix`` is the key path of the mapping inside its
    file (``presets.argo_real`` for a dataset preset).
    """
    if isinstance(source, dict):
        data, label = source, label or cls.__name__
    else:
        label = label or Path(source).name
        data = read_yaml(source)
    return _build(cls, data, _KeyPath(label, tuple(k for k in prefix.split(".") if k)))


def read_yaml(path: str | Path, what: str = "config") -> object:
    """The parsed YAML document at ``path``; ConfigError naming the file when missing or malformed."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{path}: {what} file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


@dataclass(frozen=True)
class _KeyPath:
    """Where a value sits: the file (label) and its keys; prints as ``cube.yaml: grid.region[2]``."""

    label: str
    keys: tuple[str, ...] = ()

    def child(self, key: str) -> "_KeyPath":
        return _KeyPath(self.label, self.keys + (str(key),))

    def index(self, i: int) -> "_KeyPath":
        return _KeyPath(self.label, self.keys + (f"[{i}]",))

    def __str__(self) -> str:
        keys = "".join(k if k.startswith("[") else f".{k}" for k in self.keys).lstrip(".")
        return f"{self.label}: {keys}" if keys else self.label


#: ``field: message``, ``Class.field must ...``, ``x.field must ...``: a dataclass's own message
#: naming one of its fields (optionally behind its class or section name).
_FIELD_MESSAGE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s*|\s+(?=(?:must|needs?|is|are|has)\b))(.*)$", re.DOTALL)


def _located(cls, path: _KeyPath, message: str) -> ConfigError:
    """A dataclass's validation message at the key path of the field it names, if it names one."""
    m = _FIELD_MESSAGE.match(message)
    if m:
        parts = m.group(1).split(".")
        names = {f.name for f in dataclasses.fields(cls)}
        while parts and parts[0] not in names and len(parts) > 1:
            parts = parts[1:]  # 'PatchSpec.tile_size', 'x.mask_fraction': the field follows
        if parts and parts[0] in names:
            for key in parts:
                path = path.child(key)
            return ConfigError(f"{path}: {m.group(2)}")
    return ConfigError(f"{path}: {message}")


def to_dict(obj) -> Any:
    """Plain-data form of a config dataclass (tuples become lists), for YAML/JSON attributes."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _build(cls, data, path: _KeyPath):
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys are {names}")
    kwargs = {k: _coerce(hints[k], v, path.child(k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise _located(cls, path, str(e)) from None


def _coerce(tp, value, path: _KeyPath):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, path)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(opt, value, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]  # 'X | None': the error of X, with its own (maybe deeper) key path
        raise ConfigError(f"{path}: " + " or ".join(str(e).removeprefix(f"{path}: ") for e in errors))
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, path.index(i)) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, path.index(i)) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return _scalar(tp, value, path)


def _scalar(tp, value, path: _KeyPath):
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{path}: unsupported config type {tp}")


def _check(cond: bool, message: str):
    if not cond:
        raise ValueError(message)


# --------------------------------------------------------------------------------------------
# The cube build config (configs/cube.yaml)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputsConfig:
    """Where the raw products are: glob patterns or lists of paths/URLs per product (any fsspec URL)."""

    ostia: list[str] = field(default_factory=list)
    glorys: list[str] = field(default_factory=list)
    en4: list[str] = field(default_factory=list)
    argo: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GridConfig:
    """The cube grid. ``region`` = (lat_min, lat_max, lon_min, lon_max); null = the OSTIA extent."""

    resolution: float | Literal["native"] = 0.1
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if self.resolution != "native":
            _check(0 < self.resolution <= 10, f"resolution: must be in (0, 10] degrees, got {self.resolution}")
        if self.region is not None:
            la0, la1, lo0, lo1 = self.region
            _check(-90 <= la0 < la1 <= 90, f"region: need -90 <= lat_min < lat_max <= 90, got {self.region}")
            _check(-180 <= lo0 < lo1 <= 360, f"region: need lon_min < lon_max within [-180, 360], got {self.region}")


@dataclass(frozen=True)
class TimeConfig:
    """The cube's daily axis, inclusive 'YYYY-MM-DD' bounds; null = the span of the OSTIA inputs."""

    start: str | None = None
    end: str | None = None

    def __post_init__(self):
        import numpy as np

        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None:
                try:
                    np.datetime64(v, "D")
                except ValueError:
                    raise ValueError(f"{name}: expected a date 'YYYY-MM-DD', got {v!r}") from None
        if self.start and self.end:
            _check(self.start <= self.end, f"start {self.start} is after end {self.end}")


@dataclass(frozen=True)
class ProfileQCConfig:
    """Profile QC: accepted QC codes (EN4/Argo level and profile flags) and the temperature used."""

    accepted_qc: tuple[str, ...] = ("1", "2")
    temperature: Literal["potential", "insitu"] = "potential"

    def __post_init__(self):
        _check(len(self.accepted_qc) > 0, "accepted_qc: must name at least one QC code")
        _check(all(len(c) == 1 for c in self.accepted_qc), f"accepted_qc: codes are single characters, got {self.accepted_qc}")


@dataclass(frozen=True)
class ComputeConfig:
    """How the build runs: dask threads (default), a LocalCluster of N processes, or a scheduler address."""

    scheduler: str | None = None
    local_cluster: int | None = None
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        _check(self.local_cluster is None or self.local_cluster >= 1, f"local_cluster: must be >= 1, got {self.local_cluster}")


@dataclass(frozen=True)
class CubeConfig:
    """Everything ``depthcube build`` needs. Relative paths resolve against the config file's folder."""

    output: str = "data/cube.zarr"
    inputs: InputsConfig = field(default_factory=InputsConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    profiles: ProfileQCConfig = field(default_factory=ProfileQCConfig)
    patches: PatchSpec = field(default_factory=PatchSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    strict: bool = False

    def __post_init__(self):
        _check(bool(self.output), "output: must be a path or URL")
        _check(not self.patches.overlapping or self.split.method == "year" or self.split.val_year is not None,
               "split.val_year: overlapping tiles (patches.stride < tile_size) need a temporal holdout year")
        spatial, tile = self.chunks.spatial, self.patches.tile_size
        _check(spatial is None or spatial % tile == 0 or tile % spatial == 0,
               f"chunks.spatial: must divide patches.tile_size ({tile}) evenly or be a multiple of it, so a "
               f"tile reads whole chunks; got {spatial}")
        cells = self._region_cells()
        _check(cells is None or (tile <= cells[0] and (tile <= cells[1] or cells[2])),
               f"patches.tile_size: a tile of {tile} cells does not fit in grid.region "
               f"({cells and cells[0]} x {cells and cells[1]} cells)")

    def _region_cells(self) -> tuple[int, int, bool] | None:
        """(rows, columns, global in longitude) of the grid a given region makes, else None."""
        if self.grid.region is None:
            return None
        la0, la1, lo0, lo1 = self.grid.region
        res = 1 / 12 if self.grid.resolution == "native" else float(self.grid.resolution)
        return math.ceil((la1 - la0) / res - 1e-6), math.ceil((lo1 - lo0) / res - 1e-6), lo1 - lo0 >= 360


def load_cube_config(path: str | Path, **overrides) -> CubeConfig:
    """Load ``configs/cube.yaml``; relative input globs and the output resolve against the repo root
    (the config folder's parent when the file lives in ``configs/``, else the file's folder)."""
    cfg = load_config(path, CubeConfig)
    base = Path(path).resolve().parent
    if base.name == "configs":
        base = base.parent
    return dataclasses.replace(resolve_paths(cfg, base), **overrides)


def resolve_paths(cfg: CubeConfig, base: Path) -> CubeConfig:
    def fix(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str(base / p)

    inputs = InputsConfig(**{k: [fix(p) for p in getattr(cfg.inputs, k)]
                             for k in ("ostia", "glorys", "en4", "argo")})
    return dataclasses.replace(cfg, inputs=inputs, output=fix(cfg.output))
