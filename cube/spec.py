"""The one config mechanism: YAML or a mapping -> a frozen dataclass, validated once, at the edge.

``load_config(path_or_mapping, Cls)`` turns a mapping into ``Cls``: unknown keys, wrong types and
impossible values raise :class:`~cube.errors.ConfigError` naming the key's path
(``cube.yaml: grid.resolution: expected a number or 'native', got 'fine'``). Dataclasses
validate their own values in ``__post_init__`` by raising ``ValueError`` (:func:`check`); the
loader prefixes the key path.

``to_dict`` gives the plain-data form stored in the cube's attributes and checkpoints;
``from_dict(Cls, data)`` reads it back through the same loader, so ``from_dict(type(x),
to_dict(x)) == x`` for every spec. One path rule for every config file: :func:`config_base` (the
repository root for a file in ``configs/``, else the file's folder) and :func:`resolve_path`.

Neutral: imports nothing from ``cube/`` but :mod:`cube.errors`; the cube (:mod:`cube.config`),
dataset (:mod:`loaders.config`) and training (:mod:`train.config`) configs declare their classes
with it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from cube.errors import ConfigError

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


def check(cond: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``cond``: how a spec's ``__post_init__`` rejects a value
    (the loader prefixes the key path of the field the message names)."""
    if not cond:
        raise ValueError(message)


def check_storage_options(name: str, options: dict) -> None:
    """A ``storage_options`` mapping (what ``fsspec.url_to_fs`` and zarr take) has string keys;
    ``ValueError`` naming ``name`` otherwise. Values are the filesystem's to judge."""
    check(isinstance(options, dict), f"{name}: expected a mapping of fsspec options, got {options!r}")
    bad = [k for k in options if not isinstance(k, str)]
    check(not bad, f"{name}: option names must be strings, got {bad}")


def storage_options_from_json(text: str | None, flag: str = "--storage-options") -> dict | None:
    """The ``storage_options`` mapping a command-line ``flag`` gives as a JSON object (None for
    none); ``ValueError`` naming the flag when it is not a JSON object with string keys."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def from_dict(cls: type[T], data: dict, *, label: str | None = None) -> T:
    """Inverse of :func:`to_dict`: ``cls`` from its plain-data form (lists back to tuples), with the
    loader's key-path errors; ``label`` names where ``data`` came from (default: the class name)."""
    return load_config(dict(data), cls, label=label)


def config_base(path: str | Path) -> Path:
    """The folder a config file's relative paths resolve against: the repository root when the file
    lives in ``configs/``, else the file's own folder."""
    base = Path(path).resolve().parent
    return base.parent if base.name == "configs" else base


def resolve_path(p: str, base: str | Path) -> str:
    """``p`` made absolute against ``base`` when it is a relative local path; URLs and absolute paths
    are returned unchanged."""
    return p if "://" in p or Path(p).is_absolute() else str(Path(base) / p)
