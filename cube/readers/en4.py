"""EN4.2.2 monthly profile files: ``EN.4.2.2.f.profiles.g10.YYYYMM.nc`` (NetCDF-3 or NetCDF-4).

Layout (REFERENCE.md 1.3): ``N_PROF x N_LEVELS(400)``; ``JULD`` days since 1950-01-01 (fill
99999); ``LATITUDE``/``LONGITUDE`` (fill 99999); ``DEPH_CORRECTED`` m; ``POTM_CORRECTED``
(potential temperature, degC) and ``TEMP`` (in-situ); char QC flags ``JULD_QC``, ``POSITION_QC``,
``PROFILE_POTM_QC``, ``DEPH_CORRECTED_QC``, ``POTM_CORRECTED_QC`` ('1' accepted, '4' rejected,
'0'/blank not checked). Both formats are read by netCDF4 and give identical tables.

QC decisions (documented choices):
- a flag that is blank, NUL or '0' ("no QC performed") counts as accepted, as HEAD treats a
  missing flag (``accept_unchecked=False`` makes such profiles/levels rejected);
- ``JULD_QC`` also accepts '5' (changed) and '8' (estimated): the UTC day is still right;
- a profile is counted once, under the first failing check, in this order: ``bad_time`` (JULD
  missing or outside the valid range), ``bad_position`` (99999 or impossible), ``time_qc``,
  ``position_qc``, ``profile_qc``, ``outside_region``, ``no_valid_levels``.
"""

from __future__ import annotations

import netCDF4
import numpy as np

from cube.errors import ConfigError, InputError
from cube.profiles import ProfileTable
from cube.readers.cf import check_units, read_chars, read_values
from cube.readers.horizontal import as_bbox
from cube.readers.netcdf import PathArg, open_netcdf, optional_var, require_var
from cube.readers.products import require_product
from cube.readers.profile_qc import (PROFILE_FILL, build_profile_table, parse_accepted, profile_checks,
                                     profile_positions, profile_times, qc_ok)

#: temperature option -> (values, level QC candidates, profile QC candidates); the first present wins.
TEMPERATURE_VARIABLES = {
    "potential": ("POTM_CORRECTED", ("POTM_CORRECTED_QC",), ("PROFILE_POTM_QC",)),
    "insitu": ("TEMP", ("TEMP_QC", "POTM_CORRECTED_QC"), ("PROFILE_TEMP_QC", "PROFILE_POTM_QC")),
}


def read_en4(path: PathArg, accepted_qc=("1", "2"), temperature: str = "potential", bbox=None, *,
             accept_unchecked: bool = True) -> ProfileTable:
    """Read one EN4 profile file into a :class:`ProfileTable` of QC-accepted profiles.

    ``temperature='potential'`` (default) uses ``POTM_CORRECTED`` (it matches GLORYS ``thetao``),
    ``'insitu'`` uses ``TEMP``; depth is ``DEPH_CORRECTED`` (m, kept as observed: a profile
    starting at 4 m is not extended to the surface). Times are ``JULD`` decoded with integer day
    arithmetic and rounded to the second (UTC). Fills (99999, ``|v| > 1e6``, non-finite) are NaN.
    Levels whose ``DEPH_CORRECTED_QC`` or temperature QC is not in ``accepted_qc`` are NaN and
    counted in ``levels_rejected``; rejected profiles are counted by reason in ``rejected`` (see
    the module docstring). ``bbox=(lat_min, lat_max, lon_min, lon_max)`` keeps profiles inside it
    (half-open, dateline-safe). Longitudes are in [-180, 180). Raises InputError for unreadable
    files, missing variables, wrong units or inconsistent shapes.
    """
    accepted = parse_accepted(accepted_qc)
    if temperature not in TEMPERATURE_VARIABLES:
        raise ConfigError(f"temperature: expected one of {sorted(TEMPERATURE_VARIABLES)}, got {temperature!r}")
    temp_name, level_qc_names, profile_qc_names = TEMPERATURE_VARIABLES[temperature]
    box = as_bbox(bbox)
    with open_netcdf(path) as ds:
        require_product(ds, path, "en4")
        time = profile_times(require_var(ds, "JULD", path), path)
        lat, lon, bad_position = profile_positions(require_var(ds, "LATITUDE", path),
                                                   require_var(ds, "LONGITUDE", path))
        depth, temp = _levels(ds, path, temp_name, len(time))
        flags = {name: read_chars(ds, name, (len(time),), path) for name in ("JULD_QC", "POSITION_QC")}
        flags["profile"] = read_chars(ds, _first(ds, profile_qc_names), (len(time),), path)
        level_ok = (qc_ok(read_chars(ds, "DEPH_CORRECTED_QC", depth.shape, path), accepted, accept_unchecked)
                    & qc_ok(read_chars(ds, _first(ds, level_qc_names), depth.shape, path), accepted, accept_unchecked))
    profile_bad = profile_checks(time, bad_position, flags["JULD_QC"], flags["POSITION_QC"], flags["profile"],
                                 accepted, accepted, accept_unchecked)
    return build_profile_table(path, time=time, lat=lat, lon=lon, depth=depth, temp=temp,
                               level_ok=level_ok, profile_bad=profile_bad, bbox=box)


def _first(ds: netCDF4.Dataset, names: tuple[str, ...]) -> str:
    """The first of ``names`` in the file (the last name when none is: read as all unset)."""
    var = optional_var(ds, *names)
    return var.name if var is not None else names[-1]


def _levels(ds: netCDF4.Dataset, path, temp_name: str, n_prof: int) -> tuple[np.ndarray, np.ndarray]:
    depth_var = require_var(ds, "DEPH_CORRECTED", path)
    temp_var = require_var(ds, temp_name, path)
    check_units(path, depth_var, "metre", required=False, lenient=True)
    check_units(path, temp_var, "celsius", required=False)
    if depth_var.shape != temp_var.shape or len(depth_var.shape) != 2 or depth_var.shape[0] != n_prof:
        raise InputError(path, "bad_shape", f"DEPH_CORRECTED {depth_var.shape} and {temp_name} {temp_var.shape} "
                                            f"must both be (N_PROF={n_prof}, N_LEVELS)")
    return (read_values(depth_var, extra_fills=(PROFILE_FILL,)),
            read_values(temp_var, extra_fills=(PROFILE_FILL,)))
