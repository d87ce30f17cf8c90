"""Finding a build's inputs: the config's globs and paths expanded into :class:`InputFile` records.

Each input carries its size and a checksum (sha256 of the bytes up to 64 MiB, else the
filesystem's size+mtime token), so a finished cube can tell which inputs it was built from.
A glob that matches nothing is reported (a warning, or an error with ``--strict``: the driver
decides); a path without wildcards that does not exist is an error. Works on any fsspec URL,
reached with the config's ``inputs.storage_options`` (:func:`input_path` hands a file to the
readers with them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import fsspec

from .config import CubeConfig
from .errors import ConfigError, InputError
from .readers.netcdf import FsspecPath, PathArg

PRODUCTS = ("ostia", "glorys", "en4", "argo")


@dataclass(frozen=True)
class InputFile:
    product: str
    url: str
    size: int
    checksum: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def key(self) -> str:
        return f"{self.product}:{self.name}:{self.checksum}"


def expand_inputs(cfg: CubeConfig, unmatched: list[str] | None = None) -> list[InputFile]:
    """Every input file named by the config's globs/paths, sorted, with size and checksum.

    A path without wildcards that does not exist raises ``InputError('not_found')``; a glob that
    matches nothing is appended to ``unmatched`` as ``inputs.<product>: no file matches 'PATTERN'``;
    a store that cannot be reached (no credentials, a wrong endpoint) raises ConfigError naming
    the pattern.
    """
    files = []
    options = cfg.inputs.storage_options
    for product in PRODUCTS:
        urls = set()
        for pattern in getattr(cfg.inputs, product):
            fs, path, matches = _matches(product, pattern, options)
            if not matches and unmatched is not None:
                unmatched.append(f"inputs.{product}: no file matches {pattern!r}")
            if not matches and not any(c in path for c in "*?["):
                raise InputError(pattern, "not_found", "input file does not exist")
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            for m in matches:
                urls.add(m if protocol in ("file", "local") else f"{protocol}://{m}")
        files += [_input_file(product, url, options) for url in sorted(urls)]
    return files


def _matches(product: str, pattern: str, storage_options: dict):
    """(filesystem, path, matching paths) of one input pattern; ConfigError in one line when its
    store cannot be listed (the storage library's own error: botocore, aiohttp, ...)."""
    try:
        fs, path = fsspec.core.url_to_fs(pattern, **storage_options)
        return fs, path, fs.glob(path) if any(c in path for c in "*?[") else [path]
    except ImportError:
        raise  # a missing extra (s3fs): the command line names the extra to install
    except Exception as e:
        raise ConfigError(f"inputs.{product}: cannot list {pattern!r}: {type(e).__name__}: {e}; "
                          f"check inputs.storage_options") from None


def input_path(f: InputFile, cfg: CubeConfig) -> PathArg:
    """What the readers open for ``f``: its URL, with the config's ``inputs.storage_options`` when
    there are any (a :class:`~cube.readers.netcdf.FsspecPath`)."""
    options = cfg.inputs.storage_options
    return FsspecPath(f.url, dict(options)) if options and "://" in f.url else f.url


def _input_file(product: str, url: str, storage_options: dict) -> InputFile:
    """An input with its size and checksum. A match that cannot be read (a directory, a dangling
    link, no permission) is kept with an ``unreadable:`` checksum: the scan rejects it by name."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            return InputFile(product, url, 0, "unreadable:directory")
        return InputFile(product, url, int(info.get("size") or 0), _checksum(fs, path, info))
    except OSError as e:
        return InputFile(product, url, 0, f"unreadable:{type(e).__name__}")


def _checksum(fs, path, info) -> str:
    """Content checksum (sha256 of the bytes) for files up to 64 MiB, else size+mtime token."""
    if (info.get("size") or 0) <= 64 * 2**20:
        return "sha256:" + hashlib.sha256(fs.cat_file(path)).hexdigest()[:32]
    return "token:" + str(fs.checksum(path))
