"""Profile decoding and QC shared by the EN4 and Argo readers.

- :func:`profile_times` and :func:`profile_positions` decode JULD and positions (fills, range);
- :func:`qc_ok` / :func:`parse_accepted` test char QC flags against the accepted codes;
- :func:`profile_checks` is the one ordered list of per-profile checks both readers apply
  (``bad_time``, ``bad_position``, ``time_qc``, ``position_qc``, ``profile_qc``; Argo puts
  ``non_primary_sampling`` first);
- :func:`build_profile_table` applies them, then the region and level rules, and returns a
  :class:`cube.profiles.ProfileTable`.
"""

from __future__ import annotations

from typing import Sequence

import netCDF4
import numpy as np

from cube.errors import ConfigError
from cube.grid import wrap_lon
from cube.profiles import ProfileTable
from cube.readers.cf import decode_time, decode_values
from cube.readers.horizontal import Bbox
from cube.readers.netcdf import var_attrs


#: The fill of the profile products (EN4, Argo), also caught when the attribute is missing.
PROFILE_FILL = 99999.0


#: Flags meaning "no QC performed" or unset: accepted when ``accept_unchecked`` (HEAD's rule:
#: a missing flag counts as accepted).
UNCHECKED_QC = (" ", "0")


def qc_ok(codes: np.ndarray, accepted: Sequence[str], accept_unchecked: bool = True) -> np.ndarray:
    """Bool array: the QC char is in ``accepted`` (or unset/'0' when ``accept_unchecked``)."""
    allowed = [str(a) for a in accepted] + (list(UNCHECKED_QC) if accept_unchecked else [])
    # A 256-entry lookup on the code points: far faster than np.isin on millions of U1 levels.
    table = np.zeros(257, dtype=bool)
    table[[ord(a) for a in allowed if len(a) == 1 and ord(a) < 256]] = True
    points = np.ascontiguousarray(codes, dtype="U1").view(np.uint32).reshape(np.shape(codes))
    return table[np.minimum(points, 256)]


def parse_accepted(accepted, what: str = "accepted_qc") -> tuple[str, ...]:
    """QC codes as a tuple of single characters (ints and strings accepted: (1, 2) == ('1', '2'))."""
    if isinstance(accepted, (str, int)):
        accepted = list(str(accepted))
    codes = tuple(str(a) for a in accepted)
    if not codes or any(len(c) != 1 for c in codes):
        raise ConfigError(f"{what}: expected single-character QC codes such as ('1', '2'), got {accepted!r}")
    return codes


#: JULD is valid strictly between these days since 1950-01-01 (reference rule, about 1895..2196).
JULD_VALID_DAYS = (-20000, 90000)
#: Time QC codes accepted in addition to the level codes: 5 = value changed (corrected) and
#: 8 = estimated (Argo table 2). A corrected or estimated date is still the right UTC day.
TIME_QC_EXTRA = ("5", "8")
_EPOCH_1950 = np.datetime64("1950-01-01T00:00:00", "s")


def profile_times(juld_var: netCDF4.Variable, path) -> np.ndarray:
    """JULD-style profile times -> datetime64[s] (rounded to the second), NaT where missing/out of range."""
    attrs = var_attrs(juld_var)
    values = decode_values(juld_var[...], attrs, dtype=np.float64, extra_fills=(PROFILE_FILL,)).ravel()
    times = decode_time(values, attrs.get("units"), path, calendar=attrs.get("calendar"), name=juld_var.name)
    ns = times.astype(np.int64)
    # Round to the nearest second in integers (floor division also rounds pre-1970 times correctly).
    secs = np.where(np.isnat(times), np.datetime64("NaT", "s"),
                    np.floor_divide(ns + 500_000_000, 10**9).astype("datetime64[s]"))
    days = (secs - _EPOCH_1950) / np.timedelta64(1, "D")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(days) & (days > JULD_VALID_DAYS[0]) & (days < JULD_VALID_DAYS[1])
    return np.where(ok, secs, np.datetime64("NaT", "s"))


def profile_positions(lat_var: netCDF4.Variable,
                      lon_var: netCDF4.Variable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon wrapped to [-180, 180), bad) with ``bad`` where a position is missing or impossible."""
    lat = decode_values(lat_var[...], var_attrs(lat_var), dtype=np.float64, extra_fills=(PROFILE_FILL,)).ravel()
    lon = decode_values(lon_var[...], var_attrs(lon_var), dtype=np.float64, extra_fills=(PROFILE_FILL,)).ravel()
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(lat) <= 90) | ~((lon >= -180) & (lon <= 360))
    return lat, np.where(bad, np.nan, wrap_lon(lon)), bad


def profile_checks(time: np.ndarray, bad_position: np.ndarray, juld_qc: np.ndarray, position_qc: np.ndarray,
                   profile_qc: np.ndarray, accepted: Sequence[str], profile_accepted: Sequence[str],
                   accept_unchecked: bool = True) -> list[tuple[str, np.ndarray]]:
    """The ordered ``(reason, bool mask)`` profile checks of EN4 and Argo, for :func:`build_profile_table`.

    ``bad_time`` (NaT), ``bad_position``, ``time_qc`` (``JULD_QC`` in ``accepted`` or
    :data:`TIME_QC_EXTRA`), ``position_qc`` (``POSITION_QC`` in ``accepted``) and ``profile_qc``
    (the profile flag in ``profile_accepted``: EN4's level codes, Argo's letter grades).
    """
    return [
        ("bad_time", np.isnat(time)),
        ("bad_position", bad_position),
        ("time_qc", ~qc_ok(juld_qc, tuple(accepted) + TIME_QC_EXTRA, accept_unchecked)),
        ("position_qc", ~qc_ok(position_qc, accepted, accept_unchecked)),
        ("profile_qc", ~qc_ok(profile_qc, profile_accepted, accept_unchecked)),
    ]


#: Plausible sea-water temperature in degC for a profile level (the GLORYS reader's range too).
PROFILE_TEMP_RANGE_C = (-5.0, 45.0)


def build_profile_table(path, *, time, lat, lon, depth, temp, level_ok, profile_bad, bbox: Bbox | None) -> ProfileTable:
    """Apply the shared profile rules and return the accepted profiles.

    ``profile_bad`` is an ordered list of ``(reason, bool mask)``; a profile is counted once, under
    the first reason that rejects it, then ``outside_region`` (bbox, half-open) and
    ``no_valid_levels``. A level is kept when depth and temperature are finite, ``level_ok``, and
    the temperature is a plausible sea temperature (:data:`PROFILE_TEMP_RANGE_C`: a QC-accepted
    500 degC would otherwise reach the model as 45 standard deviations); ``levels_rejected`` counts
    observed levels (finite depth and temperature) that failed these level checks in profiles that
    passed the profile checks. Both depth and temp are NaN at every dropped level; trailing level
    columns empty in every kept profile are trimmed.
    """
    rejected: dict[str, int] = {}
    keep = np.ones(len(time), dtype=bool)

    def reject(reason: str, mask: np.ndarray) -> None:
        hit = keep & mask
        if hit.any():
            rejected[reason] = rejected.get(reason, 0) + int(hit.sum())
        keep[hit] = False

    for reason, mask in profile_bad:
        reject(reason, np.asarray(mask, dtype=bool))
    if bbox is not None:
        reject("outside_region", ~bbox.contains(lat, lon))
    observed = np.isfinite(depth) & np.isfinite(temp)
    with np.errstate(invalid="ignore"):
        plausible = (temp >= PROFILE_TEMP_RANGE_C[0]) & (temp <= PROFILE_TEMP_RANGE_C[1])
    level_ok = level_ok & plausible
    good = observed & level_ok
    levels_rejected = int((observed & ~level_ok)[keep].sum())
    reject("no_valid_levels", ~good.any(axis=1))
    depth = np.where(good, depth, np.nan).astype(np.float32)[keep]
    temp = np.where(good, temp, np.nan).astype(np.float32)[keep]
    n_levels = int(np.flatnonzero(good[keep].any(axis=0)).max() + 1) if keep.any() else 0
    return ProfileTable(str(path), time[keep].astype("datetime64[s]"), lat[keep], lon[keep],
                        depth[:, :n_levels], temp[:, :n_levels], rejected, levels_rejected)
