"""What ``depthcube download`` fetches: a typed request validated once, at the edge.

``load_request(mapping)`` builds a :class:`DownloadRequest` through the project's config loader
(:func:`cube.spec.load_config`), so an unknown key, a wrong type or an impossible value is one
``ConfigError`` naming the key (``download: region: need -90 <= lat_min < lat_max <= 90 ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cube.spec import load_config

Product = Literal["ostia", "glorys", "en4", "argo"]
PRODUCTS: tuple[str, ...] = ("ostia", "glorys", "en4", "argo")

#: The UK Met Office Hadley Centre EN4 download area (see :mod:`cube.download.en4`).
EN4_BASE_URL = "https://www.metoffice.gov.uk/hadobs/en4/data/en4-2-1"
#: An Argo GDAC over HTTPS (Ifremer; the US GDAC https://usgodae.org/pub/outgoing/argo has the same layout).
ARGO_GDAC_URL = "https://data-argo.ifremer.fr"


@dataclass(frozen=True)
class DownloadRequest:
    """A region, a time span, the products and the folder they go to (``<output>/<product>/``).

    ``region`` is (lat_min, lat_max, lon_min, lon_max) in degrees, lon in [-180, 180]; ``start``
    and ``end`` are inclusive days. ``ostia``: the reprocessed (``rep``, 1982 onwards) or near
    real time (``nrt``, 2007 onwards) OSTIA L4. ``glorys``: daily means, one every
    ``glorys_step_days`` days from ``start`` (7 = the reference's weekly snapshots), or monthly
    means. ``argo_floats``: WMO numbers; when given, Argo is fetched by float instead of by
    region and time. ``en4_url`` and ``argo_gdac`` name the servers (tests point them at loopback).
    """

    output: str
    region: tuple[float, float, float, float]
    start: str
    end: str
    products: tuple[Product, ...] = ("ostia", "glorys", "en4", "argo")
    ostia: Literal["rep", "nrt"] = "rep"
    glorys: Literal["daily", "monthly"] = "daily"
    glorys_step_days: int = 7
    argo_floats: tuple[int, ...] = ()
    en4_url: str = EN4_BASE_URL
    argo_gdac: str = ARGO_GDAC_URL

    def __post_init__(self):
        la0, la1, lo0, lo1 = self.region
        if not -90 <= la0 < la1 <= 90:
            raise ValueError(f"region: need -90 <= lat_min < lat_max <= 90, got {self.region}")
        if not -180 <= lo0 < lo1 <= 180:
            raise ValueError(f"region: need -180 <= lon_min < lon_max <= 180 (no dateline crossing), got {self.region}")
        for name in ("start", "end"):
            try:
                np.datetime64(getattr(self, name), "D")
            except ValueError:
                raise ValueError(f"{name}: expected a date 'YYYY-MM-DD', got {getattr(self, name)!r}") from None
        if self.first_day > self.last_day:
            raise ValueError(f"end: {self.end} is before start {self.start}")
        if not self.products or len(set(self.products)) != len(self.products):
            raise ValueError(f"products: need one or more of {list(PRODUCTS)} without repeats, got {list(self.products)}")
        if self.glorys_step_days < 1:
            raise ValueError(f"glorys_step_days: must be >= 1, got {self.glorys_step_days}")
        if any(w <= 0 for w in self.argo_floats):
            raise ValueError(f"argo_floats: WMO numbers are positive integers, got {list(self.argo_floats)}")

    @property
    def first_day(self) -> np.datetime64:
        return np.datetime64(self.start, "D")

    @property
    def last_day(self) -> np.datetime64:
        return np.datetime64(self.end, "D")

    @property
    def days(self) -> np.ndarray:
        """Every day of the span, datetime64[D]."""
        return np.arange(self.first_day, self.last_day + np.timedelta64(1, "D"), dtype="datetime64[D]")

    @property
    def months(self) -> np.ndarray:
        """Every month the span touches, datetime64[M]."""
        return np.arange(self.first_day.astype("datetime64[M]"), self.last_day.astype("datetime64[M]") + np.timedelta64(1, "M"))

    def folder(self, product: str) -> Path:
        return Path(self.output) / product


def load_request(data: dict, label: str = "download") -> DownloadRequest:
    """A validated :class:`DownloadRequest` from plain data (the CLI's options, a YAML mapping)."""
    return load_config(data, DownloadRequest, label=label)
