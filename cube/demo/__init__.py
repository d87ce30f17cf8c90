"""Synthetic raw products for demos and tests: OSTIA L4, GLORYS12 thetao and EN4.2.2 profiles.

``write_demo(outdir, spec)`` writes ``outdir/ostia/*.nc`` (daily), ``outdir/glorys/*.nc`` (a daily
mean every ``glorys_step_days``, or monthly means) and ``outdir/en4/*.nc`` (monthly, NetCDF-3 and
NetCDF-4). The files copy the real products' names, dimensions, dtypes, packing and attributes
(checked against ../shared/data/real in tests/test_demo.py), so the real readers read them.

All three sample one hidden ocean (``cube.demo.truth``): OSTIA is its surface plus OSTIA's own
small-scale structure, GLORYS its potential temperature at 1/12 deg, the profiles its value at their
own place and time plus instrument noise, so products agree the way real ones do (closely, not
exactly). The output is a pure function of the spec: the same spec gives byte-identical files
(dates inside the files come from the data dates, never the clock; NetCDF-4 files carry no HDF5
object timestamps). Every file says in its attributes that it is synthetic.
"""

from __future__ import annotations

from pathlib import Path

from cube.demo.en4 import En4Writer
from cube.demo.glorys import GlorysWriter
from cube.demo.ostia import OstiaWriter
from cube.demo.spec import DemoSpec
from cube.demo.truth import TruthOcean
from cube.progress import Progress

__all__ = ["DemoSpec", "TruthOcean", "write_demo"]


def write_demo(outdir, spec: DemoSpec, progress: bool = False) -> dict:
    """Write every demo product of ``spec`` under ``outdir``; return ``{'ostia'|'glorys'|'en4': [paths]}``.

    Paths are strings, in date order. Existing files of the same names are replaced (each file is
    written under a temporary name and renamed when complete). A month with no EN4 profile (only
    possible with a tiny region or ``profiles_per_day`` 0) gets no EN4 file.
    """
    if not isinstance(spec, DemoSpec):
        raise TypeError(f"write_demo needs a DemoSpec, got {type(spec).__name__}")
    outdir = Path(outdir)
    dirs = {name: outdir / name for name in ("ostia", "glorys", "en4")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    truth = TruthOcean(spec.seed, spec.region)
    ostia, glorys, en4 = OstiaWriter(truth, spec), GlorysWriter(truth, spec), En4Writer(truth, spec)
    if spec.glorys_monthly:
        glorys_jobs = [(glorys.write_monthly, m) for m in spec.months]
    else:
        glorys_jobs = [(glorys.write_daily, d) for d in spec.glorys_days]
    jobs = ([("ostia", ostia.write_day, d) for d in spec.days]
            + [("glorys", fn, when) for fn, when in glorys_jobs]
            + [("en4", en4.write_month, m) for m in spec.months])
    written: dict[str, list[str]] = {name: [] for name in dirs}
    for product, fn, when in _progress(jobs, progress):
        path = fn(dirs[product], when)
        if path is not None:
            written[product].append(str(path))
    return written


def _progress(jobs: list, enabled: bool):
    """Yield ``jobs`` while :class:`cube.progress.Progress` reports them: a bar on a terminal, one
    line at the end elsewhere (CI, a log file), nothing when not ``enabled``."""
    with Progress(len(jobs), "demo products", unit="file", enabled=enabled) as bar:
        for job in jobs:
            yield job
            bar.update()
