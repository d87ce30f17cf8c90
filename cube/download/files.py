"""Writing downloaded files safely: every file is written under ``<folder>/.partial/`` and renamed
into place only when complete, so a target that exists is whole (that is what resuming relies
on) and an interrupted download leaves nothing under a name the build would read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import fsspec

from cube.errors import DepthcubeError

PARTIAL = ".partial"


class DownloadError(DepthcubeError):
    """A download cannot go on: a missing package or credential, a server error, a bad file."""


def partial_path(target: Path) -> Path:
    """Where ``target`` is written while it is incomplete (a folder the build's globs never match)."""
    folder = target.parent / PARTIAL
    folder.mkdir(parents=True, exist_ok=True)
    return folder / target.name


def publish(partial: Path, target: Path) -> None:
    """Move a complete file into place (atomic on one file system) and drop an emptied ``.partial``."""
    os.replace(partial, target)
    _drop_if_empty(partial.parent)


def discard(partial: Path) -> None:
    """Delete a partial file depthcube wrote (a failed or finished intermediate) and an emptied ``.partial``."""
    partial.unlink(missing_ok=True)
    _drop_if_empty(partial.parent)


def _drop_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # other partial files are still there


def fetch_url(url: str, target: Path, chunk_bytes: int = 1 << 20) -> Path:
    """Stream ``url`` (any fsspec URL: https, file, ...) into the partial file of ``target``; its path.

    The caller checks it and :func:`publish`\\ es it. Server and network errors are one
    :class:`DownloadError` naming the URL.
    """
    partial = partial_path(target)
    try:
        with fsspec.open(url, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk_bytes)
    except FileNotFoundError:
        discard(partial)
        raise DownloadError(f"{url}: not found on the server") from None
    except Exception as e:  # aiohttp and fsspec raise many types for one failed transfer
        discard(partial)
        raise DownloadError(f"{url}: download failed ({type(e).__name__}: {e})") from None
    return partial


def check_netcdf(path: Path, needed: tuple[str, ...], what: str) -> None:
    """DownloadError unless ``path`` is a readable NetCDF file holding the variables ``needed``
    (the file is discarded then)."""
    from cube.errors import InputError
    from cube.readers.netcdf import open_netcdf

    try:
        with open_netcdf(str(path)) as ds:
            missing = [v for v in needed if v not in ds.variables]
    except InputError as e:
        discard(path)
        raise DownloadError(f"{path.name}: the downloaded {what} file is not usable: {e.reason}: {e.detail}") from None
    if missing:
        discard(path)
        raise DownloadError(f"{path.name}: the downloaded {what} file lacks {', '.join(missing)}")
