"""Argo files with several vertical sampling schemes: only the primary sampling profile is used.

A single-cycle GDAC file ``R<wmo>_<cycle>.nc`` holds one N_PROF per vertical sampling scheme of the
same cast (Argo user manual 3.1, 3.16; reference table 16). Files are written in the real GDAC
layout (tests/_ncfixtures.write_argo_profiles, checked against the real D5900446_001.nc); the
expected counts are worked out by hand from the pressures written.
"""

from __future__ import annotations

import gsw
import netCDF4
import numpy as np
import pytest
import zarr

from _ncfixtures import write_argo_profiles
from cube.build import build
from cube.constants import GLORYS_DEPTHS
from cube.readers import detect_product, read_argo
from test_build import config, write_background

JULD_20100102 = 21916.4           # 2010-01-02 09:36 UTC, days since 1950-01-01
LAT, LON = 40.55, -19.45          # cube cell (5, 5) of test_build.REGION at 0.1 deg
PRIMARY = "Primary sampling: averaged [10 sec sampling, 25 dbar average from bottom to 1000 dbar]"
NEAR_SURFACE = "Near-surface sampling: discrete, pumped [data sampled at 1Hz from 5 dbar to surface]"
SECONDARY = "Secondary sampling: discrete [1 sample at 2 dbar intervals]"


def cast(scheme: str, pres, temp: float) -> dict:
    pres = np.asarray(pres, dtype=float)
    return {"scheme": scheme, "pres": pres, "temp": np.full(pres.size, temp), "juld": JULD_20100102,
            "lat": LAT, "lon": LON}


def three_scheme_cycle(path):
    """One cast as three N_PROF: primary 5..1000 dbar at 12 degC, near-surface 0.5..4.5 dbar at 25 degC,
    secondary 2..1000 dbar at 20 degC."""
    return write_argo_profiles(path, [cast(PRIMARY, np.arange(5.0, 1000.1, 5.0), 12.0),
                                      cast(NEAR_SURFACE, np.arange(0.5, 4.6, 0.5), 25.0),
                                      cast(SECONDARY, np.arange(2.0, 1000.1, 2.0), 20.0)])


def test_writer_has_the_real_gdac_layout(tmp_path, real_data):
    """The fixture writer's dims and variable types are those of the real single-cycle file."""
    mine = write_argo_profiles(tmp_path / "R6901234_001.nc", [cast(PRIMARY, [5.0, 10.0], 12.0)])
    with netCDF4.Dataset(real_data / "D5900446_001.nc") as real, netCDF4.Dataset(mine) as ds:
        assert ds.data_model == real.data_model == "NETCDF3_CLASSIC"
        for name in ("DATE_TIME", "STRING256", "STRING16", "STRING8"):
            assert len(ds.dimensions[name]) == len(real.dimensions[name])
        for name, var in ds.variables.items():
            assert name in real.variables, name
            assert (var.dtype, var.dimensions) == (real[name].dtype, real[name].dimensions), name


def test_single_cycle_file_uses_the_primary_profile_only(tmp_path):
    path = three_scheme_cycle(tmp_path / "R6901234_001.nc")
    assert detect_product(path) == "argo"
    table = read_argo(path, temperature="insitu")
    assert len(table) == 1
    assert table.rejected == {"non_primary_sampling": 2}
    np.testing.assert_array_equal(table.temp[0][np.isfinite(table.temp[0])], 12.0)
    expected_depth = -gsw.z_from_p(np.arange(5.0, 1000.1, 5.0), LAT)
    np.testing.assert_allclose(table.depth[0], expected_depth, rtol=1e-6)


def test_blank_or_missing_scheme_counts_as_primary(tmp_path):
    """Format < 3.0 files have no scheme: their profiles are used (13857_prof.nc-style files)."""
    path = write_argo_profiles(tmp_path / "R6901234_002.nc", [cast("", [5.0, 10.0], 12.0),
                                                              cast(PRIMARY.upper(), [5.0, 10.0], 13.0)])
    table = read_argo(path, temperature="insitu")
    assert len(table) == 2 and table.rejected == {}


def test_multi_profile_file_applies_the_same_rule(tmp_path):
    profiles = [cast(PRIMARY, [5.0, 10.0], 12.0), cast(PRIMARY, [5.0, 10.0], 13.0),
                cast("Bounce sampling: discrete [bounce 1]", [5.0, 10.0], 14.0)]
    table = read_argo(write_argo_profiles(tmp_path / "6901234_prof.nc", profiles), temperature="insitu")
    assert len(table) == 2 and table.rejected == {"non_primary_sampling": 1}
    assert sorted(np.nanmax(table.temp, axis=1)) == [12.0, 13.0]


def test_build_counts_one_cast_once_per_level(tmp_path):
    """Cell (5, 5) on 2010-01-02: count 1 on every GLORYS level inside the primary profile's depth range,
    0 above it (the near-surface scheme is not used), and the primary's temperature there."""
    write_background(tmp_path)
    (tmp_path / "argo").mkdir()
    three_scheme_cycle(tmp_path / "argo" / "R6901234_001.nc")
    cfg = config(tmp_path, inputs={"ostia": [f"{tmp_path}/ostia/*.nc"], "glorys": [f"{tmp_path}/glorys/*.nc"],
                                   "argo": [f"{tmp_path}/argo/*.nc"]})
    report = build(cfg, progress=False)
    assert report.rejects == []
    assert report.profiles_used == 1
    assert report.profiles_rejected.get("non_primary_sampling") == 2
    from cube.open import describe, open_cube

    assert "profiles     1 used; rejected: non_primary_sampling 2" in describe(open_cube(cfg.output))  # depthcube info
    root = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    count, total = root["profiles/count"][:], root["profiles/sum"][:]
    # By hand: 5 dbar is 4.96 m and 1000 dbar 991 m at 40.55 N; observations every ~5 m are always within
    # max(0.1 z, 10 m) of a level, so exactly the levels inside [4.96, 991] m are observed.
    top, bottom = -gsw.z_from_p(np.array([5.0, 1000.0]), LAT)
    inside = (GLORYS_DEPTHS >= top) & (GLORYS_DEPTHS <= bottom)
    assert inside.sum() == 31 and not inside[:4].any()    # levels 4 (5.08 m) .. 34 (902 m)
    expected = np.zeros(count.shape, dtype=count.dtype)
    expected[1, inside, 5, 5] = 1
    np.testing.assert_array_equal(count, expected)
    # Potential temperature of a 12 degC in-situ cast above 1000 dbar: 12 - 0.11 degC at most (gsw).
    mean = total[1, inside, 5, 5] / count[1, inside, 5, 5]
    assert np.all((mean > 11.85) & (mean <= 12.0 + 1e-6))


@pytest.mark.parametrize("temperature", ["insitu", "potential"])
def test_build_uses_the_configured_temperature_for_argo(tmp_path, temperature):
    """``profiles.temperature`` reaches the Argo reader in a build: a 12 degC in-situ cast (no PSAL, so
    SP = 35) gives 12 degC on every observed level with 'insitu', and TEOS-10 potential temperature
    (gsw, reference 0 dbar, at the level's pressure) with 'potential'."""
    write_background(tmp_path)
    (tmp_path / "argo").mkdir()
    write_argo_profiles(tmp_path / "argo" / "R6901234_001.nc", [cast(PRIMARY, np.arange(5.0, 1000.1, 5.0), 12.0)])
    cfg = config(tmp_path, inputs={"ostia": [f"{tmp_path}/ostia/*.nc"], "glorys": [f"{tmp_path}/glorys/*.nc"],
                                   "argo": [f"{tmp_path}/argo/*.nc"]},
                 profiles={"temperature": temperature})
    assert build(cfg, progress=False).profiles_used == 1
    root = zarr.open_group(str(tmp_path / "cube.zarr"), mode="r")
    count, total = root["profiles/count"][1, :, 5, 5], root["profiles/sum"][1, :, 5, 5]
    observed = count > 0
    assert observed.sum() == 31
    mean = total[observed] / count[observed]
    if temperature == "insitu":
        np.testing.assert_allclose(mean, 12.0, atol=1e-5)
    else:
        pres = gsw.p_from_z(-GLORYS_DEPTHS[observed], LAT)
        expected = gsw.pt0_from_t(gsw.SA_from_SP(35.0, pres, LON, LAT), 12.0, pres)
        np.testing.assert_allclose(mean, expected, atol=2e-3)
        assert mean[-1] < 11.9   # ~900 m: visibly not the in-situ value
