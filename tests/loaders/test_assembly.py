"""One-pass sample assembly (issue 13 item 2) against a straightforward reference of DESIGN.md 6.

The reference reads the cube arrays day by day and applies the formulas directly in float64:
y is the mean over the window's days of the snapshot nearest to each day (NaN-aware), valid over
ocean above ``bottom_level``; eo is the mean of OSTIA over the days with a value; argo x is the
window sum of profile sums over the window sum of counts; z = (T_C + 273.15 - 289.74267177946783)
/ 10.933397487585731, 0 where invalid. Track x is y where its (H, W) pattern observes it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import CubeStream, load_dataset_config
from loaders.sample import WindowData, _dense_target, assemble

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = ("eo_4band_tracks", "ostia_tracks", "argo_real", "argo_synthetic_500")
MEAN_K, STD_K = 289.74267177946783, 10.933397487585731


def z(t_c):
    return (np.asarray(t_c, np.float64) + 273.15 - MEAN_K) / STD_K


def nearest(day: np.datetime64, times: np.ndarray) -> int:
    """The snapshot nearest to the day's middle, ties to the earlier one (a plain argmin)."""
    mid = day.astype("datetime64[s]") + np.timedelta64(12, "h")
    gaps = np.abs((times.astype("datetime64[s]") - mid).astype(np.int64))
    return int(np.argmin(gaps))


def reference(stream: CubeStream, index: int) -> dict:
    """DESIGN.md 6 by hand, float64, north-up, all 50 levels."""
    r, w = stream.reader, stream.windows[index]
    days = range(w.time.start, w.time.stop)
    read = lambda path, t: r.read(path, slice(t, t + 1), w.rows, w.cols, north_up=True)[0].astype(np.float64)
    per_day = np.stack([read("glorys/thetao", nearest(r.days[d], r.glorys_times)) for d in days])
    ocean = r.ocean_mask[w.rows][:, w.cols][::-1]
    bottom = r.bottom_level[w.rows][:, w.cols][::-1]
    water = ocean[None] & (np.arange(per_day.shape[1])[:, None, None] < bottom[None])
    with warnings.catch_warnings():  # land columns are all NaN: their mean is NaN, and invalid
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.nanmean(per_day, axis=0)
    y_valid = water & np.isfinite(y)
    out = {"y": np.where(y_valid, z(y), 0.0), "y_valid_mask": y_valid, "y_c": y, "ocean": ocean}
    if stream.config.eo.source == "ostia":
        sst = np.stack([read("ostia/analysed_sst", d) for d in days]) - 273.15
        n = np.isfinite(sst).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            eo = np.where(n > 0, np.nansum(sst, axis=0) / n, np.nan)
        eo_valid = ocean & (n >= stream.config.eo.min_days)
        out.update(eo=np.where(eo_valid, z(eo), 0.0)[None], eo_valid_mask=eo_valid[None])
    if stream.config.x.source == "argo":
        count = sum(read("profiles/count", d) for d in days)
        total = sum(read("profiles/sum", d) for d in days)
        x_valid = count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out.update(x=np.where(x_valid, z(total / count), 0.0), x_valid_mask=x_valid)
    return out


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", PRESETS)
def test_samples_match_a_reference_of_the_design_formulas(tiny_cube, preset):
    cfg = load_dataset_config(CONFIGS, preset)
    stream = CubeStream(str(tiny_cube), cfg, split="all", shuffle=False)
    lo, hi = cfg.target_bands
    for index in range(0, len(stream.windows), max(len(stream.windows) // 6, 1)):
        got, ref = stream.sample(index, epoch=0), reference(stream, index)
        np.testing.assert_array_equal(got["y_valid_mask"], ref["y_valid_mask"][lo:hi])
        assert got["y_valid_mask"].any()
        close(got["y"], ref["y"][lo:hi])
        np.testing.assert_array_equal(got["land_mask"][0], ref["ocean"].astype(np.float32))
        if "eo" in ref:
            np.testing.assert_array_equal(got["eo_valid_mask"], ref["eo_valid_mask"])
            close(got["eo"], ref["eo"])
        else:  # glorys_surface with speckle: level 0 times a factor in [0.9, 1.1], where y is valid
            m = got["eo_valid_mask"][0]
            np.testing.assert_array_equal(m, ref["y_valid_mask"][0])
            eo_c = got["eo"][0][m].astype(np.float64) * STD_K + MEAN_K - 273.15
            ratio = eo_c / ref["y_c"][0][m]
            assert np.all((ratio > 0.9 - 1e-5) & (ratio < 1.1 + 1e-5))
        if "x" in ref:
            np.testing.assert_array_equal(got["x_valid_mask"], ref["x_valid_mask"][lo:hi])
            close(got["x"], ref["x"][lo:hi])
        else:  # a corruption of y: y's value where observed, an (H, W) pattern over y's valid levels
            xv = got["x_valid_mask"]
            assert not (xv & ~got["y_valid_mask"]).any()
            np.testing.assert_array_equal(got["x"], np.where(xv, got["y"], 0))
            pattern = xv.any(axis=0)
            np.testing.assert_array_equal(xv, got["y_valid_mask"] & pattern[None])
        for key, value in got.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert np.isfinite(value).all(), key


def window(glorys, days, ocean=None, bottom=None):
    s, levels, h, w = glorys.shape
    ocean = np.ones((h, w), bool) if ocean is None else ocean
    bottom = np.full((h, w), levels) if bottom is None else bottom
    return WindowData(sst_k=None, glorys=np.asarray(glorys, np.float32), glorys_days=np.asarray(days),
                      count=None, total=None, ocean=ocean, bottom_level=bottom, north_up=True)


def test_window_mean_weights_snapshots_by_days_and_skips_missing_ones():
    g = np.zeros((3, 2, 1, 2), np.float32)
    g[:, :, 0, 0] = [[10.0, 4.0], [20.0, 5.0], [40.0, 6.0]]    # all three snapshots valid
    g[:, :, 0, 1] = [[10.0, np.nan], [np.nan, np.inf], [40.0, np.nan]]  # snapshot 1 lacks level 0
    y, valid = _dense_target(window(g, [1, 4, 2]))
    assert y[0, 0, 0] == pytest.approx((10 * 1 + 20 * 4 + 40 * 2) / 7, rel=1e-7)
    assert y[1, 0, 0] == pytest.approx((4 * 1 + 5 * 4 + 6 * 2) / 7, rel=1e-7)
    assert y[0, 0, 1] == pytest.approx((10 * 1 + 40 * 2) / 3, rel=1e-7)  # over the days that have one
    assert valid.tolist() == [[[True, True]], [[True, False]]]  # no snapshot has level 1 there


def test_water_column_masks_land_and_seabed():
    g = np.full((2, 3, 1, 2), 5.0, np.float32)
    ocean, bottom = np.array([[True, False]]), np.array([[2, 3]])
    y, valid = _dense_target(window(g, [3, 4], ocean, bottom))
    assert valid[:, 0, 0].tolist() == [True, True, False]  # below the seabed from level 2
    assert not valid[:, 0, 1].any()                        # land
    assert y[0, 0, 0] == 5.0


def test_non_finite_glorys_is_masked_and_never_reaches_the_sample():
    g = np.full((2, 2, 2, 2), 12.0, np.float32)
    g[:, 0, 1, 1] = np.inf       # every snapshot: no value there at all
    g[0, 1, 0, 0] = 3e38         # finite, but the weighted sum overflows
    cfg = load_dataset_config(CONFIGS, "argo_synthetic_500")
    win = window(g, [3, 4])
    win.sst_k = np.full((7, 2, 2), 290.0, np.float32)
    sample = assemble(win, cfg, np.random.default_rng(0), centre_day=np.datetime64("2020-01-04"),
                      coords=(10.0, 20.0), info={})
    assert not sample["y_valid_mask"][0, 1, 1] and not sample["y_valid_mask"][1, 0, 0]
    assert sample["y_valid_mask"].sum() == 8 - 2
    for key in ("eo", "x", "y", "land_mask", "coords"):
        assert np.isfinite(sample[key]).all(), key
    np.testing.assert_allclose(sample["y"][sample["y_valid_mask"]], z(12.0), rtol=1e-6)


def test_a_non_finite_profile_sum_is_an_error_naming_x():
    g = np.full((1, 2, 2, 2), 12.0, np.float32)
    win = window(g, [7])
    win.sst_k = np.full((7, 2, 2), 290.0, np.float32)
    win.count, win.total = np.zeros((2, 2, 2)), np.zeros((2, 2, 2), np.float32)
    win.count[1, 0, 1], win.total[1, 0, 1] = 2, 30.0
    cfg = load_dataset_config(CONFIGS, "argo_real")
    sample = assemble(win, cfg, np.random.default_rng(0), centre_day=np.datetime64("2020-01-04"),
                      coords=(10.0, 20.0), info={})
    assert sample["x_valid_mask"].sum() == 1 and sample["x"][1, 0, 1] == pytest.approx(z(15.0), rel=1e-6)
    win.total[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match="x holds 1 non-finite values"):
        assemble(win, cfg, np.random.default_rng(0), centre_day=np.datetime64("2020-01-04"),
                 coords=(10.0, 20.0), info={})


class ThreadReportingStream(CubeStream):
    def sample(self, index, **kwargs):
        out = super().sample(index, **kwargs)
        out["info"]["threads"] = torch.get_num_threads()
        return out


def test_dataloader_workers_run_one_torch_thread_and_the_main_process_keeps_its_own(tiny_cube):
    before = torch.get_num_threads()
    cfg = load_dataset_config(CONFIGS, "ostia_tracks")
    stream = ThreadReportingStream(str(tiny_cube), cfg, split="all")
    batch = next(iter(DataLoader(stream, batch_size=2, num_workers=1)))
    assert batch["info"]["threads"].tolist() == [1, 1]
    next(iter(DataLoader(stream, batch_size=2, num_workers=0)))
    assert torch.get_num_threads() == before
