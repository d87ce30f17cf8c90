"""Peer 3 of the latency bench: insitubatch 0.2 (obstore + zarr v3, one async event loop) reading
the same arrays of the same windows as depthcube's raw reads, used as its README recommends.

insitubatch serves *samples along one axis* of arrays that share it, each sample the whole
inner field, and windows as shifted views of an array (``ArrayGeometry.shift(k)``); it cannot
cut a spatial tile. So the cube is read the way insitubatch can read it:

* one ``InSituDataset`` over the daily arrays the ``argo_real`` preset needs (``ostia/analysed_sst``,
  ``profiles/count``, ``profiles/sum``), each as 7 views shifted by -3..+3 days, so one anchor
  day is one window of every tile at once; ``batch_size=1`` (one window of the three arrays is
  about 0.3 GB of whole 50-level fields), ``block_chunks=1`` (its memory floor), its default
  ``max_inflight`` (32);
* a second ``InSituDataset`` over ``glorys/thetao`` (its own time axis: insitubatch requires one
  sample-axis length per dataset), one pass over every snapshot;
* the statics (``ocean_mask``, ``bottom_level``) read once through zarr on the same store.

Each anchor day then gives the windows of every tile of the cube's patch index (the same
windows as the stream's: split ``all``, centre days with 3 days on each side), cut from the
delivered fields as depthcube's raw read returns them: the 7 OSTIA days stacked, the profile
count and sum summed over the window, the window's nearest GLORYS snapshots. ``samples`` counts
windows. Orders: ``sorted`` is ``ds.all`` (deterministic), ``random`` is ``ds.train`` of a
manifest putting every chunk in train (insitubatch's shuffle: chunk blocks permuted, samples
shuffled inside a block; it shuffles no wider by design). The store is
``obstore_store(URL)``: ``file://`` locally, ``http://`` (``allow_http``) for the loopback server.
"""

from __future__ import annotations

import time

import numpy as np

DAILY = ("ostia/analysed_sst", "profiles/count", "profiles/sum")
HALF_WINDOW = 3


def _store(url: str):
    from insitubatch import obstore_store

    if url.startswith("http://"):
        return obstore_store(url, client_options={"allow_http": True})
    return obstore_store(url)


def _datasets(store):
    """(daily dataset, GLORYS dataset) as described in the module docstring."""
    from insitubatch import InSituDataset, open_geometries, split_by_chunk

    daily = open_geometries(store, variables=list(DAILY))
    views = {f"{path}@{k}": g.shift(k) for path, g in daily.items() for k in range(-HALF_WINDOW, HALF_WINDOW + 1)}
    anchor = daily[DAILY[0]]
    manifest = split_by_chunk(anchor, fractions=(1.0, 0.0, 0.0))
    days = InSituDataset(store, manifest, geometries=views, batch_size=1, block_chunks=1)
    glorys = open_geometries(store, variables=["glorys/thetao"])
    gman = split_by_chunk(glorys["glorys/thetao"], fractions=(1.0, 0.0, 0.0))
    snaps = InSituDataset(store, gman, geometries=glorys, batch_size=1, block_chunks=1)
    return days, snaps


def bench_insitubatch(url: str, order: str, budget_s: float, max_windows: int | None) -> dict:
    """Windows per second of insitubatch on the cube at ``url`` (``file://`` or ``http://``)."""
    import zarr

    from cube.layout import days_from_int, times_from_hours
    from loaders.sample import nearest_snapshots

    from .suite import RssSampler

    try:
        store = _store(url)
        days, snaps = _datasets(store)
    except Exception as e:  # the peer's own failure is a result to report, not a bench crash
        return {"error": f"{type(e).__name__}: {e}"}
    with RssSampler(children=False) as rss:
        t0 = time.perf_counter()
        root = zarr.open_group(store=store, mode="r")
        tiles = list(zip(root["patches/row0"][:], root["patches/col0"][:]))
        tile = int(root["patches"].attrs["tile_size"])
        ocean, bottom = root["static/ocean_mask"][:], root["static/bottom_level"][:]
        day_axis = days_from_int(root["ostia/time"][:])
        snap_times = times_from_hours(root["glorys/time"][:])
        glorys = {int(b.sample_indices[0]): b.arrays["glorys/thetao"][0] for b in snaps.all}
        n, nbytes = 0, 0
        view = days.train if order == "random" else days.all
        for batch in view:
            centre = int(batch.sample_indices[0])
            window_days = day_axis[centre - HALF_WINDOW:centre + HALF_WINDOW + 1]
            used = np.unique(nearest_snapshots(window_days, snap_times))
            for r0, c0 in tiles:
                box = (slice(r0, r0 + tile), slice(c0, c0 + tile))
                sst = np.stack([batch.arrays[f"ostia/analysed_sst@{k}"][0][box] for k in _offsets()])
                count = sum(batch.arrays[f"profiles/count@{k}"][0][(slice(None),) + box] for k in _offsets())
                total = sum(batch.arrays[f"profiles/sum@{k}"][0][(slice(None),) + box] for k in _offsets())
                snap = np.stack([glorys[int(s)][(slice(None),) + box] for s in used])
                nbytes += sst.nbytes + count.nbytes + total.nbytes + snap.nbytes + ocean[box].nbytes + bottom[box].nbytes
                n += 1
            if time.perf_counter() - t0 > budget_s or (max_windows and n >= max_windows):
                break
        dt = time.perf_counter() - t0
    days.close()
    snaps.close()
    return {"what": f"insitubatch 0.2 InSituDataset (obstore), {'ds.train shuffled' if order == 'random' else 'ds.all'}: "
                    "7 shifted daily views + GLORYS snapshots + statics, windows cut per tile", "workers": 0,
            "samples": n, "seconds": dt, "samples_per_s": n / dt, "mb_per_s": nbytes / dt / 1e6,
            "time_to_first_batch_s": None, "windows_per_anchor_day": len(tiles), **rss.report()}


def _offsets() -> range:
    return range(-HALF_WINDOW, HALF_WINDOW + 1)
