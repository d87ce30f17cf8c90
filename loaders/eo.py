"""Degradation of the surface (EO) condition, all off by default (DESIGN.md 6, REFERENCE.md 6.4, 6.11).

The reference degrades the ``glorys_surface`` (eo_4band) condition so the model cannot copy it
verbatim; OSTIA is an observation already and stays clean unless asked. Offset and speckle act on
degC before normalisation, as in the reference (speckle multiplies degC values, so it fades near
0 degC, a reference quirk kept on purpose). Dropout blanks the whole field and belongs after
normalisation, where 0 is the value the model sees for "no information". Pure functions of
(field, rng); the rng comes from ``loaders.corruption.sample_rng``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def eo_offset(eo: np.ndarray, rng: np.random.Generator, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """``eo`` plus one scalar drawn from U(low, high), the same for every pixel.

    The reference calls this ``eo_random_scale``; it is an offset (REFERENCE.md 11.18).
    """
    if not low <= high:
        raise ValueError(f"eo offset range needs low <= high, got [{low}, {high}]")
    eo = np.asarray(eo)
    return (eo + rng.uniform(low, high)).astype(eo.dtype, copy=False)


def eo_speckle(
    eo: np.ndarray, rng: np.random.Generator, sigma: float = 0.01, clamp: tuple[float, float] = (0.9, 1.1)
) -> np.ndarray:
    """``eo * clip(1 + sigma * N(0, 1), *clamp)`` with an independent factor per pixel."""
    if sigma < 0 or not clamp[0] <= clamp[1]:
        raise ValueError(f"eo speckle needs sigma >= 0 and clamp low <= high, got {sigma}, {clamp}")
    eo = np.asarray(eo)
    factor = np.clip(1.0 + sigma * rng.standard_normal(eo.shape), clamp[0], clamp[1])
    return (eo * factor).astype(eo.dtype, copy=False)


def eo_dropout(eo: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """All zeros with probability ``p``, else ``eo`` unchanged (a copy).

    One uniform number is drawn whatever ``p`` is, so the stream after it does not depend on p.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"eo dropout probability must be in [0, 1], got {p!r}")
    eo = np.asarray(eo)
    return np.zeros_like(eo) if rng.random() < p else eo.copy()


@dataclass(frozen=True)
class EODegradation:
    """Which degradations apply to the EO condition, with their parameters (all off by default).

    Reference defaults: offset U(-2, 2) degC, speckle sigma 0.01 clamped to [0.9, 1.1]
    (``eo_random_scale_enabled``, ``eo_speckle_noise_enabled``, ``eo_dropout_prob``; REFERENCE.md 9.2).
    """

    offset: bool = False
    offset_range: tuple[float, float] = (-2.0, 2.0)
    speckle: bool = False
    speckle_sigma: float = 0.01
    speckle_clamp: tuple[float, float] = (0.9, 1.1)
    dropout_p: float = 0.0

    def __post_init__(self):
        if not self.offset_range[0] <= self.offset_range[1]:
            raise ValueError(f"eo.offset_range needs low <= high, got {self.offset_range}")
        if self.speckle_sigma < 0 or not self.speckle_clamp[0] <= self.speckle_clamp[1]:
            raise ValueError(
                f"eo.speckle needs sigma >= 0 and clamp low <= high, got {self.speckle_sigma}, {self.speckle_clamp}"
            )
        if not 0.0 <= self.dropout_p <= 1.0:
            raise ValueError(f"eo.dropout_p must be in [0, 1], got {self.dropout_p!r}")


def degrade_eo_celsius(eo_c: np.ndarray, spec: EODegradation, rng: np.random.Generator) -> np.ndarray:
    """Offset then speckle (those enabled) on an EO field in degC, before normalisation.

    NaN (invalid) pixels stay NaN. With nothing enabled the field comes back unchanged (a copy).
    """
    out = np.array(eo_c, copy=True)
    if spec.offset:
        out = eo_offset(out, rng, *spec.offset_range)
    if spec.speckle:
        out = eo_speckle(out, rng, spec.speckle_sigma, spec.speckle_clamp)
    return out


def dropout_normalised_eo(eo_norm: np.ndarray, spec: EODegradation, rng: np.random.Generator) -> np.ndarray:
    """Dropout of a normalised EO field (after normalisation and NaN filling, REFERENCE.md 6.11)."""
    return eo_dropout(eo_norm, rng, spec.dropout_p)
