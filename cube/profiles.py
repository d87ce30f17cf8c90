"""The in-memory form every profile reader returns: :class:`ProfileTable`.

Readers (``cube.readers.en4``, ``cube.readers.argo``) hand the builder a :class:`ProfileTable`:
one row per QC-accepted profile, levels that failed QC already NaN, temperature in degC
(potential or in situ, as ``profiles.temperature`` asks), depth in metres (positive down),
longitudes in [-180, 180); ``rejected`` and ``levels_rejected`` count what QC dropped. The
vertical alignment onto the GLORYS levels is :mod:`cube.vertical`'s, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ProfileTable:
    """Accepted profiles of one source file.

    ``time`` is datetime64[s] UTC; ``depth`` and ``temp`` are (n_prof, n_levels) float32 with NaN
    where a level is missing or rejected. ``rejected`` counts whole profiles dropped, by reason
    (``bad_time``, ``bad_position``, ``profile_qc``, ``no_valid_levels``, ...).
    """

    source: str
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    depth: np.ndarray
    temp: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)
    levels_rejected: int = 0

    def __post_init__(self):
        n = len(self.time)
        for name in ("lat", "lon"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ProfileTable {name} has {len(getattr(self, name))} entries, expected {n}")
        if self.depth.shape != self.temp.shape or self.depth.shape[0] != n:
            raise ValueError(f"ProfileTable depth {self.depth.shape} / temp {self.temp.shape} do not match {n} profiles")

    def __len__(self) -> int:
        return len(self.time)

    @property
    def day(self) -> np.ndarray:
        """UTC calendar day of each profile as datetime64[D] (floor of the time)."""
        return self.time.astype("datetime64[D]")

    def select(self, keep: np.ndarray) -> "ProfileTable":
        return ProfileTable(self.source, self.time[keep], self.lat[keep], self.lon[keep],
                            self.depth[keep], self.temp[keep], dict(self.rejected), self.levels_rejected)
