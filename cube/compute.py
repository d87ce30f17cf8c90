"""Run build tasks on dask: the local threaded scheduler by default, a LocalCluster of worker
processes (``local_cluster=N``) or an existing ``dask.distributed`` scheduler (``scheduler=ADDRESS``).

Tasks are independent ``fn(*args) -> dict`` calls that write disjoint Zarr regions themselves and
return a small summary. ``on_result(key, result)`` is called in the driver as each finishes (the
builder journals it there), and a :class:`cube.progress.Progress` counts them (a bar on a
terminal, one line per phase elsewhere). When a task or ``on_result`` raises, the threaded
:meth:`TaskRunner.run` returns (raising) only after the tasks still running have finished, and on
a cluster the unfinished tasks are cancelled (a LocalCluster's workers are stopped when the runner
closes): nothing keeps writing behind the caller's back.

A :class:`TaskRunner` connects to (or starts) one cluster the first time it has work and keeps it
for every later phase until it is closed, printing the dask dashboard link when it connects.
While it holds a cluster, ``distributed``'s own INFO lines (scheduler start, workers joining and
leaving) are held back, unless the root logger is at DEBUG (``depthcube -v``): they would land in
the middle of the progress bar and say nothing the bar and the dashboard link do not.

distributed 2026.7 with bokeh 3.10 logs a spurious ``RuntimeError: Cannot synchronously wait on a
running event loop`` traceback when a LocalCluster with a dashboard closes
(https://github.com/dask/distributed/issues/9350; the workers are stopped all the same): that one
record is dropped while the runner closes its cluster.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dask
from dask.callbacks import Callback

from .progress import Progress

Tasks = dict[str, tuple[Callable, tuple]]


class TaskRunner:
    """Runs phases of tasks on one scheduler; a context manager that closes what it started."""

    def __init__(self, *, scheduler: str | None = None, local_cluster: int | None = None,
                 threads: int | None = None, progress: bool = True):
        self.scheduler, self.local_cluster, self.threads, self.progress = scheduler, local_cluster, threads, progress
        self._client = self._cluster = None
        self._log_level: int | None = None

    @property
    def distributed(self) -> bool:
        return bool(self.scheduler or self.local_cluster)

    def run(self, todo: Tasks, on_result: Callable[[str, dict], None], desc: str = "build") -> None:
        """Run every task of ``todo`` once; call ``on_result`` in this thread as each completes."""
        if not todo:
            return
        if self.distributed and self._client is None:
            self._connect()
        with Progress(len(todo), desc, unit="task", enabled=self.progress) as bar:
            if self._client is not None:
                _run_on_client(self._client, todo, on_result, bar)
            else:
                _run_threads(todo, on_result, bar, self.threads)

    def _connect(self) -> None:
        from distributed import Client, LocalCluster

        quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
        logger = logging.getLogger("distributed")
        if quiet:
            self._log_level = logger.level
            logger.setLevel(logging.WARNING)
        if self.scheduler:
            self._client = Client(self.scheduler)
        else:
            with warnings.catch_warnings():
                # 8787 taken (another cluster, another build): dask picks a free port, and the
                # link printed below is the one it picked.
                warnings.filterwarnings("ignore", message=".*[Pp]ort 8787 is already in use")
                self._cluster = LocalCluster(n_workers=self.local_cluster, threads_per_worker=1, processes=True,
                                             dashboard_address=":8787")
            self._client = Client(self._cluster)
        link = self._client.dashboard_link
        if link and self.progress:
            print(f"dask dashboard: {link}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            core_log = logging.getLogger("distributed.core")
            core_log.addFilter(_drop_bokeh_stop_error)
            try:
                self._cluster.close()
            finally:
                core_log.removeFilter(_drop_bokeh_stop_error)
        self._client = self._cluster = None
        if self._log_level is not None:
            logging.getLogger("distributed").setLevel(self._log_level)
            self._log_level = None

    def __enter__(self) -> "TaskRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_bokeh_stop_error(record: logging.LogRecord) -> bool:
    """False for the dashboard-shutdown error of dask/distributed#9350, True for every other record."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, RuntimeError) and "stop_async" in str(exc))


def run_tasks(todo: Tasks, on_result: Callable[[str, dict], None], *, scheduler: str | None = None,
              local_cluster: int | None = None, threads: int | None = None, progress: bool = True,
              desc: str = "build") -> None:
    """One phase on a runner of its own (a cluster started for it is closed after it)."""
    with TaskRunner(scheduler=scheduler, local_cluster=local_cluster, threads=threads, progress=progress) as runner:
        runner.run(todo, on_result, desc)


def _run_threads(todo: Tasks, on_result, bar: Progress, threads: int | None):
    delayed = [dask.delayed(fn, pure=False)(*args, dask_key_name=key) for key, (fn, args) in todo.items()]
    keys = set(todo)

    def posttask(key, result, dsk, state, worker_id):
        if key in keys:
            on_result(key, result)
            bar.update(1)

    # Our own pool, shut down before returning: when a task or ``on_result`` raises (a bad input
    # in strict mode), dask stops scheduling but the tasks already running would go on reading
    # inputs and writing the store after the caller got the error.
    pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="depthcube-build")
    try:
        with Callback(posttask=posttask):
            dask.compute(*delayed, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_on_client(client, todo: Tasks, on_result, bar: Progress):
    from distributed import as_completed

    futures = [client.submit(fn, *args, key=key, pure=False) for key, (fn, args) in todo.items()]
    try:
        for fut in as_completed(futures):
            on_result(fut.key, fut.result())
            bar.update(1)
    except BaseException:
        # The cluster outlives this phase: release what it has not finished.
        client.cancel([f for f in futures if not f.done()])
        raise
