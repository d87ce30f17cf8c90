"""The cube grid: regular lat/lon cell centres with half-open cells.

A cell ``(i, j)`` covers ``[lat_south + i*res, lat_south + (i+1)*res)`` x
``[lon_west + j*res, lon_west + (j+1)*res)``. Row 0 is the *southernmost* row in the cube
(lat ascending, CF style); samples flip to north-up at assembly time.

Index arithmetic is done from integers (``edge + k * res``) so no floating-point error accumulates
across a global grid (REFERENCE.md 11.17).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def wrap_lon(lon):
    """Longitudes to [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class CubeGrid:
    """Regular lat/lon grid: south/west edges, resolution in degrees and the number of cells."""

    lat_south: float
    lon_west: float
    resolution: float
    nlat: int
    nlon: int

    def __post_init__(self):
        if not self.resolution > 0:
            raise ValueError(f"grid resolution must be > 0, got {self.resolution}")
        if self.nlat < 1 or self.nlon < 1:
            raise ValueError(f"grid must have at least one cell, got {self.nlat} x {self.nlon}")
        if self.lat_south < -90 - 1e-9 or self.lat_north > 90 + 1e-6:
            raise ValueError(f"grid latitudes {self.lat_south}..{self.lat_north} are outside [-90, 90]")

    @classmethod
    def from_bounds(cls, lat_min: float, lat_max: float, lon_min: float, lon_max: float, resolution: float):
        """Grid covering [lat_min, lat_max) x [lon_min, lon_max) (rounded to whole cells)."""
        nlat = int(round((lat_max - lat_min) / resolution))
        nlon = int(round((lon_max - lon_min) / resolution))
        return cls(float(lat_min), float(lon_min), float(resolution), nlat, nlon)

    @classmethod
    def from_centres(cls, lat, lon):
        """Grid whose cell centres are the given ascending, regularly spaced 1-D vectors."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        res = float(np.median(np.diff(lat))) if lat.size > 1 else float(np.median(np.diff(lon)))
        return cls(float(lat[0] - res / 2), float(lon[0] - res / 2), res, lat.size, lon.size)

    @property
    def lat_north(self) -> float:
        return self.lat_south + self.nlat * self.resolution

    @property
    def lon_east(self) -> float:
        return self.lon_west + self.nlon * self.resolution

    @property
    def is_global_lon(self) -> bool:
        """True when the grid wraps all the way round in longitude (the dateline is interior)."""
        return abs(self.nlon * self.resolution - 360.0) < 1e-6

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, ascending (float64)."""
        return self.lat_south + (np.arange(self.nlat) + 0.5) * self.resolution

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, ascending (float64); may exceed 180 only if lon_west + span does."""
        return self.lon_west + (np.arange(self.nlon) + 0.5) * self.resolution

    @property
    def lat_edges(self) -> np.ndarray:
        return self.lat_south + np.arange(self.nlat + 1) * self.resolution

    @property
    def lon_edges(self) -> np.ndarray:
        return self.lon_west + np.arange(self.nlon + 1) * self.resolution

    def cell_index(self, lat, lon):
        """Row and column of the half-open cell holding each point, and a bool ``inside`` mask.

        Longitudes are compared modulo 360, so a point at 190 E lands in a grid given in
        [-180, 180) and vice versa. Points outside the grid get ``inside=False`` (row/col -1).
        """
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        fi = (lat - self.lat_south) / self.resolution
        fj = ((lon - self.lon_west) % 360.0) / self.resolution
        # Round away tiny float noise so a point exactly on an edge goes to the cell above it.
        fi = np.where(np.abs(fi - np.round(fi)) < 1e-9, np.round(fi), fi)
        fj = np.where(np.abs(fj - np.round(fj)) < 1e-9, np.round(fj), fj)
        row = np.floor(fi)
        col = np.floor(fj)
        if self.is_global_lon:
            col = col % self.nlon
        inside = np.isfinite(lat) & np.isfinite(lon) & (row >= 0) & (row < self.nlat) & (col >= 0) & (col < self.nlon)
        row = np.where(inside, row, -1).astype(np.int64)
        col = np.where(inside, col, -1).astype(np.int64)
        return row, col, inside

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CubeGrid":
        return cls(**{k: d[k] for k in ("lat_south", "lon_west", "resolution", "nlat", "nlon")})
