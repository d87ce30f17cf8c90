"""CF decoding of raw NetCDF variables: units, packing and fills, char flags, time.

- :func:`unit_kind` / :func:`check_units` recognise the spellings of degC, kelvin, decibar, metre;
- :func:`decode_values` applies CF packing (``_FillValue``/``missing_value`` matched in packed
  space, then ``scale_factor``, then ``add_offset``) and the reference's fill rules;
- :func:`decode_chars` / :func:`read_chars` turn ``S1`` flag arrays into ``U1`` (NUL is blank);
- :func:`decode_time` turns CF ``<unit> since <epoch>`` numbers into datetime64 with integer day
  arithmetic (no float drift across a month boundary).
"""

from __future__ import annotations

import re
from typing import Sequence

import netCDF4
import numpy as np

from cube.errors import InputError
from cube.readers.netcdf import attr_text, var_attrs


# Units

CELSIUS_UNITS = frozenset({"degc", "deg_c", "degrees_c", "degree_c", "celsius", "degree_celsius",
                           "degrees_celsius", "c", "°c", "deg c", "degrees c", "degree c"})
KELVIN_UNITS = frozenset({"k", "kelvin", "kelvins", "degk", "deg_k", "degrees_k", "degree_k",
                          "degree_kelvin", "degrees_kelvin"})
DECIBAR_UNITS = frozenset({"decibar", "decibars", "dbar", "db"})
METRE_UNITS = frozenset({"m", "meter", "meters", "metre", "metres"})


def unit_kind(units) -> str:
    """'celsius', 'kelvin', 'decibar', 'metre', '' (no units) or 'other' for a units attribute."""
    text = attr_text(units)
    if not text:
        return ""
    for kind, names in (("celsius", CELSIUS_UNITS), ("kelvin", KELVIN_UNITS),
                        ("decibar", DECIBAR_UNITS), ("metre", METRE_UNITS)):
        if text in names or text.replace(" ", "_") in names:
            return kind
    return "other"


def check_units(path, var: netCDF4.Variable, expected: str, *, required: bool = True, lenient: bool = False) -> None:
    """InputError('bad_units') unless the variable's units are of kind ``expected``.

    ``required=False`` lets missing units pass; ``lenient=True`` also lets unrecognised spellings
    pass and rejects only units that are recognisably another quantity (e.g. decibar for a depth).
    """
    units = var_attrs(var).get("units")
    kind = unit_kind(units)
    if kind == expected or (kind == "" and not required) or (kind == "other" and lenient):
        return
    names = {"celsius": "degrees_C", "kelvin": "kelvin", "decibar": "decibar", "metre": "m"}
    raise InputError(path, "bad_units", f"{var.name} has units {units!r}; {names[expected]} expected")


# Values

#: Decoded values beyond this magnitude are fills (reference rule: ``|v| > 1e6`` -> NaN).
ABS_MAX_VALID = 1e6


def _as_unsigned(raw: np.ndarray, attrs: dict) -> np.ndarray:
    if attr_text(attrs.get("_Unsigned")) == "true" and raw.dtype.kind == "i":
        return raw.view(raw.dtype.str.replace("i", "u"))
    return raw


def fill_mask(raw: np.ndarray, attrs: dict) -> np.ndarray:
    """Where packed values equal ``_FillValue`` or ``missing_value`` (compared in the file's dtype)."""
    bad = np.zeros(raw.shape, dtype=bool)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for fill in np.atleast_1d(attrs[key]).ravel():
                bad |= raw == np.asarray(fill).astype(raw.dtype)
    return bad


def decode_values(raw, attrs: dict, *, dtype=np.float32, extra_fills: Sequence[float] = (),
                  abs_max: float = ABS_MAX_VALID) -> np.ndarray:
    """CF-decode packed values to ``dtype`` with NaN for every missing value.

    Fills (``_FillValue``/``missing_value``) are matched in packed space, then ``scale_factor`` and
    ``add_offset`` apply; decoded values that are non-finite, beyond ``abs_max`` or close to one of
    ``extra_fills`` (numpy ``isclose``) become NaN. ``valid_min``/``valid_max`` are not applied:
    products disagree on whether they are packed or not.
    """
    raw = _as_unsigned(np.asarray(raw), attrs)
    bad = fill_mask(raw, attrs)
    out = raw.astype(dtype, copy=True)
    # Absurd packing attributes (inf, 1e38) give inf/NaN here; they are caught just below.
    with np.errstate(invalid="ignore", over="ignore"):
        if "scale_factor" in attrs:
            out *= np.asarray(attrs["scale_factor"]).astype(dtype)
        if "add_offset" in attrs:
            out += np.asarray(attrs["add_offset"]).astype(dtype)
        bad |= ~np.isfinite(out) | (np.abs(out) > abs_max)
        for fill in extra_fills:
            bad |= np.isclose(out, fill)
    out[bad] = np.nan
    return out


def read_values(var: netCDF4.Variable, *, dtype=np.float32, extra_fills: Sequence[float] = ()) -> np.ndarray:
    """A whole variable, decoded with :func:`decode_values`."""
    return decode_values(var[...], var_attrs(var), dtype=dtype, extra_fills=extra_fills)


_BYTE_TO_CHAR = np.array([chr(i) for i in range(256)], dtype="U1")
_BYTE_TO_CHAR[0] = " "  # a NUL char flag is a blank (unset) flag


def decode_chars(raw) -> np.ndarray:
    """A NetCDF char (``S1``) array as a numpy ``U1`` array of the same shape; NUL reads as blank."""
    raw = np.asarray(raw)
    if raw.dtype.kind == "U":
        return np.where(raw == "", " ", raw.astype("U1"))
    codes = np.ascontiguousarray(raw.astype("S1")).view(np.uint8).reshape(raw.shape)
    return _BYTE_TO_CHAR[codes]


def read_chars(ds: netCDF4.Dataset, name: str, shape: tuple[int, ...], path) -> np.ndarray:
    """A char flag variable as ``U1`` of ``shape``; all blank (unset) when the file lacks it."""
    if name not in ds.variables:
        return np.full(shape, " ", dtype="U1")
    out = decode_chars(ds.variables[name][...])
    if out.shape != shape:
        raise InputError(path, "bad_shape",
                         f"{name} has shape {out.shape}, expected {shape}")
    return out


# Time

_UNIT_NS = {
    **dict.fromkeys(("days", "day", "d"), 86_400 * 10**9),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), 3_600 * 10**9),
    **dict.fromkeys(("minutes", "minute", "mins", "min"), 60 * 10**9),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 10**9),
    **dict.fromkeys(("milliseconds", "millisecond", "msecs", "msec", "ms"), 10**6),
}
_TIME_UNITS = re.compile(
    r"^\s*(\w+)\s+since\s+(\d{1,4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T\s]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.\d*)?)?)?"
    r"\s*(?:z|utc|gmt|[+-]0{1,2}:?0{0,2})?\s*$", re.IGNORECASE)
STANDARD_CALENDARS = frozenset({"", "standard", "gregorian", "proleptic_gregorian"})


def parse_time_units(units, path, name: str = "time") -> tuple[int, np.datetime64]:
    """``'<unit> since <epoch>'`` -> (nanoseconds per unit, epoch as datetime64[ns])."""
    text = attr_text(units)
    m = _TIME_UNITS.match(text)
    if not m or m.group(1) not in _UNIT_NS:
        raise InputError(path, "bad_time", f"{name} units {units!r} are not '<days|hours|seconds> since <date>'")
    y, mo, d, hh, mm, ss = (int(g) if g else 0 for g in m.groups()[1:])
    try:
        epoch = np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}", "ns")
    except ValueError as exc:
        raise InputError(path, "bad_time", f"{name} units {units!r} have an invalid epoch") from exc
    return _UNIT_NS[m.group(1)], epoch


def decode_time(values, units, path, *, calendar=None, name: str = "time") -> np.ndarray:
    """CF time numbers -> datetime64[ns] (NaT where a value is NaN).

    Whole units and the fraction are converted separately in integer nanoseconds, so no float
    rounding moves a time across a day boundary. Non-standard calendars raise ``bad_time``.
    """
    if attr_text(calendar) not in STANDARD_CALENDARS:
        raise InputError(path, "bad_time", f"{name} calendar {calendar!r} is not supported (standard/gregorian expected)")
    unit_ns, epoch = parse_time_units(units, path, name)
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    # Beyond datetime64[ns] (years 1678..2261) the integer arithmetic below would wrap around
    # into a wrong but plausible date: such values are NaT, like missing ones.
    with np.errstate(over="ignore", invalid="ignore"):
        finite &= np.abs(np.where(finite, values, 0.0) * unit_ns + epoch.astype(np.int64)) < 9.0e18
    whole = np.floor(np.where(finite, values, 0.0))
    # Fractions to the microsecond: float noise below that is not information (0.9 d is 21.6 h exactly).
    frac_ns = np.rint((np.where(finite, values, 0.0) - whole) * (unit_ns // 1000)).astype(np.int64) * 1000
    out = epoch + (whole.astype(np.int64) * unit_ns + frac_ns).astype("timedelta64[ns]")
    return np.where(finite, out, np.datetime64("NaT", "ns"))


def time_from_var(var: netCDF4.Variable, path) -> np.ndarray:
    """A CF time variable decoded to datetime64[ns]; fills or NaN raise ``bad_time``."""
    attrs = var_attrs(var)
    values = decode_values(var[...], attrs, dtype=np.float64, abs_max=np.inf)  # seconds since 1981 exceed 1e6
    if values.size == 0 or np.isnan(values).any():
        detail = (f"{var.name} holds missing values ({int(np.isnan(values).sum())} of {values.size})"
                  if values.size else f"{var.name} is empty")
        raise InputError(path, "bad_time", detail)
    times = decode_time(values, attrs.get("units"), path, calendar=attrs.get("calendar"), name=var.name).ravel()
    if np.isnat(times).any():
        raise InputError(path, "bad_time", f"{var.name} values {values.ravel()[np.isnat(times)][:3]} "
                                           f"{attrs.get('units')!r} are outside the years 1678..2261")
    return times


def check_unique_times(path, times: np.ndarray) -> None:
    """InputError('duplicate_time') when a time occurs twice."""
    uniq, counts = np.unique(times, return_counts=True)
    if (counts > 1).any():
        raise InputError(path, "duplicate_time", f"time {uniq[counts > 1][0]} occurs {counts.max()} times")


def date_from_digits(path, digits: str) -> np.datetime64:
    """'YYYYMMDD' or 'YYYYMM' from a file name -> datetime64[D] (the 1st for a month)."""
    text = f"{digits[:4]}-{digits[4:6]}" + (f"-{digits[6:8]}" if len(digits) == 8 else "-01")
    try:
        return np.datetime64(text, "D")
    except ValueError as exc:
        raise InputError(path, "bad_time", f"file name date {digits!r} is not a valid date") from exc
