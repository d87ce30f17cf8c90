"""Argo GDAC multi-profile files (``<WMO>_prof.nc``) by region and time, or by float, with fsspec.

The GDAC's profile index ``ar_index_global_prof.txt.gz`` (one row per profile: ``file, date,
latitude, longitude, ocean, profiler_type, institution, date_update``, with ``file`` =
``<dac>/<wmo>/profiles/<R|D><wmo>_<cycle>.nc``) is fetched first into ``argo/``; the floats with
a profile inside the region and span (or the floats named by ``argo_floats``) are then fetched
from ``<gdac>/dac/<dac>/<wmo>/<wmo>_prof.nc`` into ``argo/<wmo>_prof.nc``, where
``configs/cube.yaml``'s ``argo/*_prof.nc`` finds them. Plain fsspec over HTTPS: no argopy needed.

Resuming skips an index or a float file that is already there, so a float that has reported new
profiles since is not fetched again: delete its file (or the index) to refresh it. Sizes are not
known before fetching (the index has no sizes); the plan counts floats and profiles instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .files import DownloadError, check_netcdf, discard, fetch_url, publish
from .plan import Fetch, ProductPlan
from .request import DownloadRequest

INDEX_NAME = "ar_index_global_prof.txt.gz"
INDEX_COLUMNS = ("file", "date", "latitude", "longitude")


def plan_argo(req: DownloadRequest) -> ProductPlan:
    """The index fetch, then (once the index is here) one fetch per selected float."""
    index_target = req.folder("argo") / INDEX_NAME
    index_url = f"{req.argo_gdac.rstrip('/')}/{INDEX_NAME}"
    fetches = [Fetch("argo", (index_target,), index_url, None, lambda: _fetch_index(index_url, index_target))]
    if not index_target.is_file():
        return ProductPlan("argo", tuple(fetches), "the floats are chosen from the GDAC index once it is fetched")
    floats = select_floats(read_index(index_target), req)
    for (dac, wmo), n_profiles in floats.items():
        url = f"{req.argo_gdac.rstrip('/')}/dac/{dac}/{wmo}/{wmo}_prof.nc"
        target = req.folder("argo") / f"{wmo}_prof.nc"
        fetches.append(Fetch("argo", (target,), f"{url} ({n_profiles} profile(s) selected)", None,
                             lambda url=url, target=target: _fetch_float(url, target)))
    how = f"floats {list(req.argo_floats)}" if req.argo_floats else "profiles inside the region and span"
    return ProductPlan("argo", tuple(fetches), f"{len(floats)} float(s) with {sum(floats.values())} {how} "
                                               "(file sizes are not in the index)")


def read_index(path) -> pd.DataFrame:
    """The GDAC profile index as a table (``#`` comment lines skipped); DownloadError when malformed."""
    try:
        table = pd.read_csv(path, comment="#", usecols=list(INDEX_COLUMNS), dtype={"file": str},
                            compression="infer")
    except (ValueError, OSError, EOFError) as e:
        raise DownloadError(f"{path}: not an Argo GDAC profile index ({e})") from None
    return table.dropna(subset=["file"])


def select_floats(index: pd.DataFrame, req: DownloadRequest) -> dict[tuple[str, str], int]:
    """``{(dac, wmo): number of selected profiles}`` in index order: the profiles of the floats named
    by ``req.argo_floats``, else those inside ``req.region`` and the span (bounds included)."""
    parts = index["file"].str.split("/", n=2, expand=True)
    dac, wmo = parts[0], parts[1]
    if req.argo_floats:
        keep = wmo.isin([str(w) for w in req.argo_floats]).to_numpy()
    else:
        la0, la1, lo0, lo1 = req.region
        day = pd.to_datetime(index["date"].astype("Int64").astype(str), format="%Y%m%d%H%M%S",
                             errors="coerce").dt.floor("D")
        lat, lon = index["latitude"].to_numpy(float), index["longitude"].to_numpy(float)
        keep = ((lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
                & (day >= pd.Timestamp(req.first_day)).to_numpy(bool) & (day <= pd.Timestamp(req.last_day)).to_numpy(bool))
    keep = np.asarray(keep, bool)
    counts: dict[tuple[str, str], int] = {}
    for key in zip(dac[keep], wmo[keep]):
        counts[key] = counts.get(key, 0) + 1
    return counts


def _fetch_index(url: str, target) -> None:
    partial = fetch_url(url, target)
    try:
        read_index(partial)  # a server error page is not an index
    except DownloadError:
        discard(partial)
        raise DownloadError(f"{url}: the server sent something that is not an Argo profile index") from None
    publish(partial, target)


def _fetch_float(url: str, target) -> None:
    partial = fetch_url(url, target)
    check_netcdf(partial, ("JULD", "LATITUDE", "LONGITUDE", "PRES", "TEMP"), "Argo")
    publish(partial, target)
