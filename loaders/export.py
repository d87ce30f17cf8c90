"""GeoTIFF export of cube windows (``depthcube export geotiff``), the reference's on-disk dataset
(REFERENCE.md 4) written from the cube instead of from raw NetCDF.

Per window (one patch x ``window_days`` centred on a day) three north-up EPSG:4326 GeoTIFFs with
a bounds-derived transform (``from_bounds(lon0, lat0, lon1, lat1, W, H)``), deflate-compressed:

=========  ========  =====  ========  =========  =================================================
file       dtype     bands  nodata    predictor  content
=========  ========  =====  ========  =========  =================================================
ostia      float32   1      NaN       3          window-mean OSTIA SST, degC
argo       float32   50     NaN       3          window-mean profile temperature per GLORYS level
glorys     int16     50     -32768    2          window-mean thetao, ``rint(degC * 100)``
=========  ========  =====  ========  =========  =================================================

Values come from the loaders' sample assembly (:func:`loaders.sample.window_fields`, the step of
:func:`loaders.sample.assemble` before band selection and z-score, on windows read by
:class:`loaders.reader.CubeReader`), in degC, so a GeoTIFF pixel is exactly what a training
sample holds.
Whatever the preset, the export uses the reference's sources: real profiles for ``x``, OSTIA
(undegraded) for ``eo``, all 50 levels, no augmentation; the preset gives ``window_days`` and
``min_profiles``.

Differences from the reference, on purpose:

* OSTIA land / missing pixels are NaN (the declared nodata), not 0.0 degC (REFERENCE.md 11.13).
* Resume is keyed on the manifest, not on files alone: a window is skipped when it is recorded
  *and* (if it was written) its 3 files exist. Each file is written under a temporary name and
  renamed, so a file under its final name is always complete; files of an unrecorded window
  (an interrupted run) are rewritten. An output folder holding another cube's or preset's
  export is refused (``export_id`` differs) unless ``overwrite``.
* The manifest is appended one row at a time (exclusive ``flock``, header check, ``fsync``; a
  torn last line from a kill is cut off before the next append), never rewritten per flush
  (the reference's O(N^2), REFERENCE.md 11.4). Only a run that re-exported recorded windows
  (``overwrite``) compacts it once at the end, atomically (temp file + rename), last record wins.
* ``export_index`` is the window's row in the cube's ``split="all"`` window table (patch-major),
  stable across ``--split``, ``--start``/``--limit`` and shuffling.

Source columns (the reference index's, REFERENCE.md 2.1-2.2), from the input files the builder
recorded in the cube's ``inputs`` attribute with the days each one gave (``days``):

* ``ostia_file_path``: the OSTIA file of the centre day;
* ``matched_glorys_date`` / ``matched_glorys_file_path``: the GLORYS snapshot nearest the centre
  day, as the sample's ``y`` picks it (real time, not the reference's YYYYMMDD integer distance,
  REFERENCE.md 2.1.9), and its file; ``matched_glorys_abs_day_delta`` is in days;
* ``argo_profile_count``: profiles that reached this window, counted in the tile over the window
  as observed (cell, UTC day) pairs (the cube keeps per-cell sums, so two profiles in one cell on
  one day count once), not the reference's worldwide daily count (REFERENCE.md 11.7);
  ``argo_valid`` is 1 when it is > 0;
* ``argo_month_key``: YYYYMM of the centre day; ``argo_file_path``: every profile file (EN4 or
  Argo) with used profiles on the window's days, ``|``-joined;
* a source that is absent (no file for the day, or a cube built before inputs recorded their
  days) is ``__missing__``, the reference's token.

Skip rule (reference): a window with fewer than 4 observed columns (``x_valid_mask_1d``
pixels) writes no file and is recorded with ``export_skipped_reason=valid_mask_1d_pixels_lt_4``.
Block-shuffled order (reference ``--shuffle-block-size``): the selected windows are cut into
contiguous blocks of B (same tile, neighbouring days: they share cube chunks) and the block
order is permuted with ``default_rng(seed)``.

The output root must be a local folder (GeoTIFF writing and file locks); the cube may be any
fsspec URL.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cube.constants import GLORYS_DEPTHS
from cube.progress import Progress
from cube.tiling import block_order, unwrapped_east

from .config import DatasetConfig, EOConfig
from .corruption import sample_rng
from .sample import nearest_snapshots, window_fields, yyyymmdd

MANIFEST_NAME = "ostia_argo_tiff_index.csv"
MIN_OBSERVED_COLUMNS = 4
SKIP_SPARSE = "valid_mask_1d_pixels_lt_4"
GLORYS_SCALE = 0.01
GLORYS_NODATA = -32768
PRODUCTS = ("ostia", "argo", "glorys")
MISSING = "__missing__"

#: Manifest columns: every column of the reference's ``ostia_argo_tiff_index.csv`` (its index
#: columns and export record, REFERENCE.md 2.1, 2.2, 4.1), plus the window's provenance
#: (source_cube, export_id, window_start/end).
MANIFEST_COLUMNS = (
    "export_index", "sample_basename", "filename", "patch_id", "date", "phase",
    "lat_center", "lon_center", "lat0", "lat1", "lon0", "lon1", "invalid_fraction", "invalid_percentage",
    "ostia_file_path", "matched_glorys_date", "matched_glorys_file_path", "matched_glorys_abs_day_delta",
    "argo_valid", "argo_profile_count", "argo_month_key", "argo_file_path",
    "centroid_lat", "centroid_lon", "geometry_wkt",
    "ostia_tif_path", "argo_tif_path", "glorys_tif_path", "ostia_filename", "argo_filename", "glorys_filename",
    "crs", "tile_size", "output_units", "argo_depth_semantics",
    "argo_band_count", "glorys_band_count", "ostia_band_count", "files_written",
    "temporal_window_days", "temporal_rows_count", "temporal_ostia_days_used", "temporal_glorys_days_used",
    "temporal_argo_days_used", "window_start", "window_end", "valid_mask_1d_pixels",
    "argo_valid_spatial_observation_count", "export_skipped_reason", "source_cube", "export_id",
)


@dataclass(frozen=True)
class ExportOptions:
    """Which windows to export and how.

    ``split``: train / val / all. ``start``/``limit``: the slice ``[start, start + limit)`` of the
    split's windows (patch-major order). ``shuffle_block_size``: block-shuffle the slice in blocks
    of this many windows (None = keep order); ``shuffle_seed`` None draws fresh entropy.
    ``min_observed_columns``: the skip rule's threshold (reference 4).
    """

    split: str = "all"
    start: int = 0
    limit: int | None = None
    shuffle_block_size: int | None = None
    shuffle_seed: int | None = None
    overwrite: bool = False
    min_observed_columns: int = MIN_OBSERVED_COLUMNS

    def __post_init__(self):
        if self.split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {self.split!r}")
        if self.start < 0 or (self.limit is not None and self.limit < 0):
            raise ValueError(f"start and limit must be >= 0, got start={self.start}, limit={self.limit}")
        if self.shuffle_block_size is not None and self.shuffle_block_size < 1:
            raise ValueError(f"shuffle_block_size must be >= 1, got {self.shuffle_block_size}")
        if self.min_observed_columns < 0:
            raise ValueError(f"min_observed_columns must be >= 0, got {self.min_observed_columns}")


@dataclass
class ExportReport:
    """What an export run did."""

    out_root: Path
    manifest: Path
    selected: int = 0
    written: int = 0
    skipped_sparse: int = 0
    resumed: int = 0
    seconds: float = 0.0
    shuffle_seed: int | None = None
    basenames: list[str] = field(default_factory=list)  # in processing order


# --------------------------------------------------------------------------------------------
# Names and order
# --------------------------------------------------------------------------------------------


def sanitise(name: str) -> str:
    """Reference file-name rule: alnum, '-' and '_' kept, '.' -> 'p', anything else '_', empty -> 'na'."""
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else ("p" if c == "." else "_") for c in str(name))
    return out or "na"


def sample_basename(date: int, patch: int) -> str:
    """``<YYYYMMDD>_patch_<id>``, the reference's per-sample file stem."""
    return sanitise(f"{date}_patch_{patch}")


def block_shuffle(indices: np.ndarray, block_size: int | None, seed: int | None) -> np.ndarray:
    """``indices`` cut into contiguous blocks of ``block_size``, blocks permuted with
    ``default_rng(seed)``, order inside each block kept (reference 4.2; :func:`cube.tiling.block_order`).
    None = unchanged."""
    indices = np.asarray(indices)
    if block_size is None or len(indices) == 0:
        return indices
    return indices[block_order(len(indices), block_size, np.random.default_rng(seed))]


def export_config(cfg: DatasetConfig) -> DatasetConfig:
    """The reference export's sample semantics on top of ``cfg``: real profiles for x, undegraded
    OSTIA for eo, all 50 levels, no augmentation (``window_days``/``min_profiles`` kept)."""
    return dataclasses.replace(cfg, x=dataclasses.replace(cfg.x, source="argo"), eo=EOConfig(source="ostia"),
                               target_bands=(0, len(GLORYS_DEPTHS)), augment=False)


def export_id(cube: str, cfg: DatasetConfig, min_observed_columns: int) -> str:
    """Fingerprint of what an output folder holds: cube, window length, profile filter, skip rule."""
    payload = f"{_cube_name(cube)}|{cfg.window}|{cfg.min_profiles}|{min_observed_columns}"
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _cube_name(cube: str) -> str:
    s = str(cube).rstrip("/")
    return s if "://" in s else os.path.abspath(s)


# --------------------------------------------------------------------------------------------
# The manifest: append-only CSV
# --------------------------------------------------------------------------------------------


class Manifest:
    """Append-only CSV manifest, safe for concurrent exporters on one machine.

    Each :meth:`append` takes an exclusive ``flock``, writes the header if the file is empty or
    checks it otherwise, cuts a torn last line (a killed writer), writes the row in one call and
    fsyncs. :meth:`records` reads it once (last record per sample wins).
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...] = MANIFEST_COLUMNS):
        self.path = Path(path)
        self.columns = tuple(columns)
        self._header = self._format_row({c: c for c in self.columns})

    def _format_row(self, record: dict) -> bytes:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="raise").writerow(
            {c: record.get(c, "") for c in self.columns})
        return buf.getvalue().encode()

    def append(self, record: dict) -> None:
        """Append one record (a dict keyed by column names; missing keys are empty)."""
        line = self._format_row(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                os.write(fd, self._header)
            else:
                self._check_header(fd)
                _cut_torn_tail(fd)
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _check_header(self, fd: int) -> None:
        head = os.pread(fd, len(self._header), 0)
        if head != self._header:
            found = head.split(b"\n", 1)[0].decode(errors="replace")[:120]
            raise ValueError(f"{self.path}: manifest columns differ from this version's "
                             f"({found!r}...); export into a new folder")

    def records(self) -> dict[str, dict]:
        """``sample_basename -> record`` of every complete row (a torn last line is ignored)."""
        if not self.path.exists():
            return {}
        text = self.path.read_bytes().decode()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and tuple(rows[0].keys()) != self.columns:
            raise ValueError(f"{self.path}: manifest columns differ from this version's; export into a new folder")
        return {r["sample_basename"]: r for r in rows}

    def compact(self) -> None:
        """Rewrite once with one row per sample (last wins), sorted by ``export_index``; atomic."""
        recs = sorted(self.records().values(), key=lambda r: int(r["export_index"]))
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(self._header)
            for r in recs:
                f.write(self._format_row(r))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _cut_torn_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        block = os.pread(fd, pos - start, start)
        k = block.rfind(b"\n")
        if k >= 0:
            os.ftruncate(fd, start + k + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def read_manifest(path: str | Path):
    """The manifest as a pandas DataFrame, one row per sample (last record wins), skipped rows
    included (``export_skipped_reason`` non-empty), sorted by ``export_index``."""
    import pandas as pd

    recs = Manifest(path).records()
    df = pd.DataFrame(list(recs.values()), columns=MANIFEST_COLUMNS)
    for c in ("export_index", "patch_id", "date", "files_written", "tile_size", "valid_mask_1d_pixels",
              "argo_valid_spatial_observation_count", "temporal_window_days", "argo_valid", "argo_profile_count"):
        df[c] = df[c].astype(np.int64)
    return df.sort_values("export_index", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# One window
# --------------------------------------------------------------------------------------------


@dataclass
class WindowArrays:
    """One window in degC, north-up (row 0 = north), NaN where invalid."""

    eo: np.ndarray          # (H, W)
    x: np.ndarray           # (50, H, W)
    y: np.ndarray           # (50, H, W)
    x_valid: np.ndarray     # (50, H, W) bool
    ostia_days: int
    glorys_days: int
    argo_days: int
    argo_profiles: int      # observed (cell, day) pairs of the tile over the window


def window_arrays(stream, index: int) -> WindowArrays:
    """Assemble window ``index`` of ``stream`` (a :class:`loaders.CubeStream` built with
    :func:`export_config`) with the loaders' sample functions, before normalisation."""
    w = stream.windows[index]
    win = stream.read_window(w)
    cfg = stream.config
    f = window_fields(win, cfg, sample_rng(cfg.seed, 0, index))  # rng unused by these modes
    flip = (Ellipsis, slice(None, None, -1), slice(None))
    snap_ok = np.isfinite(win.glorys).any(axis=(1, 2, 3))
    observed = stream.reader.read("profiles/n_obs", w.time, w.rows, w.cols) > 0
    return WindowArrays(
        eo=np.asarray(f.eo, np.float32)[flip], x=np.where(f.x_valid, f.x, np.nan).astype(np.float32)[flip],
        y=np.where(f.y_valid, f.y, np.float32(np.nan)).astype(np.float32)[flip], x_valid=f.x_valid[flip],
        ostia_days=int(np.isfinite(win.sst_k).any(axis=(1, 2)).sum()),
        glorys_days=int(win.glorys_days[snap_ok].sum()),
        argo_days=int(observed.any(axis=(1, 2)).sum()), argo_profiles=int(observed.sum()),
    )


def pack_glorys(y_c: np.ndarray, path: str | Path = "glorys") -> np.ndarray:
    """degC -> int16 ``rint(y * 100)``, NaN -> -32768; a value outside +-327.67 degC is an error."""
    finite = np.isfinite(y_c)
    packed = np.rint(np.where(finite, y_c, 0.0) / GLORYS_SCALE)
    bad = finite & (np.abs(packed) > 32767)
    if bad.any():
        raise ValueError(f"{path}: thetao {float(y_c[bad][0]):.3f} degC does not fit the int16 x100 packing")
    return np.where(finite, packed, GLORYS_NODATA).astype(np.int16)


def _write_tif(path: Path, data: np.ndarray, *, bounds, nodata, predictor: int, descriptions, tags: dict,
               scale: float | None = None) -> None:
    import rasterio
    from rasterio.transform import from_bounds

    count, height, width = data.shape
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=data.dtype.name,
                   crs="EPSG:4326", transform=from_bounds(*bounds, width, height), nodata=nodata,
                   compress="deflate", predictor=predictor)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        if scale is not None:
            # Standard GDAL scale/offset, so rioxarray(mask_and_scale=True) decodes to degC.
            dst.scales = (scale,) * count
            dst.offsets = (0.0,) * count
        dst.update_tags(**{k: str(v) for k, v in tags.items()})
    os.replace(tmp, path)


def _depth_tags(prefix: str) -> dict:
    return {f"{prefix}_depth_indices": "|".join(str(i) for i in range(len(GLORYS_DEPTHS))),
            f"{prefix}_depth_semantics": "glorys_depth_index",
            f"{prefix}_depth_m" if prefix == "glorys" else "argo_glorys_depth_m":
                "|".join(f"{d:.3f}" for d in GLORYS_DEPTHS)}


def write_window_tifs(out_root: Path, rel: dict[str, str], arrays: WindowArrays, bounds, common_tags: dict) -> None:
    """The window's ostia, argo and glorys GeoTIFFs (bounds = west, south, east, north)."""
    depths = [f"{d:.3f}" for d in GLORYS_DEPTHS]
    _write_tif(out_root / rel["ostia"], arrays.eo[None], bounds=bounds, nodata=np.nan, predictor=3,
               descriptions=["ostia_sst"], tags={**common_tags, "product": "ostia", "units": "degC"})
    _write_tif(out_root / rel["argo"], arrays.x, bounds=bounds, nodata=np.nan, predictor=3,
               descriptions=[f"argo_glorys_level_{i}_{d}m" for i, d in enumerate(depths)],
               tags={**common_tags, "product": "argo", "units": "degC", **_depth_tags("argo")})
    glorys_path = out_root / rel["glorys"]
    _write_tif(glorys_path, pack_glorys(arrays.y, glorys_path), bounds=bounds, nodata=GLORYS_NODATA, predictor=2,
               descriptions=[f"glorys_thetao_level_{i}_{d}m" for i, d in enumerate(depths)], scale=GLORYS_SCALE,
               tags={**common_tags, "product": "glorys", "units": "degC", "glorys_var_name": "thetao",
                     **_depth_tags("glorys"), "glorys_storage_format": "packed_int16_celsius_x100",
                     "value_encoding": "packed_int16_celsius_x100", "scale_factor": "0.01",
                     "add_offset": "0.0", "packed_nodata": str(GLORYS_NODATA)})


class SourceFiles:
    """The cube's input files (its ``inputs`` attribute) looked up by day, for the source columns.
    An input without ``days`` (it gave no data, or the cube predates the record) is never found."""

    def __init__(self, inputs: list[dict]):
        self.spans = {}  # product -> [(first day, last day, url)]
        for i in inputs:
            if i.get("days"):
                first, last = (np.datetime64(d, "D") for d in i["days"])
                self.spans.setdefault(i["product"], []).append((first, last, i["url"]))

    def covering(self, products: tuple[str, ...], first: np.datetime64, last: np.datetime64) -> str:
        """``|``-joined urls of the inputs of ``products`` with data between ``first`` and ``last``."""
        urls = [u for p in products for lo, hi, u in self.spans.get(p, []) if lo <= last and hi >= first]
        return "|".join(sorted(urls)) or MISSING


def source_columns(sources: SourceFiles, centre: np.datetime64, days: np.ndarray, glorys_times: np.ndarray,
                   argo_profiles: int) -> dict:
    """The reference index's source columns of one window (see the module docstring)."""
    centre = np.datetime64(centre, "D")
    record = {"ostia_file_path": sources.covering(("ostia",), centre, centre),
              "matched_glorys_date": MISSING, "matched_glorys_file_path": MISSING, "matched_glorys_abs_day_delta": "",
              "argo_valid": int(argo_profiles > 0), "argo_profile_count": argo_profiles,
              "argo_month_key": str(centre)[:7].replace("-", ""),
              "argo_file_path": sources.covering(("en4", "argo"), days[0], days[-1])}
    if len(glorys_times):
        snap = glorys_times[nearest_snapshots(np.array([centre]), glorys_times)[0]].astype("datetime64[D]")
        record.update(matched_glorys_date=yyyymmdd(snap, feb29_to_feb28=False),
                      matched_glorys_file_path=sources.covering(("glorys",), snap, snap),
                      matched_glorys_abs_day_delta=abs(int((snap - centre).astype(int))))
    return record


# --------------------------------------------------------------------------------------------
# The export run
# --------------------------------------------------------------------------------------------


class _Exporter:
    """State of one export run: the stream, the manifest and the window -> record logic."""

    def __init__(self, cube: str, out_root: Path, cfg: DatasetConfig, options: ExportOptions, storage_options):
        from .stream import CubeStream

        self.cube, self.out_root, self.options = str(cube), out_root, options
        self.stream = CubeStream(cube, export_config(cfg), split="all", shuffle=False, storage_options=storage_options)
        self.patches = self.stream.reader.patches.set_index("patch")
        self.tile = self.stream.reader.tile
        self.sources = SourceFiles(self.stream.reader.attrs.get("inputs", []))
        self.id = export_id(cube, self.stream.config, options.min_observed_columns)
        self.manifest = Manifest(out_root / MANIFEST_NAME)

    def selection(self) -> np.ndarray:
        o = self.options
        splits = self.stream.windows.rows["split"].astype(str).to_numpy()
        idx = np.arange(len(splits)) if o.split == "all" else np.flatnonzero(splits == o.split)
        stop = None if o.limit is None else o.start + o.limit
        return idx[o.start:stop]

    def check_folder(self, records: dict[str, dict]) -> None:
        other = {r["export_id"] for r in records.values()} - {self.id}
        if other and not self.options.overwrite:
            raise ValueError(f"{self.manifest.path}: this folder holds an export of another cube or preset "
                             f"(export_id {sorted(other)[0]}, this run {self.id}); use a new folder or --overwrite")

    def is_done(self, rec: dict | None) -> bool:
        if rec is None or self.options.overwrite or rec["export_id"] != self.id:
            return False
        if rec["export_skipped_reason"]:
            return True
        return all((self.out_root / rec[f"{p}_tif_path"]).is_file() for p in PRODUCTS)

    def export_one(self, index: int) -> dict:
        w = self.stream.windows[index]
        arrays = window_arrays(self.stream, index)
        record = self.base_record(index, w, arrays)
        n_cols = int(arrays.x_valid.any(axis=0).sum())
        if n_cols < self.options.min_observed_columns:
            record.update(files_written=0, export_skipped_reason=SKIP_SPARSE)
            return record
        p = self.patches.loc[w.patch]
        bounds = (float(p["lon0"]), float(p["lat0"]), _east(p), float(p["lat1"]))
        rel = {k: record[f"{k}_tif_path"] for k in PRODUCTS}
        for k in PRODUCTS:
            (self.out_root / rel[k]).parent.mkdir(parents=True, exist_ok=True)
        tags = {k: record[k] for k in ("sample_basename", "date", "patch_id", "phase", "centroid_lat", "centroid_lon",
                                       "window_start", "window_end", "temporal_window_days")}
        write_window_tifs(self.out_root, rel, arrays, bounds, {**tags, "source_file": self.cube})
        record["files_written"] = 1
        return record

    def base_record(self, index: int, w, arrays: WindowArrays) -> dict:
        p = self.patches.loc[w.patch]
        date = yyyymmdd(w.centre, feb29_to_feb28=False)
        base = sample_basename(date, w.patch)
        days = self.stream.reader.days[w.time]
        rel = {k: f"{k}/{base}.tif" for k in PRODUCTS}
        lon0, lat0, lon1, lat1 = float(p["lon0"]), float(p["lat0"]), _east(p), float(p["lat1"])
        valid_1d = arrays.x_valid.any(axis=0)
        return {
            "export_index": index, "sample_basename": base, "filename": f"{base}.tif", "patch_id": int(w.patch),
            "date": date, "phase": w.split,
            **{k: f"{float(p[k]):.6f}" for k in ("lat_center", "lon_center", "lat0", "lat1", "lon0", "lon1")},
            "invalid_fraction": f"{float(p['invalid_fraction']):.6f}",
            "invalid_percentage": f"{100 * float(p['invalid_fraction']):.6f}",
            **source_columns(self.sources, w.centre, days, self.stream.reader.glorys_times, arrays.argo_profiles),
            "centroid_lat": f"{w.lat_center:.6f}", "centroid_lon": f"{w.lon_center:.6f}",
            "geometry_wkt": (f"POLYGON (({lon0:.6f} {lat0:.6f}, {lon1:.6f} {lat0:.6f}, {lon1:.6f} {lat1:.6f}, "
                             f"{lon0:.6f} {lat1:.6f}, {lon0:.6f} {lat0:.6f}))"),
            **{f"{k}_tif_path": v for k, v in rel.items()}, **{f"{k}_filename": f"{base}.tif" for k in PRODUCTS},
            "crs": "EPSG:4326", "tile_size": self.tile, "output_units": "celsius",
            "argo_depth_semantics": "glorys_depth_index", "argo_band_count": len(GLORYS_DEPTHS),
            "glorys_band_count": len(GLORYS_DEPTHS), "ostia_band_count": 1, "files_written": 0,
            "temporal_window_days": len(days), "temporal_rows_count": len(days),
            "temporal_ostia_days_used": arrays.ostia_days, "temporal_glorys_days_used": arrays.glorys_days,
            "temporal_argo_days_used": arrays.argo_days, "window_start": str(days[0]), "window_end": str(days[-1]),
            "valid_mask_1d_pixels": int(valid_1d.sum()),
            # Reference: pixels whose max over depth of the NaN-masked x is finite and not ~0.
            "argo_valid_spatial_observation_count": _nonzero_max_count(arrays.x),
            "export_skipped_reason": "", "source_cube": _cube_name(self.cube), "export_id": self.id,
        }


def _east(p) -> float:
    """East edge, unwrapped (> 180) for a tile crossing the dateline so the raster keeps its width."""
    return float(unwrapped_east(float(p["lon0"]), float(p["lon1"])))


def _nonzero_max_count(x: np.ndarray) -> int:
    observed = np.isfinite(x).any(axis=0)
    mx = np.max(np.where(np.isfinite(x), x, -np.inf), axis=0)
    return int((observed & ~np.isclose(mx, 0.0, atol=1e-8)).sum())


def export_geotiff(cube: str, out_root: str | Path, config: DatasetConfig | None = None,
                   options: ExportOptions = ExportOptions(), *, storage_options: dict | None = None,
                   progress: bool = False) -> ExportReport:
    """Export the selected windows of ``cube`` as GeoTIFF triplets under ``out_root`` and record
    every window (written or skipped) in ``out_root/ostia_argo_tiff_index.csv``.

    Resumable: windows already recorded by an earlier run of the same cube and preset are not
    redone. Returns an :class:`ExportReport`; ``report.basenames`` lists the processed windows
    in processing order (the block-shuffled order when shuffling).
    """
    t0 = time.perf_counter()
    out_root = Path(out_root)
    ex = _Exporter(cube, out_root, config or DatasetConfig(), options, storage_options)
    seed = options.shuffle_seed
    if options.shuffle_block_size is not None and seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh, but reported so a run can be repeated
    order = block_shuffle(ex.selection(), options.shuffle_block_size, seed)
    report = ExportReport(out_root, ex.manifest.path, selected=len(order), shuffle_seed=seed)
    records = ex.manifest.records()
    ex.check_folder(records)
    replaced = False
    for index in _progress(order, progress):
        w = ex.stream.windows[int(index)]
        base = sample_basename(yyyymmdd(w.centre, feb29_to_feb28=False), w.patch)
        report.basenames.append(base)
        if ex.is_done(records.get(base)):
            report.resumed += 1
            continue
        replaced |= base in records
        record = ex.export_one(int(index))
        ex.manifest.append(record)
        if record["files_written"]:
            report.written += 1
        else:
            report.skipped_sparse += 1
    if replaced:
        ex.manifest.compact()
    report.seconds = time.perf_counter() - t0
    return report


def _progress(items, enabled: bool):
    """Yield ``items`` while :class:`cube.progress.Progress` reports them (the build's bar: on a
    terminal only, else one line when the export ends)."""
    with Progress(len(items), "export geotiff", unit="window", enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()
