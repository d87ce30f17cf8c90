"""Raw product readers: one module per input format behind one entry point.

``open_product(path)`` guesses the product with :func:`detect_product` and dispatches to
:func:`read_ostia`, :func:`read_glorys` (both -> ``xarray.Dataset``), :func:`read_en4` or
:func:`read_argo` (both -> :class:`cube.profiles.ProfileTable`). Every input problem raises
:class:`cube.errors.InputError` with a reason code; readers never write Zarr.

The product modules share code by job: :mod:`~cube.readers.netcdf` (opening, the netCDF-C lock,
attributes), :mod:`~cube.readers.cf` (units, packing, char flags, time), :mod:`~cube.readers.horizontal`
(boxes, lon/lat normalisation, subset reads), :mod:`~cube.readers.profile_qc` (profile decoding and
the one ordered QC list of EN4 and Argo) and :mod:`~cube.readers.products` (product signatures).
"""

from __future__ import annotations

import re

from cube.errors import ConfigError, InputError
from cube.readers.argo import read_argo
from cube.readers.horizontal import Bbox
from cube.readers.netcdf import PathArg, open_netcdf, path_name
from cube.readers.products import PRODUCT_SIGNATURES, product_from_variables
from cube.readers.en4 import read_en4
from cube.readers.glorys import read_glorys, scan_glorys
from cube.readers.ostia import read_ostia, scan_ostia

READERS = {"ostia": read_ostia, "glorys": read_glorys, "en4": read_en4, "argo": read_argo}

#: File name patterns, tried in order (case-insensitive, on the basename).
NAME_PATTERNS = (
    ("ostia", re.compile(r"^\d{14}-.*L4_GHRSST-SST|OSTIA", re.IGNORECASE)),
    ("en4", re.compile(r"^EN\.4\.|\.profiles\.g1[03]\.\d{6}\.nc$", re.IGNORECASE)),
    ("argo", re.compile(r"_[BS]?prof\.nc$|^[BS]?[RDA]?\d{5,7}_\d{3}D?\.nc$", re.IGNORECASE)),
    ("glorys", re.compile(r"glorys|glo12|cmems_mod_glo_phy|_gl12_|thetao", re.IGNORECASE)),
)
#: Variables that identify a product when the name does not, checked in order.
VARIABLE_SIGNATURES = PRODUCT_SIGNATURES


def detect_product(path: PathArg) -> str:
    """'ostia', 'glorys', 'en4' or 'argo': by file name pattern first, then by the variables inside.

    Raises InputError('unknown_product') when neither tells, or 'unreadable' when the file has to
    be opened and cannot be.
    """
    name = path_name(path)
    for kind, pattern in NAME_PATTERNS:
        if pattern.search(name):
            return kind
    with open_netcdf(path) as ds:
        names = sorted(ds.variables)
    kind = product_from_variables(names)
    if kind is not None:
        return kind
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    raise InputError(path, "unknown_product", f"neither the name {name!r} nor the variables "
                                              f"({shown or 'none'}) match OSTIA, GLORYS, EN4 or Argo")


def open_product(path: PathArg, kind: str | None = None, **opts):
    """Read ``path`` with the reader for ``kind`` (detected when None), passing ``opts`` through.

    Returns an ``xarray.Dataset`` for 'ostia'/'glorys' and a ``ProfileTable`` for 'en4'/'argo'.
    """
    kind = kind or detect_product(path)
    if kind not in READERS:
        raise ConfigError(f"kind: expected one of {sorted(READERS)}, got {kind!r}")
    return READERS[kind](path, **opts)


__all__ = ["Bbox", "READERS", "detect_product", "open_product", "read_argo", "read_en4", "read_glorys", "read_ostia", "scan_glorys", "scan_ostia"]
