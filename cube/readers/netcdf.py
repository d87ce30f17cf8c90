"""Opening NetCDF inputs and reading their attributes (every reader goes through here).

:func:`open_netcdf` opens a local path or any fsspec URL (a :class:`FsspecPath` when the URL needs
storage options: credentials, an endpoint) (NetCDF-3 classic/64-bit/CDF-5 and
NetCDF-4/HDF5), after checking the magic number, the size (zero-byte files) and, for NetCDF-3,
that the file is as long as its header says (netCDF-C silently reads a truncated classic file).
Its block holds :data:`NETCDF_LOCK` (netCDF-C is not thread-safe). Variables come back raw
(no masking, scaling or char conversion): :mod:`cube.readers.cf` decodes them. Every problem
raises :class:`cube.errors.InputError` naming the file, never a netCDF4 or ``KeyError`` traceback.
"""

from __future__ import annotations

import os
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import netCDF4
import numpy as np

from cube.errors import InputError


@dataclass(frozen=True)
class FsspecPath(os.PathLike):
    """An fsspec URL and the ``storage_options`` that reach it (``key``/``secret``, an endpoint,
    headers): what a reader takes as ``path`` when the URL alone is not enough. It reads as the
    URL everywhere a path is printed or parsed (``str``, ``os.fspath``), so error messages and
    file-name dates never show the options."""

    url: str
    storage_options: dict = field(default_factory=dict, repr=False, compare=False)

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url


#: What every reader accepts as ``path``: a local path or an fsspec URL (``s3://``, ``memory://``, ...),
#: with its storage options as a :class:`FsspecPath`.
PathArg = str | os.PathLike

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: An HDF5 superblock may sit after a user block of 512 * 2**k bytes; these are the usual places.
HDF5_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048)
CLASSIC_MAGICS = {b"CDF\x01": 1, b"CDF\x02": 2, b"CDF\x05": 5}


def path_name(path: PathArg) -> str:
    """The file name (basename) of a local path or URL, for name-based date and product parsing."""
    text = os.fspath(path) if not isinstance(path, str) else path
    return text.rstrip("/").rsplit("/", 1)[-1]


def _is_remote(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _local_path(text: str) -> str:
    return text[len("file://"):] if text.startswith("file://") else text


def _read_local_head(path: str, nbytes: int) -> tuple[bytes, int]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return fh.read(nbytes), size
    except OSError as exc:
        raise InputError(path, "unreadable", f"cannot open the file: {exc}") from exc


def _fetch_remote(url: str, storage_options: dict) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb", **storage_options) as fh:
            return fh.read()
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(url, "unreadable", f"cannot fetch it with fsspec: {exc}") from exc


def _check_magic(name: str, head: bytes, size: int) -> str:
    """'classic' or 'hdf5', else InputError('unreadable') saying what the file starts with."""
    if size == 0:
        raise InputError(name, "unreadable", "zero-byte file")
    if head[:4] in CLASSIC_MAGICS:
        return "classic"
    if any(head[o:o + 8] == HDF5_MAGIC for o in HDF5_SUPERBLOCK_OFFSETS):
        return "hdf5"
    raise InputError(name, "unreadable",
                     f"not a NetCDF file: starts with {head[:8]!r}, expected b'CDF\\x01', b'CDF\\x02', "
                     f"b'CDF\\x05' or the HDF5 signature")


class _ShortHeader(Exception):
    """The bytes given end inside the NetCDF-3 header."""


_NC_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}


class _HeaderCursor:
    """Big-endian reader over a NetCDF-3 header (classic, 64-bit offset or CDF-5)."""

    def __init__(self, buf: bytes, version: int):
        self.buf, self.pos, self.version = buf, 4, version

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _ShortHeader
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def count(self) -> int:  # NON_NEG: 8 bytes in CDF-5, else 4
        return struct.unpack(">Q", self.take(8))[0] if self.version == 5 else self.int32()

    def offset(self) -> int:  # OFFSET: 4 bytes in CDF-1, else 8
        return self.int32() if self.version == 1 else struct.unpack(">Q", self.take(8))[0]

    def name(self) -> None:
        n = self.count()
        self.take((n + 3) // 4 * 4)

    def attributes(self) -> None:
        self.int32()  # NC_ATTRIBUTE tag or ABSENT
        for _ in range(self.count()):
            self.name()
            nc_type = self.int32()
            n = self.count() * _NC_TYPE_SIZE.get(nc_type, 1)
            self.take((n + 3) // 4 * 4)


def _classic_data_end(buf: bytes, version: int) -> int:
    """Byte offset where the last variable's data ends, from a NetCDF-3 header."""
    cur = _HeaderCursor(buf, version)
    numrecs = cur.count()
    streaming = numrecs == (2**64 - 1 if version == 5 else 2**32 - 1)
    cur.int32()
    dims = []
    for _ in range(cur.count()):
        cur.name()
        dims.append(cur.count())
    cur.attributes()
    cur.int32()
    variables = []
    for _ in range(cur.count()):
        cur.name()
        dimids = [cur.count() for _ in range(cur.count())]
        cur.attributes()
        nc_type = cur.int32()
        cur.count()  # vsize: recomputed below (it saturates for huge variables)
        begin = cur.offset()
        is_record = bool(dimids) and dims[dimids[0]] == 0
        shape = [dims[d] for d in (dimids[1:] if is_record else dimids)]
        variables.append((begin, is_record, int(np.prod(shape, dtype=np.int64)) * _NC_TYPE_SIZE.get(nc_type, 1)))
    rec_sizes = [nb for _, rec, nb in variables if rec]
    # A lone record variable is not padded to 4 bytes per record (netCDF classic spec).
    recsize = rec_sizes[0] if len(rec_sizes) == 1 else sum((nb + 3) // 4 * 4 for nb in rec_sizes)
    end = cur.pos
    for begin, is_record, nbytes in variables:
        if not is_record:
            end = max(end, begin + nbytes)
        elif numrecs and not streaming:
            end = max(end, begin + (numrecs - 1) * recsize + nbytes)
    return end


def _check_classic_size(name: str, read_head, size: int, version: int) -> None:
    """InputError('unreadable') when a NetCDF-3 file is shorter than its header says."""
    nbytes = 1 << 16
    while True:
        buf = read_head(min(nbytes, size))
        try:
            end = _classic_data_end(buf, version)
            break
        except (IndexError, struct.error, ValueError) as exc:
            raise InputError(name, "unreadable", f"corrupt NetCDF-3 header: {exc}") from exc
        except _ShortHeader:
            if len(buf) >= size:
                raise InputError(name, "unreadable", f"truncated: the file ({size} bytes) ends inside its NetCDF-3 header")
            nbytes *= 4
    if size < end:
        raise InputError(name, "unreadable", f"truncated: its NetCDF-3 header says the data end at byte {end}, "
                                             f"but the file has {size} bytes")


def _configure(ds: netCDF4.Dataset) -> netCDF4.Dataset:
    # Raw arrays only: packing, fills and chars are decoded here, the same way for every product.
    ds.set_auto_maskandscale(False)
    ds.set_always_mask(False)
    ds.set_auto_chartostring(False)
    return ds


#: netCDF-C / HDF5 are not thread-safe: concurrent opens or reads from dask's threads crash the
#: process (segfault). Every netCDF4 call of the readers happens inside ``open_netcdf``'s block,
#: which holds this lock; decoding, regridding and writing after the block run in parallel.
NETCDF_LOCK = threading.RLock()


@contextmanager
def open_netcdf(path: PathArg) -> Iterator[netCDF4.Dataset]:
    """Open a NetCDF-3 or NetCDF-4 file (local path or fsspec URL) with raw, undecoded variables.

    Zero-byte, truncated and non-NetCDF inputs raise ``InputError(path, 'unreadable', ...)``, as do
    netCDF-C errors while the block reads data. Remote files are read whole into memory (before the
    lock is taken). The block runs under :data:`NETCDF_LOCK`.
    """
    with _open_locked(path) as ds:
        yield ds


@contextmanager
def _open_locked(path: PathArg) -> Iterator[netCDF4.Dataset]:
    text = os.fspath(path) if not isinstance(path, str) else path
    if _is_remote(text):
        data = _fetch_remote(text, path.storage_options if isinstance(path, FsspecPath) else {})
        kind = _check_magic(text, data[:2056], len(data))
        if kind == "classic":
            _check_classic_size(text, lambda n: data[:n], len(data), CLASSIC_MAGICS[data[:4]])
        opener = lambda: netCDF4.Dataset(path_name(text) or "remote.nc", mode="r", memory=data)  # noqa: E731
    else:
        local = _local_path(text)
        head, size = _read_local_head(local, 2056)
        kind = _check_magic(text, head, size)
        if kind == "classic":
            _check_classic_size(text, lambda n: _read_local_head(local, n)[0], size, CLASSIC_MAGICS[head[:4]])
        opener = lambda: netCDF4.Dataset(local, mode="r")  # noqa: E731
    with NETCDF_LOCK:
        try:
            ds = _configure(opener())
        except (OSError, RuntimeError, ValueError) as exc:
            raise InputError(text, "unreadable", f"netCDF4 cannot open it: {exc}") from exc
        try:
            yield ds
        except (OSError, RuntimeError) as exc:
            raise InputError(text, "unreadable", f"reading failed: {exc}") from exc
        finally:
            ds.close()


def require_var(ds: netCDF4.Dataset, name: str, path) -> netCDF4.Variable:
    """The variable ``name``, or ``InputError(path, 'missing_variable')`` in one short line.

    The detail names the variable and how many the file has, not the whole list (a real Argo
    file has ~180 variables).
    """
    if name not in ds.variables:
        raise InputError(path, "missing_variable", f"variable {name!r} not found among the file's "
                                                   f"{len(ds.variables)} variables")
    return ds.variables[name]


def optional_var(ds: netCDF4.Dataset, *names: str) -> netCDF4.Variable | None:
    """The first of ``names`` present in the file, or None."""
    for name in names:
        if name in ds.variables:
            return ds.variables[name]
    return None


def var_attrs(var: netCDF4.Variable) -> dict:
    """A variable's attributes as a plain dict."""
    return {k: var.getncattr(k) for k in var.ncattrs()}


def global_attrs(ds: netCDF4.Dataset) -> dict:
    """The file's global attributes as a plain dict."""
    return {k: ds.getncattr(k) for k in ds.ncattrs()}


def attr_text(value) -> str:
    """An attribute as lower-case text (bytes decoded, arrays joined), '' for None."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, np.ndarray):
        value = " ".join(str(v) for v in value.ravel())
    return str(value).strip().lower()
