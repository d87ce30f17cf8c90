"""A corpus of bad inputs, made here from the tiny demo products, run through whole builds.

For each case the build must finish with the good files and put the bad one in the cube's reject
list with a precise reason; ``strict`` must fail fast naming the file; the command line prints
one line, never a traceback. The expected cube is independent of the bad file: either the clean
demo cube, or a build of the demo *without* the bad file (or without the bad profiles), so a bad
input can neither crash the build nor leak anything into the cube. Variants that are unusual but
valid (lon 0..360, descending lat, out-of-order times) must give the clean cube.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import netCDF4
import numpy as np
import pytest
import zarr

from _ncfixtures import copy_netcdf, demo_copy, edit, ostia, ostia_name, write_glorys
from conftest import tiny_cube_config, write_tiny_config
from cube.build import build
from cube.errors import InputError
from cube.layout import decode_attrs

HOURS_1950 = np.datetime64("1950-01-01T00", "h")
GLORYS_NAME = "mercatorglorys12v1_gl12_mean_{}_R{}.nc"
EN4_NAME = "EN.4.2.2.f.profiles.g10.{}.nc"


# --------------------------------------------------------------------------------------------
# Making bad files from good ones
# --------------------------------------------------------------------------------------------


def glorys(demo: Path, day: str = "20100127", run: str | None = None) -> Path:
    run = run or str(np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:]}") + np.timedelta64(7, "D")).replace("-", "")
    return demo / "glorys" / GLORYS_NAME.format(day, run)


def en4(demo: Path, month: str) -> Path:
    return demo / "en4" / EN4_NAME.format(month)


def set_attrs(path: Path, var: str, **attrs) -> Path:
    with netCDF4.Dataset(path, "a") as ds:
        ds[var].setncatts(attrs)
    return path


def shift_ostia_day(demo: Path, src_day: str, new_day: str) -> Path:
    """A copy of an OSTIA day re-dated (name and time variable) to ``new_day``."""
    dst = ostia(demo, new_day)
    shutil.copy(ostia(demo, src_day), dst)
    delta = (np.datetime64(f"{new_day[:4]}-{new_day[4:6]}-{new_day[6:]}")
             - np.datetime64(f"{src_day[:4]}-{src_day[4:6]}-{src_day[6:]}")).astype(int)
    with netCDF4.Dataset(dst, "a") as ds:
        ds["time"][:] = ds["time"][:] + 86400 * delta
    return dst


def shift_glorys(demo: Path, new_day: str = "20100210") -> Path:
    """A copy of the first GLORYS snapshot re-dated to ``new_day`` (a snapshot after the cube's days)."""
    dst = glorys(demo, new_day)
    shutil.copy(glorys(demo), dst)
    day = np.datetime64(f"{new_day[:4]}-{new_day[4:6]}-{new_day[6:]}")
    with netCDF4.Dataset(dst, "a") as ds:
        ds["time"][:] = (day.astype("datetime64[h]") - HOURS_1950).astype(float)
    return dst


def subset_profiles(src: Path, dst: Path, rows: np.ndarray) -> Path:
    """Copy an EN4 file keeping (and ordering) the profiles ``rows`` of the N_PROF dimension."""
    return copy_netcdf(src, dst, rows=rows)


def n_profiles(path: Path) -> int:
    with netCDF4.Dataset(path) as ds:
        return len(ds.dimensions["N_PROF"])


def stack_glorys(srcs: list[Path], dst: Path) -> Path:
    """One GLORYS file holding the snapshots of ``srcs`` along time, in the order given."""
    with netCDF4.Dataset(srcs[0]) as first, netCDF4.Dataset(dst, "w", format=first.data_model) as d:
        first.set_auto_maskandscale(False)
        d.setncatts({k: first.getncattr(k) for k in first.ncattrs()})
        for name, dim in first.dimensions.items():
            d.createDimension(name, len(srcs) if name == "time" else len(dim))
        for name, var in first.variables.items():
            attrs = {k: var.getncattr(k) for k in var.ncattrs()}
            out = d.createVariable(name, var.dtype, var.dimensions, fill_value=attrs.pop("_FillValue", None))
            out.setncatts(attrs)
            out.set_auto_maskandscale(False)
            if "time" in var.dimensions:
                parts = []
                for src in srcs:
                    with netCDF4.Dataset(src) as s:
                        s.set_auto_maskandscale(False)
                        parts.append(s[name][...])
                out[...] = np.concatenate(parts, axis=0)
            else:
                out[...] = var[...]
    return dst


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(demo)`` writes it and returns its path.

    ``reason``: the reject reason expected (None: the file is valid and accepted). ``words``: text
    the reject detail must contain. ``reference``: what the cube must equal: 'clean' (the demo
    cube), 'without' (the demo with the bad file deleted) or 'subset' (``make`` also wrote the
    good part of the file to ``<name>.good``: the demo with that file instead). ``atol``: float
    tolerance for accepted variants whose coordinates move by float32 rounding.
    """

    make: Callable[[Path], Path]
    reason: str | None
    words: tuple[str, ...] = ()
    reference: str = "clean"
    atol: float = 0.0
    profiles_rejected: tuple[str, int] | None = None


def _zero_byte(demo):
    path = ostia(demo, "20100206")
    path.write_bytes(b"")
    return path


def _html(demo):
    path = ostia(demo, "20100207")
    path.write_bytes(b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>\n" * 40)
    return path


def _truncated_hdf5(demo):
    data = ostia(demo, "20100127").read_bytes()
    path = ostia(demo, "20100208")
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_classic(demo):
    data = en4(demo, "201002").read_bytes()          # the NetCDF-3 month
    path = en4(demo, "201003")
    path.write_bytes(data[: int(len(data) * 0.7)])
    return path


def _ostia_celsius(demo):
    # add_offset 0 turns the packed kelvin into degC numbers; the label says so too.
    return set_attrs(shift_ostia_day(demo, "20100127", "20100209"), "analysed_sst", units="degC", add_offset=np.float32(0))


def _ostia_celsius_labelled_kelvin(demo):
    return set_attrs(ostia(demo, "20100131"), "analysed_sst", add_offset=np.float32(0))


def _glorys_kelvin(demo):
    return set_attrs(shift_glorys(demo), "thetao", units="K", add_offset=np.float64(294.15))


def _glorys_kelvin_labelled_celsius(demo):
    return set_attrs(shift_glorys(demo), "thetao", add_offset=np.float64(294.15))


def _ostia_missing_sst(demo):
    src = ostia(demo, "20100127")
    return copy_netcdf(src, ostia(demo, "20100212"), drop=("analysed_sst",))


def _glorys_missing_thetao(demo):
    return copy_netcdf(glorys(demo), glorys(demo, "20100210"), drop=("thetao",))


def _en4_missing_potm(demo):
    return copy_netcdf(en4(demo, "201001"), en4(demo, "201003"), drop=("POTM_CORRECTED",))


def _ostia_lon_0_360(demo):
    return edit(ostia(demo, "20100131"), ostia(demo, "20100131"), lon=lambda v: v + np.float32(360))


def _ostia_descending_lat(demo):
    flip = lambda v: v[..., ::-1, :]  # noqa: E731
    return edit(ostia(demo, "20100201"), ostia(demo, "20100201"), lat=lambda v: v[::-1], analysed_sst=flip,
                analysis_error=flip, sea_ice_fraction=flip, mask=flip)


def _glorys_lon_0_360_descending_lat(demo):
    path = glorys(demo)
    return edit(path, path, latitude=lambda v: v[::-1], thetao=lambda v: v[..., ::-1, :],
                longitude=lambda v: v + np.float32(360))


def _ostia_all_missing(demo):
    return edit(ostia(demo, "20100131"), ostia(demo, "20100131"), analysed_sst=lambda v: np.full_like(v, -32768))


def _glorys_all_missing(demo):
    path = shift_glorys(demo)
    return edit(path, path, thetao=lambda v: np.full_like(v, -32767))


def _ostia_duplicate_day(demo):
    dst = ostia(demo, "20100130", version="fv03.0")      # sorts after the original
    shutil.copy(ostia(demo, "20100130"), dst)
    return dst


def _glorys_duplicate_time(demo):
    dst = glorys(demo, run="20100204")                   # same snapshot, a later production run
    shutil.copy(glorys(demo), dst)
    return dst


def _glorys_out_of_order(demo):
    first, second = glorys(demo), glorys(demo, "20100203")
    stack_glorys([second, first], demo / "glorys" / "glorys12v1_daily_thetao_two_snapshots.nc")
    first.unlink()
    second.unlink()
    return demo / "glorys" / "glorys12v1_daily_thetao_two_snapshots.nc"


def _ostia_time_disagrees_with_name(demo):
    dst = ostia(demo, "20100211")
    shutil.copy(ostia(demo, "20100127"), dst)
    return dst


def _en4_out_of_order(demo):
    src = en4(demo, "201002")
    rows = np.random.default_rng(3).permutation(n_profiles(src))
    tmp = subset_profiles(src, src.with_suffix(".tmp"), rows)
    tmp.replace(src)
    return src


def _en4_with_bad_rows(month: str, variables: tuple[str, ...], every: slice):
    """Fill ``variables`` with 99999 on the rows ``every``; the good rows go to ``<file>.good``."""

    def make(demo):
        src = en4(demo, month)
        n = n_profiles(src)
        bad = np.zeros(n, bool)
        bad[every] = True
        subset_profiles(src, src.with_suffix(".good"), np.flatnonzero(~bad))

        def fill(v):
            v[bad] = 99999.0
            return v

        return edit(src, src, **{name: fill for name in variables})

    return make


def _en4_all_rejected(variable: str, value):
    def make(demo):
        return edit(en4(demo, "201001"), en4(demo, "201003"), **{variable: lambda v: np.full_like(v, value)})

    return make


def _glorys_other_grid(demo):
    lat = np.arange(42.875, 46.5, 0.25)
    lon = np.arange(-5.875, -0.5, 0.25)
    hours = (np.datetime64("2010-02-10T00", "h") - HOURS_1950).astype(float)
    return write_glorys(glorys(demo, "20100210"), np.full((1, 50, lat.size, lon.size), 12.0), lat, lon, [hours])


def _directory(demo):
    path = ostia(demo, "20100213")
    path.mkdir()
    return path


def _dangling_link(demo):
    path = en4(demo, "201003")
    path.symlink_to(demo / "en4" / "EN.4.2.2.f.profiles.g10.209912.nc")
    return path


def _wrong_product(demo):
    path = ostia(demo, "20100214")
    shutil.copy(glorys(demo), path)
    return path


CASES = {
    "directory-named-nc": Case(_directory, "unreadable", ("directory",)),
    "dangling-symlink": Case(_dangling_link, "unreadable"),
    "glorys-file-among-ostia": Case(_wrong_product, "missing_variable", ("analysed_sst", "a GLORYS file", "inputs.glorys")),
    "zero-byte": Case(_zero_byte, "unreadable", ("zero-byte",)),
    "html-named-nc": Case(_html, "unreadable", ("not a NetCDF file",)),
    "truncated-netcdf4": Case(_truncated_hdf5, "unreadable"),
    "truncated-netcdf3": Case(_truncated_classic, "unreadable", ("truncated",)),
    "ostia-degC": Case(_ostia_celsius, "bad_units", ("degC", "kelvin expected")),
    "ostia-degC-values-labelled-K": Case(_ostia_celsius_labelled_kelvin, "bad_units", ("degrees Celsius",), "without"),
    "glorys-kelvin": Case(_glorys_kelvin, "bad_units", ("'K'", "degrees_C expected")),
    "glorys-K-values-labelled-degC": Case(_glorys_kelvin_labelled_celsius, "bad_units", ("look like kelvin",)),
    "ostia-no-analysed_sst": Case(_ostia_missing_sst, "missing_variable", ("analysed_sst",)),
    "glorys-no-thetao": Case(_glorys_missing_thetao, "missing_variable", ("thetao",)),
    "en4-no-POTM_CORRECTED": Case(_en4_missing_potm, "missing_variable", ("POTM_CORRECTED",)),
    "ostia-lon-0-360": Case(_ostia_lon_0_360, None, atol=1e-3),
    "ostia-descending-lat": Case(_ostia_descending_lat, None),
    "glorys-lon-0-360-descending-lat": Case(_glorys_lon_0_360_descending_lat, None, atol=1e-3),
    "ostia-all-NaN-day": Case(_ostia_all_missing, "no_valid_data", ("no valid SST",), "without"),
    "glorys-all-NaN": Case(_glorys_all_missing, "no_valid_data", ("no valid value",)),
    "ostia-duplicate-day": Case(_ostia_duplicate_day, "duplicate_time", ("2010-01-30", "GLOB_REP-v02.0-fv02.0.nc")),
    "glorys-duplicate-time": Case(_glorys_duplicate_time, "duplicate_time", ("R20100203",)),
    "glorys-out-of-order-times": Case(_glorys_out_of_order, None),
    "ostia-time-disagrees-with-name": Case(_ostia_time_disagrees_with_name, "bad_time", ("2010-02-11",)),
    "en4-out-of-order-profiles": Case(_en4_out_of_order, None, atol=1e-4),
    "en4-JULD-fill": Case(_en4_with_bad_rows("201001", ("JULD",), slice(None, None, 3)), None,
                          reference="subset", profiles_rejected=("bad_time", 24)),
    "en4-position-99999": Case(_en4_with_bad_rows("201002", ("LATITUDE", "LONGITUDE"), slice(1, None, 4)), None,
                               reference="subset", profiles_rejected=("bad_position", 17)),
    "en4-all-JULD-fill": Case(_en4_all_rejected("JULD", 99999.0), "no_valid_data", ("bad_time",)),
    "en4-QC-rejects-everything": Case(_en4_all_rejected("PROFILE_POTM_QC", b"4"), "no_valid_data", ("profile_qc",)),
    "glorys-other-grid": Case(_glorys_other_grid, "bad_grid", ("0.25",)),
}


# --------------------------------------------------------------------------------------------
# Comparing cubes
# --------------------------------------------------------------------------------------------


def cube_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the cube (data, coordinates, static, patch index) by path."""
    root = zarr.open_group(str(path), mode="r")
    return {name: arr[...] for name, arr in root.arrays()} | {
        f"{g}/{name}": arr[...] for g, group in root.groups() for name, arr in group.arrays()}


def assert_same_cube(got: Path, expected: Path, atol: float = 0.0):
    a, b = cube_arrays(got), cube_arrays(expected)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        if atol and a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def clean(tiny_demo, tmp_path_factory):
    """The clean demo cube and its build report."""
    out = tmp_path_factory.mktemp("clean") / "cube.zarr"
    report = build(tiny_cube_config(tiny_demo, out), progress=False)
    assert report.rejects == []
    return out, report


def reference(case: Case, demo: Path, bad: Path, tmp_path: Path, clean) -> tuple[Path, object]:
    if case.reference == "clean":
        return clean
    ref_demo = demo_copy(demo, tmp_path / "ref_demo")
    ref_bad = ref_demo / bad.relative_to(demo)
    if case.reference == "subset":
        ref_bad.with_suffix(".good").replace(ref_bad)
    else:
        ref_bad.unlink()
    out = tmp_path / "ref.zarr"
    return out, build(tiny_cube_config(ref_demo, out), progress=False)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_build_keeps_the_good_files_and_rejects_the_bad_one(name, tiny_demo, tmp_path, clean):
    case = CASES[name]
    demo = demo_copy(tiny_demo, tmp_path / "demo")
    bad = case.make(demo)
    out = tmp_path / "cube.zarr"
    report = build(tiny_cube_config(demo, out), progress=False)

    expected = [] if case.reason is None else [(str(bad), case.reason)]
    assert [(r["file"], r["reason"]) for r in report.rejects] == expected, report.rejects
    for word in case.words:
        assert word in report.rejects[0]["detail"], report.rejects[0]
    attrs = decode_attrs(zarr.open_group(str(out), mode="r").attrs.asdict())
    assert attrs["status"] == "complete" and attrs["rejects"] == report.rejects
    ref_out, ref_report = reference(case, demo, bad, tmp_path, clean)
    assert_same_cube(out, ref_out, case.atol)
    if case.profiles_rejected:
        reason, n = case.profiles_rejected
        expected_counts = dict(ref_report.profiles_rejected)
        expected_counts[reason] = expected_counts.get(reason, 0) + n
        assert report.profiles_rejected == expected_counts
    else:
        assert report.profiles_rejected == ref_report.profiles_rejected


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.reason])
def test_strict_build_fails_naming_the_file(name, tiny_demo, tmp_path):
    case = CASES[name]
    demo = demo_copy(tiny_demo, tmp_path / "demo")
    bad = case.make(demo)
    cfg = tiny_cube_config(demo, tmp_path / "cube.zarr")
    with pytest.raises(InputError) as info:
        build(cfg, strict=True, progress=False)
    assert info.value.path == str(bad) and info.value.reason == case.reason
    assert not (tmp_path / "cube.zarr").exists()


def test_strict_failure_leaves_no_task_running(tiny_demo, tmp_path, monkeypatch):
    """When a task finds the bad file, build() raises only once the tasks already running have
    stopped: nothing goes on reading inputs or writing the staging folder behind the caller's back
    (netCDF-C is not thread-safe: a caller's own netCDF4 call could then crash the process)."""
    import threading
    import time

    import cube.tasks as builder

    demo = demo_copy(tiny_demo, tmp_path / "demo")
    CASES["ostia-all-NaN-day"].make(demo)
    running, lock, real = [0], threading.Lock(), builder.task_ostia

    def slow_task(*args, **kwargs):
        with lock:
            running[0] += 1
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(builder, "task_ostia", slow_task)
    cfg = tiny_cube_config(demo, tmp_path / "cube.zarr", compute={"progress": False, "threads": 2})
    with pytest.raises(InputError):
        build(cfg, strict=True, progress=False)
    assert running[0] == 0


SCAN_TIME = ("zero-byte", "glorys-kelvin", "glorys-other-grid", "ostia-duplicate-day")


@pytest.mark.parametrize("name", SCAN_TIME)
def test_strict_fails_before_writing_anything_for_a_file_the_scan_can_judge(name, tiny_demo, tmp_path):
    demo = demo_copy(tiny_demo, tmp_path / "demo")
    CASES[name].make(demo)
    with pytest.raises(InputError):
        build(tiny_cube_config(demo, tmp_path / "cube.zarr"), strict=True, progress=False)
    assert not (tmp_path / "cube.zarr").exists() and not (tmp_path / "cube.zarr.partial").exists()


@pytest.mark.parametrize("names", [
    ("zero-byte", "ostia-degC-values-labelled-K", "en4-QC-rejects-everything"),   # found by the scan first
    ("ostia-degC-values-labelled-K",),                                             # found by a build task
])
def test_command_line_prints_one_line_per_reject_and_strict_one_error_line(names, tiny_demo, tmp_path):
    demo = demo_copy(tiny_demo, tmp_path / "demo")
    bad = {name: CASES[name].make(demo) for name in names}
    config = write_tiny_config(demo, tmp_path / "cube.zarr")
    run = lambda *args: subprocess.run([sys.executable, "-m", "depthcube", "build", str(config), "-q", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    strict = run("--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthcube build: error: ")
    # The first bad file found is named, with its reason.
    assert any(str(p) in lines[0] and CASES[n].reason in lines[0] for n, p in bad.items()), lines[0]
    assert not (tmp_path / "cube.zarr").exists()

    lenient = run()
    assert lenient.returncode == 0 and "Traceback" not in lenient.stderr, lenient.stderr
    for name, path in bad.items():
        assert f"rejected {path}: {CASES[name].reason}" in lenient.stdout, lenient.stdout
    assert (tmp_path / "cube.zarr" / "zarr.json").exists()
