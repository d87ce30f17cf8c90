"""Property-based tests (hypothesis): readers on mutated files, sample assembly on random windows
and random cubes.

Readers: whatever the mutation (bytes of a NetCDF-3 header, attributes, coordinates, times,
values, QC flags), a reader either returns data that keeps its documented promises or raises
InputError naming the file; never another exception. Samples: whatever the cube holds (NaN days,
land, seabed, sparse or no profiles), a sample has fixed shapes and dtypes, no NaN or inf, and
masks consistent with values (invalid is 0, x only where observed, y only over ocean above the
seabed). Example counts are modest so each property runs in a few seconds.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from _cubes import GRID, SNAPSHOTS, TILE
from cube import store
from cube.config import CubeConfig
from cube.constants import GLORYS_DEPTHS
from cube.errors import InputError
from cube.grid import CubeGrid
from cube.index import write_patch_index
from cube.layout import CONTRACT, ChunkConfig, CompressionConfig
from cube.obs_table import rewrite_from_dense
from cube.patches import build_patches
from cube.tiling import PatchSpec, SplitSpec, assign_splits
from cube.profiles import ProfileTable
from cube.readers import read_en4, read_glorys, read_ostia
from cube.readers.profile_qc import JULD_VALID_DAYS
from loaders.config import DatasetConfig, EOConfig, XConfig
from loaders.corruption import sample_rng
from loaders.sample import WindowData, assemble
from loaders.stream import CubeStream

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # unguarded float arithmetic is a finding
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH_1950 = np.datetime64("1950-01-01T00:00:00", "s")


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="depthcube-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _fresh(scratch: Path, src: Path) -> Path:
    """A private copy of ``src`` to mutate (hypothesis runs many examples per test)."""
    dst = Path(tempfile.mkdtemp(dir=scratch)) / src.name
    shutil.copy(src, dst)
    return dst


# --------------------------------------------------------------------------------------------
# Reader promises
# --------------------------------------------------------------------------------------------


def check_profiles(table: ProfileTable, n_prof: int | None = None):
    """What read_en4/read_argo promise about a ProfileTable."""
    n = len(table)
    assert table.lat.shape == table.lon.shape == (n,) and table.depth.shape == table.temp.shape
    assert table.depth.shape[0] == n
    assert not np.isnat(table.time).any()
    days = (table.time - EPOCH_1950) / np.timedelta64(1, "D")
    assert ((days > JULD_VALID_DAYS[0]) & (days < JULD_VALID_DAYS[1])).all()
    assert ((table.lat >= -90) & (table.lat <= 90)).all()
    assert ((table.lon >= -180) & (table.lon < 180)).all()
    good = np.isfinite(table.temp)
    assert np.array_equal(good, np.isfinite(table.depth)), "depth and temperature NaN at the same levels"
    assert good.any(axis=1).all(), "every kept profile has a valid level"
    assert ((table.temp[good] >= -5) & (table.temp[good] <= 45)).all(), "temperatures are plausible degC"
    assert all(v > 0 for v in table.rejected.values()) and table.levels_rejected >= 0
    if n_prof is not None:
        assert n + sum(table.rejected.values()) == n_prof, "every profile kept or counted once as rejected"


def check_grid(ds, kind: str):
    lat, lon = ds["lat"].values, ds["lon"].values
    assert (np.diff(lat) > 0).all() and ((lat >= -90) & (lat <= 90)).all()
    assert (np.diff(lon) > 0).all() and ((lon >= -180) & (lon < 180)).all()
    values = ds["analysed_sst" if kind == "ostia" else "thetao"].values
    assert values.dtype == np.float32 and values.shape[-2:] == (lat.size, lon.size)
    finite = values[np.isfinite(values)]
    assert finite.size and not np.isinf(values).any()
    lo, hi = (250, 320) if kind == "ostia" else (-5, 45)
    assert finite.min() >= lo and finite.max() <= hi


def read_or_input_error(reader, path, **kwargs):
    """The reader's result, or None when it raised InputError naming ``path`` (anything else fails)."""
    try:
        out = reader(str(path), **kwargs)
    except InputError as e:
        assert e.path == str(path) and e.reason
        event(f"InputError {e.reason}")
        return None
    event("read")
    return out


# Byte-level mutations of a NetCDF-3 (classic) file: netCDF-C reads classic headers itself, so
# the readers check them first (cube.readers.netcdf._check_classic_size).
@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 20000)))
def test_en4_netcdf3_with_mutated_bytes_reads_or_is_rejected(tiny_demo, scratch, edits, cut):
    data = bytearray((tiny_demo / "en4" / "EN.4.2.2.f.profiles.g10.201002.nc").read_bytes())
    for pos, value in edits:
        data[pos] = value
    path = Path(tempfile.mkdtemp(dir=scratch)) / "EN.4.2.2.f.profiles.g10.201002.nc"
    path.write_bytes(bytes(data if cut is None else data[:cut]))
    table = read_or_input_error(read_en4, path)
    if table is not None:
        check_profiles(table)


JULD_VALUES = st.one_of(st.sampled_from([99999.0, 999999.0, np.nan, -1e7, 1e7, 0.0, -20000.0, 90000.0]),
                        st.floats(21900, 22000), st.floats(allow_nan=True, allow_infinity=True))
POSITION_VALUES = st.one_of(st.sampled_from([99999.0, np.nan, 90.0, -90.0, 91.0, 180.0, 360.0, -180.0, 400.0, -200.0]),
                            st.floats(-500, 500), st.floats(allow_nan=True, allow_infinity=True))
LEVEL_VALUES = st.one_of(st.sampled_from([99999.0, np.nan, -1.0, 0.0, 1e6, 45.0, 45.1, -5.1, 1e38]),
                         st.floats(-100, 6000, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32))
QC_CHARS = st.sampled_from([b"0", b"1", b"2", b"3", b"4", b"5", b"8", b"9", b" ", b"\x00", b"A", b"x"])
EN4_EDITS = {"JULD": JULD_VALUES, "LATITUDE": POSITION_VALUES, "LONGITUDE": POSITION_VALUES,
             "DEPH_CORRECTED": LEVEL_VALUES, "POTM_CORRECTED": LEVEL_VALUES, "JULD_QC": QC_CHARS,
             "POSITION_QC": QC_CHARS, "PROFILE_POTM_QC": QC_CHARS, "POTM_CORRECTED_QC": QC_CHARS,
             "DEPH_CORRECTED_QC": QC_CHARS}


@FUZZ
@given(data=st.data())
def test_en4_with_mutated_values_keeps_its_promises(tiny_demo, scratch, data):
    path = _fresh(scratch, tiny_demo / "en4" / "EN.4.2.2.f.profiles.g10.201001.nc")
    with netCDF4.Dataset(path, "a") as ds:
        n_prof = len(ds.dimensions["N_PROF"])
        for name in data.draw(st.lists(st.sampled_from(sorted(EN4_EDITS)), max_size=5, unique=True)):
            var = ds[name]
            var.set_auto_maskandscale(False)
            values = var[...]
            for _ in range(data.draw(st.integers(1, 20))):
                index = tuple(data.draw(st.integers(0, s - 1)) for s in values.shape)
                values[index] = data.draw(EN4_EDITS[name])
            var[...] = values
    table = read_or_input_error(read_en4, path)
    if table is not None:
        check_profiles(table, n_prof)


UNITS = st.sampled_from(["kelvin", "K", "degC", "degrees_C", "celsius", "", "furlongs", "1", "Kelvin "])
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -0.01, 1.0, 273.15]))


def _edit_axis(values: np.ndarray, how: str, where: int, amount: float) -> np.ndarray:
    out = values.copy()
    if how == "reverse":
        return out[::-1]
    if how == "shift360":
        return out + 360
    if how == "duplicate":
        out[where] = out[max(where - 1, 0)]
    elif how == "nan":
        out[where] = np.nan
    elif how == "set":
        out[where] = amount
    return out


AXIS_EDITS = st.one_of(st.just(("none", 0, 0.0)),  # half the examples keep the axis
                       st.tuples(st.sampled_from(["reverse", "shift360", "duplicate", "nan", "set"]),
                                 st.integers(0, 30), st.floats(-1000, 1000, width=32)))


def _mutate_axis(ds, name: str, data_var: str, data) -> None:
    how, where, amount = data.draw(AXIS_EDITS)
    ds[name][...] = _edit_axis(np.ma.filled(ds[name][...], np.nan), how, where, amount)
    if how == "reverse":  # a reversed axis with its data: still a valid file
        axis = -2 if name.startswith("lat") else -1
        var = ds[data_var]
        var.set_auto_maskandscale(False)
        var[...] = np.flip(var[...], axis=axis)


def _mutate_packed(ds, name: str, data, shape) -> None:
    var = ds[name]
    var.set_auto_maskandscale(False)
    raw = var[...]
    for _ in range(data.draw(st.integers(1, 30))):
        raw[(0,) + tuple(data.draw(st.integers(0, n - 1)) for n in shape)] = data.draw(st.integers(-32768, 32767))
    var[...] = raw


OSTIA_MUTATIONS = {
    "units": lambda ds, data: ds["analysed_sst"].setncattr("units", data.draw(UNITS)),
    "scale_factor": lambda ds, data: ds["analysed_sst"].setncattr("scale_factor", np.float32(data.draw(NUMBERS))),
    "add_offset": lambda ds, data: ds["analysed_sst"].setncattr("add_offset", np.float32(data.draw(NUMBERS))),
    "lat": lambda ds, data: _mutate_axis(ds, "lat", "analysed_sst", data),
    "lon": lambda ds, data: _mutate_axis(ds, "lon", "analysed_sst", data),
    "time": lambda ds, data: ds["time"].__setitem__(0, data.draw(st.integers(-2**31, 2**31 - 1))),
    "values": lambda ds, data: _mutate_packed(ds, "analysed_sst", data, (64, 96)),
}
GLORYS_MUTATIONS = {
    "units": lambda ds, data: ds["thetao"].setncattr("units", data.draw(UNITS)),
    "add_offset": lambda ds, data: ds["thetao"].setncattr("add_offset", np.float64(data.draw(NUMBERS))),
    "latitude": lambda ds, data: _mutate_axis(ds, "latitude", "thetao", data),
    "longitude": lambda ds, data: _mutate_axis(ds, "longitude", "thetao", data),
    "depth": lambda ds, data: ds["depth"].__setitem__(data.draw(st.integers(0, 49)), data.draw(st.floats(-10, 7000))),
    "time": lambda ds, data: ds["time"].__setitem__(0, data.draw(NUMBERS)),
    "values": lambda ds, data: _mutate_packed(ds, "thetao", data, (50, 42, 62)),
}


def _mutated_copy(scratch: Path, src: Path, mutations: dict, data) -> Path:
    """A copy of ``src`` with one to three of ``mutations`` applied (often a single one, so that
    files with one quirk and files read successfully both occur)."""
    path = _fresh(scratch, src)
    with netCDF4.Dataset(path, "a") as ds:
        for name in data.draw(st.lists(st.sampled_from(sorted(mutations)), min_size=1, max_size=3, unique=True)):
            mutations[name](ds, data)
    return path


@FUZZ
@given(data=st.data())
def test_ostia_with_mutated_header_and_values_keeps_its_promises(tiny_demo, scratch, data):
    path = _mutated_copy(scratch, sorted((tiny_demo / "ostia").glob("*.nc"))[0], OSTIA_MUTATIONS, data)
    ds = read_or_input_error(read_ostia, path)
    if ds is not None:
        check_grid(ds, "ostia")
        assert ds["land"].dtype == bool and ds["land"].shape == ds["analysed_sst"].shape[1:]
        assert str(ds["time"].values[0])[:10].replace("-", "") == path.name[:8]


@FUZZ
@given(data=st.data())
def test_glorys_with_mutated_header_and_values_keeps_its_promises(tiny_demo, scratch, data):
    path = _mutated_copy(scratch, sorted((tiny_demo / "glorys").glob("*.nc"))[0], GLORYS_MUTATIONS, data)
    ds = read_or_input_error(read_glorys, path)
    if ds is not None:
        check_grid(ds, "glorys")
        np.testing.assert_array_equal(ds["depth"].values, GLORYS_DEPTHS)
        assert ds["thetao"].shape[:2] == (1, 50)
        assert str(ds["time"].values[0])[:10].replace("-", "") == path.name.split("_")[-2]


# --------------------------------------------------------------------------------------------
# Sample assembly
# --------------------------------------------------------------------------------------------

X_SOURCES = ("argo", "tracks", "rectangles", "synthetic_pixels", "none")


@st.composite
def dataset_configs(draw, window_days: int | None = None):
    lo = draw(st.integers(0, 49))
    hi = draw(st.integers(lo + 1, 50))
    x = XConfig(source=draw(st.sampled_from(X_SOURCES)), mask_fraction=draw(st.floats(0, 1)),
                rect_min=1, rect_max=draw(st.integers(1, 6)), pixel_count=draw(st.integers(1, 60)))
    eo = EOConfig(source=draw(st.sampled_from(["ostia", "glorys_surface"])), offset=draw(st.booleans()),
                  speckle=draw(st.booleans()), dropout_p=draw(st.sampled_from([0.0, 0.3, 1.0])))
    return DatasetConfig(window_days=window_days or draw(st.integers(1, 5)), x=x, eo=eo, target_bands=(lo, hi),
                         augment=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@st.composite
def window_data(draw, n_days: int):
    """One tile's window arrays as a cube can hold them: NaN days, land, seabed, sparse profiles."""
    h = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ocean = rng.random((h, h)) < draw(st.floats(0, 1))
    bottom = np.where(ocean, rng.integers(0, 51, (h, h)), 0).astype(np.int8)
    sst = (270 + 35 * rng.random((n_days, h, h))).astype(np.float32)
    sst[rng.random(sst.shape) < draw(st.floats(0, 1))] = np.nan
    sst[:, ~ocean] = np.nan
    sst[rng.random(n_days) < 0.2] = np.nan                                 # whole missing days
    n_snap = draw(st.integers(1, min(3, n_days)))
    counts = np.bincount(rng.integers(0, n_snap, n_days - n_snap), minlength=n_snap) + 1
    levels = np.arange(50)[:, None, None]
    glorys = (-2 + 32 * rng.random((n_snap, 50, h, h))).astype(np.float32)
    glorys[:, (levels >= bottom[None]) | ~ocean[None]] = np.nan
    count = (rng.poisson(draw(st.floats(0, 2)), (50, h, h)) * (rng.random((50, h, h)) < 0.3)).astype(np.int32)
    total = (count * (-2 + 32 * rng.random((50, h, h)))).astype(np.float32)
    total[rng.random(total.shape) < 0.1] = 0.0                            # real 0 degC sums stay valid
    return WindowData(sst_k=sst, glorys=glorys, glorys_days=counts, count=count, total=total,
                      ocean=ocean, bottom_level=bottom)


def check_sample(s: dict, cfg: DatasetConfig, h: int, w: int):
    lo, hi = cfg.target_bands
    c = hi - lo
    shapes = {"eo": (1, h, w), "x": (c, h, w), "y": (c, h, w), "x_valid_mask": (c, h, w), "y_valid_mask": (c, h, w),
              "x_valid_mask_1d": (1, h, w), "land_mask": (1, h, w), "eo_valid_mask": (1, h, w)}
    for key, shape in shapes.items():
        assert tuple(s[key].shape) == shape, key
    for key in ("eo", "x", "y", "land_mask"):
        assert s[key].dtype == np.float32 and np.isfinite(s[key]).all(), key
    for key in ("x_valid_mask", "y_valid_mask", "x_valid_mask_1d", "eo_valid_mask"):
        assert s[key].dtype == bool, key
    assert np.all(s["x"][~s["x_valid_mask"]] == 0) and np.all(s["y"][~s["y_valid_mask"]] == 0)
    assert np.array_equal(s["x_valid_mask_1d"], s["x_valid_mask"].any(axis=0, keepdims=True))
    ocean = s["land_mask"][0] == 1
    assert set(np.unique(s["land_mask"])) <= {0.0, 1.0}
    assert not (s["y_valid_mask"] & ~ocean).any(), "y valid only over ocean"
    assert np.all(s["eo"][0][~ocean] == 0), "eo is 0 over land"
    assert np.all(s["eo"][~s["eo_valid_mask"]] == 0) and not (s["eo_valid_mask"][0] & ~ocean).any()
    if cfg.x.source != "argo":
        assert not (s["x_valid_mask"] & ~s["y_valid_mask"]).any(), "a corruption of y observes only valid y"
        assert np.array_equal(s["x"][s["x_valid_mask"]], s["y"][s["x_valid_mask"]])
    assert s["date"].dtype == np.int64 and s["coords"].shape == (2,)


@FUZZ
@given(data=st.data())
def test_assembled_samples_are_finite_with_consistent_masks(data):
    cfg = data.draw(dataset_configs())
    win = data.draw(window_data(cfg.window))
    h = win.ocean.shape[0]
    s = assemble(win, cfg, sample_rng(cfg.seed, 0, 0), centre_day=np.datetime64("2012-02-29"),
                 coords=(10.0, -170.0), info={"patch": 0})
    check_sample(s, cfg, h, h)
    lo, hi = cfg.target_bands
    if not cfg.augment:
        levels = np.arange(lo, hi)[:, None, None]
        north_up = lambda a: a[..., ::-1, :]  # noqa: E731
        below = levels >= north_up(win.bottom_level)[None]
        assert not (s["y_valid_mask"] & below).any(), "y valid only above the seabed"
        if cfg.x.source == "argo":
            assert np.array_equal(s["x_valid_mask"], north_up(win.count[lo:hi] > 0))
    assert s["date"] == 20120228


def make_random_cube(path: Path, rng: np.random.Generator) -> str:
    """A cube written through cube.store with random land, seabed, missing days and profiles."""
    url = str(path)
    days = np.arange(np.datetime64("2010-01-25"), np.datetime64("2010-02-14"), dtype="datetime64[D]")
    cfg = CubeConfig(output=url, chunks=ChunkConfig(days=4), patches=PatchSpec(tile_size=TILE, invalid_threshold=1.0),
                     split=SplitSpec(method="patch", val_fraction=0.25, seed=7))
    grid = CubeGrid(GRID.lat_south, GRID.lon_west, GRID.resolution, 32, 32)
    store.create_cube(url, days=days, glorys_times=SNAPSHOTS, lat=grid.lat, lon=grid.lon, depth=GLORYS_DEPTHS,
                      chunking=cfg.chunks, compression=CompressionConfig(), tile=TILE,
                      attrs={"contract": CONTRACT, "status": "building"})
    root = store.open_root(url)
    shape = (grid.nlat, grid.nlon)
    ocean = rng.random(shape) < rng.random()
    bottom = np.where(ocean, rng.integers(0, 51, shape), 0).astype(np.int8)
    sst = (270 + 35 * rng.random((len(days),) + shape)).astype(np.float32)
    sst[:, ~ocean] = np.nan
    sst[rng.random(len(days)) < 0.2] = np.nan
    root["ostia/analysed_sst"][:] = sst
    levels = np.arange(50)[:, None, None]
    theta = (-2 + 32 * rng.random((len(SNAPSHOTS), 50) + shape)).astype(np.float32)
    theta[:, (levels >= bottom[None]) | ~ocean[None]] = np.nan
    root["glorys/thetao"][:] = theta
    count = ((rng.random((len(days), 50) + shape) < 0.01) * rng.integers(1, 4, (len(days), 50) + shape)).astype(np.int32)
    root["profiles/count"][:] = count
    root["profiles/sum"][:] = (count * (-2 + 32 * rng.random(count.shape))).astype(np.float32)
    root["profiles/n_obs"][:] = count.sum(axis=1)
    rewrite_from_dense(url)
    root["static/ocean_mask"][:] = ocean
    root["static/bottom_level"][:] = bottom
    write_patch_index(url, assign_splits(build_patches(ocean, grid, cfg.patches), cfg.split), grid, cfg)
    store.consolidate(url, {"contract": CONTRACT, "status": "complete", "build": {"grid": grid.to_dict()}})
    return url


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_streams_over_random_cubes_give_finite_consistent_samples(scratch, seed, data):
    cfg = data.draw(dataset_configs(window_days=data.draw(st.integers(1, 7))))
    url = make_random_cube(Path(tempfile.mkdtemp(dir=scratch)) / "cube.zarr", np.random.default_rng(seed))
    stream = CubeStream(url, cfg, split="all")
    n = 0
    for sample in stream:
        numpy_sample = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in sample.items()}
        check_sample(numpy_sample, cfg, TILE, TILE)
        n += 1
    assert n == len(stream) and stream.skipped == 0
