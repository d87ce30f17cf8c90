"""The profile observation table (``profiles/obs_*``, contract v2) and its index, as the builder
writes them.

One row per observed (UTC day, cell): ``obs_day``, ``obs_row``, ``obs_col`` and the 50 levels of
``profiles/count`` and ``profiles/sum`` at that day and cell (``obs_count``, ``obs_sum``), exactly
the cells where ``count`` has a nonzero level. Rows are sorted by (time block, lat block, lon
block, day, row, col), the blocks being the dense arrays' chunks (``chunks.days`` days,
``chunks.spatial`` or ``patches.tile_size`` cells), so the rows of one (tile, time chunk) are one
contiguous range; ``profiles/obs_start`` / ``obs_stop`` (time_block, lat_block, lon_block) hold
each block's range (``start == stop``: no row).

Building it (the task list is :mod:`cube.plan`'s, the tasks :mod:`cube.tasks`'):

- each ``profiles-b`` task (one daily chunk) takes its rows from the dense blocks it writes
  (:func:`block_rows`, spatial blocks in order) and saves them as a part under
  ``<cube>/.build/table/`` (:func:`write_part`);
- one ``profiles-table`` task after them (:func:`write_table`) streams the parts in time order
  into the table, writing each obs chunk once (memory: one part plus less than one obs chunk,
  whatever the cube size), then the index. It runs whenever a ``profiles-b`` task ran (its key
  is derived from theirs) and when the table was never written, so resume, append and a late
  profile file keep the table equal to the dense arrays. A part that is missing (a ``.build``
  folder removed by hand) is derived from the dense arrays of its chunk instead
  (:func:`dense_rows`), which gives the same rows.
"""

from __future__ import annotations

import logging

import numpy as np

from . import store

log = logging.getLogger("depthcube.build")

#: The table's columns: ``profiles/obs_<field>``.
FIELDS = ("day", "row", "col", "count", "sum")


def empty_rows(n_levels: int) -> dict[str, np.ndarray]:
    return {"day": np.zeros(0, np.int32), "row": np.zeros(0, np.int32), "col": np.zeros(0, np.int32),
            "count": np.zeros((0, n_levels), np.int32), "sum": np.zeros((0, n_levels), np.float32)}


def block_rows(count: np.ndarray, total: np.ndarray, t0: int, r0: int, c0: int) -> dict[str, np.ndarray]:
    """The rows of one dense block of ``profiles/count`` and ``sum`` (days, levels, rows, cols)
    whose origin is (day ``t0``, row ``r0``, col ``c0``): one per (day, cell) with a nonzero count,
    sorted by (day, row, col)."""
    d, r, c = np.nonzero(count.any(axis=1))
    return {"day": (t0 + d).astype(np.int32), "row": (r0 + r).astype(np.int32), "col": (c0 + c).astype(np.int32),
            "count": np.ascontiguousarray(count[d, :, r, c], np.int32),
            "sum": np.ascontiguousarray(total[d, :, r, c], np.float32)}


def concat_rows(parts: list[dict[str, np.ndarray]], n_levels: int) -> dict[str, np.ndarray]:
    if not parts:
        return empty_rows(n_levels)
    return {f: np.concatenate([p[f] for p in parts]) for f in FIELDS}


def _part_url(url: str, t0: int, t1: int) -> str:
    return f"{str(url).rstrip('/')}/.build/table/{t0}-{t1}.npz"


def write_part(url: str, t0: int, t1: int, rows: dict[str, np.ndarray], storage_options: dict | None = None) -> None:
    """Save the rows of the daily chunk [t0, t1) for :func:`write_table` (one object, replaced whole)."""
    store.write_npz(_part_url(url, t0, t1), storage_options, **rows)


def read_part(url: str, t0: int, t1: int, storage_options: dict | None = None) -> dict[str, np.ndarray] | None:
    """The saved rows of the daily chunk [t0, t1), None when there is no part."""
    try:
        return store.read_npz(_part_url(url, t0, t1), storage_options, FIELDS)
    except FileNotFoundError:
        return None


def dense_rows(root, t0: int, t1: int, block: int) -> dict[str, np.ndarray]:
    """The rows of the daily chunk [t0, t1) read back from the dense ``profiles`` arrays, spatial
    block by spatial block (``n_obs`` first, so blocks without observations cost one small read)."""
    count_arr, sum_arr, nobs_arr = (root[f"profiles/{n}"] for n in ("count", "sum", "n_obs"))
    _, n_levels, nlat, nlon = count_arr.shape
    parts = []
    for r0 in range(0, nlat, block):
        for c0 in range(0, nlon, block):
            rows, cols = slice(r0, r0 + block), slice(c0, c0 + block)
            if nobs_arr[t0:t1, rows, cols].any():
                parts.append(block_rows(count_arr[t0:t1, :, rows, cols], sum_arr[t0:t1, :, rows, cols], t0, r0, c0))
    return concat_rows(parts, n_levels)


def write_table(url: str, parts: list[tuple[int, int, int | None]], block: int, from_dense: bool = False,
                storage_options: dict | None = None) -> int:
    """Write ``profiles/obs_*`` and the index from the rows of every daily chunk ``(t0, t1,
    n_rows)``, in time order, and return the number of rows. Each chunk's rows are its part
    (:func:`read_part`), else (or with ``from_dense``) :func:`dense_rows`; ``n_rows`` (None: not
    checked) is what its task reported. Every obs chunk is written once, whole (the last one as
    far as it goes)."""
    root = store.open_root(url, storage_options=storage_options)
    arrays = {f: root[f"profiles/obs_{f}"] for f in FIELDS}
    rows_per_chunk = arrays["day"].chunks[0]
    n_levels = root["profiles/count"].shape[1]
    start_arr, stop_arr = root["profiles/obs_start"], root["profiles/obs_stop"]
    days = int(start_arr.attrs["block_days"])
    n_lat_blocks, n_lon_blocks = start_arr.shape[1:]
    starts = np.zeros((len(parts), n_lat_blocks, n_lon_blocks), np.int64)
    offset, written, carry = 0, 0, empty_rows(n_levels)
    for k, (t0, t1, n) in enumerate(sorted(parts)):
        rows = None if from_dense else read_part(url, t0, t1, storage_options)
        if rows is None:
            if not from_dense:
                log.info("%s: no table part for days [%d, %d): taken from the dense arrays", url, t0, t1)
            rows = dense_rows(root, t0, t1, block)
        _check_part(rows, t0, t1, n, block, n_lon_blocks)
        counts = np.bincount(rows["row"] // block * n_lon_blocks + rows["col"] // block,
                             minlength=n_lat_blocks * n_lon_blocks)
        if t0 // days != k:
            raise RuntimeError(f"table parts do not cover the days block by block: days [{t0}, {t1}) is part {k}")
        starts[k] = (offset + np.cumsum(counts) - counts).reshape(n_lat_blocks, n_lon_blocks)
        offset += len(rows["day"])
        buf = concat_rows([carry, rows], n_levels)
        whole = len(buf["day"]) // rows_per_chunk * rows_per_chunk
        _write_rows(arrays, written, {f: v[:whole] for f, v in buf.items()})
        written += whole
        carry = {f: v[whole:] for f, v in buf.items()}
    _write_rows(arrays, written, carry)
    for arr in arrays.values():
        arr.resize((offset,) + arr.shape[1:])  # a shorter table than before drops the rows past its end
    stops = np.append(starts.ravel()[1:], offset).reshape(starts.shape)
    for arr, values in ((start_arr, starts), (stop_arr, stops)):
        arr.resize(values.shape)
        arr[...] = values
    _remove_stale_parts(url, {(t0, t1) for t0, t1, _ in parts}, storage_options)
    return offset


def _remove_stale_parts(url: str, current: set[tuple[int, int]], storage_options: dict | None = None) -> None:
    """Delete the parts of daily chunks this cube no longer has (an append grew the last chunk)."""
    fs, path = store.fs_and_path(_part_url(url, 0, 0), storage_options)
    folder = path.rsplit("/", 1)[0]
    if not fs.exists(folder):
        return
    for name in fs.ls(folder, detail=False):
        stem = name.rsplit("/", 1)[-1].removesuffix(".npz")
        t0, _, t1 = stem.partition("-")
        if t0.isdigit() and t1.isdigit() and (int(t0), int(t1)) not in current:
            fs.rm(name)


def rewrite_from_dense(url: str) -> int:
    """Rewrite the observation table of the cube at ``url`` from its dense ``profiles/count`` and
    ``sum`` (whatever parts there are); returns the number of rows. For cubes whose dense arrays
    were written directly (analytic test cubes) or edited in place."""
    root = store.open_root(url)
    start = root["profiles/obs_start"]
    days, block = int(start.attrs["block_days"]), int(start.attrs["block_cells"])
    n_days = root["profiles/count"].shape[0]
    return write_table(url, [(t0, min(t0 + days, n_days), None) for t0 in range(0, n_days, days)], block,
                       from_dense=True)


def _write_rows(arrays: dict, at: int, rows: dict[str, np.ndarray]) -> None:
    """Rows written at table row ``at`` on, the arrays grown first where they end before them."""
    n = len(rows["day"])
    if n:
        for f, arr in arrays.items():
            if arr.shape[0] < at + n:
                arr.resize((at + n,) + arr.shape[1:])
            arr[at:at + n] = rows[f]


def _check_part(rows: dict, t0: int, t1: int, n: int | None, block: int, n_lon_blocks: int) -> None:
    """A part must hold the rows its task reported, of its days, in block order (else the table
    would silently disagree with its index): RuntimeError otherwise."""
    day, row, col = rows["day"], rows["row"], rows["col"]
    key = ((row // block * n_lon_blocks + col // block).astype(np.int64) * (t1 - t0) + (day - t0)) * 2**40 \
        + row.astype(np.int64) * 2**20 + col
    ok = ((n is None or len(day) == n) and (day.size == 0 or (day.min() >= t0 and day.max() < t1))
          and bool(np.all(np.diff(key) > 0)))
    if not ok:
        raise RuntimeError(f"table part for days [{t0}, {t1}) has {len(day)} rows (expected {n}) or rows out of "
                           f"order: rebuild the cube (depthcube build --rebuild)")
