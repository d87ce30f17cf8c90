"""The build's tasks (DESIGN.md section 5): each runs on a dask worker (or a thread), opens the
store itself, writes a disjoint region and returns a small summary for the journal.

- ``ostia``: :func:`task_ostia` regrids one daily chunk of OSTIA days;
- ``glorys``: :func:`task_glorys` regrids every snapshot of one GLORYS file;
- ``profiles-a``: :func:`task_profiles_a` reads, QCs and vertically aligns one profile file into
  a scratch table under ``<cube>/.build/profiles``;
- ``profiles-b``: :func:`task_profiles_b` rasterises the scratch rows of one daily chunk into
  ``profiles/count``, ``sum`` and ``n_obs``, and saves the chunk's observation-table rows;
- ``profiles-table``: :func:`task_profile_table` (one task, after every ``profiles-b``) writes
  the observation table ``profiles/obs_*`` and its index from those rows (:mod:`cube.obs_table`).

:func:`regrid_static` (run by the driver before the tasks) derives ``ocean_mask`` and
``bottom_level``. Every input is read through :func:`cube.readers.open_product` with the
config's options (:func:`read_input`) and regridded with the one locked weights cache of
:func:`cube.regrid.get_regridder`. A bad input is returned as a reject, never raised.
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import obs_table, readers, store
from .compute import Tasks
from .config import CubeConfig
from .constants import GLORYS_DEPTHS
from .errors import InputError
from .grid import CubeGrid
from .inputs import InputFile, input_path
from .plan import Plan, grid_bbox
from .rasterise import rasterise
from .regrid import get_regridder, regrid_fraction
from .vertical import align_to_levels


def runnable(planned: dict[str, tuple[str, tuple]]) -> Tasks:
    """The planned ``key -> (kind, args)`` with each kind bound to its task function."""
    functions = {"ostia": task_ostia, "glorys": task_glorys, "profiles-a": task_profiles_a,
                 "profiles-b": task_profiles_b, "profiles-table": task_profile_table}
    return {key: (functions[kind], args) for key, (kind, args) in planned.items()}


def read_input(f: InputFile, cfg: CubeConfig, grid: CubeGrid):
    """``f`` read by its product's reader, subset to the cube's region; profile files with the
    config's ``profiles.accepted_qc`` and ``profiles.temperature``."""
    opts = {"bbox": grid_bbox(grid)}
    if f.product in ("en4", "argo"):
        opts.update(accepted_qc=cfg.profiles.accepted_qc, temperature=cfg.profiles.temperature)
    return readers.open_product(input_path(f, cfg), kind=f.product, **opts)


def _reject(f: InputFile, e: InputError) -> dict:
    return {"file": f.url, "reason": e.reason, "detail": e.detail}


def _regridded(f: InputFile, ds, var: str, grid: CubeGrid, index=0) -> np.ndarray:
    """``ds[var].values[index]`` regridded onto the cube grid; a grid the regridder cannot use
    raises InputError naming ``f`` (the regridder itself only knows the axes)."""
    try:
        return get_regridder(ds["lat"].values, ds["lon"].values, grid)(ds[var].values[index])
    except InputError as e:
        raise InputError(f.url, e.reason, e.detail) from None


def task_ostia(url: str, cfg: CubeConfig, grid: CubeGrid, t0: int, t1: int, files: dict[int, InputFile]) -> dict:
    """Regrid the OSTIA days [t0, t1) of the daily axis and write them; missing days stay NaN."""
    block = np.full((t1 - t0, grid.nlat, grid.nlon), np.nan, np.float32)
    rejects = []
    for t, f in files.items():
        try:
            block[t - t0] = _regridded(f, read_input(f, cfg, grid), "analysed_sst", grid)
        except InputError as e:
            rejects.append(_reject(f, e))
    store.open_root(url, storage_options=cfg.output_storage_options)["ostia/analysed_sst"][t0:t1] = block
    return {"rejects": rejects, "days_written": len(files) - len(rejects)}


def task_glorys(url: str, cfg: CubeConfig, grid: CubeGrid, f: InputFile, tindex: list[int]) -> dict:
    """Regrid every snapshot of one GLORYS file and write it at its index on the glorys time axis."""
    try:
        ds = read_input(f, cfg, grid)
        snapshots = [_regridded(f, ds, "thetao", grid, k).astype(np.float32) for k in range(len(tindex))]
    except InputError as e:
        return {"rejects": [_reject(f, e)]}
    arr = store.open_root(url, storage_options=cfg.output_storage_options)["glorys/thetao"]
    for ti, snapshot in zip(tindex, snapshots):
        arr[ti] = snapshot
    return {"rejects": []}


def regrid_static(cfg: CubeConfig, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """``ocean_mask`` and ``bottom_level`` from the first readable GLORYS snapshot (else OSTIA land)."""
    grid = plan.grid
    for f, _ in plan.glorys_files:
        try:
            theta = _regridded(f, read_input(f, cfg, grid), "thetao", grid)
        except InputError:
            continue
        valid = np.isfinite(theta)
        # A column's valid levels are contiguous from the top; count them.
        bottom = np.cumprod(valid, axis=0).sum(axis=0).astype(np.int8)
        return bottom > 0, bottom
    for f in plan.ostia_by_day.values():
        try:
            ds = read_input(f, cfg, grid)
        except InputError:
            continue
        ocean = regrid_fraction(~ds["land"].values.astype(bool), ds["lat"].values, ds["lon"].values, grid) >= 0.5
        return ocean, np.zeros(ocean.shape, np.int8)
    raise InputError("inputs", "no_valid_data", "no readable GLORYS or OSTIA file to derive the ocean mask from")


def task_profiles_a(url: str, cfg: CubeConfig, grid: CubeGrid, f: InputFile, day0: np.datetime64, n_days: int) -> dict:
    """Read, QC and vertically align one profile file; save the in-cube rows to the scratch area."""
    try:
        table = read_input(f, cfg, grid)
        _check_some_profile_passed(f, table)
    except InputError as e:
        return {"rejects": [_reject(f, e)], "used": 0, "rejected": {}, "levels_rejected": 0, "day_range": None}
    values = align_to_levels(table.depth, table.temp, GLORYS_DEPTHS)
    day = (table.day - day0).astype(np.int64)
    _, _, inside = grid.cell_index(table.lat, table.lon)
    keep = inside & (day >= 0) & (day < n_days) & np.isfinite(values).any(axis=1)
    rejected = dict(table.rejected)
    for reason, mask in (("outside_region", ~inside), ("outside_time_range", inside & ((day < 0) | (day >= n_days))),
                         ("no_aligned_levels", inside & (day >= 0) & (day < n_days) & ~np.isfinite(values).any(axis=1))):
        if mask.any():
            rejected[reason] = rejected.get(reason, 0) + int(mask.sum())
    _write_scratch(url, cfg.output_storage_options, f, day=day[keep], lat=table.lat[keep], lon=table.lon[keep], values=values[keep].astype(np.float32))
    rng = [int(day[keep].min()), int(day[keep].max())] if keep.any() else None
    return {"rejects": [], "used": int(keep.sum()), "rejected": rejected,
            "levels_rejected": int(table.levels_rejected), "day_range": rng}


def _check_some_profile_passed(f: InputFile, table) -> None:
    """InputError('no_valid_data') when no profile of the file passed QC (profiles outside the
    cube's region count as passed: a global file is not bad because a regional cube skips it)."""
    if len(table) + table.rejected.get("outside_region", 0) > 0:
        return
    total = sum(table.rejected.values())
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(table.rejected.items()))
    raise InputError(f.url, "no_valid_data", f"none of its {total} profiles passed QC ({why})" if total
                     else "the file holds no profiles")


def _scratch_url(url: str, f: InputFile) -> str:
    digest = hashlib.sha1(f.key().encode()).hexdigest()[:16]
    return f"{str(url).rstrip('/')}/.build/profiles/{digest}.npz"


def _write_scratch(url: str, storage_options: dict, f: InputFile, **rows: np.ndarray) -> None:
    store.write_npz(_scratch_url(url, f), storage_options, **rows)


def _read_scratch(url: str, storage_options: dict, sources: list[InputFile], t0: int, t1: int) -> list[dict]:
    """The scratch rows of days [t0, t1) of each source file."""
    parts = []
    for f in sources:
        z = store.read_npz(_scratch_url(url, f), storage_options, ("day", "lat", "lon", "values"))
        sel = (z["day"] >= t0) & (z["day"] < t1)
        parts.append({k: v[sel] for k, v in z.items()})
    return parts


def task_profiles_b(url: str, grid: CubeGrid, t0: int, t1: int, sources: list[InputFile], block: int,
                    fresh: bool, storage_options: dict | None = None) -> dict:
    """Rasterise the aligned profile rows of days [t0, t1) into ``profiles/count``, ``sum`` and ``n_obs``.

    Works one spatial chunk at a time, so memory is one chunk whatever the grid size; chunks with
    no observation are not written (they read as zeros). When re-computing an existing cube
    (``fresh=False``), a chunk that had data and now has none is overwritten with zeros, which
    makes zarr delete it. The observed (day, cell) rows of the chunks written are saved as the
    chunk's part of the observation table (:func:`cube.obs_table.write_part`); their number is
    returned as ``rows``.
    """
    parts = _read_scratch(url, storage_options, sources, t0, t1)
    root = store.open_root(url, storage_options=storage_options)
    count_arr, sum_arr, nobs_arr = (root[f"profiles/{n}"] for n in ("count", "sum", "n_obs"))
    cat = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in ("day", "lat", "lon")}
    values = np.concatenate([p["values"] for p in parts]) if parts else np.zeros((0, len(GLORYS_DEPTHS)), np.float32)
    raster = rasterise(cat["day"].astype(np.int64) - t0, cat["lat"], cat["lon"], values, grid, t1 - t0)
    with_data = set(zip((raster.row // block).tolist(), (raster.col // block).tolist()))
    observations, table = 0, []
    for bi in range(-(-grid.nlat // block)):
        for bj in range(-(-grid.nlon // block)):
            rows, cols = slice(bi * block, (bi + 1) * block), slice(bj * block, (bj + 1) * block)
            if (bi, bj) in with_data:
                count, total = raster.dense(0, t1 - t0, rows=rows, cols=cols)
            elif not fresh and nobs_arr[t0:t1, rows, cols].any():
                count = np.zeros((t1 - t0, len(GLORYS_DEPTHS)) + nobs_arr[t0:t1, rows, cols].shape[1:], np.int32)
                total = count.astype(np.float32)
            else:
                continue
            count_arr[t0:t1, :, rows, cols] = count
            sum_arr[t0:t1, :, rows, cols] = total
            nobs_arr[t0:t1, rows, cols] = count.sum(axis=1, dtype=np.int32)
            observations += int(count.sum())
            table.append(obs_table.block_rows(count, total, t0, bi * block, bj * block))
    rows = obs_table.concat_rows(table, len(GLORYS_DEPTHS))
    obs_table.write_part(url, t0, t1, rows, storage_options)
    return {"observations": observations, "rows": len(rows["day"])}


def task_profile_table(url: str, parts: list[tuple[int, int, int]], block: int,
                       storage_options: dict | None = None) -> dict:
    """Write the observation table and its index from the ``profiles-b`` parts ``(t0, t1, rows)``
    of every daily chunk (:func:`cube.obs_table.write_table`)."""
    return {"rows": obs_table.write_table(url, parts, block, storage_options=storage_options)}
