"""Physical constants and fixed axes shared by every layer (REFERENCE.md 1.2 and 7)."""

from __future__ import annotations

import numpy as np

#: The 50 standard GLORYS12 / GLO12 depth levels in metres (float32 values as stored in the
#: products; checked against ../shared/data/real/cmems_glo12_thetao_point_profile.nc in the tests).
GLORYS_DEPTHS = np.array([
    0.494025, 1.541375, 2.645669, 3.819495, 5.078224, 6.440614, 7.92956, 9.572997,
    11.405, 13.46714, 15.81007, 18.49556, 21.59882, 25.21141, 29.44473, 34.43415,
    40.34405, 47.37369, 55.76429, 65.80727, 77.85385, 92.32607, 109.7293, 130.666,
    155.8507, 186.1256, 222.4752, 266.0403, 318.1274, 380.213, 453.9377, 541.0889,
    643.5668, 763.3331, 902.3393, 1062.44, 1245.291, 1452.251, 1684.284, 1941.893,
    2225.078, 2533.336, 2865.703, 3220.82, 3597.032, 3992.484, 4405.224, 4833.291,
    5274.784, 5727.917,
], dtype=np.float32)

CELSIUS_TO_KELVIN = 273.15
#: z-score of temperatures in kelvin used by the DepthDif model (REFERENCE.md 7).
Y_MEAN_K = 289.74267177946783
Y_STD_K = 10.933397487585731
#: Fixed plotting range (mean -/+ 2.5 sigma, in degC) and colormap of the reference.
PLOT_TEMP_MIN_C = -10.740821939496481
PLOT_TEMP_MAX_C = 43.92616549843217
PLOT_CMAP = "turbo"

#: Reference vertical alignment cutoffs (REFERENCE.md 3.6): a target level z is accepted when the
#: nearest observed depth is within max(RELATIVE * z, ABSOLUTE_M).
DEPTH_CUTOFF_RELATIVE = 0.10
DEPTH_CUTOFF_ABSOLUTE_M = 10.0


def normalise_celsius(t_c):
    """degC -> the model's z-score of kelvin: ``(T_C + 273.15 - Y_MEAN_K) / Y_STD_K``."""
    return (np.asarray(t_c) + CELSIUS_TO_KELVIN - Y_MEAN_K) / Y_STD_K


def denormalise_to_celsius(z):
    """Exact inverse of :func:`normalise_celsius`."""
    return np.asarray(z) * Y_STD_K + Y_MEAN_K - CELSIUS_TO_KELVIN
