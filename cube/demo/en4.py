"""Synthetic EN4.2.2 monthly profile files (``EN.4.2.2.f.profiles.g10.YYYYMM.nc``).

Layout as the real archive (REFERENCE.md 1.3, Argo-derived conventions): dimensions ``N_PROF``,
``N_LEVELS`` = 400, ``N_PARAM`` = 5, ``N_CALIB`` = 1, ``N_HISTORY`` (unlimited, 0) and string
dimensions; no coordinate variables. ``JULD`` float64 days since 1950-01-01 (fill 99999),
``LATITUDE``/``LONGITUDE`` float64 (fill 99999), ``DEPH_CORRECTED``, ``TEMP`` (in-situ),
``POTM_CORRECTED``, ``PSAL_CORRECTED`` float32 (fill 99999.0 beyond a profile's last level), one-byte
char QC flags ('1' good, '2' probably good, '3' probably bad, '4' bad, '9' missing; ' ' = fill)
``JULD_QC``, ``POSITION_QC``, ``PROFILE_{DEPH,POTM,PSAL}_QC``, ``{DEPH,POTM,PSAL}_CORRECTED_QC``;
``PLATFORM_NUMBER``, ``DATA_MODE``, ``WMO_INST_TYPE``, ``STATION_PARAMETERS``, int32
``QC_FLAGS_PROFILES``/``QC_FLAGS_LEVELS`` (1 where the flag is 3 or 4). Even months are written as
NetCDF-3 classic, odd months as NetCDF-4 (zlib): both occur in the real archive. Profiles are sorted
by ``JULD``. Only days inside the spec's [start, end] get profiles; a month without any is not written.

Profiles (``profiles_per_day`` on average, Poisson) sample the truth's potential temperature at their
own position and time plus instrument noise; ``TEMP`` is the matching in-situ temperature (TEOS-10,
gsw) and ``PSAL`` the truth's salinity (none for XBTs):

* Argo floats (75 %): 70-100 levels from 1-5 m (15 % from 4-10 m) to ~2000 m, denser near the top;
* XBTs (17 %): 150-400 levels from ~0.7 m to 460 m (T-4) or 760 m (T-7), noisier, no salinity;
* CTDs (8 %): 200-400 levels to just above the seabed;

every profile stops above the local seabed. Realistic defects, each present at least once per file of
20 or more profiles: whole profiles rejected (``PROFILE_POTM_QC`` '4', biased by 2-5 K), bad or missing
dates (``JULD_QC`` '4' with a wrong date, or ``JULD`` = 99999 with '9'), bad or missing positions
(``POSITION_QC`` '4' moved by up to 3 deg, or 99999 with '9'), positions on land or just outside the
region with good QC; and, per level, flags '2' (2 %), '3' (0.5 %, +0.3 K) and '4' (1 %, 1-4 K spikes),
plus a few duplicated depths.

Reader trap (true of the real files too): with the real ``JULD`` units "... 00:00:00 utc" (lower
case), xarray decodes the 99999 fill as 1950-01-01 instead of NaT; decode ``JULD`` with
``decode_times=False``. Char QC arrays come back from xarray as per-level bytes with NaN for fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gsw
import netCDF4
import numpy as np

from cube.demo.ncio import atomic_dataset, new_variable, set_attrs, spec_attrs, stable_uuid, yyyymmdd
from cube.demo.truth import TruthOcean, days_since_1950

N_LEVELS = 400
N_PARAM = 5
FILL = 99999.0
QC_FILL = b" "
#: (name, share of the defective profiles); each shows up at least once in a file of >= 20 profiles.
DEFECTS = (("profile_qc", 0.03), ("juld_bad", 0.01), ("juld_fill", 0.005), ("position_bad", 0.01),
           ("position_fill", 0.007), ("on_land", 0.015), ("outside", 0.015))
MIN_SEABED_M = 40.0


@dataclass(frozen=True)
class Instrument:
    """How one platform type samples the column."""

    name: str
    share: float
    wmo_codes: tuple[str, ...]
    levels: tuple[int, int]
    top_m: tuple[float, float]
    bottom_m: tuple[float, ...]
    exponent: float  # > 1: levels denser near the surface
    noise_c: float


INSTRUMENTS = (
    Instrument("argo", 0.75, ("846", "851", "844"), (70, 100), (1.0, 5.0), (1900.0, 2000.0), 1.8, 0.005),
    Instrument("xbt", 0.17, ("042", "052"), (150, 400), (0.5, 1.0), (460.0, 760.0), 1.0, 0.03),
    Instrument("ctd", 0.08, ("830",), (200, 400), (1.0, 4.0), (5500.0, 5500.0), 1.2, 0.002),
)
ARGO, XBT = ([i.name for i in INSTRUMENTS].index(name) for name in ("argo", "xbt"))


def file_name(month: np.datetime64) -> str:
    """EN4.2.2 monthly file name."""
    return f"EN.4.2.2.f.profiles.g10.{str(np.datetime64(month, 'M')).replace('-', '')}.nc"


def netcdf_format(month: np.datetime64) -> str:
    """Even months NetCDF-3 classic, odd months NetCDF-4 (the real archive mixes both)."""
    return "NETCDF3_CLASSIC" if int(str(np.datetime64(month, "M"))[5:7]) % 2 == 0 else "NETCDF4"


class En4Writer:
    """Writes the EN4 monthly files of one spec."""

    def __init__(self, truth: TruthOcean, spec):
        self.truth, self.spec = truth, spec

    def write_month(self, outdir: Path, month: np.datetime64) -> Path | None:
        """Write the file of ``month``; None when no profile falls in it (no file is written)."""
        month = np.datetime64(month, "M")
        days = self.spec.days[self.spec.days.astype("datetime64[M]") == month]
        rng = np.random.default_rng([self.spec.seed, 3, int(str(month).replace("-", ""))])
        n = int(rng.poisson(self.spec.profiles_per_day * len(days))) if len(days) else 0
        profiles = _draw_profiles(rng, self.truth, self.spec.region, days, n)
        if profiles is None:
            return None
        _add_defects(rng, profiles, self.truth, self.spec.region)
        path = Path(outdir) / file_name(month)
        with atomic_dataset(path, netcdf_format(month)) as ds:
            _write(ds, profiles.sorted(), self.spec, month)
        return path


@dataclass
class _Profiles:
    """Mutable working table of one month's profiles (n, N_LEVELS) before writing."""

    juld: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    kind: np.ndarray
    depth: np.ndarray
    potm: np.ndarray
    temp: np.ndarray
    psal: np.ndarray
    valid: np.ndarray
    level_qc: np.ndarray
    platform: np.ndarray
    wmo: np.ndarray
    data_mode: np.ndarray
    juld_qc: np.ndarray
    position_qc: np.ndarray
    profile_qc: np.ndarray

    def sorted(self) -> "_Profiles":
        order = np.argsort(self.juld, kind="stable")
        return _Profiles(**{k: v[order] for k, v in vars(self).items()})


def _ocean_positions(rng, truth: TruthOcean, region, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to n uniform positions in the region over water at least MIN_SEABED_M deep."""
    lat_min, lat_max, lon_min, lon_max = region
    lat = rng.uniform(lat_min, lat_max, 6 * n + 50)
    lon = rng.uniform(lon_min, lon_max, 6 * n + 50)
    keep = truth.is_ocean(lat, lon) & (truth.seabed_depth(lat, lon) >= MIN_SEABED_M)
    return lat[keep][:n], lon[keep][:n]


def _draw_profiles(rng, truth: TruthOcean, region, days: np.ndarray, n: int) -> _Profiles | None:
    lat, lon = _ocean_positions(rng, truth, region, n)
    n = lat.size
    if n == 0:
        return None
    juld = days_since_1950(rng.choice(days, n)) + rng.random(n)
    kind = rng.choice(len(INSTRUMENTS), n, p=[i.share for i in INSTRUMENTS])
    depth, valid, wmo = _levels(rng, kind, truth.seabed_depth(lat, lon))
    potm_true, salt = truth.profiles(lat, lon, juld, np.where(valid, depth, 0.0))
    noise = np.array([i.noise_c for i in INSTRUMENTS])[kind][:, None]
    potm = potm_true + noise * rng.standard_normal(depth.shape)
    psal = np.where(kind[:, None] == XBT, np.nan, salt + 0.005 * rng.standard_normal(depth.shape))
    temp = _in_situ(potm, salt, depth, lat, lon)
    return _Profiles(
        juld=juld, lat=lat, lon=lon, kind=kind, depth=depth, potm=potm, temp=temp, psal=psal, valid=valid,
        level_qc=_level_qc(rng, valid, potm, temp), platform=_platforms(rng, kind), wmo=wmo,
        data_mode=np.where((kind == ARGO) & (rng.random(n) < 0.3), b"R", b"D").astype("S1"),
        juld_qc=np.full(n, b"1", "S1"), position_qc=np.full(n, b"1", "S1"), profile_qc=np.full(n, b"1", "S1"))


def _levels(rng, kind: np.ndarray, seabed: np.ndarray):
    """Depth matrix (n, N_LEVELS) with NaN-free padding, the valid-level mask and WMO codes."""
    n = kind.size
    top, nominal, n_nom, exponent = (np.empty(n) for _ in range(4))
    wmo = np.empty(n, "S4")
    for k, inst in enumerate(INSTRUMENTS):
        sel = kind == k
        m = int(sel.sum())
        code = rng.integers(0, len(inst.wmo_codes), m)
        top[sel] = rng.uniform(*inst.top_m, m)
        # XBT probes are T-4 (460 m) or T-7 (760 m); the others have a range of nominal depths.
        if inst.name == "xbt":
            nominal[sel] = np.array(inst.bottom_m)[code]
        else:
            nominal[sel] = rng.uniform(inst.bottom_m[0], inst.bottom_m[-1], m)
        n_nom[sel] = rng.integers(inst.levels[0], inst.levels[1] + 1, m)
        exponent[sel] = inst.exponent
        wmo[sel] = np.array([c.ljust(4).encode() for c in inst.wmo_codes], "S4")[code]
    late_start = (kind == ARGO) & (rng.random(n) < 0.15)
    top[late_start] = rng.uniform(4.0, 10.0, int(late_start.sum()))
    bottom = np.minimum(nominal, seabed - rng.uniform(3.0, 20.0, n))
    n_lev = np.clip(np.round(n_nom * np.sqrt((bottom - top) / (nominal - top))), 8, n_nom).astype(int)
    idx = np.arange(N_LEVELS)[None, :]
    # Jitter below half a step keeps depths strictly increasing.
    frac = np.clip((idx + rng.uniform(-0.3, 0.3, (n, N_LEVELS))) / (n_lev[:, None] - 1), 0.0, 1.0)
    frac[:, 0] = 0.0
    depth = top[:, None] + (bottom - top)[:, None] * frac ** exponent[:, None]
    dup = np.flatnonzero(rng.random(n) < 0.01)
    k = rng.integers(1, n_lev[dup] - 1) if dup.size else dup
    depth[dup, k] = depth[dup, k - 1]  # duplicated depths occur in real EN4 profiles
    return depth, idx < n_lev[:, None], wmo


def _in_situ(potm, salt, depth, lat, lon):
    """In-situ temperature from potential temperature (TEOS-10): ~+0.1-0.3 K at 2000 m."""
    p = gsw.p_from_z(-depth, lat[:, None])
    sa = gsw.SA_from_SP(salt, p, lon[:, None], lat[:, None])
    return gsw.t_from_CT(sa, gsw.CT_from_pt(sa, potm), p)


def _level_qc(rng, valid, potm, temp) -> np.ndarray:
    """Per-level flags '1'/'2'/'3'/'4' (' ' beyond the profile); '3' and '4' levels get corrupted."""
    u = rng.random(valid.shape)
    qc = np.select([u < 0.010, u < 0.015, u < 0.035], [b"4", b"3", b"2"], b"1").astype("S1")
    spike = np.where(u < 0.010, rng.choice([-1.0, 1.0], valid.shape) * rng.uniform(1.0, 4.0, valid.shape), 0.0)
    spike += np.where((u >= 0.010) & (u < 0.015), 0.3, 0.0)
    potm += spike
    temp += spike
    return np.where(valid, qc, QC_FILL)


def _platforms(rng, kind: np.ndarray) -> np.ndarray:
    """WMO float numbers for Argo (a pool, several profiles per float), call signs for ships."""
    n = kind.size
    floats = 6900000 + rng.integers(0, 99999, max(3, n // 8))
    ships = np.array([f"SHIP{i:02d}" for i in range(12)])
    ids = np.where(kind == ARGO, rng.choice(floats, n).astype(str), rng.choice(ships, n))
    return np.char.ljust(ids, 8).astype("S8")


def _defect_groups(rng, n: int) -> dict[str, np.ndarray]:
    """Disjoint profile indices for each defect (at least one each when n >= 20)."""
    counts = [max(1, round(p * n)) if n >= 20 else int(rng.binomial(n, p)) for _, p in DEFECTS]
    counts = np.minimum(counts, n)
    chosen = rng.permutation(n)[: min(int(np.sum(counts)), n)]
    edges = np.cumsum([0, *counts])
    return {name: chosen[edges[i]:edges[i + 1]] for i, (name, _) in enumerate(DEFECTS)}


def _add_defects(rng, p: _Profiles, truth: TruthOcean, region) -> None:
    """Corrupt some profiles the way real archives are corrupt (see the module docstring)."""
    g = _defect_groups(rng, p.lat.size)
    bias = rng.choice([-1.0, 1.0], g["profile_qc"].size) * rng.uniform(2.0, 5.0, g["profile_qc"].size)
    p.potm[g["profile_qc"]] += bias[:, None]
    p.temp[g["profile_qc"]] += bias[:, None]
    p.profile_qc[g["profile_qc"]] = b"4"
    p.juld[g["juld_bad"]] -= rng.uniform(40.0, 400.0, g["juld_bad"].size)
    p.juld_qc[g["juld_bad"]] = b"4"
    p.juld[g["juld_fill"]] = FILL
    p.juld_qc[g["juld_fill"]] = b"9"
    m = g["position_bad"].size
    p.lat[g["position_bad"]] = np.clip(p.lat[g["position_bad"]] + rng.uniform(-3, 3, m), -89.0, 89.0)
    p.lon[g["position_bad"]] = (p.lon[g["position_bad"]] + rng.uniform(-3, 3, m) + 180.0) % 360.0 - 180.0
    p.position_qc[g["position_bad"]] = b"4"
    p.lat[g["position_fill"]] = FILL
    p.lon[g["position_fill"]] = FILL
    p.position_qc[g["position_fill"]] = b"9"
    p.lat[g["on_land"]], p.lon[g["on_land"]] = _land_positions(rng, truth, region, g["on_land"].size)
    p.lat[g["outside"]], p.lon[g["outside"]] = _outside_positions(rng, region, g["outside"].size)


def _land_positions(rng, truth: TruthOcean, region, n: int):
    """n positions on land inside the region (just outside it where the region has no land)."""
    lat_min, lat_max, lon_min, lon_max = region
    lat = rng.uniform(lat_min, lat_max, 200 * n + 200)
    lon = rng.uniform(lon_min, lon_max, 200 * n + 200)
    land = ~truth.is_ocean(lat, lon)
    if land.sum() < n:
        return _outside_positions(rng, region, n)
    return lat[land][:n], lon[land][:n]


def _outside_positions(rng, region, n: int):
    """n positions 0.05-1 deg north of the region or west of it."""
    lat_min, lat_max, lon_min, lon_max = region
    north = rng.random(n) < 0.5
    lat = np.where(north, np.minimum(lat_max + rng.uniform(0.05, 1.0, n), 89.9), rng.uniform(lat_min, lat_max, n))
    lon = np.where(north, rng.uniform(lon_min, lon_max, n), lon_min - rng.uniform(0.05, 1.0, n))
    return lat, (lon + 180.0) % 360.0 - 180.0


# ---- writing ------------------------------------------------------------------------------------------

def _write(ds, p: _Profiles, spec, month: np.datetime64) -> None:
    for name, size in (("N_PROF", p.lat.size), ("N_LEVELS", N_LEVELS), ("N_PARAM", N_PARAM), ("N_CALIB", 1),
                       ("STRING4", 4), ("STRING8", 8), ("STRING16", 16), ("DATE_TIME", 14), ("N_HISTORY", None)):
        ds.createDimension(name, size)
    packed = {} if ds.data_model.startswith("NETCDF3") else {"compression": "zlib", "complevel": 1, "shuffle": True}
    _write_header(ds, p, month)
    _write_stations(ds, p)
    _write_levels(ds, p, packed)
    set_attrs(ds, _global_attrs(spec, month, p.lat.size))


def _write_stations(ds, p: _Profiles) -> None:
    """Per-profile time, position and profile QC."""
    prof = ("N_PROF",)
    _var(ds, "JULD", "f8", prof, p.juld, FILL, {
        "long_name": "Julian day of the station relative to REFERENCE_DATE_TIME",
        "units": "days since 1950-01-01 00:00:00 utc",
        "conventions": "Relative julian days with decimal part (as parts of day)"})
    _char(ds, "JULD_QC", prof, p.juld_qc, "Quality on date and time")
    for name, values, what, units, limit in (("LATITUDE", p.lat, "Latitude", "degree_north", 90.0),
                                             ("LONGITUDE", p.lon, "Longitude", "degree_east", 180.0)):
        _var(ds, name, "f8", prof, values, FILL, {"long_name": f"{what} of the station, best estimate",
                                                  "units": units, "valid_min": -limit, "valid_max": limit})
    _char(ds, "POSITION_QC", prof, p.position_qc, "Quality on position (latitude and longitude)")
    no_salt = np.where(p.kind == XBT, QC_FILL, b"1").astype("S1")
    _char(ds, "PROFILE_DEPH_QC", prof, np.full(p.lat.size, b"1", "S1"), "Global quality flag of DEPH profile")
    _char(ds, "PROFILE_POTM_QC", prof, p.profile_qc, "Global quality flag of POTM profile")
    _char(ds, "PROFILE_PSAL_QC", prof, no_salt, "Global quality flag of PSAL profile")
    _var(ds, "QC_FLAGS_PROFILES", "i4", prof, (p.profile_qc == b"4").astype(np.int32), None,
         {"long_name": "Quality control flags for profiles (1: rejected)"})


def _write_levels(ds, p: _Profiles, packed: dict) -> None:
    """(N_PROF, N_LEVELS) values, fill 99999 beyond each profile, and their level QC."""
    levels = ("N_PROF", "N_LEVELS")
    for name, values, long_name, units, vmin, vmax in (
            ("DEPH_CORRECTED", p.depth, "Corrected depth", "meter", 0.0, 15000.0),
            ("POTM_CORRECTED", p.potm, "Corrected potential temperature", "degree_Celsius", -3.0, 40.0),
            ("PSAL_CORRECTED", p.psal, "Corrected practical salinity", "psu", 0.0, 50.0),
            ("TEMP", p.temp, "Sea temperature in-situ ITS-90 scale", "degree_Celsius", -3.0, 40.0)):
        data = np.where(p.valid & np.isfinite(values), values, FILL).astype(np.float32)
        _var(ds, name, "f4", levels, data, np.float32(FILL), {
            "long_name": long_name, "units": units, "valid_min": np.float32(vmin), "valid_max": np.float32(vmax)}, packed)
    level_good = np.where(p.valid, b"1", QC_FILL).astype("S1")
    salt_qc = np.where((p.kind == XBT)[:, None], QC_FILL, level_good).astype("S1")
    _char(ds, "DEPH_CORRECTED_QC", levels, level_good, "quality flag", packed)
    _char(ds, "POTM_CORRECTED_QC", levels, p.level_qc, "quality flag", packed)
    _char(ds, "PSAL_CORRECTED_QC", levels, salt_qc, "quality flag", packed)
    _var(ds, "QC_FLAGS_LEVELS", "i4", levels, np.isin(p.level_qc, [b"3", b"4"]).astype(np.int32), None,
         {"long_name": "Quality control flags for levels (1: rejected)"}, packed)


def _write_header(ds, p: _Profiles, month: np.datetime64) -> None:
    n = p.lat.size
    next_month = (np.datetime64(month, "M") + np.timedelta64(1, "M")).astype("datetime64[D]")
    created = yyyymmdd(next_month + np.timedelta64(14, "D")) + "000000"
    _char(ds, "DATA_TYPE", ("STRING16",), _chars("EN4 profiles", 16), "Data type")
    _char(ds, "FORMAT_VERSION", ("STRING4",), _chars("2.2", 4), "File format version")
    _char(ds, "REFERENCE_DATE_TIME", ("DATE_TIME",), _chars("19500101000000", 14), "Date of reference for Julian days")
    _char(ds, "DATE_CREATION", ("DATE_TIME",), _chars(created, 14), "Date of file creation")
    _char(ds, "PLATFORM_NUMBER", ("N_PROF", "STRING8"), netCDF4.stringtochar(p.platform), "Float unique identifier")
    params = np.where((p.kind == XBT)[:, None], np.array(["DEPH", "TEMP", "POTM", "", ""], "S16"),
                      np.array(["DEPH", "TEMP", "POTM", "PSAL", ""], "S16")).reshape(n, N_PARAM)
    _char(ds, "STATION_PARAMETERS", ("N_PROF", "N_PARAM", "STRING16"), netCDF4.stringtochar(params),
          "List of available parameters for the station")
    _char(ds, "DATA_MODE", ("N_PROF",), p.data_mode, "Delayed mode or real time data")
    _char(ds, "WMO_INST_TYPE", ("N_PROF", "STRING4"), netCDF4.stringtochar(p.wmo), "Coded instrument type")


def _chars(text: str, width: int) -> np.ndarray:
    return netCDF4.stringtochar(np.array([text.ljust(width)], f"S{width}"))[0]


def _var(ds, name, dtype, dims, data, fill, attrs, packed=None) -> None:
    v = new_variable(ds, name, dtype, dims, attrs, fill_value=fill if fill is not None else False, **(packed or {}))
    v[:] = data


def _char(ds, name, dims, data, long_name, packed=None) -> None:
    attrs = {"long_name": long_name, "conventions": "EN4 / Argo reference table 2"}
    _var(ds, name, "S1", dims, data, QC_FILL, attrs, packed)


def _global_attrs(spec, month: np.datetime64, n: int) -> dict:
    return {
        "title": "EN4.2.2 quality controlled subsurface ocean temperature and salinity profiles (g10 XBT/MBT corrections)",
        "institution": "Met Office Hadley Centre", "source": "EN.4.2.2 (synthetic demo)",
        "references": "Good, S. A., M. J. Martin and N. A. Rayner, 2013. EN4: quality controlled ocean temperature "
                      "and salinity profiles and monthly objective analyses with uncertainty estimates, JGR Oceans",
        "history": "Created by the depthcube demo generator: SYNTHETIC data",
        "Conventions": "CF-1.6", "month": str(np.datetime64(month, "M")), "number_of_profiles": np.int32(n),
        "uuid": stable_uuid("en4", spec.seed, str(month), *spec.region),
        **spec_attrs(spec),
    }
