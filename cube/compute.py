"""Run build tasks on dask: the local threaded scheduler by default, a LocalCluster of worker
processes (``local_cluster=N``) or an existing ``dask.distributed`` scheduler (``scheduler=ADDRESS``).

Tasks are independent ``fn(*args) -> dict`` calls that write disjoint Zarr regions themselves and
return a small summary. ``on_result(key, result)`` is called in the driver as each finishes (the
builder journals it there), and a tqdm progress bar counts them. When a task or ``on_result``
raises, :func:`run_tasks` returns (raising) only after the tasks still running have finished:
nothing keeps writing behind the caller's back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm


def run_tasks(todo: dict[str, tuple[Callable, tuple]], on_result: Callable[[str, dict], None], *,
              scheduler: str | None = None, local_cluster: int | None = None, threads: int | None = None,
              progress: bool = True, desc: str = "build") -> None:
    """Run every task once; call ``on_result`` in this thread as each completes."""
    if not todo:
        return
    bar = tqdm(total=len(todo), desc=desc, unit="task", disable=not progress, leave=True)
    try:
        if scheduler or local_cluster:
            _run_distributed(todo, on_result, bar, scheduler, local_cluster)
        else:
            _run_threads(todo, on_result, bar, threads)
    finally:
        bar.close()


def _run_threads(todo, on_result, bar, threads):
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


def _run_distributed(todo, on_result, bar, scheduler, local_cluster):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=local_cluster, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(fn, *args, key=key, pure=False) for key, (fn, args) in todo.items()]
        for fut in as_completed(futures):
            on_result(fut.key, fut.result())
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
