"""Telling the products apart by their variables: the signatures :func:`cube.readers.detect_product`
falls back on, and :func:`require_product`, the one-line error for a file listed under the wrong
product (a BGC-Argo B-file names the core file that holds temperature).
"""

from __future__ import annotations

import re

import netCDF4

from cube.errors import InputError
from cube.readers.cf import decode_chars
from cube.readers.netcdf import path_name


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
