"""Small NetCDF writing helpers shared by the demo product writers."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import netCDF4
import numpy as np

#: Said in every demo file, so nobody mistakes one for a real product.
SYNTHETIC_NOTE = ("SYNTHETIC DEMO DATA written by depthcube (cube.demo) from a hidden analytic ocean; "
                  "the layout mimics the real product, the values are not observations")


@contextlib.contextmanager
def atomic_dataset(path: Path, fmt: str) -> Iterator[netCDF4.Dataset]:
    """A new NetCDF file written under a temporary name and renamed into place when complete.

    An interrupted run therefore never leaves a half-written file under a product's real name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    ds = netCDF4.Dataset(tmp, "w", format=fmt)
    try:
        yield ds
    except BaseException:
        ds.close()
        tmp.unlink(missing_ok=True)
        raise
    ds.close()
    os.replace(tmp, path)


def new_variable(ds, name: str, dtype, dims: tuple, attrs: dict, **kwargs) -> netCDF4.Variable:
    """Create a variable that takes raw (already packed) values, then set its attributes in order."""
    v = ds.createVariable(name, dtype, dims, **kwargs)
    v.set_auto_maskandscale(False)  # the writers pack explicitly; netCDF4 must not rescale
    set_attrs(v, attrs)
    return v


def set_attrs(obj, attrs: dict) -> None:
    """Set attributes in the given order (``_FillValue`` is set at variable creation, never here)."""
    for key, value in attrs.items():
        obj.setncattr(key, value)


def spec_attrs(spec) -> dict:
    """Global attributes recording the demo spec (JSON) and the synthetic-data warning."""
    return {"depthcube_demo_spec": json.dumps(spec.to_dict(), sort_keys=True), "depthcube_demo_note": SYNTHETIC_NOTE}


def stable_uuid(*parts) -> str:
    """A UUID derived from the given values, so re-running the same spec gives the same file bytes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "depthcube-demo:" + ":".join(map(str, parts))))


def yyyymmdd(day: np.datetime64) -> str:
    """datetime64 -> 'YYYYMMDD'."""
    return str(np.datetime64(day, "D")).replace("-", "")


def iso_compact(when: np.datetime64) -> str:
    """datetime64 -> 'YYYYMMDDTHHMMSSZ' (the GHRSST time attribute format)."""
    s = str(np.datetime64(when, "s"))
    return s.replace("-", "").replace(":", "") + "Z"
