"""GeoTIFF export (REFERENCE.md 4) read back with rioxarray and compared with hand-computed
analytic values and with the cube read through xarray; skip rule, manifest, resume, shuffle."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import xarray as xr
import zarr

from _cubes import DAYS, GRID, SNAPSHOTS, TILE, make_analytic_cube, ocean_and_bottom, sst_k, thetao_c
from depthcube.cli import main
from cube.constants import GLORYS_DEPTHS
from cube.obs_table import rewrite_from_dense
from cube.open import open_cube
from loaders.config import DatasetConfig
from loaders.export import (MANIFEST_COLUMNS, MANIFEST_NAME, ExportOptions, Manifest, block_shuffle,
                            export_geotiff, read_manifest)

# rioxarray's own use of the affine `*` operator.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

# Extra profile observations on day 10 (2010-02-04), level 2, five columns of the tile at
# row0 = col0 = 16: (row, col, degC). With the analytic cube's own columns no window has 4.
EXTRA_DAY, EXTRA_LEVEL = 10, 2
EXTRA = [(18, 17, 5.0), (19, 18, 6.0), (21, 19, 7.0), (22, 20, 0.0), (23, 21, 9.5)]


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    url = make_analytic_cube(tmp_path_factory.mktemp("export") / "cube.zarr")
    root = zarr.open_group(url, mode="r+", zarr_format=3, use_consolidated=False)
    for r, c, v in EXTRA:
        root["profiles/count"][EXTRA_DAY, EXTRA_LEVEL, r, c] = 1
        root["profiles/sum"][EXTRA_DAY, EXTRA_LEVEL, r, c] = v
        root["profiles/n_obs"][EXTRA_DAY, r, c] += 1
    rewrite_from_dense(url)  # the observation table (what the loaders read) follows the edit
    zarr.consolidate_metadata(url, zarr_format=3)
    return url


@pytest.fixture(scope="module")
def export3(cube, tmp_path_factory):
    out = tmp_path_factory.mktemp("tif3")
    report = export_geotiff(cube, out, DatasetConfig(window_days=3))
    return out, report


def _open(out: Path, rel: str) -> xr.DataArray:
    return rioxarray.open_rasterio(out / rel, mask_and_scale=False)


def _row(df, date: int, patch: int):
    sel = df[(df.date == date) & (df.patch_id == patch)]
    assert len(sel) == 1
    return sel.iloc[0]


def _nearest_snapshot(day) -> int:
    """Hand: nearest snapshot in real days from the day's noon (ties to the earlier one)."""
    delta = (day - SNAPSHOTS.astype("datetime64[D]")).astype(int) + 0.5
    return int(np.argmin(np.abs(delta)))


def test_skip_rule_writes_only_windows_with_four_observed_columns(export3):
    out, report = export3
    df = read_manifest(out / MANIFEST_NAME)
    # 6 tiles x 18 centre days (window 3 on a 20-day axis); only the 3 windows of tile 4 that
    # contain day 10 see the 5 extra columns; every other window sees at most 1 observed column.
    assert len(df) == report.selected == 6 * 18
    written = df[df.files_written == 1]
    assert sorted(written.date) == [20100203, 20100204, 20100205] and set(written.patch_id) == {4}
    skipped = df[df.files_written == 0]
    assert (skipped.export_skipped_reason == "valid_mask_1d_pixels_lt_4").all()
    assert (written.export_skipped_reason == "").all() and (written.valid_mask_1d_pixels == 5).all()
    assert report.written == 3 and report.skipped_sparse == 105
    tifs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif"))
    assert tifs == sorted(f"{k}/{d}_patch_4.tif" for k in ("argo", "glorys", "ostia") for d in (20100203, 20100204, 20100205))


def test_georeferencing_north_up_bands_and_tags(export3):
    out, _ = export3
    row = _row(read_manifest(out / MANIFEST_NAME), 20100204, 4)
    lon0, lat0 = -20.0 + 16 * 0.1, 40.0 + 16 * 0.1                    # tile 4: row0 = col0 = 16
    for product, bands, dtype, nodata in (("ostia", 1, "float32", np.nan), ("argo", 50, "float32", np.nan),
                                          ("glorys", 50, "int16", -32768)):
        da = _open(out, row[f"{product}_tif_path"])
        assert da.shape == (bands, TILE, TILE) and str(da.dtype) == dtype
        assert da.rio.crs.to_epsg() == 4326
        assert da.rio.bounds() == pytest.approx((lon0, lat0, lon0 + 1.6, lat0 + 1.6))
        t = da.rio.transform()
        assert t.a == pytest.approx(0.1) and t.e == pytest.approx(-0.1) and t.b == 0 and t.d == 0  # north-up
        assert float(da.y[0]) == pytest.approx(lat0 + 1.6 - 0.05)      # first row = northern cell centres
        assert (np.isnan(da.rio.nodata) if np.isnan(nodata) else da.rio.nodata == nodata)
        # rioxarray parses numeric tags into numbers.
        assert da.attrs["product"] == product and str(da.attrs["date"]) == "20100204" and str(da.attrs["patch_id"]) == "4"
        assert da.attrs["sample_basename"] == "20100204_patch_4" and da.attrs["phase"] in ("train", "val")
    argo = _open(out, row["argo_tif_path"])
    assert argo.attrs["long_name"][0] == "argo_glorys_level_0_0.494m"
    assert argo.attrs["long_name"][49] == "argo_glorys_level_49_5727.917m"
    glorys = _open(out, row["glorys_tif_path"])
    assert glorys.attrs["long_name"][22] == "glorys_thetao_level_22_109.729m"
    assert glorys.attrs["value_encoding"] == "packed_int16_celsius_x100" and str(glorys.attrs["packed_nodata"]) == "-32768"
    assert glorys.attrs["glorys_depth_m"].split("|")[0] == "0.494"


def test_values_equal_hand_computed_window_means(export3):
    out, _ = export3
    row = _row(read_manifest(out / MANIFEST_NAME), 20100204, 4)
    days = DAYS[9:12]                                                  # centre day 10, window 3
    lat = GRID.lat[16:32][::-1][:, None]                                # north-up
    lon = GRID.lon[16:32][None, :]
    ocean, bottom = ocean_and_bottom()
    bottom = bottom[16:32, 16:32][::-1]
    # GLORYS: mean over the window's days of each day's nearest snapshot, int16 degC x 100.
    glorys = _open(out, row["glorys_tif_path"]).values
    for z in (0, 11, 12, 30):
        expected = np.mean([thetao_c(_nearest_snapshot(d), z, lat, lon) for d in days], axis=0)
        valid = z < bottom
        assert np.all(np.abs(glorys[z][valid] - np.rint(expected[valid] * 100)) <= 1)
        assert np.all(glorys[z][~valid] == -32768)                      # below the shelf seabed
    # Decoded through the standard GDAL scale: rioxarray gives degC directly.
    decoded = rioxarray.open_rasterio(out / row["glorys_tif_path"], mask_and_scale=True).values
    expected0 = np.mean([thetao_c(_nearest_snapshot(d), 0, lat, lon) for d in days], axis=0)
    assert np.allclose(decoded[0], expected0, atol=0.006)
    # OSTIA: mean of the window's kelvin days, in degC.
    ostia = _open(out, row["ostia_tif_path"]).values[0]
    expected = np.mean([sst_k(t, lat, lon) for t in (9, 10, 11)], axis=0) - 273.15
    assert np.allclose(ostia, expected, atol=1e-4)
    # Profiles: the five extra observations at level 2, NaN everywhere else (0 degC stays valid).
    argo = _open(out, row["argo_tif_path"]).values
    expected = np.full(argo.shape, np.nan)
    for r, c, v in EXTRA:
        expected[EXTRA_LEVEL, TILE - 1 - (r - 16), c - 16] = v
    assert np.array_equal(np.isnan(argo), np.isnan(expected))
    assert np.allclose(argo[~np.isnan(argo)], expected[~np.isnan(expected)])
    assert int(row["argo_valid_spatial_observation_count"]) == 4        # the 0 degC maximum is not counted
    assert row["window_start"] == "2010-02-03" and row["window_end"] == "2010-02-05"


def test_one_day_windows_equal_the_cube_read_with_xarray(cube, tmp_path):
    """Window 1 on a snapshot day: each GeoTIFF is the cube's own values on that day."""
    report = export_geotiff(cube, tmp_path, DatasetConfig(window_days=1), ExportOptions(min_observed_columns=0))
    tree = open_cube(cube)
    df = read_manifest(tmp_path / MANIFEST_NAME)
    row = _row(df, 20100204, 4)
    assert report.written == len(df) == 6 * 20
    sel = dict(lat=slice(16, 32), lon=slice(16, 32))
    day = np.datetime64("2010-02-04")
    theta = tree["glorys/thetao"].sel(time=day).isel(**sel).values[:, ::-1]
    sst = tree["ostia/analysed_sst"].sel(time=day).isel(**sel).values[::-1] - 273.15
    count = tree["profiles/count"].sel(time=day).isel(**sel).values[:, ::-1]
    total = tree["profiles/sum"].sel(time=day).isel(**sel).values[:, ::-1]
    glorys = _open(tmp_path, row["glorys_tif_path"]).values
    assert np.array_equal(glorys == -32768, np.isnan(theta))
    assert np.all(np.abs(glorys[~np.isnan(theta)] - np.rint(theta[~np.isnan(theta)] * 100)) <= 1)
    assert np.allclose(_open(tmp_path, row["ostia_tif_path"]).values[0], sst, atol=1e-4, equal_nan=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(count > 0, total / count, np.nan)
    assert np.allclose(_open(tmp_path, row["argo_tif_path"]).values, x, equal_nan=True)
    # Land in tile 0 is NaN in the OSTIA file (never 0 degC) and nodata in GLORYS.
    land = ~ocean_and_bottom()[0][0:16, 0:16][::-1]
    row0 = _row(df, 20100204, 0)
    assert np.isnan(_open(tmp_path, row0["ostia_tif_path"]).values[0][land]).all()
    assert (_open(tmp_path, row0["glorys_tif_path"]).values[:, land] == -32768).all()


def test_resume_appends_without_rewriting_and_redoes_nothing(cube, tmp_path):
    cfg = DatasetConfig(window_days=3)
    first = export_geotiff(cube, tmp_path, cfg, ExportOptions(limit=85))  # includes tile 4's written windows
    manifest = tmp_path / MANIFEST_NAME
    before, inode = manifest.read_bytes(), manifest.stat().st_ino
    tif = next(tmp_path.rglob("glorys/*.tif"))
    mtime = tif.stat().st_mtime_ns
    second = export_geotiff(cube, tmp_path, cfg)
    after = manifest.read_bytes()
    assert first.selected == 85 and first.written == 3 and second.resumed == 85 and second.selected == 108
    assert after.startswith(before) and manifest.stat().st_ino == inode   # appended, never rewritten
    assert tif.stat().st_mtime_ns == mtime
    rows = list(csv.DictReader(io.StringIO(after.decode())))
    assert len(rows) == 108 and len({r["sample_basename"] for r in rows}) == 108
    third = export_geotiff(cube, tmp_path, cfg)
    assert third.resumed == 108 and manifest.read_bytes() == after


def test_unrecorded_leftovers_are_rewritten_and_recorded_files_missing_are_redone(cube, tmp_path):
    cfg = DatasetConfig(window_days=3)
    leftover = tmp_path / "glorys" / "20100204_patch_4.tif"           # e.g. from a foreign or killed run
    leftover.parent.mkdir()
    leftover.write_bytes(b"not a tiff")
    export_geotiff(cube, tmp_path, cfg)
    assert _open(tmp_path, "glorys/20100204_patch_4.tif").shape == (50, TILE, TILE)
    df = read_manifest(tmp_path / MANIFEST_NAME)
    row = _row(df, 20100204, 4)
    (tmp_path / row["argo_tif_path"]).unlink()                        # recorded but a file is gone
    report = export_geotiff(cube, tmp_path, cfg)
    assert report.written == 1 and report.resumed == 107
    assert (tmp_path / row["argo_tif_path"]).is_file()
    df2 = read_manifest(tmp_path / MANIFEST_NAME)
    assert len(df2) == 108 and df2.sample_basename.is_unique           # compacted: one row per window
    raw = list(csv.DictReader(open(tmp_path / MANIFEST_NAME)))
    assert len(raw) == 108


def test_folder_of_another_export_is_refused(cube, tmp_path):
    export_geotiff(cube, tmp_path, DatasetConfig(window_days=3), ExportOptions(limit=3))
    with pytest.raises(ValueError, match="another cube or preset"):
        export_geotiff(cube, tmp_path, DatasetConfig(window_days=5), ExportOptions(limit=3))


def test_manifest_append_cuts_a_torn_last_line_and_checks_the_header(tmp_path):
    m = Manifest(tmp_path / "m.csv")
    m.append({"export_index": 0, "sample_basename": "a"})
    with open(m.path, "ab") as f:
        f.write(b"1,b,half-written ro")                                # a writer killed mid-row
    assert list(m.records()) == ["a"]
    m.append({"export_index": 2, "sample_basename": "c"})
    rows = list(csv.reader(open(m.path)))
    assert rows[0] == list(MANIFEST_COLUMNS) and [r[1] for r in rows[1:]] == ["a", "c"]
    assert all(len(r) == len(MANIFEST_COLUMNS) for r in rows)
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="columns differ"):
        Manifest(other).append({"export_index": 0})


def test_block_shuffle_permutes_whole_blocks():
    idx = np.arange(100, 123)
    out = block_shuffle(idx, 5, seed=3)
    assert sorted(out) == list(idx)
    blocks = [list(idx[s:s + 5]) for s in range(0, len(idx), 5)]
    pieces, pos = [], 0
    while pos < len(out):                                              # out is whole blocks, in some order
        block = next(b for b in blocks if b[0] == out[pos])
        assert list(out[pos:pos + len(block)]) == block
        pieces.append(block[0])
        pos += len(block)
    assert sorted(pieces) == [b[0] for b in blocks] and pieces != [b[0] for b in blocks]
    assert np.array_equal(out, block_shuffle(idx, 5, seed=3))
    assert np.array_equal(block_shuffle(idx, None, seed=3), idx)


def test_shuffled_export_processes_blocks_in_shuffled_order(cube, tmp_path):
    r = export_geotiff(cube, tmp_path, DatasetConfig(window_days=3),
                       ExportOptions(split="train", limit=30, shuffle_block_size=6, shuffle_seed=11))
    df = read_manifest(tmp_path / MANIFEST_NAME)
    assert len(df) == 30 and set(df.phase) == {"train"} and r.shuffle_seed == 11
    order = [int(df.set_index("sample_basename").loc[b, "export_index"]) for b in r.basenames]
    selected = sorted(order)
    blocks = [selected[k:k + 6] for k in range(0, 30, 6)]
    runs = [order[k:k + 6] for k in range(0, 30, 6)]
    assert sorted(runs) == sorted(blocks) and runs != blocks         # whole blocks, shuffled


def test_export_cli(cube, tmp_path, capsys):
    yaml = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
    rc = main(["export", "geotiff", cube, str(tmp_path), "--config", str(yaml), "--preset", "argo_real",
               "--limit", "4", "--shuffle-block-size", "2", "--shuffle-seed", "1", "-q"])
    assert rc == 0
    assert "4 windows" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / MANIFEST_NAME)) == 4


def test_tiny_demo_cube_export_matches_cube(tiny_cube, tmp_path):
    """The demo cube (real readers and builder): one-day windows on the first GLORYS snapshot day."""
    export_geotiff(str(tiny_cube), tmp_path, DatasetConfig(window_days=1), ExportOptions(min_observed_columns=0))
    tree = open_cube(str(tiny_cube))
    day = tree["glorys"].time.values[0].astype("datetime64[D]")
    df = read_manifest(tmp_path / MANIFEST_NAME)
    date = int(str(day).replace("-", ""))
    rows = df[df.date == date]
    assert len(rows) == tree["patches"].sizes["patch"]
    patches = tree["patches"].to_dataset().load()
    for _, row in rows.iterrows():
        p = patches.sel(patch=row.patch_id)
        sel = dict(lat=slice(int(p.row0), int(p.row0) + 16), lon=slice(int(p.col0), int(p.col0) + 16))
        theta = tree["glorys/thetao"].isel(time=0, **sel).values[:, ::-1]
        ocean = tree["static/ocean_mask"].isel(**sel).values[::-1]
        bottom = tree["static/bottom_level"].isel(**sel).values[::-1]
        sst = tree["ostia/analysed_sst"].sel(time=day).isel(**sel).values[::-1] - 273.15
        glorys = _open(tmp_path, row.glorys_tif_path).values
        valid = np.isfinite(theta) & ocean[None] & (np.arange(50)[:, None, None] < bottom[None])
        assert np.all(np.abs(glorys[valid] - np.rint(theta[valid] * 100)) <= 1)
        assert (glorys[~valid] == -32768).all()
        assert np.allclose(_open(tmp_path, row.ostia_tif_path).values[0], np.where(ocean, sst, np.nan),
                           atol=1e-4, equal_nan=True)
        assert _open(tmp_path, row.glorys_tif_path).rio.bounds() == pytest.approx(
            (float(p.lon0), float(p.lat0), float(p.lon1), float(p.lat1)))


# ---- the reference index's source columns (issue 14 item 4) ---------------------------------

REFERENCE_COLUMNS = (  # ostia_argo_tiff_index.csv, REFERENCE.md 2.1 (8.), 2.2 and 4.1, in that order
    "patch_id", "date", "lat_center", "lon_center", "lat0", "lat1", "lon0", "lon1", "invalid_fraction",
    "invalid_percentage", "phase", "ostia_file_path", "matched_glorys_date", "matched_glorys_file_path",
    "matched_glorys_abs_day_delta", "argo_valid", "argo_profile_count", "argo_month_key", "argo_file_path",
    "export_index", "sample_basename", "filename", "centroid_lat", "centroid_lon", "geometry_wkt",
    "ostia_tif_path", "argo_tif_path", "glorys_tif_path", "ostia_filename", "argo_filename", "glorys_filename",
    "crs", "tile_size", "output_units", "argo_depth_semantics", "argo_band_count", "glorys_band_count",
    "ostia_band_count", "files_written", "temporal_window_days", "temporal_rows_count", "temporal_ostia_days_used",
    "temporal_glorys_days_used", "temporal_argo_days_used", "valid_mask_1d_pixels",
    "argo_valid_spatial_observation_count", "export_skipped_reason",
)


def test_manifest_keeps_every_column_of_the_reference_index():
    assert len(REFERENCE_COLUMNS) == len(set(REFERENCE_COLUMNS)) == 47
    assert set(REFERENCE_COLUMNS) <= set(MANIFEST_COLUMNS)


def _glorys_name_day(path: Path) -> np.datetime64:
    """Hand: the snapshot day from a GLORYS file name ``..._mean_YYYYMMDD_RYYYYMMDD.nc``."""
    digits = path.name.split("_mean_")[1][:8]
    return np.datetime64(f"{digits[:4]}-{digits[4:6]}-{digits[6:]}")


def test_source_columns_name_the_demo_input_files(tiny_cube, tiny_demo, tmp_path):
    """Tiny demo (2010-01-27 .. 02-05, GLORYS every 7 days, EN4 files for 201001 and 201002),
    3-day windows: source files, nearest snapshot, month key and profile counts by hand."""
    export_geotiff(str(tiny_cube), tmp_path, DatasetConfig(window_days=3), ExportOptions(min_observed_columns=0))
    df = read_manifest(tmp_path / MANIFEST_NAME)
    tree = open_cube(str(tiny_cube))
    patches = tree["patches"].to_dataset().load()
    count = tree["profiles/count"].values.sum(axis=1) > 0            # (time, lat, lon): observed cells per day
    days = tree["profiles"].time.values.astype("datetime64[D]")
    snapshots = {_glorys_name_day(p): p for p in (tiny_demo / "glorys").glob("*.nc")}
    en4 = {p.name[-9:-3]: p for p in (tiny_demo / "en4").glob("*.nc")}
    assert sorted(en4) == ["201001", "201002"]
    assert len(df) == patches.sizes["patch"] * (len(days) - 2)
    for _, row in df.iterrows():
        centre = np.datetime64(f"{str(row.date)[:4]}-{str(row.date)[4:6]}-{str(row.date)[6:]}")
        p = patches.sel(patch=row.patch_id)
        assert float(row.invalid_percentage) == pytest.approx(100 * float(p.invalid_fraction), abs=1e-6)
        (ostia,) = (tiny_demo / "ostia").glob(f"{str(row.date)}120000-*.nc")
        assert Path(row.ostia_file_path) == ostia
        # Nearest snapshot in days from the centre day's noon; ties to the earlier one.
        near = min(snapshots, key=lambda s: (abs((s - centre).astype(int) - 0.5), s))
        assert str(row.matched_glorys_date) == str(near).replace("-", "")
        assert Path(row.matched_glorys_file_path) == snapshots[near]
        assert int(row.matched_glorys_abs_day_delta) == abs(int((near - centre).astype(int)))
        assert row.argo_month_key == str(row.date)[:6]
        window = [centre + np.timedelta64(k, "D") for k in (-1, 0, 1)]
        months = sorted({str(d)[:7].replace("-", "") for d in window})
        assert row.argo_file_path == "|".join(str(en4[m]) for m in months)
        t = np.flatnonzero(np.isin(days, window))
        tile = count[t][:, int(p.row0):int(p.row0) + 16, int(p.col0):int(p.col0) + 16]
        assert row.argo_profile_count == int(tile.sum()) and row.argo_valid == int(tile.sum() > 0)
    assert df.argo_profile_count.sum() > 0                           # not vacuous
    assert df.argo_file_path.str.contains("|", regex=False).any()    # windows across the month boundary


def test_source_columns_of_a_cube_without_input_days_are_missing():
    from loaders.export import MISSING, SourceFiles, source_columns

    old = SourceFiles([{"url": "/data/x.nc", "product": "ostia", "name": "x.nc", "size": 1, "checksum": "c"}])
    days = np.array(["2010-01-01", "2010-01-02", "2010-01-03"], dtype="datetime64[D]")
    rec = source_columns(old, days[1], days, np.array([], "datetime64[s]"), 0)
    assert rec["ostia_file_path"] == rec["argo_file_path"] == rec["matched_glorys_file_path"] == MISSING
    assert rec["argo_valid"] == 0 and rec["argo_month_key"] == "201001"


def test_a_rejected_ostia_day_names_no_source_file(tiny_demo, tmp_path):
    """An all-NaN OSTIA file is a reject (the day stays NaN): the manifest must not name it."""
    from conftest import tiny_cube_config
    from cube.build import build
    from _ncfixtures import demo_copy, edit, ostia

    demo = demo_copy(tiny_demo, tmp_path / "demo")
    bad = edit(ostia(demo, "20100131"), ostia(demo, "20100131"), analysed_sst=lambda v: np.full_like(v, -32768))
    cube = tmp_path / "cube.zarr"
    report = build(tiny_cube_config(demo, cube), progress=False)
    assert [(r["file"], r["reason"]) for r in report.rejects] == [(str(bad), "no_valid_data")]
    export_geotiff(str(cube), tmp_path / "out", DatasetConfig(window_days=1), ExportOptions(min_observed_columns=0))
    df = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert (df[df.date == 20100131].ostia_file_path == "__missing__").all()
    others = df[df.date != 20100131]
    assert all(Path(p).name.startswith(str(d)) for p, d in zip(others.ostia_file_path, others.date))
