"""Missing OSTIA data: whole days without a file and cells NaN on some days of a window.

eo is, per pixel, the mean over the window days on which that pixel has a value; ``eo_valid_mask``
says where eo holds one (ocean, at least ``eo.min_days`` such days). Expected values are computed
here by hand: from literal numbers, or from the cube's ``ostia/analysed_sst`` read with xarray.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import REPO, tiny_cube_config
from cube.build import build
from loaders.config import DatasetConfig, EOConfig, XConfig
from loaders.sample import WindowData, assemble
from loaders.stream import CubeStream

MEAN_K, STD_K = 289.74267177946783, 10.933397487585731     # DESIGN.md 6 z-score of kelvin
MISSING = ("20100130", "20100131", "20100201")             # tiny demo days left without an OSTIA file


def z(kelvin):
    return (np.asarray(kelvin, np.float64) - MEAN_K) / STD_K


def window(sst_k, ocean):
    h, w = ocean.shape
    glorys = np.full((1, 50, h, w), 10.0, np.float32)
    return WindowData(sst_k=np.asarray(sst_k, np.float32), glorys=glorys, glorys_days=np.array([len(sst_k)]),
                      count=np.zeros((50, h, w), np.int32), total=np.zeros((50, h, w), np.float32),
                      ocean=ocean, bottom_level=np.full((h, w), 50), north_up=True)


def sample_of(win, **eo):
    cfg = DatasetConfig(window_days=3, x=XConfig(source="argo"), eo=EOConfig(source="ostia", **eo))
    return assemble(win, cfg, np.random.default_rng(0), centre_day=np.datetime64("2010-01-02"),
                    coords=(0.0, 0.0), info={})


def test_per_pixel_mean_over_the_days_with_a_value():
    nan = np.nan
    sst = [[[290.0, nan], [280.0, nan]],      # day 1
           [[nan, nan], [281.0, 288.0]],      # day 2
           [[292.0, nan], [282.0, nan]]]      # day 3
    ocean = np.array([[True, True], [False, True]])
    s = sample_of(window(sst, ocean))
    # (0,0): (290 + 292) / 2 = 291 K; (0,1): no value on any day; (1,0): land; (1,1): 288 K on one day.
    np.testing.assert_array_equal(s["eo_valid_mask"][0], [[True, False], [False, True]])
    np.testing.assert_allclose(s["eo"][0], [[z(291.0), 0.0], [0.0, z(288.0)]], atol=1e-5)
    assert s["info"]["eo_days"] == 3
    strict = sample_of(window(sst, ocean), min_days=2)    # (1,1) has a value on 1 day < 2
    np.testing.assert_array_equal(strict["eo_valid_mask"][0], [[True, False], [False, False]])
    assert strict["eo"][0, 1, 1] == 0.0


def test_dropout_blanks_field_and_mask_together():
    ocean = np.ones((2, 2), bool)
    s = sample_of(window(np.full((3, 2, 2), 290.0), ocean), dropout_p=1.0)
    assert not s["eo"].any() and not s["eo_valid_mask"].any()


def test_min_days_is_validated():
    with pytest.raises(ValueError, match="eo.min_days"):
        DatasetConfig(window_days=3, eo=EOConfig(min_days=4))
    with pytest.raises(ValueError, match="eo.min_days"):
        EOConfig(min_days=0)


@pytest.fixture(scope="module")
def gap_cube(tiny_demo, tmp_path_factory):
    """The tiny demo (2010-01-27 .. 02-05) built with no OSTIA file for 01-30, 01-31 and 02-01."""
    root = tmp_path_factory.mktemp("gap")
    shutil.copytree(tiny_demo, root / "demo")
    for day in MISSING:
        for f in (root / "demo" / "ostia").glob(f"{day}*.nc"):
            f.unlink()
    cfg = tiny_cube_config(root / "demo", root / "cube.zarr", time={"start": "2010-01-27", "end": "2010-02-05"})
    build(cfg, progress=False)
    return cfg.output


def _windows_centred(stream, day: str):
    return [i for i in range(len(stream)) if str(stream.windows[i].centre)[:10] == day]


def test_window_over_missing_days_is_the_mean_of_the_days_present(gap_cube):
    stream = CubeStream(gap_cube, DatasetConfig(window_days=7, x=XConfig(source="argo")), split="all")
    sst = xr.open_datatree(gap_cube, engine="zarr")["ostia/analysed_sst"].load()
    ocean = xr.open_datatree(gap_cube, engine="zarr")["static/ocean_mask"].values
    present = [np.datetime64(d) for d in ("2010-01-28", "2010-01-29", "2010-02-02", "2010-02-03")]
    for i in _windows_centred(stream, "2010-01-31"):               # days 01-28 .. 02-03
        w = stream.windows[i]
        s = stream.sample(i)
        tile = sst.isel(lat=w.rows, lon=w.cols).sel(time=present).values[:, ::-1]   # north-up
        ok = np.isfinite(tile).all(axis=0) & ocean[w.rows][:, w.cols][::-1]
        expected = z(tile.astype(np.float64).mean(axis=0))
        assert ok.any()
        np.testing.assert_array_equal(s["eo_valid_mask"][0], ok)
        np.testing.assert_allclose(s["eo"][0][ok], expected[ok], atol=1e-5)
        assert s["info"]["eo_days"] == 4


def test_window_with_no_ostia_day_is_masked_not_a_zero_field(gap_cube):
    """The bug: eo == 0 everywhere while land_mask says ocean. Now the mask says there is no eo."""
    cfg = DatasetConfig(window_days=1, x=XConfig(source="tracks", mask_fraction=0.9))
    stream = CubeStream(gap_cube, cfg, split="all")
    ids = _windows_centred(stream, "2010-01-31")
    assert ids
    batch = torch.utils.data.default_collate([stream.sample(i) for i in ids])
    assert (batch["land_mask"] == 1).any()
    assert batch["eo_valid_mask"].dtype == torch.bool and not batch["eo_valid_mask"].any()
    assert (batch["eo"] == 0).all() and (batch["info"]["eo_days"] == 0).all()
    ok_day = stream.sample(_windows_centred(stream, "2010-01-29")[0])
    assert ok_day["eo_valid_mask"].any() and ok_day["info"]["eo_days"] == 1


def test_cube_without_glorys_is_refused_when_the_stream_is_built(tiny_demo, tmp_path):
    """Before: it built, then every sample failed with 'IndexError: index -1'."""
    from loaders import load_dataset_config
    from loaders.windows import CubeContentError

    cfg = tiny_cube_config(tiny_demo, tmp_path / "cube.zarr",
                           inputs={"ostia": [f"{tiny_demo}/ostia/*.nc"], "en4": [f"{tiny_demo}/en4/*.nc"]})
    build(cfg, progress=False)
    dataset = load_dataset_config(REPO / "configs" / "dataset.yaml", preset="eo_4band_tracks")
    with pytest.raises(CubeContentError) as info:
        CubeStream(cfg.output, dataset, split="all")
    message = str(info.value)
    assert message.startswith(f"{cfg.output}: the cube has no GLORYS snapshot (glorys/thetao has 0 time steps)")
    assert "x.source='tracks', eo.source='glorys_surface' need for y, eo, x" in message
    assert "inputs.glorys" in message and "\n" not in message
