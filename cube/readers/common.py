"""Machinery shared by the product readers: opening, checking and decoding NetCDF files.

Every function here turns an input problem into :class:`cube.errors.InputError` naming the file,
so a product module never lets a netCDF4 or ``KeyError`` traceback escape.

- :func:`open_netcdf` opens a local path or any fsspec URL (NetCDF-3 classic/64-bit/CDF-5 and
  NetCDF-4/HDF5), after checking the magic number, the size (zero-byte files) and, for NetCDF-3,
  that the file is as long as its header says (netCDF-C silently reads a truncated classic file).
- :func:`decode_values` applies CF packing (``_FillValue``/``missing_value`` matched in packed
  space, then ``scale_factor``, then ``add_offset``) and the reference's fill rules.
- :func:`decode_time` turns CF ``<unit> since <epoch>`` numbers into datetime64 with integer day
  arithmetic (no float drift across a month boundary).
- :class:`Bbox`, :func:`plan_horizontal` and :func:`read_horizontal` subset a regular lat/lon grid
  before reading, with longitudes normalised to [-180, 180) and latitudes ascending.
- :func:`build_profile_table` applies the shared profile QC and returns a ProfileTable.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import netCDF4
import numpy as np

from cube.errors import ConfigError, InputError
from cube.grid import wrap_lon
from cube.profiles import ProfileTable

#: What every reader accepts as ``path``: a local path or an fsspec URL (``s3://``, ``memory://``, ...).
PathArg = str | os.PathLike

# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: An HDF5 superblock may sit after a user block of 512 * 2**k bytes; these are the usual places.
HDF5_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048)
CLASSIC_MAGICS = {b"CDF\x01": 1, b"CDF\x02": 2, b"CDF\x05": 5}


def path_name(path: PathArg) -> str:
    """The file name (basename) of a local path or URL, for name-based date and product parsing."""
    text = os.fspath(path) if not isinstance(path, str) else path
    return text.rstrip("/").rsplit("/", 1)[-1]


def _is_remote(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _local_path(text: str) -> str:
    return text[len("file://"):] if text.startswith("file://") else text


def _read_local_head(path: str, nbytes: int) -> tuple[bytes, int]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            return fh.read(nbytes), size
    except OSError as exc:
        raise InputError(path, "unreadable", f"cannot open the file: {exc}") from exc


def _fetch_remote(url: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            return fh.read()
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(url, "unreadable", f"cannot fetch it with fsspec: {exc}") from exc


def _check_magic(name: str, head: bytes, size: int) -> str:
    """'classic' or 'hdf5', else InputError('unreadable') saying what the file starts with."""
    if size == 0:
        raise InputError(name, "unreadable", "zero-byte file")
    if head[:4] in CLASSIC_MAGICS:
        return "classic"
    if any(head[o:o + 8] == HDF5_MAGIC for o in HDF5_SUPERBLOCK_OFFSETS):
        return "hdf5"
    raise InputError(name, "unreadable",
                     f"not a NetCDF file: starts with {head[:8]!r}, expected b'CDF\\x01', b'CDF\\x02', "
                     f"b'CDF\\x05' or the HDF5 signature")


class _ShortHeader(Exception):
    """The bytes given end inside the NetCDF-3 header."""


_NC_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}


class _HeaderCursor:
    """Big-endian reader over a NetCDF-3 header (classic, 64-bit offset or CDF-5)."""

    def __init__(self, buf: bytes, version: int):
        self.buf, self.pos, self.version = buf, 4, version

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise _ShortHeader
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def count(self) -> int:  # NON_NEG: 8 bytes in CDF-5, else 4
        return struct.unpack(">Q", self.take(8))[0] if self.version == 5 else self.int32()

    def offset(self) -> int:  # OFFSET: 4 bytes in CDF-1, else 8
        return self.int32() if self.version == 1 else struct.unpack(">Q", self.take(8))[0]

    def name(self) -> None:
        n = self.count()
        self.take((n + 3) // 4 * 4)

    def attributes(self) -> None:
        self.int32()  # NC_ATTRIBUTE tag or ABSENT
        for _ in range(self.count()):
            self.name()
            nc_type = self.int32()
            n = self.count() * _NC_TYPE_SIZE.get(nc_type, 1)
            self.take((n + 3) // 4 * 4)


def _classic_data_end(buf: bytes, version: int) -> int:
    """Byte offset where the last variable's data ends, from a NetCDF-3 header."""
    cur = _HeaderCursor(buf, version)
    numrecs = cur.count()
    streaming = numrecs == (2**64 - 1 if version == 5 else 2**32 - 1)
    cur.int32()
    dims = []
    for _ in range(cur.count()):
        cur.name()
        dims.append(cur.count())
    cur.attributes()
    cur.int32()
    variables = []
    for _ in range(cur.count()):
        cur.name()
        dimids = [cur.count() for _ in range(cur.count())]
        cur.attributes()
        nc_type = cur.int32()
        cur.count()  # vsize: recomputed below (it saturates for huge variables)
        begin = cur.offset()
        is_record = bool(dimids) and dims[dimids[0]] == 0
        shape = [dims[d] for d in (dimids[1:] if is_record else dimids)]
        variables.append((begin, is_record, int(np.prod(shape, dtype=np.int64)) * _NC_TYPE_SIZE.get(nc_type, 1)))
    rec_sizes = [nb for _, rec, nb in variables if rec]
    # A lone record variable is not padded to 4 bytes per record (netCDF classic spec).
    recsize = rec_sizes[0] if len(rec_sizes) == 1 else sum((nb + 3) // 4 * 4 for nb in rec_sizes)
    end = cur.pos
    for begin, is_record, nbytes in variables:
        if not is_record:
            end = max(end, begin + nbytes)
        elif numrecs and not streaming:
            end = max(end, begin + (numrecs - 1) * recsize + nbytes)
    return end


def _check_classic_size(name: str, read_head, size: int, version: int) -> None:
    """InputError('unreadable') when a NetCDF-3 file is shorter than its header says."""
    nbytes = 1 << 16
    while True:
        buf = read_head(min(nbytes, size))
        try:
            end = _classic_data_end(buf, version)
            break
        except (IndexError, struct.error, ValueError) as exc:
            raise InputError(name, "unreadable", f"corrupt NetCDF-3 header: {exc}") from exc
        except _ShortHeader:
            if len(buf) >= size:
                raise InputError(name, "unreadable", f"truncated: the file ({size} bytes) ends inside its NetCDF-3 header")
            nbytes *= 4
    if size < end:
        raise InputError(name, "unreadable", f"truncated: its NetCDF-3 header says the data end at byte {end}, "
                                             f"but the file has {size} bytes")


def _configure(ds: netCDF4.Dataset) -> netCDF4.Dataset:
    # Raw arrays only: packing, fills and chars are decoded here, the same way for every product.
    ds.set_auto_maskandscale(False)
    ds.set_always_mask(False)
    ds.set_auto_chartostring(False)
    return ds


#: netCDF-C / HDF5 are not thread-safe: concurrent opens or reads from dask's threads crash the
#: process (segfault). Every netCDF4 call of the readers happens inside ``open_netcdf``'s block,
#: which holds this lock; decoding, regridding and writing after the block run in parallel.
NETCDF_LOCK = threading.RLock()


@contextmanager
def open_netcdf(path: PathArg) -> Iterator[netCDF4.Dataset]:
    """Open a NetCDF-3 or NetCDF-4 file (local path or fsspec URL) with raw, undecoded variables.

    Zero-byte, truncated and non-NetCDF inputs raise ``InputError(path, 'unreadable', ...)``, as do
    netCDF-C errors while the block reads data. Remote files are read whole into memory (before the
    lock is taken). The block runs under :data:`NETCDF_LOCK`.
    """
    with _open_locked(path) as ds:
        yield ds


@contextmanager
def _open_locked(path: PathArg) -> Iterator[netCDF4.Dataset]:
    text = os.fspath(path) if not isinstance(path, str) else path
    if _is_remote(text):
        data = _fetch_remote(text)
        kind = _check_magic(text, data[:2056], len(data))
        if kind == "classic":
            _check_classic_size(text, lambda n: data[:n], len(data), CLASSIC_MAGICS[data[:4]])
        opener = lambda: netCDF4.Dataset(path_name(text) or "remote.nc", mode="r", memory=data)  # noqa: E731
    else:
        local = _local_path(text)
        head, size = _read_local_head(local, 2056)
        kind = _check_magic(text, head, size)
        if kind == "classic":
            _check_classic_size(text, lambda n: _read_local_head(local, n)[0], size, CLASSIC_MAGICS[head[:4]])
        opener = lambda: netCDF4.Dataset(local, mode="r")  # noqa: E731
    with NETCDF_LOCK:
        try:
            ds = _configure(opener())
        except (OSError, RuntimeError, ValueError) as exc:
            raise InputError(text, "unreadable", f"netCDF4 cannot open it: {exc}") from exc
        try:
            yield ds
        except (OSError, RuntimeError) as exc:
            raise InputError(text, "unreadable", f"reading failed: {exc}") from exc
        finally:
            ds.close()


def require_var(ds: netCDF4.Dataset, name: str, path) -> netCDF4.Variable:
    """The variable ``name``, or ``InputError(path, 'missing_variable')`` in one short line.

    The detail names the variable and how many the file has, not the whole list (a real Argo
    file has ~180 variables).
    """
    if name not in ds.variables:
        raise InputError(path, "missing_variable", f"variable {name!r} not found among the file's "
                                                   f"{len(ds.variables)} variables")
    return ds.variables[name]


#: Variables that identify each product, checked in this order (a file matches when it has all).
PRODUCT_SIGNATURES = (
    ("ostia", ("analysed_sst",)),
    ("glorys", ("thetao",)),
    ("en4", ("DEPH_CORRECTED", "JULD")),
    ("argo", ("PRES", "TEMP", "JULD")),
)
PRODUCT_LABELS = {"ostia": "an OSTIA", "glorys": "a GLORYS", "en4": "an EN4", "argo": "an Argo"}
_BGC_B_NAME = re.compile(r"^B[RDA]?\d{5,7}_\d{3}D?\.nc$|_Bprof\.nc$", re.IGNORECASE)


def product_from_variables(variables) -> str | None:
    """The first product whose signature variables the file has (:data:`PRODUCT_SIGNATURES`), or None."""
    names = set(variables)
    return next((kind for kind, required in PRODUCT_SIGNATURES if names.issuperset(required)), None)


def require_product(ds: netCDF4.Dataset, path, kind: str) -> None:
    """InputError('missing_variable') in one line when the file is plainly another product than ``kind``.

    A BGC-Argo B-file (``B<R|D><wmo>_<cycle>.nc``, ``<wmo>_Bprof.nc`` or DATA_TYPE 'B-Argo ...')
    names the core file that holds temperature; a file with another product's signature variables
    says which input list it belongs to. Files that match ``kind``, or nothing, pass (the
    reader's own checks then name what is missing).
    """
    own = dict(PRODUCT_SIGNATURES)[kind]
    missing = [name for name in own if name not in ds.variables]
    if not missing:
        return
    if _is_bgc_b_file(ds, path):
        core = _core_argo_name(path_name(path))
        core_file = f"the core Argo file {core}" if core else "the core Argo file"
        raise InputError(path, "missing_variable", f"a BGC-Argo B-file (no {missing[0]}): temperature is in "
                                                   f"{core_file}; list that under inputs.argo")
    other = product_from_variables(ds.variables)
    if other is not None and other != kind:
        raise InputError(path, "missing_variable", f"variable {missing[0]!r} not found; looks like "
                                                   f"{PRODUCT_LABELS[other]} file: list it under inputs.{other}")


def _is_bgc_b_file(ds: netCDF4.Dataset, path) -> bool:
    data_type = ds.variables.get("DATA_TYPE")
    text = "".join(decode_chars(data_type[...]).ravel()).strip().lower() if data_type is not None else ""
    return text.startswith("b-argo") or bool(_BGC_B_NAME.search(path_name(path)))


def _core_argo_name(name: str) -> str | None:
    """The core file of a B-file name: BR6901234_001.nc -> R6901234_001.nc, 6901234_Bprof.nc -> 6901234_prof.nc."""
    if re.search(r"_Bprof\.nc$", name, re.IGNORECASE):
        return re.sub(r"_Bprof\.nc$", "_prof.nc", name, flags=re.IGNORECASE)
    return name[1:] if _BGC_B_NAME.search(name) else None


def optional_var(ds: netCDF4.Dataset, *names: str) -> netCDF4.Variable | None:
    """The first of ``names`` present in the file, or None."""
    for name in names:
        if name in ds.variables:
            return ds.variables[name]
    return None


def var_attrs(var: netCDF4.Variable) -> dict:
    """A variable's attributes as a plain dict."""
    return {k: var.getncattr(k) for k in var.ncattrs()}


def global_attrs(ds: netCDF4.Dataset) -> dict:
    """The file's global attributes as a plain dict."""
    return {k: ds.getncattr(k) for k in ds.ncattrs()}


def attr_text(value) -> str:
    """An attribute as lower-case text (bytes decoded, arrays joined), '' for None."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, np.ndarray):
        value = " ".join(str(v) for v in value.ravel())
    return str(value).strip().lower()


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------

#: Decoded values beyond this magnitude are fills (reference rule: ``|v| > 1e6`` -> NaN).
ABS_MAX_VALID = 1e6
#: The fill of the profile products (EN4, Argo), also caught when the attribute is missing.
PROFILE_FILL = 99999.0


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


# ----------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Regions and horizontal subsetting
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bbox:
    """A lat/lon box ``[lat_min, lat_max) x [lon_min, lon_max)``; longitudes compare modulo 360.

    ``lon_min > lon_max`` (e.g. 170, -170) means the box crosses the dateline; a span of 360 is global.
    """

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def __post_init__(self):
        vals = (self.lat_min, self.lat_max, self.lon_min, self.lon_max)
        if not all(np.isfinite(v) for v in vals):
            raise ConfigError(f"bbox: values must be finite, got {vals}")
        # Latitudes beyond +-90 are allowed: they simply reach the pole (callers pad boxes by a margin).
        if not self.lat_min < self.lat_max:
            raise ConfigError(f"bbox: need lat_min < lat_max, got lat {self.lat_min}..{self.lat_max}")
        if self.lon_max - self.lon_min > 360 or self.lon_min == self.lon_max:
            raise ConfigError(f"bbox: longitude span {self.lon_min}..{self.lon_max} must be in (0, 360]")

    def __str__(self) -> str:
        """Short form for messages: 'lat 40..41.6, lon -20..-18.4' (the repr stays the dataclass one)."""
        return f"lat {self.lat_min:g}..{self.lat_max:g}, lon {self.lon_min:g}..{self.lon_max:g}"

    @property
    def lon_width(self) -> float:
        """Eastward span in degrees, in (0, 360]."""
        d = self.lon_max - self.lon_min
        return d if d > 0 else d + 360.0

    def contains(self, lat, lon) -> np.ndarray:
        """Half-open membership of points (profile positions), dateline-safe."""
        lat = np.asarray(lat, dtype=np.float64)
        east = np.mod(np.asarray(lon, dtype=np.float64) - self.lon_min, 360.0)
        with np.errstate(invalid="ignore"):
            return (lat >= self.lat_min) & (lat < self.lat_max) & (east < self.lon_width)

    def lon_near(self, lon, margin: float) -> np.ndarray:
        """Closed membership of longitudes within ``margin`` degrees of the box (grid subsetting)."""
        if self.lon_width + 2 * margin >= 360.0:
            return np.ones(np.shape(lon), dtype=bool)
        east = np.mod(np.asarray(lon, dtype=np.float64) - (self.lon_min - margin), 360.0)
        return east <= self.lon_width + 2 * margin + 1e-9

    def lat_near(self, lat, margin: float) -> np.ndarray:
        lat = np.asarray(lat, dtype=np.float64)
        return (lat >= self.lat_min - margin - 1e-9) & (lat <= self.lat_max + margin + 1e-9)


def as_bbox(bbox) -> Bbox | None:
    """None, a :class:`Bbox` or a ``(lat_min, lat_max, lon_min, lon_max)`` sequence -> Bbox | None."""
    if bbox is None or isinstance(bbox, Bbox):
        return bbox
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bbox: expected (lat_min, lat_max, lon_min, lon_max), got {bbox!r}") from exc
    if len(values) != 4:
        raise ConfigError(f"bbox: expected 4 values (lat_min, lat_max, lon_min, lon_max), got {len(values)}")
    return Bbox(*values)


@dataclass(frozen=True, eq=False)
class HorizontalPlan:
    """Which source rows/columns to read, in output order (lat ascending, lon in [-180,180) ascending)."""

    rows: np.ndarray
    cols: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def _check_axis(path, name: str, values: np.ndarray) -> None:
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise InputError(path, "bad_grid", f"{name} must be a non-empty 1-D finite vector, got shape {values.shape}")


def _step(values: np.ndarray) -> float:
    return float(np.median(np.abs(np.diff(values)))) if values.size > 1 else 0.0


#: A regular axis is rebuilt on its lattice when every centre lies within this fraction of a step of it.
LATTICE_TOLERANCE = 0.01


def regular_axis(centres: np.ndarray) -> np.ndarray:
    """Ascending centres put back exactly on their lattice ``origin + k / m`` degrees.

    Coordinates stored as float32 are off by up to half an ulp (1.5e-5 deg at 180, 3e-5 at 360),
    and a 0..360 axis shifted to [-180, 180) keeps the error of its larger numbers, so two files
    of the same grid in the two conventions would regrid a coastal cell differently. When the
    step is within tolerance of 1/m deg and the first centre of a multiple of half a step, the
    axis is rebuilt from those exact numbers; any other axis is returned unchanged.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        return c
    step = (c[-1] - c[0]) / (c.size - 1)
    m = np.round(1.0 / step)
    if m < 1:
        return c
    half = 0.5 / m
    fitted = np.round(c[0] / half) * half + np.arange(c.size) / m
    return fitted if np.abs(fitted - c).max() <= LATTICE_TOLERANCE * step else c


def plan_horizontal(lat, lon, bbox: Bbox | None, path, shape: tuple[int, int] | None = None) -> HorizontalPlan:
    """Plan the read of a regular lat/lon grid, subset to ``bbox`` plus one source cell of margin.

    Latitudes must be strictly monotonic within [-90, 90]; longitudes (any convention: 0..360 or
    -180..180) must not repeat once wrapped to [-180, 180); their lengths must match ``shape``
    (the data's last two dims) when given. Otherwise InputError('bad_grid'). A bbox that misses
    the grid raises InputError('no_valid_data'). The planned axes are ascending and, for regular
    grids, exactly on their lattice (:func:`regular_axis`), whatever the file's convention.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    _check_axis(path, "latitude", lat)
    _check_axis(path, "longitude", lon)
    if shape is not None and (lat.size, lon.size) != tuple(shape):
        raise InputError(path, "bad_grid", f"coordinates have {lat.size} x {lon.size} points, the data {tuple(shape)}")
    dlat = np.diff(lat)
    if lat.size > 1 and not ((dlat > 0).all() or (dlat < 0).all()):
        raise InputError(path, "bad_grid", "latitudes are not strictly monotonic")
    if np.abs(lat).max() > 90 + 1e-6:
        raise InputError(path, "bad_grid", f"latitudes reach {np.abs(lat).max()}, outside [-90, 90]")
    wrapped = wrap_lon(lon)
    lon_order = np.argsort(wrapped, kind="stable")
    if lon.size > 1 and (np.diff(wrapped[lon_order]) <= 1e-9).any():
        raise InputError(path, "bad_grid", "longitudes repeat once wrapped to [-180, 180) (e.g. both 0 and 360)")
    lat_order = np.argsort(lat, kind="stable")
    lat_axis, lon_axis = regular_axis(lat[lat_order]), regular_axis(wrapped[lon_order])
    keep_lat = np.ones(lat.size, bool) if bbox is None else bbox.lat_near(lat_axis, _step(lat))
    keep_lon = np.ones(lon.size, bool) if bbox is None else bbox.lon_near(lon_axis, _step(lon_axis))
    if not keep_lat.any() or not keep_lon.any():
        raise InputError(path, "no_valid_data", f"bbox {bbox} does not overlap the grid "
                                                f"(lat {lat.min()}..{lat.max()}, lon {lon.min()}..{lon.max()})")
    return HorizontalPlan(lat_order[keep_lat], lon_order[keep_lon], lat_axis[keep_lat], lon_axis[keep_lon])


def _blocks(sorted_idx: np.ndarray) -> list[slice]:
    """Contiguous runs of sorted unique indices, as slices."""
    breaks = np.flatnonzero(np.diff(sorted_idx) > 1) + 1
    return [slice(int(run[0]), int(run[-1]) + 1) for run in np.split(sorted_idx, breaks)]


def read_horizontal(var: netCDF4.Variable, plan: HorizontalPlan) -> np.ndarray:
    """Read ``var[..., rows, cols]`` raw (undecoded): one slab per contiguous run of source columns.

    Only the planned rows/columns are read from disk; a plan that straddles the file's longitude
    seam reads two slabs and joins them in output order.
    """
    r0, r1 = int(plan.rows.min()), int(plan.rows.max()) + 1
    cols = np.unique(plan.cols)
    parts = [var[..., r0:r1, block] for block in _blocks(cols)]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    if not np.array_equal(plan.rows, np.arange(r0, r1)):
        data = np.take(data, plan.rows - r0, axis=-2)
    if not np.array_equal(plan.cols, cols):
        data = np.take(data, np.searchsorted(cols, plan.cols), axis=-1)
    return data


def read_coord(ds: netCDF4.Dataset, name: str, path) -> np.ndarray:
    """A 1-D coordinate variable as float64 (missing -> InputError('missing_variable'))."""
    var = require_var(ds, name, path)
    return np.asarray(var[...], dtype=np.float64).ravel()


def check_lat_lon_dims(path, ds: netCDF4.Dataset, lat_dim: str, lon_dim: str) -> None:
    """InputError('bad_grid') unless the data's last two dims are latitude then longitude."""
    for dim, axis, std in ((lat_dim, "Y", "latitude"), (lon_dim, "X", "longitude")):
        attrs = var_attrs(ds.variables[dim]) if dim in ds.variables else {}
        if not (dim.lower().startswith(std[:3]) or attr_text(attrs.get("standard_name")) == std
                or attr_text(attrs.get("axis")) == axis.lower()):
            raise InputError(path, "bad_grid", f"dims end in ({lat_dim}, {lon_dim}); (latitude, longitude) expected")


# ----------------------------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------------------------

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
