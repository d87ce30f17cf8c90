"""Planning a build (pure: no writes, no reading beyond the readers' scans).

- :func:`scan` reads each OSTIA/GLORYS file's dates and axes through the readers' scan functions
  (a one-cell slab, so bad files are found before any heavy work), picks the grid
  (:func:`choose_grid`) and the daily axis (:func:`daily_axis`): a :class:`Plan`.
- :func:`phase_a_tasks`, :func:`phase_b_tasks` and :func:`table_task` list the build's tasks as
  ``key -> (kind, args)``; :func:`cube.tasks.runnable` binds the kinds to the task functions.
  Keys carry input checksums, so a task whose inputs changed runs again and one already in the
  journal is skipped.
- :func:`same_build`, :func:`why_not_append` and :func:`fingerprint` compare a plan with an
  existing cube's attributes or a staging folder's journal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import readers
from .config import CubeConfig
from .spec import to_dict
from .errors import ConfigError, InputError
from .grid import CubeGrid
from .inputs import PRODUCTS, InputFile, input_path
from .layout import CONTRACT
from .readers.horizontal import as_bbox

#: What the scan does with a bad input: raise (``--strict``) or record it and go on.
Reject = Callable[[InputFile, InputError], None]


@dataclass
class Plan:
    grid: CubeGrid
    days: np.ndarray                      # datetime64[D], the daily axis
    ostia_by_day: dict[int, InputFile]    # day index -> file
    glorys_times: np.ndarray              # datetime64[s], sorted unique snapshot times
    glorys_files: list[tuple[InputFile, list[int]]]  # file -> indices into glorys_times
    profile_files: list[InputFile]
    skipped: list[dict] = field(default_factory=list)  # good files outside the cube's days


def grid_bbox(grid: CubeGrid) -> tuple[float, float, float, float]:
    """(lat south, lat north, lon west, lon east) of the cube grid: the readers' ``bbox``."""
    return (grid.lat_south, grid.lat_north, grid.lon_west, grid.lon_east)


def scan(cfg: CubeConfig, files: list[InputFile], reject: Reject) -> Plan:
    """Dates of every OSTIA/GLORYS file from its metadata (checked by the readers' scan functions, so
    unreadable or mislabelled files go to ``reject`` before any heavy work), the grid and the daily axis."""
    by_product = {p: [f for f in files if f.product == p] for p in PRODUCTS}

    def guarded(f, fn):
        try:
            return fn()
        except InputError as e:
            reject(f, e)
            return None

    ostia_meta = [(f, guarded(f, lambda: readers.scan_ostia(input_path(f, cfg)))) for f in by_product["ostia"]]
    ostia_meta = [(f, meta) for f, meta in ostia_meta if meta is not None]
    grid = choose_grid(cfg, ostia_meta[0][1] if ostia_meta else None)
    ostia_days = _ostia_days(ostia_meta, grid, reject)
    days = daily_axis(cfg, ostia_days)
    index = {d: i for i, d in enumerate(days)}
    ostia_by_day = {index[d]: f for d, f in ostia_days.items() if d in index}
    skipped = [{"file": f.url, "reason": "outside_time_range",
                "detail": f"day {d} is not in the cube's days {days[0]}..{days[-1]}"}
               for d, f in sorted(ostia_days.items()) if d not in index]
    scanned = [(f, guarded(f, lambda: _scan_glorys(f, cfg, grid))) for f in by_product["glorys"]]
    glorys_times, glorys_files = _glorys_axis([(f, meta) for f, meta in scanned if meta is not None], reject)
    return Plan(grid, days, ostia_by_day, glorys_times, glorys_files, by_product["en4"] + by_product["argo"], skipped)


def _ostia_days(ostia_meta: list[tuple[InputFile, dict]], grid: CubeGrid, reject: Reject) -> dict:
    """day -> OSTIA file; a second file for a day (``duplicate_time``) or a file outside the
    cube's region (``outside_region``) goes to ``reject``."""
    ostia_days: dict[np.datetime64, InputFile] = {}
    for f, meta in ostia_meta:
        day = np.datetime64(meta["time"][0], "D")
        if day in ostia_days:
            reject(f, InputError(f.url, "duplicate_time", f"OSTIA day {day} is already provided by {ostia_days[day].name}"))
        elif (outside := _outside_region(f, meta, grid)) is not None:
            reject(f, outside)
        else:
            ostia_days[day] = f
    return ostia_days


def _glorys_axis(scanned: list[tuple[InputFile, dict]], reject: Reject):
    """(sorted unique snapshot times, [(file, indices into them)]) of the scanned GLORYS files; a
    file off the common grid (``bad_grid``) or repeating a time (``duplicate_time``) goes to ``reject``."""
    entries = []
    seen_times: dict[np.datetime64, str] = {}
    common = _common_lattice([meta for _, meta in scanned])
    for f, meta in scanned:
        odd = _off_lattice(f, meta, common)
        if odd is not None:
            reject(f, odd)
            continue
        times = [np.datetime64(t, "s") for t in meta["time"]]
        dup = [t for t in times if t in seen_times]
        if dup:
            reject(f, InputError(f.url, "duplicate_time", f"GLORYS time {dup[0]} is already provided by {seen_times[dup[0]]}"))
            continue
        for t in times:
            seen_times[t] = f.name
        entries.append((f, times))
    glorys_times = np.array(sorted(seen_times), dtype="datetime64[s]")
    tindex = {t: i for i, t in enumerate(glorys_times)}
    return glorys_times, [(f, [tindex[t] for t in times]) for f, times in entries]


def _scan_glorys(f: InputFile, cfg: CubeConfig, grid: CubeGrid) -> dict:
    """The readers' GLORYS scan, after two checks of the file's axes against the cube: a grid,
    not a point extract (``bad_grid``), and some overlap with the cube's region (``outside_region``)."""
    meta = readers.scan_glorys(input_path(f, cfg))
    if meta["lat"].size < 2 or meta["lon"].size < 2:
        raise InputError(f.url, "bad_grid", f"a {meta['lat'].size} x {meta['lon'].size} point extract, not a grid "
                                            f"(at least 2 x 2 cells are needed to regrid)")
    outside = _outside_region(f, meta, grid)
    if outside is not None:
        raise outside
    return readers.scan_glorys(input_path(f, cfg), bbox=grid_bbox(grid))


def _outside_region(f: InputFile, meta: dict, grid: CubeGrid) -> InputError | None:
    """``outside_region`` when the file's cells (centres +- half a step) miss the cube's region."""
    lat, lon = meta["lat"], meta["lon"]
    half = [float(np.median(np.diff(a))) / 2 if a.size > 1 else 0.0 for a in (lat, lon)]
    box = as_bbox(grid_bbox(grid))
    if box.lat_near(lat, half[0]).any() and box.lon_near(lon, half[1]).any():
        return None
    return InputError(f.url, "outside_region",
                      f"covers lat {lat.min():.4g}..{lat.max():.4g}, lon {lon.min():.4g}..{lon.max():.4g}; the cube is "
                      f"lat {grid.lat_south:.4g}..{grid.lat_north:.4g}, lon {grid.lon_west:.4g}..{grid.lon_east:.4g}")


def _lattice(meta: dict) -> tuple[float, float, float, float] | None:
    """(lat step, lon step, first lat, first lon) of a scanned grid; None for a single point."""
    lat, lon = meta["lat"], meta["lon"]
    if lat.size < 2 or lon.size < 2:
        return None
    return float(np.median(np.diff(lat))), float(np.median(np.diff(lon))), float(lat[0]), float(lon[0])


def _same_lattice(a, b) -> bool:
    """Same steps (0.1 %) and centres offset by whole steps (to 1 % of a step)."""
    steps_equal = all(abs(a[k] - b[k]) <= 1e-3 * abs(b[k]) for k in (0, 1))
    offsets = ((a[2] - b[2]) / b[0], (a[3] - b[3]) / b[1])
    return steps_equal and all(abs(o - round(o)) <= 0.01 for o in offsets)


def _common_lattice(metas: list[dict]) -> tuple[tuple, int] | None:
    """The grid most GLORYS files share (ties: the first file's) and how many share it."""
    groups: list[list] = []
    for lattice in filter(None, map(_lattice, metas)):
        group = next((g for g in groups if _same_lattice(lattice, g[0])), None)
        group.append(lattice) if group is not None else groups.append([lattice])
    return (max(groups, key=len)[0], len(max(groups, key=len))) if groups else None


def _off_lattice(f: InputFile, meta: dict, common: tuple[tuple, int] | None) -> InputError | None:
    """A ``bad_grid`` error when ``f`` is not on the common GLORYS grid, so one snapshot from
    another product or resolution cannot change what the target is."""
    mine = _lattice(meta)
    if mine is None or common is None or _same_lattice(mine, common[0]):
        return None
    ref, n = common
    return InputError(f.url, "bad_grid", f"grid of {mine[0]:.4g} x {mine[1]:.4g} deg cells centred from "
                                         f"({mine[2]:.4f}, {mine[3]:.4f}) is not the {ref[0]:.4g} x {ref[1]:.4g} deg "
                                         f"grid (centres from ({ref[2]:.4f}, {ref[3]:.4f})) of {n} other GLORYS file(s)")


def choose_grid(cfg: CubeConfig, first_ostia: dict | None) -> CubeGrid:
    """The cube grid: ``grid.region`` (else the first OSTIA file's extent) at ``grid.resolution``,
    snapped to the GLORYS 1/12 deg lattice for ``native``, else to multiples of the resolution."""
    if cfg.grid.region is not None:
        la0, la1, lo0, lo1 = cfg.grid.region
    elif first_ostia is not None:
        lat, lon = first_ostia["lat"], first_ostia["lon"]
        half = float(np.median(np.diff(lat))) / 2 if lat.size > 1 else 0.025
        la0, la1, lo0, lo1 = lat[0] - half, lat[-1] + half, lon[0] - half, lon[-1] + half
    else:
        raise InputError("config", "no_grid", "no grid.region given and no readable OSTIA file to take the extent from")
    if cfg.grid.resolution == "native":
        res = 1.0 / 12.0
        # Snap to the GLORYS grid: cell centres at -180 + k/12, -80 + k/12.
        lo0 = -180 + np.floor((lo0 + 180) / res + 0.5) * res - res / 2
        la0 = -80 + np.floor((la0 + 80) / res + 0.5) * res - res / 2
    else:
        res = float(cfg.grid.resolution)
        la0, lo0 = np.floor(la0 / res + 1e-6) * res, np.floor(lo0 / res + 1e-6) * res
        la1, lo1 = np.ceil(la1 / res - 1e-6) * res, np.ceil(lo1 / res - 1e-6) * res
    la0, la1 = max(la0, -90.0), min(la1, 90.0)
    return CubeGrid(float(la0), float(lo0), res, int(round((la1 - la0) / res)), int(round((lo1 - lo0) / res)))


def daily_axis(cfg: CubeConfig, ostia_days: dict) -> np.ndarray:
    """The cube's days: ``time.start``..``time.end``, a missing end taken from the OSTIA days."""
    if cfg.time.start and cfg.time.end:
        start, end = np.datetime64(cfg.time.start, "D"), np.datetime64(cfg.time.end, "D")
    elif ostia_days:
        start = np.datetime64(cfg.time.start, "D") if cfg.time.start else min(ostia_days)
        end = np.datetime64(cfg.time.end, "D") if cfg.time.end else max(ostia_days)
    else:
        raise InputError("config", "no_time_axis", "no time.start/end given and no readable OSTIA file to take the days from")
    if end < start:
        key, day = ("time.start", start) if cfg.time.start else ("time.end", end)
        raise ConfigError(f"{key}: {day} leaves no day to build: the OSTIA files cover "
                          f"{min(ostia_days)}..{max(ostia_days)}")
    return np.arange(start, end + np.timedelta64(1, "D"), dtype="datetime64[D]")


# --------------------------------------------------------------------------------------------
# The task list
# --------------------------------------------------------------------------------------------


def _chunks(n: int, size: int):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _chunk_key(kind: str, t0: int, t1: int, files) -> str:
    """Task key of a daily chunk: changes when the chunk's extent or any of its inputs change."""
    digest = hashlib.sha1("".join(f.key() for f in files).encode()).hexdigest()[:12]
    return f"{kind}:{t0}:{t1}:{digest}"


def profiles_a_key(f: InputFile, plan: Plan) -> str:
    """Task key of reading one profile file (its journal entry holds the file's day range)."""
    return f"profiles-a:{f.key()}:{plan.days[0]}:{len(plan.days)}"


def phase_a_tasks(url: str, cfg: CubeConfig, plan: Plan) -> dict[str, tuple[str, tuple]]:
    """key -> (kind, args) of the first phase: OSTIA chunks, GLORYS files, profile files."""
    tasks = {}
    for t0, t1 in _chunks(len(plan.days), cfg.chunks.days):
        files = {t: f for t, f in plan.ostia_by_day.items() if t0 <= t < t1}
        tasks[_chunk_key("ostia", t0, t1, files.values())] = ("ostia", (url, cfg, plan.grid, t0, t1, files))
    for f, tindex in plan.glorys_files:
        tasks[f"glorys:{f.key()}:{tindex}"] = ("glorys", (url, cfg, plan.grid, f, tindex))
    for f in plan.profile_files:
        tasks[profiles_a_key(f, plan)] = ("profiles-a", (url, cfg, plan.grid, f, plan.days[0], len(plan.days)))
    return tasks


def phase_b_tasks(url: str, cfg: CubeConfig, plan: Plan, journal_entries: dict, fresh: bool) -> dict[str, tuple[str, tuple]]:
    """key -> (kind, args) of the second phase: rasterising the profiles of each daily chunk,
    from the day ranges phase a recorded in the journal."""
    ranges = []
    for f in plan.profile_files:
        e = journal_entries.get(profiles_a_key(f, plan), {})
        if e.get("day_range"):
            ranges.append((f, e["day_range"]))
    tasks = {}
    for t0, t1 in _chunks(len(plan.days), cfg.chunks.days):
        sources = [f for f, (lo, hi) in ranges if lo < t1 and hi >= t0]
        tasks[_chunk_key("profiles-b", t0, t1, sources)] = (
            "profiles-b", (url, plan.grid, t0, t1, sources, cfg.chunks.spatial or cfg.patches.tile_size, fresh,
                           cfg.output_storage_options))
    return tasks


def table_task(url: str, cfg: CubeConfig, tasks_b: dict, journal_entries: dict) -> dict[str, tuple[str, tuple]]:
    """key -> (kind, args) of the last phase: one task writing the observation table from the
    parts of the ``profiles-b`` tasks ``tasks_b`` (all done, their row counts in the journal).
    Its key is derived from theirs, so it runs again whenever any of them ran."""
    parts = [(args[2], args[3], journal_entries[key].get("rows")) for key, (_, args) in tasks_b.items()]
    digest = hashlib.sha1(json.dumps(sorted(tasks_b)).encode()).hexdigest()[:12]
    block = cfg.chunks.spatial or cfg.patches.tile_size
    return {f"profiles-table:{digest}": ("profiles-table", (url, parts, block, cfg.output_storage_options))}


def input_days(plan: Plan, journal_entries: dict, rejects: list[dict]) -> dict[str, list[str]]:
    """url -> [first, last] UTC day (ISO) of the data each input gave the cube: its OSTIA day,
    its GLORYS snapshots, the days of its used profiles. Inputs that gave nothing (rejected ones
    included) are absent."""
    days: dict[str, list] = {}
    for t, f in plan.ostia_by_day.items():
        days.setdefault(f.url, []).append(plan.days[t])
    for f, indices in plan.glorys_files:
        days.setdefault(f.url, []).extend(plan.glorys_times[indices].astype("datetime64[D]"))
    for f in plan.profile_files:
        span = journal_entries.get(profiles_a_key(f, plan), {}).get("day_range")
        if span:
            days.setdefault(f.url, []).extend(plan.days[span])
    rejected = {r["file"] for r in rejects}
    return {url: [str(min(v)), str(max(v))] for url, v in days.items() if len(v) and url not in rejected}


# --------------------------------------------------------------------------------------------
# A plan against an existing cube or staging folder
# --------------------------------------------------------------------------------------------


def fingerprint(cfg: CubeConfig, files: list[InputFile], plan: Plan) -> str:
    """Identity of a plan, recorded in a staging folder's journal: a rerun resumes only its own plan
    (whatever storage options, credentials included, reach the stores)."""
    payload = json.dumps([CONTRACT, _without_storage_options(to_dict(cfg)), [f.key() for f in files],
                          str(plan.days[0]), len(plan.days), [str(t) for t in plan.glorys_times]], default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


def portable(cfg: CubeConfig) -> CubeConfig:
    """The config as recorded in the cube: inputs are listed separately, so leave them out."""
    return dataclasses.replace(cfg, inputs=type(cfg.inputs)(), compute=type(cfg.compute)())


def recorded_config(cfg: CubeConfig) -> dict:
    """``portable(cfg)`` as the cube's JSON attributes hold it (and read it back). The storage
    options are left out: they hold credentials, and how a store is reached is not what the cube
    is (a cube built before they existed compares equal)."""
    return json.loads(json.dumps(_without_storage_options(to_dict(portable(cfg)))))


def _without_storage_options(config: dict) -> dict:
    """A config's plain-data form without ``output_storage_options`` and ``inputs.storage_options``."""
    out = {k: v for k, v in config.items() if k != "output_storage_options"}
    out["inputs"] = {k: v for k, v in config.get("inputs", {}).items() if k != "storage_options"}
    return out


def same_build(attrs: dict, cfg: CubeConfig, files: list[InputFile]) -> bool:
    """True when the complete cube with root attributes ``attrs`` was built from this config and these
    inputs, under this contract."""
    old = attrs.get("build", {})
    return (attrs.get("status") == "complete" and attrs.get("contract") == CONTRACT
            and old.get("config") == recorded_config(cfg)
            and sorted(i["checksum"] + i["url"] for i in attrs.get("inputs", []))
            == sorted(f.checksum + f.url for f in files))


def why_not_append(attrs: dict, cfg: CubeConfig, plan: Plan) -> str | None:
    """None when an existing cube can be grown in place (only inputs changed and the axes only
    grew), else why not, in a few words."""
    old = attrs.get("build", {})
    old_glorys = np.array(old.get("glorys_times", []), dtype="datetime64[s]")
    checks = (
        (attrs.get("contract") == CONTRACT, f"it was built with contract {str(attrs.get('contract')).rsplit(' ', 1)[-1]}, "
                                            f"this version writes {CONTRACT.rsplit(' ', 1)[-1]}"),
        (attrs.get("status") == "complete", f"its status is {attrs.get('status')!r}"),
        (old.get("config") == recorded_config(cfg), "the build config changed"),
        (old.get("grid") == plan.grid.to_dict(), "the grid changed"),
        (str(plan.days[0]) == old.get("start"), f"the first day moves from {old.get('start')} to {plan.days[0]}"),
        (len(plan.days) >= old.get("n_days", 0), f"the days shrink from {old.get('n_days')} to {len(plan.days)}"),
        (np.array_equal(plan.glorys_times[: len(old_glorys)], old_glorys), "the GLORYS snapshot times changed"),
    )
    return next((why for ok, why in checks if not ok), None)
