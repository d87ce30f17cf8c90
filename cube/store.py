"""Zarr v3 storage of the cube: create its groups and arrays from ``cube.layout``, grow the time
axis (appends), root attributes, consolidation, and the atomic "stage then rename" publication of
a build. The builder's tasks write array regions themselves (zarr region writes on the arrays
created here).

Also the build lock (:class:`BuildLock`), the task journal of a resumable build, and the
removal of what a build made. The time encoding written here is :mod:`cube.layout`'s
(``days_to_int``/``hours_to_int``), the same module the loaders read it back with.

Any fsspec URL works (local path, ``s3://``, ``memory://``); every function that reaches the
store takes the ``storage_options`` that reach it (credentials, endpoint: what
``fsspec.url_to_fs`` and zarr take; None = fsspec's defaults, for ``s3://`` the AWS_*
variables). The builder is the only writer;
readers open the published cube read-only, through :func:`cube.open.open_cube` (xarray) or
``loaders.reader.CubeReader`` (zarr), both checking its contract first.

Visibility rules (what a concurrent reader sees):
- a new cube is built under ``<name>.partial`` and renamed to its final name only when complete,
  so the final name never shows a partial cube (a rebuild moves the old cube aside first: for a
  moment the name holds nothing, never a mix);
- readers open through the root's consolidated metadata (``open_cube``, ``loaders``' CubeReader),
  which holds the metadata (shapes, chunking, attributes) of every node. A reader therefore sees
  the hierarchy as it was when that one ``zarr.json`` object was last written, whatever the
  builder writes afterwards to the arrays' own ``zarr.json`` files;
- an append (:func:`resize_time`) grows arrays by rewriting only their own metadata documents
  and writes chunks past the old end; chunks holding old days are either untouched or replaced
  whole by identical values (each chunk write is atomic: temp file + rename locally, one PUT on
  object stores). Coordinates grow in place, keeping their chunk length, so their old chunks
  are never rewritten. The root ``zarr.json``, with the new attributes *and* the new
  consolidated metadata, is written last, in one atomic write (:func:`consolidate`). A reader
  that opened before sees the old cube until it reopens; one that opens during the append sees
  the old cube; one that opens after sees the new one: the old or the new number of days, never
  a day without its values;
- the exception: an append that brings data for days the cube already has (a late profile file,
  a replaced OSTIA file) rewrites those chunks in place; a reader sees each chunk old or new, and
  may see some of them new before the consolidated metadata changes.
"""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import time
from pathlib import Path

import fsspec
import numpy as np
import zarr

from .errors import DepthcubeError
from .layout import (BOUNDS_DIM, CONTRACT, OLDER_CONTRACTS, TIME_UNITS_DAYS, TIME_UNITS_HOURS, VARIABLES, ChunkConfig, CompressionConfig,
                     VariableSpec, array_compressors, cell_bounds, coordinate_attrs, days_to_int, encode_attrs,
                     group_attrs, hours_to_int)
from .layout import json_default as _json_default


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def fs_and_path(url: str, storage_options: dict | None = None):
    """The fsspec filesystem of ``url`` (opened with ``storage_options``) and the path inside it."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    return fs, path


def write_npz(url: str, storage_options: dict | None, **arrays: np.ndarray) -> None:
    """Save ``arrays`` as one ``.npz`` object at ``url`` (replaced whole; parent folders made)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fs, path = fs_and_path(url, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, buf.getvalue())


def read_npz(url: str, storage_options: dict | None, names) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the ``.npz`` object at ``url`` (FileNotFoundError when absent)."""
    fs, path = fs_and_path(url, storage_options)
    with np.load(io.BytesIO(fs.cat_file(path))) as z:
        return {k: z[k] for k in names}


def zarr_options(url: str, storage_options: dict | None) -> dict:
    """The ``storage_options`` keyword for zarr/xarray opening ``url``: zarr refuses options for a
    local path, so they travel only with URLs."""
    return {"storage_options": dict(storage_options)} if storage_options and is_remote(url) else {}


def exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = fs_and_path(url, storage_options)
    return fs.exists(path.rstrip("/") + "/zarr.json")


def open_root(url: str, mode: str = "r+", storage_options: dict | None = None) -> zarr.Group:
    """The cube's root group. Writers bypass the consolidated metadata (it is rewritten last)."""
    return zarr.open_group(str(url), mode=mode, zarr_format=3, use_consolidated=(mode == "r"),
                           **zarr_options(url, storage_options))


def create_cube(url: str, *, days: np.ndarray, glorys_times: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                depth: np.ndarray, chunking: ChunkConfig, compression: CompressionConfig, tile: int,
                attrs: dict, storage_options: dict | None = None) -> zarr.Group:
    """Create every group, coordinate and (empty) data array of the cube at ``url`` (overwriting).
    Each group gets its ``Conventions``/``title``; lat and lon get their cell bounds."""
    root = zarr.open_group(str(url), mode="w", zarr_format=3, attributes=encode_attrs(attrs),
                           **zarr_options(url, storage_options))
    coords = {
        "time": days_to_int(days), "lat": np.asarray(lat, np.float64),
        "lon": np.asarray(lon, np.float64), "depth": np.asarray(depth, np.float32),
    }
    group_time = {"ostia": coords["time"], "profiles": coords["time"], "glorys": hours_to_int(glorys_times)}
    codec = array_compressors(compression)
    block = chunking.spatial or tile
    for gname in ("ostia", "glorys", "profiles", "static"):
        g = root.create_group(gname, attributes=group_attrs(gname))
        gcoords = dict(coords, time=group_time.get(gname))
        dims_used = {d for v in VARIABLES if v.group == gname for d in v.dims}
        for dim in sorted(dims_used & set(gcoords)):
            _write_coordinate(g, dim, gcoords[dim], codec, hourly=(gname == "glorys"))
            if dim in ("lat", "lon"):
                _write_bounds(g, dim, gcoords[dim], codec)
        sizes = {d: len(gcoords[d]) for d in dims_used & set(gcoords)}
        sizes.update(obs=0, time_block=-(-len(coords["time"]) // chunking.days),
                     lat_block=-(-len(coords["lat"]) // block), lon_block=-(-len(coords["lon"]) // block))
        for var in (v for v in VARIABLES if v.group == gname):
            _create_variable(g, var, sizes, chunking, tile, codec)
    root["profiles/obs_start"].attrs.update({"block_days": chunking.days, "block_cells": block})
    return root


def _write_coordinate(group: zarr.Group, dim: str, values: np.ndarray, codec, hourly: bool = False):
    attrs = dict(coordinate_attrs(dim))
    if dim in ("lat", "lon"):
        attrs["bounds"] = f"{dim}_bnds"
    if dim == "time":
        attrs.update(units=TIME_UNITS_HOURS if hourly else TIME_UNITS_DAYS, calendar="proleptic_gregorian")
    arr = group.create_array(dim, shape=values.shape, dtype=values.dtype, chunks=(max(len(values), 1),),
                             compressors=codec, dimension_names=(dim,), attributes=attrs, fill_value=0)
    if len(values):
        arr[:] = values


def _write_bounds(group: zarr.Group, dim: str, centres: np.ndarray, codec):
    """``<dim>_bnds (dim, bnds)``: the cell edges of a horizontal coordinate (CF section 7.1)."""
    bounds = cell_bounds(centres)
    arr = group.create_array(f"{dim}_bnds", shape=bounds.shape, dtype=bounds.dtype, chunks=(max(len(bounds), 1), 2),
                             compressors=codec, dimension_names=(dim, BOUNDS_DIM), fill_value=0,
                             attributes={"units": coordinate_attrs(dim)["units"]})
    if bounds.size:
        arr[:] = bounds


def _create_variable(group: zarr.Group, var: VariableSpec, sizes: dict, chunking: ChunkConfig, tile: int, codec):
    shape = tuple(sizes[d] for d in var.dims)
    group.create_array(
        var.name, shape=shape, dtype=var.dtype, chunks=var.chunks(sizes, chunking, tile),
        shards=var.shards(sizes, chunking, tile), compressors=codec, fill_value=var.fill_value, dimension_names=var.dims,
        attributes={**var.attrs, **_coordinates_attr(var.dims)},
    )


def _coordinates_attr(dims: tuple[str, ...]) -> dict:
    """CF ``coordinates`` of a variable: its dims that have a coordinate variable besides time
    (the table's ``obs`` and the index's block dims have none)."""
    names = [d for d in dims if d in ("depth", "lat", "lon")]
    return {"coordinates": " ".join(names)} if names else {}


def resize_time(root: zarr.Group, group: str, new_times: np.ndarray, hourly: bool = False):
    """Grow a group's time axis (and every array on it) to ``new_times`` (a superset, same start),
    in place: array metadata documents are rewritten and the coordinate's new values written past
    its old end, keeping its chunk length, so no chunk a reader of the old cube reads changes."""
    g = root[group]
    values = hours_to_int(new_times) if hourly else days_to_int(new_times)
    for name, arr in g.arrays():
        if name != "time" and arr.metadata.dimension_names and arr.metadata.dimension_names[0] == "time":
            arr.resize((len(values),) + arr.shape[1:])
    grow_coordinate(g["time"], values)


def grow_coordinate(arr: zarr.Array, values: np.ndarray):
    """Resize a 1-D coordinate to ``values`` and write it from the first index where it differs
    (past the old end; also right after an interrupted append that resized it but died before
    writing), keeping its chunk length so the chunks of the old values are not rewritten."""
    arr.resize(values.shape)
    differ = np.flatnonzero(arr[:] != values)
    if differ.size:
        arr[int(differ[0]):] = values[int(differ[0]):]


def write_attrs(root: zarr.Group, attrs: dict):
    """Update the root attributes, structured ones as JSON strings (``layout.encode_attrs``)."""
    root.attrs.update(encode_attrs(attrs))


def consolidate(url: str, attrs: dict | None = None, storage_options: dict | None = None):
    """Write the root ``zarr.json`` once, with the root attributes updated by ``attrs`` (structured
    ones as JSON strings, ``layout.encode_attrs``) and the consolidated metadata of every node (the documents zarr wrote for them, unchanged).

    One atomic write, so a reader switches from the old hierarchy to the new one at once, with
    attributes and shapes that belong together (updating the attributes first, then calling
    ``zarr.consolidate_metadata``, leaves a moment without consolidated metadata: readers that
    require it fail). The layout is zarr-python's: flat member paths at the root, child groups
    with an empty inline ``consolidated_metadata``.
    """
    fs, path = fs_and_path(url, storage_options)
    base = path.rstrip("/")
    group = zarr.open_group(str(url), mode="r", zarr_format=3, use_consolidated=False,
                            **zarr_options(url, storage_options))
    members = {}
    for name, _ in group.members(max_depth=None):
        doc = json.loads(fs.cat_file(f"{base}/{name}/zarr.json"))
        if doc.get("node_type") == "group":
            doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {}}
        members[name] = doc
    root_doc = json.loads(fs.cat_file(f"{base}/zarr.json"))
    # Encoded after merging, so the dict attributes of a cube written before they were JSON
    # strings are converted too.
    root_doc["attributes"] = encode_attrs({**root_doc.get("attributes", {}), **(attrs or {})})
    root_doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False,
                                         "metadata": dict(sorted(members.items()))}
    _write_atomic(fs, f"{base}/zarr.json", json.dumps(root_doc, indent=2).encode())


def _write_atomic(fs, path: str, data: bytes):
    """Replace one object at once: temp file + rename locally; a single PUT elsewhere."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def publish(staging: str, final: str, storage_options: dict | None = None):
    """Move a complete staged cube to its final name.

    Local: ``os.replace`` of the directory (atomic when the final name does not exist; an old cube
    is first renamed aside to ``<final>.old``, so the final name is never partial). Remote: fsspec
    move (copy + delete on object stores, which have no rename; the staging prefix is only deleted
    afterwards). The caller holds the :class:`BuildLock` and has checked that ``final`` and
    ``<final>.old`` are absent or depthcube's (a leftover ``.old`` of a killed publish is removed).
    """
    if not is_remote(final) and not is_remote(staging):
        final_p = Path(final.removeprefix("file://"))
        old = final_p.with_name(final_p.name + ".old")
        if old.exists():
            fsspec.filesystem("file").rm(str(old), recursive=True)
        if final_p.exists():
            os.replace(final_p, old)
        os.replace(Path(staging.removeprefix("file://")), final_p)
        if old.exists():
            fsspec.filesystem("file").rm(str(old), recursive=True)
        return
    fs, spath = fs_and_path(staging, storage_options)
    _, fpath = fs_and_path(final, storage_options)
    if fs.exists(fpath):
        fs.rm(fpath, recursive=True)
    fs.copy(spath, fpath, recursive=True)
    fs.rm(spath, recursive=True)


def remove(url: str, storage_options: dict | None = None):
    """Delete a cube or staging folder depthcube made (callers check :func:`node_kind` first)."""
    fs, path = fs_and_path(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


# --------------------------------------------------------------------------------------------
# What an output path holds, and the build lock
# --------------------------------------------------------------------------------------------


class OutputError(DepthcubeError, ValueError):
    """The output path cannot be written as asked; the message names it and says what to do."""


class BuildLockedError(OutputError):
    """Another live build holds the output's lock."""


def node_kind(url: str, storage_options: dict | None = None) -> str:
    """What ``url`` holds: ``"absent"``; ``"empty"`` (an empty folder); ``"cube"`` (a finished
    depthcube cube); ``"staging"`` (a cube depthcube began and did not finish); ``"foreign"``
    (anything else: a file, a folder of other things, another program's Zarr store).

    A path is depthcube's when its root ``zarr.json`` is a Zarr v3 group whose ``contract``
    attribute is depthcube's (:data:`cube.layout.CONTRACT`, or one of the
    :data:`~cube.layout.OLDER_CONTRACTS` an earlier version wrote: still depthcube's own, so
    ``--rebuild`` replaces it), written the moment a build creates the cube; ``status: complete``
    marks a finished one.
    """
    fs, path = fs_and_path(url, storage_options)
    path = path.rstrip("/")
    if not (os.path.lexists(path) if not is_remote(url) else fs.exists(path)):
        return "absent"
    if fs.isdir(path) and not fs.exists(f"{path}/zarr.json"):
        return "empty" if not fs.ls(path) else "foreign"
    try:
        doc = json.loads(fs.cat_file(f"{path}/zarr.json"))
    except (OSError, ValueError):
        return "foreign"
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else {}
    if doc.get("node_type") != "group" or attrs.get("contract") not in (CONTRACT, *OLDER_CONTRACTS):
        return "foreign"
    return "cube" if attrs.get("status") == "complete" else "staging"


def lock_url(output: str) -> str:
    """Where the build lock of ``output`` lives: ``<output>.lock``, beside it (not inside: a new
    cube is staged under another name and renamed, and the lock must cover both names)."""
    return str(output).rstrip("/") + ".lock"


#: A lock object on a remote store older than this, from another host, counts as abandoned.
REMOTE_LOCK_STALE_S = 24 * 3600


class BuildLock:
    """Exclusive right to write one output (the cube, its ``.partial`` and ``.old`` names).

    Local filesystem: ``fcntl.flock`` on ``<output>.lock`` holding the owner's pid. The kernel
    drops the lock when its process dies (even by SIGKILL), so a stale file from a dead build
    never blocks: the next build takes it. Remote fsspec stores have no lock primitive: the lock
    is an object ``<output>.lock`` holding pid, host and start time, written then read back
    (two builds starting within the same instant can both win). It counts as stale when its
    host is this one and its pid is dead, or when it is older than :data:`REMOTE_LOCK_STALE_S`
    from another host; delete the object by hand to clear a lock from a crashed remote build.
    A live holder makes :meth:`acquire` raise :class:`BuildLockedError`:
    ``another build (pid N) is writing OUTPUT``.
    """

    def __init__(self, output: str, storage_options: dict | None = None):
        self.output = str(output)
        self.url = lock_url(output)
        self.storage_options = storage_options
        self._fd: int | None = None
        self._token: dict | None = None

    def __enter__(self) -> "BuildLock":
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        if is_remote(self.url):
            self._acquire_remote()
        else:
            self._acquire_local()

    def _locked(self, owner: dict) -> BuildLockedError:
        host = f" on {owner['host']}" if owner.get("host") not in (None, socket.gethostname()) else ""
        return BuildLockedError(f"another build (pid {owner.get('pid', '?')}{host}) is writing {self.output}; "
                                f"wait for it to finish")

    def _acquire_local(self):
        import fcntl

        path = self.url.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _parse_owner(os.pread(fd, 4096, 0))
                os.close(fd)
                raise self._locked(owner) from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False  # the holder released (unlinked) it between our open and flock
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner()).encode(), 0)
        self._fd = fd

    def _acquire_remote(self):
        fs, path = fs_and_path(self.url, self.storage_options)
        if fs.exists(path):
            owner = _parse_owner(fs.cat_file(path))
            if not _remote_owner_stale(owner):
                raise self._locked(owner)
        self._token = _owner()
        fs.pipe_file(path, json.dumps(self._token).encode())
        if _parse_owner(fs.cat_file(path)) != self._token:
            raise self._locked(_parse_owner(fs.cat_file(path)))

    def release(self):
        if self._fd is not None:
            path = self.url.removeprefix("file://")
            try:
                os.unlink(path)  # while still holding it: a waiting opener sees a new inode
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        elif self._token is not None:
            fs, path = fs_and_path(self.url, self.storage_options)
            try:
                if _parse_owner(fs.cat_file(path)) == self._token:
                    fs.rm(path)
            except FileNotFoundError:
                pass
            self._token = None


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}


def _parse_owner(data: bytes) -> dict:
    try:
        owner = json.loads(data)
        return owner if isinstance(owner, dict) else {}
    except ValueError:
        return {}


def _remote_owner_stale(owner: dict) -> bool:
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return time.time() - float(owner.get("started", 0)) > REMOTE_LOCK_STALE_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_os_error(e: OSError, output: str, staging: str | None) -> str:
    """One line for a filesystem failure while building ``output``; ``staging`` is where the
    work done so far is kept (``<output>.partial``, or the cube for an append), None if nowhere."""
    where = e.filename or staging or output
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        kept = (f"the finished work is kept in {staging}: free some space and run the same command again to resume"
                if staging else "nothing was written: free some space and run again")
        return f"no space left on the device writing {where}; {kept}"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {output}: {os.strerror(e.errno).lower()} ({where})"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot create {output}: a part of the path is a file, not a folder ({where})"
    return f"{where}: {e.strerror or e}"


class Journal:
    """Append-only record of completed build tasks (JSON lines) so an interrupted build resumes.

    Written only by the driver, one line per finished task, flushed and fsynced, so a kill can at
    worst lose the line of a task that will simply run again (tasks are idempotent region writes).
    """

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url).rstrip("/") + "/.build/journal.jsonl"
        self.fs, self.path = fs_and_path(self.url, storage_options)
        self.entries: dict[str, dict] = {}
        if self.fs.exists(self.path):
            for line in self.fs.cat_file(self.path).decode().splitlines():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a kill
                self.entries[e["task"]] = e

    def done(self, task: str) -> bool:
        return task in self.entries

    def record(self, entry: dict):
        self.entries[entry["task"]] = entry
        line = json.dumps(entry, default=_json_default) + "\n"
        if is_remote(self.url):
            body = "".join(json.dumps(e, default=_json_default) + "\n" for e in self.entries.values())
            self.fs.pipe_file(self.path, body.encode())
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
