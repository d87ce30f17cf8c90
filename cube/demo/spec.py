"""What demo products to generate: region, dates, seed and product cadence (a frozen, validated spec)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import numpy as np

#: GLORYS12 covers latitudes -80 .. 90 (REFERENCE.md 1.2); the demo keeps every product inside it.
GLORYS_LAT_MIN = -80.0

_PRESETS: dict[str, dict] = {
    # North-east Atlantic: Iberia, Bay of Biscay, Ireland, the Azores and open ocean. At 0.1 deg this
    # is 260 x 400 cells = 2 x 3 tiles of 128 cells; two months span a month boundary.
    "small": dict(region=(30.0, 56.0, -40.0, 0.0), start="2010-01-01", end="2010-02-28", profiles_per_day=30.0),
    # South-east corner of the Bay of Biscay: Spanish and French coasts plus shelf and deep water.
    # At 0.1 deg it is 32 x 48 cells = 2 x 3 tiles of 16 cells; 10 days across a month boundary give
    # two GLORYS snapshots (7-day step) and two EN4 months (201001 NetCDF-4, 201002 NetCDF-3).
    "tiny": dict(region=(43.0, 46.2, -5.6, -0.8), start="2010-01-27", end="2010-02-05", profiles_per_day=15.0),
}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _parse_day(value: str, name: str) -> np.datetime64:
    """'YYYY-MM-DD' -> datetime64[D]; ValueError naming the field otherwise."""
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return np.datetime64(value, "D")
    except ValueError:
        raise ValueError(f"DemoSpec.{name} must be a 'YYYY-MM-DD' date, got {value!r}") from None


@dataclass(frozen=True)
class DemoSpec:
    """Which synthetic raw products :func:`cube.demo.write_demo` writes.

    ``region`` is ``(lat_min, lat_max, lon_min, lon_max)`` in degrees, longitudes in [-180, 180)
    (regions crossing the dateline are not supported); ``start``/``end`` are inclusive days.
    GLORYS snapshots fall on ``start + k * glorys_step_days`` (or are monthly means when
    ``glorys_monthly``); ``profiles_per_day`` is the mean number of EN4 profiles per day in the region.
    """

    region: tuple[float, float, float, float]
    start: str
    end: str
    seed: int = 0
    glorys_step_days: int = 7
    glorys_monthly: bool = False
    profiles_per_day: float = 30.0

    def __post_init__(self):
        try:
            region = tuple(float(v) for v in self.region)
        except (TypeError, ValueError):
            raise ValueError(f"DemoSpec.region must be 4 numbers (lat_min, lat_max, lon_min, lon_max), "
                             f"got {self.region!r}") from None
        object.__setattr__(self, "region", region)
        self._check_region()
        if self.last_day < self.first_day:
            raise ValueError(f"DemoSpec.end {self.end} is before start {self.start}")
        self._check_numbers()

    def _check_region(self) -> None:
        if len(self.region) != 4 or not all(np.isfinite(self.region)):
            raise ValueError(f"DemoSpec.region must be 4 finite numbers (lat_min, lat_max, lon_min, lon_max), "
                             f"got {self.region!r}")
        lat_min, lat_max, lon_min, lon_max = self.region
        if not GLORYS_LAT_MIN <= lat_min < lat_max <= 90.0:
            raise ValueError(f"DemoSpec.region latitudes need {GLORYS_LAT_MIN:g} <= lat_min < lat_max <= 90, "
                             f"got {lat_min:g}..{lat_max:g}")
        if not -180.0 <= lon_min < lon_max <= 180.0:
            raise ValueError(f"DemoSpec.region longitudes need -180 <= lon_min < lon_max <= 180 "
                             f"(no dateline crossing), got {lon_min:g}..{lon_max:g}")
        if lat_max - lat_min < 0.1 or lon_max - lon_min < 0.1:
            raise ValueError(f"DemoSpec.region must be at least 0.1 deg on each side, "
                             f"got {lat_max - lat_min:g} x {lon_max - lon_min:g} deg")

    def _check_numbers(self) -> None:
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"DemoSpec.seed must be an integer >= 0, got {self.seed!r}")
        if not _is_int(self.glorys_step_days) or self.glorys_step_days < 1:
            raise ValueError(f"DemoSpec.glorys_step_days must be an integer >= 1, got {self.glorys_step_days!r}")
        if not isinstance(self.glorys_monthly, (bool, np.bool_)):
            raise ValueError(f"DemoSpec.glorys_monthly must be true or false, got {self.glorys_monthly!r}")
        ppd = self.profiles_per_day
        if isinstance(ppd, bool) or not isinstance(ppd, numbers.Real) or not 0 <= ppd < 1e5:
            raise ValueError(f"DemoSpec.profiles_per_day must be a number in [0, 1e5), got {self.profiles_per_day!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "DemoSpec":
        """The named preset ('tiny': a few seconds, for tests; 'small': `make cube`) with fields overridden."""
        if name not in _PRESETS:
            raise ValueError(f"unknown demo preset {name!r}; choose one of: {', '.join(sorted(_PRESETS))}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "DemoSpec":
        """Inverse of :meth:`to_dict`; unknown keys are a ValueError listing the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown DemoSpec field(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (region as a list)."""
        d = dataclasses.asdict(self)
        d["region"] = list(self.region)
        return d

    @property
    def first_day(self) -> np.datetime64:
        return _parse_day(self.start, "start")

    @property
    def last_day(self) -> np.datetime64:
        return _parse_day(self.end, "end")

    @property
    def days(self) -> np.ndarray:
        """Every day from start to end inclusive (datetime64[D])."""
        return np.arange(self.first_day, self.last_day + np.timedelta64(1, "D"), dtype="datetime64[D]")

    @property
    def months(self) -> np.ndarray:
        """Every calendar month touching [start, end] (datetime64[M])."""
        first, last = self.first_day.astype("datetime64[M]"), self.last_day.astype("datetime64[M]")
        return np.arange(first, last + np.timedelta64(1, "M"))

    @property
    def glorys_days(self) -> np.ndarray:
        """Days of the daily-mean GLORYS snapshots: start + k * glorys_step_days <= end."""
        return self.days[:: self.glorys_step_days]
