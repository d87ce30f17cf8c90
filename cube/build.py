"""``depthcube build``: raw NetCDF -> cube.zarr (DESIGN.md sections 4, 5 and 8).

:func:`build` is the driver; each step names the module that does it (none imports torch):

1. **inputs** (:mod:`cube.inputs`): expand the globs, size and checksum every file.
2. **lock** the output (``<cube>.lock``, :class:`cube.store.BuildLock`) for the rest of the build;
   never delete or replace a path that is not a depthcube cube (replacing a cube that cannot be
   updated in place needs ``rebuild``).
3. **plan** (:mod:`cube.plan`, pure): scan the files' dates and axes through the readers, pick
   the grid and the daily axis, list the tasks.
4. **run** (:mod:`cube.tasks` on :class:`cube.compute.TaskRunner`): the static fields
   (``ocean_mask``, ``bottom_level``) and the patch index (``cube.patches``) first, then the
   tasks, in parallel over time with region writes to disjoint chunks, each journalled as it ends;
   last, one task writes the profile observation table from the rasterising tasks' parts
   (:mod:`cube.obs_table`).
5. **publish** (:func:`_finish`, then :func:`cube.store.publish`): patch index (``cube.index``),
   attributes (config, version, inputs with checksums and days, rejects) and consolidated
   metadata in one write (``cube.store.consolidate``), then rename ``<cube>.partial`` -> ``<cube>``.

Incremental: a finished cube records every input with its checksum. Re-running with the same
inputs does nothing; new inputs that extend the daily axis are appended in place (only the
affected chunks are recomputed, consolidated metadata rewritten last). An interrupted build keeps
its staging folder and journal (``.build/journal.jsonl``) and resumes where it stopped.
Peak memory is bounded by one task per worker (a chunk of days or one input file), independent
of the number of input files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version as pkg_version

import numpy as np

from . import store
from .config import CubeConfig
from .spec import to_dict
from .constants import GLORYS_DEPTHS
from .errors import ConfigError, InputError
from .grid import CubeGrid
from .inputs import InputFile, expand_inputs
from .layout import CONTRACT, decode_attrs
from .plan import (Plan, Reject, fingerprint, input_days, phase_a_tasks, phase_b_tasks, recorded_config, same_build,
                   scan, table_task, why_not_append)
from .tasks import regrid_static, runnable

log = logging.getLogger("depthcube.build")


@dataclass
class BuildReport:
    """What a build did: numbers for the summary and the cube's attributes."""

    output: str
    status: str = "built"
    inputs: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # good files this cube does not use (outside its days)
    warnings: list[str] = field(default_factory=list)   # e.g. a glob that matches nothing
    staging: str = ""                                   # where this build writes (``<cube>.partial`` or the cube)
    profiles_used: int = 0
    profiles_rejected: dict[str, int] = field(default_factory=dict)
    levels_rejected: int = 0
    tasks_run: int = 0
    tasks_skipped: int = 0
    seconds: float = 0.0
    bytes_read: int = 0

    def reject(self, f: InputFile | str, err: InputError):
        url = f.url if isinstance(f, InputFile) else f
        self.rejects.append({"file": url, "reason": err.reason, "detail": err.detail})


def build(cfg: CubeConfig, *, storage_options: dict | None = None, strict: bool | None = None,
          progress: bool | None = None, scheduler: str | None = None, local_cluster: int | None = None,
          rebuild: bool = False) -> BuildReport:
    """Build (or bring up to date) the cube described by ``cfg``. Returns a :class:`BuildReport`.

    ``storage_options`` reach the output store (fsspec/zarr: ``key``, ``secret``,
    ``endpoint_url``, ...), over the config's ``output_storage_options`` key by key; the inputs
    are reached with ``cfg.inputs.storage_options``. Neither is recorded in the cube.

    Input problems never raise (the file goes to the reject list) unless ``strict``; then the
    first bad file raises :class:`InputError` naming it, before anything is published. With
    ``strict``, an up-to-date cube whose ``rejects`` list is not empty raises for its first reject,
    and a glob that matches nothing raises :class:`ConfigError` (otherwise it is a warning).

    The output is never deleted or replaced unless it is a depthcube cube (:func:`cube.store.node_kind`):
    anything else at ``cfg.output``, or at ``<output>.partial`` / ``<output>.old`` (the names a
    build stages at and moves the old cube aside to), raises :class:`~cube.store.OutputError`
    untouched. A cube that cannot be brought up to date in place (another config, a daily axis
    that does not only grow) is replaced only with ``rebuild``. The whole build holds the
    output's :class:`~cube.store.BuildLock`; filesystem failures (disk full, read-only, a path
    under a file) raise OutputError with one line, leaving a staging folder a rerun resumes.
    """
    t_start = time.perf_counter()
    if storage_options:
        cfg = dataclasses.replace(cfg, output_storage_options={**cfg.output_storage_options, **storage_options})
    opts = cfg.output_storage_options
    strict = cfg.strict if strict is None else strict
    progress = cfg.compute.progress if progress is None else progress
    final = _output_path(cfg.output)
    report = BuildReport(output=final, staging=final + ".partial")
    files = _inputs(cfg, report, strict)
    try:
        _refuse_foreign(final, opts)  # before the lock too, so no lock file appears beside a refused path
        with store.BuildLock(final, opts):
            _build_locked(cfg, files, report, strict, progress, scheduler, local_cluster, rebuild)
    except OSError as e:
        raise store.OutputError(store.describe_os_error(e, final, _work_kept(report.staging, opts))) from e
    report.seconds = time.perf_counter() - t_start
    return report


def _inputs(cfg: CubeConfig, report: BuildReport, strict: bool) -> list[InputFile]:
    """The config's input files, recorded in ``report``; a glob matching nothing is a warning
    (a ConfigError with ``strict``)."""
    unmatched: list[str] = []
    files = expand_inputs(cfg, unmatched)
    if unmatched and strict:
        raise ConfigError(unmatched[0])
    report.warnings += unmatched
    for line in unmatched:
        log.warning(line)
    report.bytes_read = sum(f.size for f in files)
    report.inputs = [dataclasses.asdict(f) for f in files]
    return files


def _build_locked(cfg: CubeConfig, files: list[InputFile], report: BuildReport, strict: bool, progress: bool,
                  scheduler: str | None, local_cluster: int | None, rebuild: bool):
    """The build proper, under the output's lock: plan, stage, run, publish; fills ``report``."""
    opts = cfg.output_storage_options
    existing = _existing_cube(report.output, rebuild, opts)
    if existing is not None and same_build(existing, cfg, files):
        if strict:
            _check_strict_rejects(existing)
        report.status = "up to date"
        return
    plan = _plan(cfg, files, report, strict, existing)
    append = existing is not None
    report.staging = target = report.output if append else report.staging
    journal = _resumable_journal(target, cfg, files, plan, append, rebuild)
    ocean_mask, bottom = regrid_static(cfg, plan)
    patches = _patches(cfg, plan.grid, ocean_mask)
    if append:
        _grow(target, plan, opts)
    elif journal is None:
        journal = _create_staging(target, cfg, files, plan)
    root = store.open_root(target, storage_options=opts)
    root["static/ocean_mask"][:] = ocean_mask
    root["static/bottom_level"][:] = bottom
    keys = _run_tasks(target, cfg, plan, journal, report, strict, progress, scheduler, local_cluster, fresh=not append)
    _finish(target, cfg, plan, patches, report, files, keys, append, input_days(plan, journal.entries, report.rejects))
    if not append:
        store.publish(target, report.output, opts)
    report.status = "appended" if append else "built"


def _plan(cfg: CubeConfig, files: list[InputFile], report: BuildReport, strict: bool, existing: dict | None) -> Plan:
    """The scanned plan (bad inputs in ``report``, or raised with ``strict``); OutputError when it
    cannot grow the ``existing`` cube in place."""
    plan = scan(cfg, files, _rejecter(report, strict))
    report.skipped += plan.skipped
    why_not = None if existing is None else why_not_append(existing, cfg, plan)
    if why_not is not None:
        raise store.OutputError(f"{report.output} holds a depthcube cube that cannot be brought up to date in place "
                                f"({why_not}); run again with --rebuild to replace it")
    return plan


def _rejecter(report: BuildReport, strict: bool) -> Reject:
    """What the scan does with a bad input: raise it with ``strict``, else list it in ``report``."""
    def reject(f: InputFile, err: InputError):
        if strict:
            raise err
        report.reject(f, err)
    return reject


def _resumable_journal(target: str, cfg: CubeConfig, files: list[InputFile], plan: Plan, append: bool,
                       rebuild: bool) -> store.Journal | None:
    """The journal to go on with: the cube's own when appending, a staging folder's when it
    holds this very plan (an interrupted build), else None (start a fresh staging folder)."""
    opts = cfg.output_storage_options
    if append:
        return store.Journal(target, opts)
    if not store.exists(target, opts) or rebuild:
        return None
    journal = store.Journal(target, opts)
    if journal.entries.get("__plan__", {}).get("fingerprint") != fingerprint(cfg, files, plan):
        return None  # a stale staging folder from another plan: start again
    return journal


def _create_staging(target: str, cfg: CubeConfig, files: list[InputFile], plan: Plan) -> store.Journal:
    """An empty cube at ``target`` (whatever staging was there removed) and its journal, which
    records the plan's fingerprint."""
    opts = cfg.output_storage_options
    store.remove(target, opts)
    store.create_cube(target, days=plan.days, glorys_times=plan.glorys_times, lat=plan.grid.lat,
                      lon=plan.grid.lon, depth=GLORYS_DEPTHS, chunking=cfg.chunks, compression=cfg.compression,
                      tile=cfg.patches.tile_size, attrs={"contract": CONTRACT, "status": "building"},
                      storage_options=opts)
    journal = store.Journal(target, opts)
    journal.record({"task": "__plan__", "fingerprint": fingerprint(cfg, files, plan)})
    return journal


def _run_tasks(target: str, cfg: CubeConfig, plan: Plan, journal: store.Journal, report: BuildReport, strict: bool,
               progress: bool, scheduler: str | None, local_cluster: int | None, fresh: bool) -> list[str]:
    """Run both phases' tasks not yet in the journal, on one runner; returns every task key of the plan."""
    tasks = phase_a_tasks(target, cfg, plan)
    report.tasks_skipped = 0

    def run_pending(planned: dict, phase: str) -> None:
        todo = runnable({k: v for k, v in planned.items() if not journal.done(k)})
        report.tasks_skipped += len(planned) - len(todo)
        _run_phase(runner, todo, journal, report, strict, phase=phase)

    with _task_runner(cfg, progress, scheduler, local_cluster) as runner:  # one cluster for all phases
        run_pending(tasks, "a")
        # Phase b (rasterising profiles) needs the day ranges recorded by phase a.
        tasks_b = phase_b_tasks(target, cfg, plan, journal.entries, fresh)
        run_pending(tasks_b, "b")
        # The observation table needs every chunk's rows, in time order: one task after phase b.
        task_t = table_task(target, cfg, tasks_b, journal.entries)
        run_pending(task_t, "table")
    keys = sorted(set(tasks) | set(tasks_b) | set(task_t))
    _collect(journal, report, keys)
    return keys


def _work_kept(staging: str, storage_options: dict) -> str | None:
    """``staging`` if a failed build left its work there for a rerun to resume, else None."""
    try:
        return staging if store.node_kind(staging, storage_options) in ("staging", "cube") else None
    except OSError:
        return None


def _reachable_kind(final: str, storage_options: dict) -> str:
    """``final``'s :func:`~cube.store.node_kind`; OutputError in one line when the output's store
    cannot be reached at all (no credentials, a wrong endpoint: the storage library's own error);
    filesystem errors are the caller's to describe."""
    try:
        return store.node_kind(final, storage_options)
    except (OSError, ImportError):
        raise
    except Exception as e:
        raise store.OutputError(f"cannot reach {final}: {type(e).__name__}: {e}; check its storage options "
                                f"(output_storage_options, --storage-options)") from None


def _output_path(output: str) -> str:
    """The output as the build addresses it: local paths absolute (``-o .`` is the current folder,
    not ``./..partial``), URLs as given, without a trailing slash."""
    if store.is_remote(output):
        return str(output).rstrip("/")
    return os.path.abspath(os.path.expanduser(str(output).removeprefix("file://")))


def _refuse_foreign(final: str, storage_options: dict) -> str:
    """``final``'s :func:`~cube.store.node_kind`, after checking that nothing there or at its
    staging names is someone else's (OutputError otherwise). An empty folder at the final name
    counts as someone else's (a folder the user made); an empty ``.partial`` is a leftover of a
    build killed as it began, and is reused."""
    kind = _reachable_kind(final, storage_options)
    if kind in ("foreign", "empty"):
        raise store.OutputError(f"{final} exists and is not a depthcube cube; depthcube never deletes or "
                                f"replaces it: give another output path (-o)")
    for suffix, role in ((".partial", "stages a new cube"), (".old", "moves the old cube aside")):
        if store.node_kind(final + suffix, storage_options) == "foreign":
            raise store.OutputError(f"{final}{suffix} exists and was not made by depthcube, which {role} "
                                    f"there: move it away and run again")
    return kind


def _existing_cube(final: str, rebuild: bool, storage_options: dict) -> dict | None:
    """The root attributes of the cube at ``final`` (None when absent or ``rebuild``)."""
    if _refuse_foreign(final, storage_options) == "absent" or rebuild:
        return None
    return decode_attrs(store.open_root(final, mode="r", storage_options=storage_options).attrs.asdict())


def _check_strict_rejects(attrs: dict):
    """``--strict`` on an up-to-date cube: the bad inputs it lists still fail the build."""
    rejects = attrs.get("rejects", [])
    if rejects:
        r = rejects[0]
        raise InputError(r["file"], r["reason"], f"{r.get('detail') or ''} (a reject of the up-to-date cube; "
                                                 f"{len(rejects)} in all)".lstrip())


def _grow(target: str, plan: Plan, storage_options: dict):
    """Grow the time axes in place. The root ``zarr.json`` (attributes and consolidated metadata)
    is left alone until :func:`_finish`, so readers keep seeing the old cube meanwhile, and an
    interrupted append is found and finished by the next build (its attributes still say complete)."""
    root = store.open_root(target, storage_options=storage_options)
    store.resize_time(root, "ostia", plan.days)
    store.resize_time(root, "profiles", plan.days)
    store.resize_time(root, "glorys", plan.glorys_times, hourly=True)


def _task_runner(cfg: CubeConfig, progress: bool, scheduler: str | None, local_cluster: int | None):
    """The runner of every phase of one build: a cluster (``--local-cluster``/``--scheduler``, else the
    config's) is connected once, its dashboard link printed, and closed when the build's phases end."""
    from .compute import TaskRunner

    return TaskRunner(scheduler=scheduler or cfg.compute.scheduler, local_cluster=local_cluster or cfg.compute.local_cluster,
                      threads=cfg.compute.threads, progress=progress)


def _run_phase(runner, todo: dict, journal: store.Journal, report: BuildReport, strict: bool, phase: str):
    def on_result(key: str, result: dict):
        if strict and result.get("rejects"):
            r = result["rejects"][0]
            raise InputError(r["file"], r["reason"], r["detail"])
        journal.record({"task": key, **result})
        report.tasks_run += 1

    desc = {"a": "build: read+regrid", "b": "build: rasterise profiles", "table": "build: profile table"}[phase]
    runner.run(todo, on_result, desc=desc)


def _collect(journal: store.Journal, report: BuildReport, keys: list[str]):
    """Sum the journal entries of this plan's tasks into the report. Entries of other plans (the
    build an append extends, inputs since removed) are ignored; rejects are sorted, so the
    report and the cube's attributes do not depend on the order tasks finished in."""
    seen = {(r["file"], r["reason"]) for r in report.rejects}
    for key in keys:
        e = journal.entries.get(key, {})
        for r in e.get("rejects", []):
            if (r["file"], r["reason"]) not in seen:
                report.rejects.append(r)
                seen.add((r["file"], r["reason"]))
        if key.startswith("profiles-a:"):
            report.profiles_used += e.get("used", 0)
            report.levels_rejected += e.get("levels_rejected", 0)
            for reason, n in e.get("rejected", {}).items():
                report.profiles_rejected[reason] = report.profiles_rejected.get(reason, 0) + n
    report.rejects.sort(key=lambda r: (r["file"], r["reason"]))
    report.profiles_rejected = dict(sorted(report.profiles_rejected.items()))


def _patches(cfg: CubeConfig, grid: CubeGrid, ocean_mask: np.ndarray):
    from .patches import build_patches
    from .tiling import assign_splits

    return assign_splits(build_patches(ocean_mask, grid, cfg.patches), cfg.split)


def _grow_patch_index(url: str, patches, cfg: CubeConfig) -> bool:
    """Bring the patch index of an appended cube up to date in place, when its tiles and splits
    did not change: only ``obs_count`` and its time axis grow (old chunks keep their values), so
    readers of the old cube never see the index disappear. False when the tiles changed."""
    from .index import obs_count

    root = store.open_root(url, storage_options=cfg.output_storage_options)
    g = root["patches"]
    gattrs = decode_attrs(g.attrs.asdict())
    same = (gattrs.get("patch_config") == to_dict(cfg.patches) and gattrs.get("split_config") == to_dict(cfg.split)
            and g["patch"].shape[0] == len(patches)
            and all(np.array_equal(np.asarray(g[c][:], dtype=object).astype(str), patches[c].to_numpy().astype(str))
                    for c in ("patch", "row0", "col0", "split")))
    if not same:
        return False
    counts = obs_count(root, patches, cfg.patches.tile_size)
    store.grow_coordinate(g["time"], root["profiles/time"][:])
    g["obs_count"].resize(counts.shape)
    g["obs_count"][:] = counts
    return True


def _finish(url: str, cfg: CubeConfig, plan: Plan, patches, report: BuildReport, files: list[InputFile],
            task_keys: list[str], append: bool = False, input_days: dict | None = None):
    """Patch index, then attributes and consolidated metadata in one write (the moment an append
    becomes visible to readers, see ``cube.store``). Each input is recorded with the first and
    last day of the data it gave (``days``, see :func:`cube.plan.input_days`)."""
    from .index import write_patch_index

    if not (append and _grow_patch_index(url, patches, cfg)):
        write_patch_index(url, patches, plan.grid, cfg)
    store.consolidate(url, storage_options=cfg.output_storage_options, attrs={
        "contract": CONTRACT,
        "status": "complete",
        "title": "depthcube: OSTIA, GLORYS and in-situ profiles on one grid",
        "Conventions": "CF-1.10",
        "software": f"depthcube {_version()}",
        "created_by": "depthcube build",
        "build": {"config": recorded_config(cfg), "grid": plan.grid.to_dict(), "start": str(plan.days[0]),
                  "n_days": len(plan.days), "glorys_times": [str(t) for t in plan.glorys_times],
                  "task_keys": task_keys},
        "inputs": [{"url": f.url, "name": f.name, "product": f.product, "size": f.size, "checksum": f.checksum,
                    "days": (input_days or {}).get(f.url)} for f in files],
        "rejects": report.rejects,
        "profiles": {"used": report.profiles_used, "rejected": report.profiles_rejected,
                     "levels_rejected": report.levels_rejected},
    })


def _version() -> str:
    try:
        return pkg_version("depthcube")
    except Exception:
        return "unknown"
