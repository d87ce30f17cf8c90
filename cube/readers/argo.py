"""Argo GDAC profile files: multi-profile ``<WMO>_prof.nc`` and single-profile ``[RD]<WMO>_<NNN>.nc``.

Layout (Argo user manual 3.1; real samples 13857_prof.nc, D5900446_001.nc): NetCDF-3,
``N_PROF x N_LEVELS``; ``PRES``/``TEMP``/``PSAL`` with ``*_ADJUSTED`` twins and char ``*_QC``
flags; ``DATA_MODE`` per profile ('R' real time, 'A' adjusted real time, 'D' delayed mode);
``JULD`` days since 1950-01-01 (fill 999999); ``JULD_QC``, ``POSITION_QC``; ``PROFILE_TEMP_QC``
letter grades A..F (share of good levels: A 100 %, B >= 75 %, C >= 50 %, D >= 25 %, E > 0, F 0).

Documented choices:
- 'A' and 'D' profiles use the ``*_ADJUSTED`` values and ``*_ADJUSTED_QC`` flags, 'R' the raw ones
  (blank DATA_MODE reads as 'R');
- level flags: ``accepted_qc`` (Argo table 2: 1 good, 2 probably good); blank/'0' (no QC) counts
  as accepted unless ``accept_unchecked=False``;
- ``JULD_QC`` also accepts '5' (changed) and '8' (estimated, e.g. the real D5900446_001.nc):
  the UTC day is still right. ``POSITION_QC`` does not (interpolated under-ice positions can be
  tens of km off, more than a cube cell);
- only the primary sampling profile of a cycle is used: a single-cycle file ``R<wmo>_<cycle>.nc``
  holds one N_PROF per vertical sampling scheme (primary, near-surface, secondary, bounce: Argo
  user manual 3.1 section 3.16 and reference table 16), so the same cast would otherwise count
  once per scheme. Profiles whose ``VERTICAL_SAMPLING_SCHEME`` does not start with "Primary
  sampling" are rejected as ``non_primary_sampling`` (argopy's rule); a blank scheme (files older
  than format 3.0) or a file without the variable counts as primary. Multi-profile ``_prof.nc``
  files hold primary profiles only, and go through the same rule;
- ``PROFILE_TEMP_QC`` grades A, B, C are accepted by default (at least half the levels good;
  bad levels are removed one by one anyway), D..F reject the profile (reason ``profile_qc``);
- depth from pressure with TEOS-10: ``depth = -gsw.z_from_p(p, lat)``;
- in-situ -> potential temperature (reference pressure 0 dbar) with TEOS-10:
  ``SA = gsw.SA_from_SP(SP, p, lon, lat)``, ``pt = gsw.pt0_from_t(SA, t, p)``, using the
  profile's practical salinity where it is present and QC-accepted, and SP = 35 elsewhere (files
  without PSAL, bad salinity levels). For SP in 33..37 that costs < 0.01 degC in the upper 2000 m
  (about 0.02 degC at SP 30 or 40); a test checks this with gsw.
"""

from __future__ import annotations

import gsw
import netCDF4
import numpy as np

from cube.errors import ConfigError, InputError
from cube.profiles import ProfileTable
from cube.readers.cf import check_units, decode_chars, read_chars, read_values
from cube.readers.horizontal import as_bbox
from cube.readers.netcdf import PathArg, open_netcdf, optional_var, require_var
from cube.readers.products import require_product
from cube.readers.profile_qc import (PROFILE_FILL, build_profile_table, parse_accepted, profile_checks,
                                     profile_positions, profile_times, qc_ok)

ADJUSTED_MODES = ("A", "D")
DEFAULT_PROFILE_GRADES = ("A", "B", "C")
#: Practical salinity assumed where a profile has none (open-ocean mean).
DEFAULT_SP = 35.0
TEMPERATURES = ("potential", "insitu")
#: How VERTICAL_SAMPLING_SCHEME starts for the profile to use (Argo reference table 16).
PRIMARY_SAMPLING = "primary sampling"


def read_argo(path: PathArg, accepted_qc=("1", "2"), bbox=None, *, temperature: str = "potential",
              accepted_profile_grades=DEFAULT_PROFILE_GRADES, accept_unchecked: bool = True) -> ProfileTable:
    """Read one Argo profile file into a :class:`ProfileTable` of QC-accepted profiles.

    Per profile, DATA_MODE 'A'/'D' selects ``*_ADJUSTED`` values and flags, 'R' the raw ones.
    Depth (m, positive down) comes from pressure with TEOS-10; temperature is potential
    temperature (degC, reference 0 dbar) computed with TEOS-10 from in-situ TEMP and PSAL
    (SP = 35 where salinity is missing or rejected: error < 0.01 degC for SP 33..37 above
    2000 m), or in-situ TEMP with ``temperature='insitu'``. Levels failing ``accepted_qc`` on
    pressure or temperature are NaN (counted in ``levels_rejected``); profiles are rejected by
    reason (``non_primary_sampling``: only the primary sampling profile of a cycle is used, see
    the module docstring; ``bad_time``, ``bad_position``, ``time_qc``, ``position_qc``,
    ``profile_qc``, ``outside_region``, ``no_valid_levels``). Fills (99999, 999999 JULD) are NaN. Longitudes
    are in [-180, 180). Raises InputError for unreadable files, missing variables (including
    ``*_ADJUSTED`` for an adjusted profile), wrong units or shapes.
    """
    accepted = parse_accepted(accepted_qc)
    grades = parse_accepted(accepted_profile_grades, "accepted_profile_grades")
    if temperature not in TEMPERATURES:
        raise ConfigError(f"temperature: expected one of {list(TEMPERATURES)}, got {temperature!r}")
    box = as_bbox(bbox)
    with open_netcdf(path) as ds:
        require_product(ds, path, "argo")
        time = profile_times(require_var(ds, "JULD", path), path)
        n = len(time)
        lat, lon, bad_position = profile_positions(require_var(ds, "LATITUDE", path),
                                                   require_var(ds, "LONGITUDE", path))
        adjusted = np.isin(read_chars(ds, "DATA_MODE", (n,), path), ADJUSTED_MODES)
        pres, pres_qc = _parameter(ds, path, "PRES", adjusted, "decibar")
        temp, temp_qc = _parameter(ds, path, "TEMP", adjusted, "celsius")
        psal = _parameter(ds, path, "PSAL", adjusted, None, required=False)
        flags = {name: read_chars(ds, name, (n,), path) for name in ("JULD_QC", "POSITION_QC", "PROFILE_TEMP_QC")}
        non_primary = non_primary_sampling(ds, n, path)
    if pres.shape != temp.shape or pres.shape[0] != n:
        raise InputError(path, "bad_shape", f"PRES {pres.shape} and TEMP {temp.shape} must both be (N_PROF={n}, N_LEVELS)")
    depth = pressure_to_depth(pres, lat[:, None])
    if temperature == "potential":
        sp = None if psal is None else np.where(qc_ok(psal[1], accepted, accept_unchecked), psal[0], np.nan)
        temp = potential_temperature(temp, pres, sp, lat[:, None], lon[:, None])
    level_ok = qc_ok(pres_qc, accepted, accept_unchecked) & qc_ok(temp_qc, accepted, accept_unchecked)
    profile_bad = [("non_primary_sampling", non_primary)] + profile_checks(
        time, bad_position, flags["JULD_QC"], flags["POSITION_QC"], flags["PROFILE_TEMP_QC"], accepted, grades,
        accept_unchecked)
    return build_profile_table(path, time=time, lat=lat, lon=lon, depth=depth, temp=temp,
                               level_ok=level_ok, profile_bad=profile_bad, bbox=box)


def non_primary_sampling(ds: netCDF4.Dataset, n_prof: int, path) -> np.ndarray:
    """Per profile: True where ``VERTICAL_SAMPLING_SCHEME`` names a scheme other than "Primary sampling".

    Blank schemes and files without the variable read as primary (all False).
    """
    var = optional_var(ds, "VERTICAL_SAMPLING_SCHEME")
    if var is None:
        return np.zeros(n_prof, dtype=bool)
    chars = decode_chars(var[...])
    if chars.ndim != 2 or chars.shape[0] != n_prof:
        raise InputError(path, "bad_shape", f"VERTICAL_SAMPLING_SCHEME has shape {chars.shape}; "
                                            f"(N_PROF={n_prof}, STRING256) expected")
    schemes = ["".join(row).strip().lower() for row in chars]
    return np.array([bool(text) and not text.startswith(PRIMARY_SAMPLING) for text in schemes], dtype=bool)


def pressure_to_depth(pres, lat) -> np.ndarray:
    """Depth in metres (positive down) from sea pressure in dbar: ``-gsw.z_from_p(p, lat)`` (TEOS-10)."""
    with np.errstate(invalid="ignore"):
        return (-gsw.z_from_p(np.asarray(pres, dtype=np.float64), lat)).astype(np.float32)


def potential_temperature(temp, pres, sp=None, lat=0.0, lon=0.0) -> np.ndarray:
    """Potential temperature (degC, reference 0 dbar) from in-situ temperature with TEOS-10.

    ``sp`` is practical salinity (NaN or None where unknown: SP = 35 is used there; error
    < 0.01 degC for SP 33..37 above 2000 dbar). ``lat``/``lon`` broadcast against ``temp``.
    """
    pres = np.asarray(pres, dtype=np.float64)
    sp = np.full(pres.shape, DEFAULT_SP) if sp is None else np.where(np.isfinite(sp), sp, DEFAULT_SP)
    with np.errstate(invalid="ignore"):
        sa = gsw.SA_from_SP(sp, pres, lon, lat)
        return gsw.pt0_from_t(sa, np.asarray(temp, dtype=np.float64), pres).astype(np.float32)


def _parameter(ds: netCDF4.Dataset, path, name: str, adjusted: np.ndarray, units: str | None,
               required: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, QC chars) of a core parameter, taking ``<name>_ADJUSTED[_QC]`` for adjusted profiles."""
    raw_var = require_var(ds, name, path) if required else optional_var(ds, name)
    if raw_var is None:
        return None
    if units:
        check_units(path, raw_var, units, required=False)
    if len(raw_var.shape) != 2 or raw_var.shape[0] != adjusted.size:
        raise InputError(path, "bad_shape", f"{name} has shape {raw_var.shape}; (N_PROF={adjusted.size}, N_LEVELS) expected")
    values = read_values(raw_var, extra_fills=(PROFILE_FILL,))
    qc = read_chars(ds, f"{name}_QC", raw_var.shape, path)
    if adjusted.any():
        adj_var = require_var(ds, f"{name}_ADJUSTED", path)
        rows = adjusted[:, None]
        values = np.where(rows, read_values(adj_var, extra_fills=(PROFILE_FILL,)), values)
        qc = np.where(rows, read_chars(ds, f"{name}_ADJUSTED_QC", raw_var.shape, path), qc)
    return values, qc
