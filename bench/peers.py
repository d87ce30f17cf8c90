"""The peers ``depthcube bench`` measures CubeStream against (DESIGN.md 7), all on the same windows.

* **Peer 1, the reference approach** (:class:`ReferenceRawDataset`): REFERENCE.md section 3, a map
  dataset that for every sample opens the raw OSTIA, GLORYS and EN4 NetCDF files of every window
  day, crops them, interpolates each day with scipy ``RegularGridInterpolator`` (linear, then
  nearest for what linear left NaN), aligns and rasterises the day's profiles one by one in
  Python, and averages over the window. It uses nothing of ``cube/`` but the constants, so the
  comparison is honest. Files are opened with netCDF4 (the reference's fallback backend: h5py,
  which h5netcdf needs, is not installed here). Sample settings follow the cube's: potential
  temperature with the cube's QC rule, so the samples carry the same information; geometry
  and interpolation stay the reference's (inclusive bbox edges, RGI on pixel centres).
* **Peer 2, xbatcher** (:func:`xbatcher_dataset`): ``xbatcher.loaders.torch.MapDataset`` over a
  ``BatchGenerator`` of the cube opened with ``xr.open_datatree(..., chunks={})`` (dask), with a
  transform that computes the same window means; used through a torch DataLoader. It also runs
  in its fastest documented form, ``chunks=None`` (no dask: xarray's lazy indexing reads only
  each window's slice).
* **The limit** (:func:`sample_plan`, :func:`decode_chunks`): the Zarr chunks the CubeStream
  decodes for the same windows, in its order, each once (its public
  :meth:`~loaders.stream.CubeStream.window_chunks`, profile chunks without an observation of the
  window left out as the stream leaves them out: :func:`needed_chunks`), decoded the fastest way
  the layout allows, no assembly; and **the write floor** (:func:`write_floor`): allocating and
  filling tensors of one sample's shapes, the memory traffic any loader pays to hand a sample out.

:func:`python_loop_rasterise` is the per-profile Python loop the vectorised rasteriser is compared
with (same half-open cell rule, so the results must agree exactly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import torch
from scipy.interpolate import RegularGridInterpolator

from cube.constants import (CELSIUS_TO_KELVIN, DEPTH_CUTOFF_ABSOLUTE_M, DEPTH_CUTOFF_RELATIVE, normalise_celsius)

OSTIA_DATE = re.compile(r"^(\d{8})\d{6}-")
GLORYS_DATE = re.compile(r"_(\d{8})(?:_R\d{8})?\.nc$")
EN4_MONTH = re.compile(r"g10\.(\d{6})\.nc$")
JULD_EPOCH = np.datetime64("1950-01-01", "D")
#: QC codes the cube accepts (configs/cube.yaml) plus "no QC performed"; JULD also '5'/'8'.
ACCEPTED_QC = (b"1", b"2", b" ", b"\x00", b"0")
JULD_EXTRA_QC = (b"5", b"8")


@dataclass(frozen=True)
class RawWindow:
    """What one row of the reference's CSV index gives: the patch bbox (degrees) and the centre day."""

    lat0: float
    lat1: float
    lon0: float
    lon1: float
    centre: np.datetime64
    patch: int = -1


def _day(text: str) -> np.datetime64:
    return np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:8]}", "D")


def _index(files, pattern: re.Pattern, key) -> dict:
    out = {}
    for f in files:
        m = pattern.search(Path(f).name)
        if m:
            out[key(m.group(1))] = str(f)
    return out


# --------------------------------------------------------------------------------------------
# Peer 1: per-sample raw NetCDF + scipy interpolation (REFERENCE.md 3)


def decode(raw: np.ndarray, var) -> np.ndarray:
    """Reference CF decoding (REFERENCE.md 1.1): fill -> NaN in packed space, scale, offset, > 1e6 -> NaN."""
    attrs = {k: var.getncattr(k) for k in var.ncattrs()}
    out = raw.astype(np.float32)
    for name in ("_FillValue", "missing_value"):
        if name in attrs:
            out[raw == np.asarray(attrs[name]).astype(raw.dtype)] = np.nan
    out = out * np.float32(attrs.get("scale_factor", 1.0)) + np.float32(attrs.get("add_offset", 0.0))
    out[~np.isfinite(out) | (np.abs(out) > 1e6)] = np.nan
    return out


def crop(coord: np.ndarray, lo: float, hi: float) -> slice:
    """Native indices with ``lo <= coord <= hi`` as ``[min, max+1)``; the nearest ones if empty."""
    idx = np.flatnonzero((coord >= lo) & (coord <= hi))
    if idx.size == 0:
        a, b = sorted((int(np.argmin(np.abs(coord - lo))), int(np.argmin(np.abs(coord - hi)))))
        return slice(a, b + 1)
    return slice(int(idx.min()), int(idx.max()) + 1)


def interpolate(lat: np.ndarray, lon: np.ndarray, values: np.ndarray, plat: np.ndarray, plon: np.ndarray) -> np.ndarray:
    """Linear RGI at the patch pixel centres, NaNs then filled by a nearest RGI (REFERENCE.md 3.4 step 4).

    ``values`` is (lat, lon[, k]); returns (H, W[, k]). A single-row crop (degenerate for linear)
    goes straight to nearest.
    """
    if lat[0] > lat[-1]:
        lat, values = lat[::-1], values[::-1]
    if lon[0] > lon[-1]:
        lon, values = lon[::-1], values[:, ::-1]
    pts = np.stack(np.meshgrid(plat, plon, indexing="ij"), axis=-1).reshape(-1, 2)
    out = np.full((pts.shape[0],) + values.shape[2:], np.nan, np.float64)
    if lat.size > 1 and lon.size > 1:
        out = RegularGridInterpolator((lat, lon), values, method="linear", bounds_error=False, fill_value=np.nan)(pts)
    gaps = np.isnan(out)
    if gaps.any():
        near = RegularGridInterpolator((lat, lon), values, method="nearest", bounds_error=False, fill_value=np.nan)(pts)
        out[gaps] = near[gaps]
    return out.reshape(plat.size, plon.size, *values.shape[2:])


def align_profile(depth: np.ndarray, temp: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """One profile onto ``levels`` by the reference rule (REFERENCE.md 3.6 step 3), per profile."""
    ok = np.isfinite(depth) & np.isfinite(temp) & (depth >= 0)
    d, t = depth[ok].astype(np.float64), temp[ok].astype(np.float64)
    order = np.argsort(d, kind="stable")
    d, t = d[order], t[order]
    out = np.full(levels.size, np.nan, np.float32)
    if d.size == 0:
        return out
    ud, inv = np.unique(d, return_inverse=True)
    ut = np.bincount(inv, weights=t) / np.bincount(inv)
    if ud.size == 1:
        hit = np.abs(levels - ud[0]) <= 1e-6
        out[hit] = ut[0]
        return out
    right = np.clip(np.searchsorted(ud, levels, side="left"), 0, ud.size - 1)
    left = np.clip(right - 1, 0, ud.size - 1)
    d_near = np.minimum(np.abs(levels - ud[left]), np.abs(levels - ud[right]))
    cutoff = np.maximum(DEPTH_CUTOFF_RELATIVE * levels, DEPTH_CUTOFF_ABSOLUTE_M)
    accept = (ud[0] <= levels) & (levels <= ud[-1]) & (d_near <= cutoff)
    out[accept] = np.interp(levels[accept], ud, ut)
    return out


def _chars(ds, name: str, index=None) -> np.ndarray:
    if name not in ds.variables:
        return None
    raw = ds.variables[name][index] if index is not None else ds.variables[name][:]
    return np.asarray(raw).astype("S1")


class ReferenceRawDataset(torch.utils.data.Dataset):
    """Peer 1: builds every sample from the raw demo NetCDF files (REFERENCE.md 3), keys as CubeStream.

    ``windows`` are the cube's windows (bbox + centre day), ``tile`` the pixels per side,
    ``window_days`` odd. The file index (day -> OSTIA file, nearest GLORYS file, EN4 month file) is
    built once, like the reference's CSV; everything else happens per sample.
    """

    def __init__(self, ostia: list, glorys: list, en4: list, windows: list[RawWindow], tile: int,
                 window_days: int = 7, target_bands: tuple[int, int] = (0, 50)):
        self.ostia = _index(ostia, OSTIA_DATE, _day)
        self.glorys = _index(glorys, GLORYS_DATE, _day)
        self.en4 = _index(en4, EN4_MONTH, lambda s: np.datetime64(f"{s[:4]}-{s[4:]}", "M"))
        if not (self.ostia and self.glorys):
            raise FileNotFoundError(f"peer 1 needs OSTIA and GLORYS files, got {len(self.ostia)} and {len(self.glorys)}")
        self.windows, self.tile, self.r = windows, tile, window_days // 2
        self.bands = target_bands
        self._snapshots = np.array(sorted(self.glorys), dtype="datetime64[D]")
        self._depths = None

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def depths(self) -> np.ndarray:
        """GLORYS depth axis, read once from the first GLORYS file (the reference's cache)."""
        if self._depths is None:
            with netCDF4.Dataset(self.glorys[self._snapshots[0]]) as ds:
                d = np.asarray(ds.variables["depth"][:], np.float64)
            self._depths = np.sort(d[np.isfinite(d)])
        return self._depths

    def pixel_axes(self, w: RawWindow) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres ``lo + (i + 0.5) * (hi - lo) / tile``, south-up (REFERENCE.md 3.3)."""
        i = np.arange(self.tile) + 0.5
        return w.lat0 + i * (w.lat1 - w.lat0) / self.tile, w.lon0 + i * (w.lon1 - w.lon0) / self.tile

    def __getitem__(self, i: int) -> dict:
        w = self.windows[i]
        days = w.centre + np.arange(-self.r, self.r + 1)
        plat, plon = self.pixel_axes(w)
        eo = self._ostia_mean(days, w, plat, plon)
        y = self._glorys_mean(days, w, plat, plon)
        x_sum = np.zeros((self.depths.size, self.tile, self.tile))
        x_count = np.zeros_like(x_sum, dtype=np.int64)
        for day in days:
            s, c = self._profiles_day(day, w)
            x_sum += s
            x_count += c
        return self._sample(w, eo, y, x_sum, x_count)

    # -- OSTIA ------------------------------------------------------------------------------------
    def _ostia_mean(self, days, w: RawWindow, plat, plon) -> np.ndarray:
        total = np.zeros((self.tile, self.tile))
        count = np.zeros((self.tile, self.tile), np.uint16)
        for day in days:
            path = self.ostia.get(day)
            if path is None:
                continue
            v = self._ostia_day(path, w, plat, plon)
            ok = np.isfinite(v)
            total[ok] += v[ok]
            count += ok
        if not count.any():
            raise FileNotFoundError(f"no OSTIA day readable for the window centred {w.centre}")
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _ostia_day(self, path: str, w: RawWindow, plat, plon) -> np.ndarray:
        with netCDF4.Dataset(path) as ds:
            ds.set_auto_maskandscale(False)
            lat, lon = np.asarray(ds.variables["lat"][:], np.float64), np.asarray(ds.variables["lon"][:], np.float64)
            sy, sx = crop(lat, w.lat0, w.lat1), crop(lon, w.lon0, w.lon1)
            var = ds.variables["analysed_sst"]
            raw = var[0, sy, sx] if var.ndim == 3 else var[sy, sx]
            sst = decode(np.asarray(raw), var)
            land = self._land(ds, sy, sx)
        v = interpolate(lat[sy], lon[sx], sst, plat, plon)
        if land is not None:
            # The reference interpolates the categorical mask linearly too (REFERENCE.md 11.10).
            code = np.rint(interpolate(lat[sy], lon[sx], land[0].astype(np.float64), plat, plon))
            v[np.nan_to_num(code).astype(np.int64) & land[1] != 0] = np.nan
        v[~np.isfinite(v) | (np.abs(v) > 1e6)] = np.nan
        return v - CELSIUS_TO_KELVIN

    @staticmethod
    def _land(ds, sy, sx):
        if "mask" not in ds.variables:
            return None
        var = ds.variables["mask"]
        names = str(getattr(var, "flag_meanings", "")).split()
        masks = np.atleast_1d(getattr(var, "flag_masks", []))
        if "land" not in names:
            return None
        raw = var[0, sy, sx] if var.ndim == 3 else var[sy, sx]
        return np.asarray(raw).astype(np.int64), int(masks[names.index("land")])

    # -- GLORYS -----------------------------------------------------------------------------------
    def _glorys_mean(self, days, w: RawWindow, plat, plon) -> np.ndarray:
        total = np.zeros((self.depths.size, self.tile, self.tile))
        count = np.zeros(total.shape, np.int64)
        for day in days:
            # Nearest snapshot by real day distance (the reference's CSV match, its YYYYMMDD bug fixed).
            snap = self._snapshots[int(np.argmin(np.abs((self._snapshots - day).astype(np.int64))))]
            v = self._glorys_day(self.glorys[snap], w, plat, plon)
            ok = np.isfinite(v)
            total[ok] += v[ok]
            count += ok
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _glorys_day(self, path: str, w: RawWindow, plat, plon) -> np.ndarray:
        with netCDF4.Dataset(path) as ds:
            ds.set_auto_maskandscale(False)
            lat = np.asarray(ds.variables["latitude"][:], np.float64)
            lon = np.asarray(ds.variables["longitude"][:], np.float64)
            sy, sx = crop(lat, w.lat0, w.lat1), crop(lon, w.lon0, w.lon1)
            var = ds.variables["thetao"]
            theta = decode(np.asarray(var[0, :, sy, sx]), var)
        v = interpolate(lat[sy], lon[sx], np.moveaxis(theta, 0, -1), plat, plon)  # all levels at once
        v = np.moveaxis(v, -1, 0)
        v[np.abs(v) > 1e6] = np.nan
        return v

    # -- EN4 profiles -------------------------------------------------------------------------------
    def _profiles_day(self, day, w: RawWindow):
        n_lev = self.depths.size
        total = np.zeros((n_lev, self.tile, self.tile))
        count = np.zeros(total.shape, np.int64)
        path = self.en4.get(day.astype("datetime64[M]"))
        if path is None:
            return total, count
        prof = self._read_profiles(path, day)
        if prof is None:
            return total, count
        lat, lon, depth, temp = prof
        for p in range(lat.size):  # the reference's per-profile loop
            values = align_profile(depth[p], temp[p], self.depths)
            self._rasterise_one(lat[p], lon[p], values, w, total, count)
        return total, count

    def _read_profiles(self, path: str, day):
        with netCDF4.Dataset(path) as ds:
            ds.set_auto_maskandscale(False)
            juld = np.asarray(ds.variables["JULD"][:], np.float64)
            ok = np.isfinite(juld) & (juld > -20000) & (juld < 90000)
            dates = JULD_EPOCH + np.floor(np.where(ok, juld, 0)).astype(np.int64)
            idx = np.flatnonzero(ok & (dates == day))
            if idx.size == 0:
                return None
            lat = decode(np.asarray(ds.variables["LATITUDE"][idx]), ds.variables["LATITUDE"]).astype(np.float64)
            lon = decode(np.asarray(ds.variables["LONGITUDE"][idx]), ds.variables["LONGITUDE"]).astype(np.float64)
            temp = decode(np.asarray(ds.variables["POTM_CORRECTED"][idx, :]), ds.variables["POTM_CORRECTED"])
            depth = decode(np.asarray(ds.variables["DEPH_CORRECTED"][idx, :]), ds.variables["DEPH_CORRECTED"])
            good = self._profile_qc(ds, idx, lat, lon)
            level_ok = self._level_qc(ds, idx, depth.shape)
        temp[np.isclose(temp, 99999.0)] = np.nan
        depth[np.isclose(depth, 99999.0) | ~level_ok] = np.nan
        return lat[good], lon[good], depth[good], temp[good]

    @staticmethod
    def _profile_qc(ds, idx, lat, lon) -> np.ndarray:
        good = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 360)
        for name, extra in (("JULD_QC", JULD_EXTRA_QC), ("POSITION_QC", ()), ("PROFILE_POTM_QC", ())):
            flags = _chars(ds, name, idx)
            if flags is not None:
                good &= np.isin(flags.reshape(-1), ACCEPTED_QC + extra)
        return good

    @staticmethod
    def _level_qc(ds, idx, shape) -> np.ndarray:
        ok = np.ones(shape, bool)
        for name in ("DEPH_CORRECTED_QC", "POTM_CORRECTED_QC"):
            flags = _chars(ds, name, (idx, slice(None)))
            if flags is not None:
                ok &= np.isin(flags.reshape(shape), ACCEPTED_QC)
        return ok

    def _rasterise_one(self, lat, lon, values, w: RawWindow, total, count) -> None:
        """REFERENCE.md 3.6 step 4: inclusive bbox, floor pixel index clamped to the tile (south-up)."""
        if not (np.isfinite(lat) and np.isfinite(lon)):
            return
        lon = (lon + 180.0) % 360.0 - 180.0
        lon0, lon1 = ((w.lon0 + 180.0) % 360.0 - 180.0), w.lon1
        if not (w.lat0 <= lat <= w.lat1 and lon0 <= lon <= lon1):
            return
        row = min(max(int(np.floor((lat - w.lat0) / (w.lat1 - w.lat0) * self.tile)), 0), self.tile - 1)
        col = min(max(int(np.floor((lon - lon0) / (lon1 - lon0) * self.tile)), 0), self.tile - 1)
        ok = np.isfinite(values)
        total[ok, row, col] += values[ok]
        count[ok, row, col] += 1

    # -- the sample ---------------------------------------------------------------------------------
    def _sample(self, w: RawWindow, eo, y, x_sum, x_count) -> dict:
        lo, hi = self.bands
        x_valid = x_count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(x_valid, x_sum / np.maximum(x_count, 1), 0.0)
        y_valid = np.isfinite(y)
        eo_valid = np.isfinite(eo)

        def z(v, ok):
            return np.where(ok, normalise_celsius(np.where(ok, v, 0.0)), 0.0).astype(np.float32)

        s = {"eo": z(eo, eo_valid)[None], "x": z(x, x_valid)[lo:hi], "y": z(y, y_valid)[lo:hi],
             "x_valid_mask": x_valid[lo:hi], "y_valid_mask": y_valid[lo:hi],
             "land_mask": y_valid[:1].astype(np.float32)}
        s = {k: torch.from_numpy(np.ascontiguousarray(v[..., ::-1, :])) for k, v in s.items()}  # north-up
        s["x_valid_mask_1d"] = s["x_valid_mask"].any(dim=0, keepdim=True)
        y, m, d = (int(v) for v in str(np.datetime64(w.centre, "D")).split("-"))
        d = 28 if (m, d) == (2, 29) else d  # the model's non-leap calendar, as the loaders do
        s["date"] = torch.tensor(y * 10000 + m * 100 + d, dtype=torch.int64)
        lon_c = np.rad2deg(np.arctan2(np.sin(np.deg2rad(w.lon0)) + np.sin(np.deg2rad(w.lon1)),
                                      np.cos(np.deg2rad(w.lon0)) + np.cos(np.deg2rad(w.lon1))))
        s["coords"] = torch.tensor([(w.lat0 + w.lat1) / 2, lon_c], dtype=torch.float32)
        return s


def demo_files(demo: str | Path) -> dict[str, list[str]]:
    """The raw demo products under ``demo`` (``ostia/``, ``glorys/``, ``en4/``)."""
    demo = Path(demo)
    return {p: sorted(str(f) for f in (demo / p).glob("*.nc")) for p in ("ostia", "glorys", "en4")}


# --------------------------------------------------------------------------------------------
# Peer 2: xbatcher's MapDataset over the dask-opened cube


def xbatcher_dataset(cube: str, window: int, tile: int, step: int | None = None, target_bands=(0, 50),
                     dask: bool = True):
    """``(MapDataset, index)``: xbatcher's torch MapDataset over one BatchGenerator of the cube's daily
    variables (OSTIA, the nearest GLORYS snapshot per day, profile counts/sums, static masks) opened
    with dask (``chunks={}``), or without (``dask=False``: ``chunks=None``, lazily indexed arrays), and
    ``index[(day0, row0, col0)] -> dataset index`` to pick the same windows.

    Each item is a ``(1 + 4C, tile, tile)`` tensor: eo, x, y, x_valid_mask, y_valid_mask (north-up),
    computed from the window by :func:`window_transform`.
    """
    import xarray as xr
    import xbatcher
    from xbatcher.loaders.torch import MapDataset

    from loaders.sample import nearest_snapshots

    tree = xr.open_datatree(str(cube), engine="zarr", chunks={} if dask else None)
    days = tree["ostia"]["time"].values.astype("datetime64[D]")
    snap = nearest_snapshots(days, tree["glorys"]["time"].values)
    theta = tree["glorys"]["thetao"].isel(time=snap).assign_coords(time=tree["ostia"]["time"])
    ds = xr.Dataset({"sst": tree["ostia"]["analysed_sst"], "thetao": theta, "count": tree["profiles"]["count"],
                     "sum": tree["profiles"]["sum"], "ocean": tree["static"]["ocean_mask"],
                     "bottom": tree["static"]["bottom_level"]})
    overlap = tile - (step or tile)
    gen = xbatcher.BatchGenerator(ds, input_dims={"time": window, "lat": tile, "lon": tile},
                                  input_overlap={"time": window - 1, "lat": overlap, "lon": overlap})
    return MapDataset(gen, transform=WindowTransform(target_bands)), _BatchIndex(gen, ds, tile, step or tile)


class _BatchIndex:
    """``index[(day0, row0, col0)]``: the BatchGenerator item of the window starting there.

    xbatcher documents its batches as every ``input_dims`` window in C order over the dims
    (time, lat, lon), starts ``0, stride, 2*stride...`` while the window fits; that gives the
    item number. Each lookup checks it through the public ``gen[k]`` (its first time, lat and
    lon coordinates), so an xbatcher that orders batches differently fails loudly, not silently.
    """

    def __init__(self, gen, ds, tile: int, step: int):
        self.gen, self.step = gen, step
        self.n_lat = (ds.sizes["lat"] - tile) // step + 1
        self.n_lon = (ds.sizes["lon"] - tile) // step + 1
        self.coords = {d: ds[d].values for d in ("time", "lat", "lon")}

    def __getitem__(self, start: tuple[int, int, int]) -> int:
        day0, row0, col0 = start
        if row0 % self.step or col0 % self.step:
            raise KeyError(f"no xbatcher window starts at rows {row0}, cols {col0} (stride {self.step})")
        k = (day0 * self.n_lat + row0 // self.step) * self.n_lon + col0 // self.step
        got = self.gen[k]
        if any(got[d].values[0] != self.coords[d][i] for d, i in (("time", day0), ("lat", row0), ("lon", col0))):
            raise KeyError(f"xbatcher item {k} does not start at (day {day0}, row {row0}, col {col0})")
        return k


class WindowTransform:
    """xbatcher transform: one window (xr.Dataset) -> the window means as one float32 tensor."""

    def __init__(self, target_bands=(0, 50)):
        self.lo, self.hi = target_bands

    def __call__(self, batch) -> torch.Tensor:
        return torch.from_numpy(window_transform(batch, self.lo, self.hi))


def window_transform(batch, lo: int = 0, hi: int = 50) -> np.ndarray:
    """Same window means as a CubeStream sample (argo x, OSTIA eo), stacked ``[eo, x, y, xm, ym]``."""
    ocean = batch["ocean"].values.astype(bool)
    sst = batch["sst"].values
    n_sst = np.isfinite(sst).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        eo = np.nansum(sst, 0) / n_sst - CELSIUS_TO_KELVIN
        theta = batch["thetao"].values
        ny = np.isfinite(theta).sum(0)
        y = np.nansum(theta, 0, dtype=np.float64) / ny
        cnt = batch["count"].values.sum(0)
        x = batch["sum"].values.sum(0, dtype=np.float64) / cnt
    eo_ok = (n_sst > 0) & ocean
    y_ok = (ny > 0) & ocean[None] & (np.arange(theta.shape[1])[:, None, None] < batch["bottom"].values[None])
    x_ok = cnt > 0

    def z(v, ok):
        return np.where(ok, normalise_celsius(np.where(ok, v, 0.0)), 0.0)

    out = np.concatenate([z(eo, eo_ok)[None], z(x, x_ok)[lo:hi], z(y, y_ok)[lo:hi], x_ok[lo:hi], y_ok[lo:hi]])
    return np.ascontiguousarray(out[..., ::-1, :], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# The limit: bare decode of the chunks the stream reads


def chunk_plan(stream, indices) -> list[tuple[str, tuple[int, ...]]]:
    """Unique ``(array path, chunk index)`` that ``stream`` reads for the windows ``indices``, in
    first-use order (:meth:`loaders.stream.CubeStream.window_chunks` of each window)."""
    plan: dict[tuple, None] = {}
    for i in indices:
        plan.update(dict.fromkeys(stream.window_chunks(int(i))))
    return list(plan)


PROFILE_VALUES = ("profiles/obs_count", "profiles/obs_sum")


def needed_chunks(stream, index: int) -> list[tuple[str, tuple[int, ...]]]:
    """:meth:`~loaders.stream.CubeStream.window_chunks` of window ``index`` without its upper bound:
    the ``profiles/obs_count`` and ``profiles/obs_sum`` chunks are only those holding a table row
    of the window (:meth:`~loaders.reader.CubeReader.observed_rows`), which is all the stream
    decodes of them. Read order kept."""
    listed = stream.window_chunks(int(index))
    if not any(path in PROFILE_VALUES for path, _ in listed):
        return listed
    w = stream.windows[int(index)]
    at = stream.reader.observed_rows(w.time, w.rows, w.cols)[0]
    observed = set()
    for path in PROFILE_VALUES:
        arr = stream.reader.array(path)
        observed |= {(path, (int(k), 0)) for k in np.unique(at // arr.chunks[0])}
    return [k for k in listed if k[0] not in PROFILE_VALUES or k in observed]


def sample_plan(stream, indices) -> list[tuple[str, tuple[int, ...]]]:
    """The chunks the stream decodes for the windows ``indices``: :func:`needed_chunks` of each
    window in the stream's order, each chunk once (the stream's chunk cache holds it after)."""
    plan: dict[tuple, None] = {}
    for i in indices:
        plan.update(dict.fromkeys(needed_chunks(stream, int(i))))
    return list(plan)


def decode_chunks(cube: str, plan: list[tuple]) -> int:
    """Read and decode every planned chunk once, no assembly; returns the decoded bytes.

    The fastest decode the layout allows: a chunk stored as its own object with the codecs the
    builder writes (``bytes`` + Blosc, optionally a ``crc32c`` trailer, which is checked, as the
    stream checks it) is read as one file and Blosc-decoded straight into an array; any other
    layout (shards, other codecs) goes through zarr-python. A chunk never written is its fill."""
    import zarr

    root = zarr.open_group(str(cube), mode="r", zarr_format=3, use_consolidated=True)
    arrays, total = {}, 0
    for path, cidx in plan:
        arr = arrays.get(path) or arrays.setdefault(path, root[path])
        direct = decode_chunk_direct(Path(cube), path, arr, cidx)
        if direct is None:
            sel = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(cidx, arr.chunks, arr.shape))
            direct = arr[sel]
        total += direct.nbytes
    return total


def decode_chunk_direct(cube: Path, path: str, arr, cidx: tuple) -> np.ndarray | None:
    """One chunk of a local array in a layout the loaders decode directly
    (:func:`loaders.reader.direct_layout`) and not sharded, read as one file; else None."""
    from numcodecs import Blosc

    from loaders.reader import chunk_name, direct_layout, verified_payload

    layout = direct_layout(arr)
    if layout is None or layout.shards is not None or not cube.is_dir():
        return None
    key = chunk_name(cidx)
    try:
        data = (cube / path / key).read_bytes()
    except FileNotFoundError:
        return np.full(arr.chunks, arr.fill_value, dtype=arr.dtype)
    if layout.checksummed:
        data = verified_payload(data, f"{path}: chunk {key}")
    return np.frombuffer(Blosc().decode(data), dtype=layout.dtype).reshape(arr.chunks)


def write_floor(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], n: int, batch_size: int = 1) -> float:
    """Seconds to allocate and fill the output tensors of ``n`` samples of the given shapes and
    dtypes, ``batch_size`` samples to a tensor as a collated batch holds them (memory bandwidth:
    the least any loader must do to hand the samples out; a batch of the demo's 50-level samples
    is larger than the CPU caches, so the writes go to memory)."""
    import time

    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        for shape, dtype in shapes.values():
            torch.empty((b,) + tuple(shape), dtype=dtype).fill_(1)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Rasterisation peer: a per-profile Python loop


def _cell(offset: float, res: float) -> int:
    """Half-open cell of an offset from the grid edge; float noise within 1e-9 cells snaps onto the
    edge (the cube grid's rule, so both rasterisers put edge profiles in the same cell)."""
    f = offset / res
    return int(np.floor(round(f) if abs(f - round(f)) < 1e-9 else f))


def python_loop_rasterise(day_index, lat, lon, depth, temp, levels, lat_south: float, lon_west: float,
                          res: float, nlat: int, nlon: int, n_days: int) -> dict[tuple, tuple[int, float]]:
    """Per-profile loop: align (reference rule) then add every accepted level to its half-open cell.

    Returns ``{(day, level, row, col): (count, sum)}`` for comparison with the vectorised raster.
    """
    cells: dict[tuple, list] = {}
    for p in range(len(day_index)):
        d = int(day_index[p])
        if not (0 <= d < n_days) or not (np.isfinite(lat[p]) and np.isfinite(lon[p])):
            continue
        row, col = _cell(lat[p] - lat_south, res), _cell((lon[p] - lon_west) % 360.0, res)
        if not (0 <= row < nlat and 0 <= col < nlon):
            continue
        values = align_profile(depth[p], temp[p], levels)
        for k in np.flatnonzero(np.isfinite(values)):
            cell = cells.setdefault((d, int(k), row, col), [0, 0.0])
            cell[0] += 1
            cell[1] += float(values[k])
    return {k: (v[0], v[1]) for k, v in cells.items()}
