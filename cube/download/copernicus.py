"""OSTIA L4 SST and GLORYS12 thetao through the Copernicus Marine toolbox (``copernicusmarine``).

One ``copernicusmarine.subset`` call per day (per month for GLORYS monthly means), so each file
holds one time step under the name the readers expect and the cube build dates it by:

- OSTIA: ``SST_GLO_SST_L4_REP_OBSERVATIONS_010_011`` (dataset ``METOFFICE-GLO-SST-L4-REP-OBS-SST``)
  or NRT ``SST_GLO_SST_L4_NRT_OBSERVATIONS_010_001`` (``METOFFICE-GLO-SST-L4-NRT-OBS-SST-V2``):
  ``analysed_sst``, ``mask``, ``sea_ice_fraction`` -> ``ostia/YYYYMMDD120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB[_REP]-v02.0-fv02.0.nc``
- GLORYS12: ``GLOBAL_MULTIYEAR_PHY_001_030`` daily (``cmems_mod_glo_phy_my_0.083deg_P1D-m``) or
  monthly (``cmems_mod_glo_phy_my_0.083deg_P1M-m``) ``thetao`` on all 50 depths ->
  ``glorys/<dataset>_thetao_YYYYMMDD.nc`` (``_YYYYMM.nc`` for monthly means).

The user's own credentials are used (``copernicusmarine login`` once, or the
``COPERNICUSMARINE_SERVICE_USERNAME`` / ``_PASSWORD`` variables); depthcube never reads them, it
asks the toolbox to check them (:func:`preflight`) before the first request.
Each file is checked by the product's reader (``scan_ostia`` / ``scan_glorys``) before it is
moved into place.

Size estimates count the native grid points inside the region, times the bytes of the native
packing per point (OSTIA: int16 ``analysed_sst`` + byte ``mask`` + byte ``sea_ice_fraction`` =
4 B; GLORYS: int16 ``thetao`` x 50 levels = 100 B), uncompressed: an upper bound, as the files
are written with NetCDF compression level 1 and land compresses to almost nothing.
"""

from __future__ import annotations

import numpy as np

from .files import DownloadError, discard, partial_path, publish
from .plan import Fetch, ProductPlan
from .request import DownloadRequest

OSTIA_PRODUCTS = {"rep": "SST_GLO_SST_L4_REP_OBSERVATIONS_010_011", "nrt": "SST_GLO_SST_L4_NRT_OBSERVATIONS_010_001"}
OSTIA_DATASETS = {"rep": "METOFFICE-GLO-SST-L4-REP-OBS-SST", "nrt": "METOFFICE-GLO-SST-L4-NRT-OBS-SST-V2"}
OSTIA_NAME = {"rep": "{day}120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc",
              "nrt": "{day}120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB-v02.0-fv02.0.nc"}
OSTIA_VARIABLES = ("analysed_sst", "mask", "sea_ice_fraction")
GLORYS_PRODUCT = "GLOBAL_MULTIYEAR_PHY_001_030"
GLORYS_DATASETS = {"daily": "cmems_mod_glo_phy_my_0.083deg_P1D-m", "monthly": "cmems_mod_glo_phy_my_0.083deg_P1M-m"}

#: Native grids as (first centre, step, count): OSTIA 0.05 deg global; GLORYS 1/12 deg, 80S..90N.
OSTIA_GRID = {"lat": (-89.975, 0.05, 3600), "lon": (-179.975, 0.05, 7200)}
GLORYS_GRID = {"lat": (-80.0, 1 / 12, 2041), "lon": (-180.0, 1 / 12, 4320)}
OSTIA_BYTES_PER_CELL = 2 + 1 + 1
GLORYS_LEVELS, GLORYS_BYTES_PER_VALUE = 50, 2

CREDENTIALS_HELP = ("no valid Copernicus Marine credentials: run `copernicusmarine login` once (or set "
                    "COPERNICUSMARINE_SERVICE_USERNAME and COPERNICUSMARINE_SERVICE_PASSWORD); an account is free "
                    "at https://data.marine.copernicus.eu/register")
PACKAGE_HELP = ("the copernicusmarine package is not installed: pip install 'depthcube[download]' "
                "(or pip install copernicusmarine)")


def grid_points(grid: dict, region) -> tuple[int, int]:
    """(rows, columns) of the native grid whose centres lie inside ``region`` (bounds included)."""
    la0, la1, lo0, lo1 = region
    counts = []
    for axis, lo, hi in (("lat", la0, la1), ("lon", lo0, lo1)):
        first, step, n = grid[axis]
        centres = first + step * np.arange(n)
        counts.append(int(((centres >= lo - 1e-9) & (centres <= hi + 1e-9)).sum()))
    return counts[0], counts[1]


def plan_ostia(req: DownloadRequest) -> ProductPlan:
    dataset = OSTIA_DATASETS[req.ostia]
    rows, cols = grid_points(OSTIA_GRID, req.region)
    per_file = rows * cols * OSTIA_BYTES_PER_CELL
    fetches = tuple(_fetch("ostia", req, dataset, list(OSTIA_VARIABLES), day, day,
                           OSTIA_NAME[req.ostia].format(day=_digits(day)), per_file) for day in req.days)
    return ProductPlan("ostia", fetches, f"{OSTIA_PRODUCTS[req.ostia]} {dataset}: {rows} x {cols} cells of 0.05 deg x "
                                         f"{OSTIA_BYTES_PER_CELL} B = {per_file:,} B per day")


def plan_glorys(req: DownloadRequest) -> ProductPlan:
    dataset = GLORYS_DATASETS[req.glorys]
    rows, cols = grid_points(GLORYS_GRID, req.region)
    per_file = rows * cols * GLORYS_LEVELS * GLORYS_BYTES_PER_VALUE
    if req.glorys == "monthly":
        whens = [(m.astype("datetime64[D]"), _digits(m)) for m in req.months]
    else:
        step = np.timedelta64(req.glorys_step_days, "D")
        whens = [(d, _digits(d)) for d in np.arange(req.first_day, req.last_day + np.timedelta64(1, "D"), step)]
    fetches = tuple(_fetch("glorys", req, dataset, ["thetao"], when, when, f"{dataset}_thetao_{digits}.nc", per_file)
                    for when, digits in whens)
    every = "monthly means" if req.glorys == "monthly" else f"a daily mean every {req.glorys_step_days} day(s)"
    return ProductPlan("glorys", fetches, f"{GLORYS_PRODUCT} {dataset} ({every}): {rows} x {cols} cells of 1/12 deg x "
                                          f"{GLORYS_LEVELS} levels x {GLORYS_BYTES_PER_VALUE} B = {per_file:,} B per file")


def _digits(when: np.datetime64) -> str:
    return str(when).replace("-", "")


def _fetch(product: str, req: DownloadRequest, dataset: str, variables: list[str], t0, t1, name: str,
           size: int) -> Fetch:
    target = req.folder(product) / name
    return Fetch(product, (target,), f"{dataset} {t0}", size,
                 lambda: _subset(product, req, dataset, variables, t0, t1, target))


def client():
    """The ``copernicusmarine`` module; DownloadError saying how to install it when it is missing."""
    try:
        import copernicusmarine
    except ImportError:
        raise DownloadError(PACKAGE_HELP) from None
    return copernicusmarine


def preflight():
    """The toolbox, with credentials it accepts (checked once per run with
    ``copernicusmarine.login(check_credentials_valid=True)``, which only checks): DownloadError
    saying what to do otherwise, before anything is fetched and before the toolbox could prompt."""
    cm = client()
    try:
        valid = cm.login(check_credentials_valid=True)
    except Exception as e:  # no network, service down
        raise DownloadError(f"could not check the Copernicus Marine credentials ({type(e).__name__}: {e})") from None
    if not valid:
        raise DownloadError(CREDENTIALS_HELP)
    return cm


def _subset(product: str, req: DownloadRequest, dataset: str, variables: list[str], t0, t1, target) -> None:
    cm = client()
    partial = partial_path(target)
    la0, la1, lo0, lo1 = req.region
    credential_errors = tuple(getattr(cm, n) for n in ("CredentialsCannotBeNone", "InvalidUsernameOrPassword")
                              if isinstance(getattr(cm, n, None), type))
    try:
        cm.subset(dataset_id=dataset, variables=variables,
                  minimum_longitude=lo0, maximum_longitude=lo1, minimum_latitude=la0, maximum_latitude=la1,
                  start_datetime=f"{t0}T00:00:00", end_datetime=f"{t1}T00:00:00",
                  output_directory=str(partial.parent), output_filename=partial.name, overwrite=True,
                  disable_progress_bar=True, netcdf_compression_level=1)
    except credential_errors:
        discard(partial)
        raise DownloadError(CREDENTIALS_HELP) from None
    except Exception as e:  # the toolbox's own errors: dataset not found, out of bounds, network
        discard(partial)
        raise DownloadError(f"{target.name}: Copernicus Marine subset of {dataset} on {t0} failed "
                            f"({type(e).__name__}: {e})") from None
    _check(product, partial, target)
    publish(partial, target)


def _check(product: str, partial, target) -> None:
    """The product's reader accepts the file (schema, units, dates from the name and the time axis)."""
    from cube.errors import InputError
    from cube.readers import scan_glorys, scan_ostia

    if not partial.is_file():
        raise DownloadError(f"{target.name}: copernicusmarine.subset returned without writing {partial}")
    try:
        (scan_ostia if product == "ostia" else scan_glorys)(str(partial))
    except InputError as e:
        discard(partial)
        raise DownloadError(f"{target.name}: the downloaded {product} file is not usable: {e.reason}: {e.detail}") from None
