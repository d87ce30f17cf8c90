"""The one hidden "truth" ocean that every demo product samples.

A deterministic function of (seed, region) and of (lat, lon, depth z [m, positive down],
t [days since 1950-01-01, the EN4/Argo JULD epoch]). Potential temperature in degC::

    T = Td(z) + (Sp - Td(z)) exp(-q(z)/D) + a_s exp(-q(z)/Ds) + eddies exp(-z/De) + fronts exp(-z/Df)

* ``Sp``: surface temperature at the end of winter: a meridional profile (28 degC at the equator,
  ~15 degC at 45 N, ~2 degC at 70 N) minus the seasonal amplitude ``A(lat)`` (0.3 .. 3.8 K), minus
  a coastal cooling of up to 0.8 K within ~50 km of land.
* ``a_s``: seasonal warming ``A (1 + cos(2 pi (t - late August) / year))`` (shifted half a year in the
  south), trapped in the mixed layer by a sharp seasonal thermocline (``Ds`` = 25 m).
* ``q(z)``: a smooth ``max(0, z - h)``: the column is mixed above the mixed-layer depth
  ``h = 15 m + 300 m sin^2(lat) * winter(t)``, deepest in mid-March (north).
* ``Td(z) = 1 + 3 exp(-z / 1500 m)``: abyssal water; ``D`` = 500 m is the permanent thermocline.
* Eddies: Gaussian warm and cold cores (radius 40-100 km, 0.4-1.5 K, amplitude breathing over 2-6
  months) on a jittered global 2.5 deg lattice that drifts west at 0.03 deg/day (~3 km/day), each
  drawn from a hash of (seed, lattice cell), so any point or grid sees the same eddies; decay
  ``De`` = 500 m. Cut to zero beyond 3 radii (a 1e-4 relative step).
* Fronts: meandering zonal fronts on a 7 deg latitude lattice, 0.5-1.5 K across 0.3-0.7 deg, with a
  compact 4 deg envelope so they sharpen the meridional gradient without shifting the mean; their
  meanders propagate over 2-7 months; decay ``Df`` = 350 m.
* Clipped below at -1.9 degC (sea water freezes); values stay in -1.9 .. ~31 degC.

Land is ``global_land_mask.globe.is_land`` (~1 km). The seabed comes from the distance to the coast
on the GLORYS 1/12 deg lattice over the region plus a 3 deg margin: a shelf from 15 m at the coast
to 200 m at 80 km, a slope over the next 120 km, then an abyssal plain of 4000-5800 m with seeded
ridges (so a few columns use all 50 GLORYS levels). Salinity (for EN4 PSAL and the in-situ
temperature) is a smooth function of latitude and depth.

Two evaluation paths give the same numbers: ``*_grid`` for regular lat/lon vectors at one time (eddies
as a separable matrix product, fast), and ``profiles`` for scattered points at their own times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from cube.grid import wrap_lon

EPOCH = np.datetime64("1950-01-01T00:00:00", "s")
YEAR_DAYS = 365.2425
KM_PER_DEG = 111.2
GLORYS_STEP = 1.0 / 12.0
STATIC_MARGIN_DEG = 3.0
FREEZING_C = -1.9

_SST_PEAK = (np.datetime64("2000-08-25") - EPOCH.astype("datetime64[D]")).astype(float)
_MLD_PEAK = (np.datetime64("2000-03-15") - EPOCH.astype("datetime64[D]")).astype(float)

EDDY_CELL_DEG = 2.5
EDDY_NLON = int(round(360 / EDDY_CELL_DEG))
EDDY_DRIFT_DEG_PER_DAY = 0.03
EDDY_CUTOFF_RADII = 3.0
EDDY_R_MAX_DEG = 100.0 / KM_PER_DEG
EDDY_LAT_WOBBLE = 0.25
FRONT_CELL_DEG = 7.0
FRONT_ENVELOPE_DEG = 4.0
FRONT_MEANDER_MAX = 1.8


def days_since_1950(when) -> np.ndarray:
    """datetime64 (any unit) -> float days since 1950-01-01 00:00 UTC."""
    return (np.asarray(when).astype("datetime64[s]") - EPOCH) / np.timedelta64(1, "D")


def is_land(lat, lon) -> np.ndarray:
    """global_land_mask's land test (~1 km), longitudes wrapped to [-180, 180).

    Imported on first use: the package loads a 0.9 GB global mask, which `import cube.demo` should not cost.
    """
    from global_land_mask import globe

    return globe.is_land(np.asarray(lat, dtype=np.float64), wrap_lon(lon))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic): a cheap, well-mixed integer hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, stream: int, i, j=0) -> np.ndarray:
    """Uniform [0, 1) floats that depend only on (seed, stream, i, j): lattice features without state."""
    i = np.atleast_1d(np.asarray(i, dtype=np.int64)).view(np.uint64)
    j = np.atleast_1d(np.asarray(j, dtype=np.int64)).view(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(np.full(1, seed, np.uint64) * np.uint64(0x100000001B3) ^ np.uint64(stream))
        h = _mix(_mix(h ^ i) ^ j)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bilinear(field: np.ndarray, lat0: float, lon0: float, step: float, lat, lon) -> np.ndarray:
    """Bilinear sample of a regular (lat, lon) node field; points outside are clamped to the edge."""
    ny, nx = field.shape
    fi = np.clip((np.asarray(lat, dtype=np.float64) - lat0) / step, 0, ny - 1)
    fj = np.clip(((np.asarray(lon, dtype=np.float64) - lon0) % 360.0) / step, 0, nx - 1)
    i = np.minimum(np.floor(fi).astype(np.int64), ny - 2)
    j = np.minimum(np.floor(fj).astype(np.int64), nx - 2)
    wi, wj = fi - i, fj - j
    return ((1 - wi) * ((1 - wj) * field[i, j] + wj * field[i, j + 1])
            + wi * ((1 - wj) * field[i + 1, j] + wj * field[i + 1, j + 1]))


@dataclass(frozen=True)
class StaticOcean:
    """Land, distance to the coast and seabed depth on the GLORYS 1/12 deg lattice (region + margin)."""

    lat0: float
    lon0: float
    land: np.ndarray
    coast_km: np.ndarray
    seabed_m: np.ndarray

    @classmethod
    def build(cls, seed: int, region: tuple[float, float, float, float]) -> "StaticOcean":
        """Static fields covering ``region`` plus a 3 deg margin (clipped to GLORYS's -80..90 N)."""
        lat, lon = _lattice(region, STATIC_MARGIN_DEG)
        lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
        land = is_land(lat2, lon2)
        coast_km = _coast_distance_km(land, lat)
        seabed = np.where(land, 0.0, _seabed_from_coast(coast_km, _abyss_depth(seed, lat2, lon2)))
        return cls(float(lat[0]), float(lon[0]), land, coast_km, seabed)

    def sample(self, field: np.ndarray, lat, lon) -> np.ndarray:
        """Bilinear value of one of the static fields at arbitrary points."""
        return _bilinear(field, self.lat0, self.lon0, GLORYS_STEP, lat, lon)


def _lattice(region, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """GLORYS node coordinates (-80 + k/12, -180 + k/12) covering ``region`` +- ``margin`` (lon unwrapped)."""
    lat_min, lat_max, lon_min, lon_max = region
    k0 = max(int(np.floor((lat_min - margin + 80.0) / GLORYS_STEP)), 0)
    k1 = min(int(np.ceil((lat_max + margin + 80.0) / GLORYS_STEP)), 170 * 12)
    m0 = int(np.floor((lon_min - margin + 180.0) / GLORYS_STEP))
    m1 = int(np.ceil((lon_max + margin + 180.0) / GLORYS_STEP))
    # Rounded to float32 like the stored GLORYS axes, so land is decided at the coordinates a reader sees.
    lat = (-80.0 + np.arange(k0, k1 + 1) / 12.0).astype(np.float32).astype(np.float64)
    return lat, (-180.0 + np.arange(m0, m1 + 1) / 12.0).astype(np.float32).astype(np.float64)


def _coast_distance_km(land: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Distance of every node to the nearest land node (km; 0 on land, 1e4 where no land is near)."""
    if not land.any():
        return np.full(land.shape, 1e4)
    dy = KM_PER_DEG * GLORYS_STEP
    dx = dy * np.cos(np.radians(np.clip(np.mean(lat), -85, 85)))
    return distance_transform_edt(~land, sampling=(dy, dx))


def _abyss_depth(seed: int, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Abyssal plain 4000-5800 m with seeded ridges (a function of absolute position only)."""
    u = np.random.default_rng([seed, 77]).random((3, 4))
    ridge = np.zeros(np.broadcast_shapes(lat.shape, lon.shape))
    for a, b, p, q in u:
        ridge += np.sin(2 * np.pi * lat / (4 + 12 * a) + 6.3 * p) * np.sin(2 * np.pi * lon / (5 + 15 * b) + 6.3 * q)
    return 4900.0 + 900.0 * np.clip(ridge / 1.5, -1, 1)


def _seabed_from_coast(coast_km: np.ndarray, abyss: np.ndarray) -> np.ndarray:
    """Shelf (15 -> 200 m over 80 km), then a continental slope (120 km) down to the abyss."""
    shelf = 15.0 + 185.0 * _smoothstep(coast_km / 80.0)
    return shelf + (abyss - 200.0) * _smoothstep((coast_km - 80.0) / 120.0)


class TruthOcean:
    """The demo's hidden ocean for one seed and region; see the module docstring for the model."""

    def __init__(self, seed: int, region: tuple[float, float, float, float]):
        self.seed = int(seed)
        self.region = tuple(region)
        self.static = StaticOcean.build(self.seed, self.region)

    # ---- static fields -------------------------------------------------------------------------
    def is_ocean(self, lat, lon) -> np.ndarray:
        """True where the point is sea (global_land_mask, ~1 km)."""
        return ~is_land(lat, lon)

    def coast_km(self, lat, lon) -> np.ndarray:
        """Distance to the coast in km (bilinear on the 1/12 deg lattice)."""
        return self.static.sample(self.static.coast_km, lat, lon)

    def seabed_depth(self, lat, lon) -> np.ndarray:
        """Sea-floor depth in m, positive down (bilinear on the 1/12 deg lattice; ~0 on land)."""
        return self.static.sample(self.static.seabed_m, lat, lon)

    # ---- temperature and salinity ----------------------------------------------------------------
    def temperature_grid(self, lat: np.ndarray, lon: np.ndarray, depth: np.ndarray, t: float,
                         coast_km: np.ndarray | None = None) -> np.ndarray:
        """Potential temperature (degC) on a lat x lon grid at depths ``depth`` and one time: (nz, ny, nx).

        ``coast_km`` (ny, nx) may be passed when the caller evaluates the same grid many times.
        """
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if coast_km is None:
            coast_km = self.coast_km(lat[:, None], lon[None, :])
        eddy = self.eddies_grid(lat, lon, t)
        z = np.asarray(depth, dtype=np.float64)[:, None, None]
        return self._assemble(lat[:, None], lon[None, :], float(t), eddy, coast_km, z)

    def profiles(self, lat, lon, t, depth) -> tuple[np.ndarray, np.ndarray]:
        """Potential temperature (degC) and practical salinity at profile levels.

        ``lat``, ``lon``, ``t`` are (n,) (each profile at its own time), ``depth`` is (n, L).
        """
        lat, lon, t = (np.asarray(a, dtype=np.float64) for a in (lat, lon, t))
        eddy = self.eddies_points(lat, lon, t)[:, None]
        z = np.asarray(depth, dtype=np.float64)
        temp = self._assemble(lat[:, None], lon[:, None], t[:, None], eddy, self.coast_km(lat, lon)[:, None], z)
        return temp, self._salinity(lat[:, None], z, eddy)

    def _assemble(self, lat, lon, t, eddy, coast_km, z):
        """Vertical structure from the horizontal fields (all arguments broadcast together)."""
        amp = _seasonal_amplitude(lat)
        south = np.pi * (lat < 0)
        s_perm = _climatology(lat) - amp - 0.8 * np.exp(-coast_km / 50.0)
        warming = amp * (1.0 + np.cos(2 * np.pi * (t - _SST_PEAK) / YEAR_DAYS + south))
        winter = 0.5 * (1.0 + np.cos(2 * np.pi * (t - _MLD_PEAK) / YEAR_DAYS + south))
        mld = 15.0 + 300.0 * np.sin(np.radians(np.minimum(np.abs(lat), 60.0))) ** 2 * winter
        q = 8.0 * np.logaddexp(0.0, (z - mld) / 8.0)
        deep = 1.0 + 3.0 * np.exp(-z / 1500.0)
        temp = (deep + (s_perm - deep) * np.exp(-q / 500.0) + warming * np.exp(-q / 25.0)
                + eddy * np.exp(-z / 500.0) + self.fronts(lat, lon, t) * np.exp(-z / 350.0))
        return np.maximum(temp, FREEZING_C)

    @staticmethod
    def _salinity(lat, z, eddy):
        surface = 34.2 + 2.2 * np.exp(-(((np.abs(lat) - 25.0) / 15.0) ** 2))
        return 34.9 + (surface - 34.9) * np.exp(-z / 600.0) + 0.03 * eddy * np.exp(-z / 500.0)

    # ---- fronts ------------------------------------------------------------------------------------
    def fronts(self, lat, lon, t) -> np.ndarray:
        """Sum of the meandering fronts near ``lat`` (K at the surface); arguments broadcast.

        Each front only touches rows within its reach, found on ``lat``'s leading axis (``lat`` is
        (ny, 1) for a grid or (n, ...) for points).
        """
        lat = np.asarray(lat, dtype=np.float64)
        shape = np.broadcast_shapes(lat.shape, np.shape(lon), np.shape(t))
        total = np.zeros(shape)
        if lat.size == 0:
            return total
        reach = FRONT_ENVELOPE_DEG + FRONT_MEANDER_MAX
        k_lo = int(np.floor((np.min(lat) - reach) / FRONT_CELL_DEG)) - 1
        k_hi = int(np.floor((np.max(lat) + reach) / FRONT_CELL_DEG)) + 1
        lat_rows = lat.reshape(lat.shape[0], -1).min(axis=1), lat.reshape(lat.shape[0], -1).max(axis=1)
        for k in range(k_lo, k_hi + 1):
            params = self._front_params(k)
            if params is None:
                continue
            rows = (lat_rows[1] > params[0] - reach) & (lat_rows[0] < params[0] + reach)
            if rows.any():
                pick = lambda a: a[rows] if np.ndim(a) and np.shape(a)[0] == lat.shape[0] else a  # noqa: E731
                total[rows] += self._front(params, pick(lat), pick(lon), pick(t))
        return total

    def _front_params(self, k: int):
        """(lat_f0, strength, width, amplitude, wavenumber, period, phase1, phase2) of lattice front k, or None."""
        u = [float(hash_uniform(self.seed, 200 + m, k)[0]) for m in range(8)]
        lat_f0 = (k + 0.3 + 0.4 * u[0]) * FRONT_CELL_DEG
        strength = (0.5 + 1.0 * u[1]) * np.clip((abs(lat_f0) - 5.0) / 5.0, 0.0, 1.0) * (abs(lat_f0) < 70.0)
        if strength == 0.0:
            return None
        # Meander amplitude a1 + a1/2 stays below FRONT_MEANDER_MAX.
        return lat_f0, strength, 0.3 + 0.4 * u[2], 0.4 + 0.8 * u[3], 20 + int(25 * u[4]), 80.0 + 120.0 * u[5], u[6], u[7]

    @staticmethod
    def _front(params, lat, lon, t):
        lat_f0, strength, width, a1, m1, period, p1, p2 = params
        phase = 2 * np.pi * np.asarray(t) / period
        lam = np.radians(lon)
        lat_f = (lat_f0 + a1 * np.sin(m1 * lam + phase + 2 * np.pi * p1)
                 + 0.5 * a1 * np.sin((2 * m1 + 3) * lam - 1.7 * phase + 2 * np.pi * p2))
        x = lat - lat_f
        envelope = np.clip(1.0 - (x / FRONT_ENVELOPE_DEG) ** 2, 0.0, 1.0) ** 2
        return -np.sign(lat_f0) * strength * np.tanh(x / width) * envelope

    # ---- eddies ------------------------------------------------------------------------------------
    def _eddy_params(self, i, j, t):
        """Centre (lat, lon), radius (deg of latitude) and amplitude (K) of lattice eddies at time t."""
        i = np.asarray(i, dtype=np.int64)
        jm = np.mod(np.asarray(j, dtype=np.int64), EDDY_NLON)
        u = [hash_uniform(self.seed, 100 + m, i, jm).reshape(np.broadcast_shapes(i.shape, jm.shape)) for m in range(8)]
        wobble = EDDY_LAT_WOBBLE * np.sin(2 * np.pi * t / (90.0 + 90.0 * u[7]) + 2 * np.pi * u[6])
        lat_c = (i + 0.15 + 0.7 * u[0]) * EDDY_CELL_DEG + wobble
        lon_c = wrap_lon((jm + 0.15 + 0.7 * u[1]) * EDDY_CELL_DEG - EDDY_DRIFT_DEG_PER_DAY * t)
        radius = (40.0 + 60.0 * u[2]) / KM_PER_DEG
        breathing = 0.65 + 0.35 * np.cos(2 * np.pi * t / (60.0 + 120.0 * u[5]) + 2 * np.pi * u[6])
        amp = np.where(u[4] < 0.5, -1.0, 1.0) * (0.4 + 1.1 * u[3]) * breathing
        return lat_c, lon_c, radius, amp

    @staticmethod
    def _kernel_1d(d, radius):
        """exp(-(d/r)^2), exactly 0 beyond the cutoff (both evaluation paths share it)."""
        return np.where(np.abs(d) < EDDY_CUTOFF_RADII * radius, np.exp(-((d / radius) ** 2)), 0.0)

    @staticmethod
    def _lon_reach_cells(max_abs_lat: float) -> int:
        coslat = np.cos(np.radians(min(max_abs_lat + EDDY_CELL_DEG, 85.0)))
        return min(int(np.ceil(EDDY_CUTOFF_RADII * EDDY_R_MAX_DEG / coslat / EDDY_CELL_DEG)) + 1, EDDY_NLON // 2 - 1)

    def eddies_grid(self, lat: np.ndarray, lon: np.ndarray, t: float) -> np.ndarray:
        """Eddy field (K) on the lat x lon grid at one time: a (ny, E) @ (E, nx) product of 1-D kernels."""
        i = np.arange(int(np.floor(lat.min() / EDDY_CELL_DEG)) - 2, int(np.floor(lat.max() / EDDY_CELL_DEG)) + 3)
        i, j = np.meshgrid(i, np.arange(EDDY_NLON), indexing="ij")
        lat_c, lon_c, radius, amp = (a.ravel() for a in self._eddy_params(i.ravel(), j.ravel(), float(t)))
        cos_c = np.cos(np.radians(lat_c))
        near = _gap_to_lon_range(lon_c, lon) * cos_c < EDDY_CUTOFF_RADII * radius
        lat_c, lon_c, radius, amp, cos_c = (a[near] for a in (lat_c, lon_c, radius, amp, cos_c))
        gy = self._kernel_1d(lat[None, :] - lat_c[:, None], radius[:, None])
        gx = self._kernel_1d(wrap_lon(lon[None, :] - lon_c[:, None]) * cos_c[:, None], radius[:, None])
        return (gy * amp[:, None]).T @ gx

    def eddies_points(self, lat: np.ndarray, lon: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Eddy field (K) at scattered points, each at its own time (same values as :meth:`eddies_grid`)."""
        lat, lon, t = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (lat, lon, t)))
        if lat.size == 0:
            return np.zeros(lat.shape)
        i0 = np.floor(lat / EDDY_CELL_DEG).astype(np.int64)
        j0 = np.floor((lon + EDDY_DRIFT_DEG_PER_DAY * t) / EDDY_CELL_DEG).astype(np.int64)
        reach = self._lon_reach_cells(float(np.max(np.abs(lat))))
        total = np.zeros(lat.shape)
        for di in range(-2, 3):
            for dj in range(-reach, reach + 1):
                lat_c, lon_c, radius, amp = self._eddy_params(i0 + di, j0 + dj, t)
                dx = wrap_lon(lon - lon_c) * np.cos(np.radians(lat_c))
                total += amp * self._kernel_1d(lat - lat_c, radius) * self._kernel_1d(dx, radius)
        return total


def _gap_to_lon_range(lon_c: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Degrees of longitude from each centre to the nearest of the (non-wrapping) grid longitudes' span."""
    mid = 0.5 * (lon.min() + lon.max())
    half = 0.5 * (lon.max() - lon.min())
    return np.maximum(np.abs(wrap_lon(lon_c - mid)) - half, 0.0)


def _climatology(lat):
    """Annual-mean SST by latitude (degC)."""
    return 29.5 * np.cos(np.radians(lat)) ** 2 - 1.5 + 3.0 * np.exp(-(((np.abs(lat) - 35.0) / 12.0) ** 2))


def _seasonal_amplitude(lat):
    """Half the seasonal SST range (K): 0.3 at the equator, 3.8 poleward of 45 deg."""
    return 0.3 + 3.5 * np.sin(np.radians(np.minimum(2.0 * np.abs(lat), 90.0)))
