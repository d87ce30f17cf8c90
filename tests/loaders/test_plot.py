"""Quicklook plots: robust colour limits per field and tile, depths in metres, the most-observed
level with markers on observed cells, degree axes, the overview's tiles and per-degree profile
density (checked against the analytic cube's hand-known layout), the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from _cubes import PROFILE_OBS, TILE, make_analytic_cube
from depthcube.cli import main
from loaders.plot import SPLIT_COLOURS, degree_axes, plot_overview, plot_sample, temperature_style

# REFERENCE.md 7, copied here so the test does not read the code's own constants.
REF_MIN_C, REF_MAX_C = -10.740821939496481, 43.92616549843217
Y_MEAN_K, Y_STD_K = 289.74267177946783, 10.933397487585731
DATASET_YAML = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return make_analytic_cube(tmp_path_factory.mktemp("plot") / "cube.zarr")


def _norm(t_c):
    return ((np.asarray(t_c, np.float64) + 273.15) - Y_MEAN_K) / Y_STD_K


def _uniform_sample(eo_c=20.0, y_c=5.0, h=16, w=16, c=50):
    ocean = np.ones((1, h, w), np.float32)
    x_valid = np.zeros((c, h, w), bool)
    x_valid[0, 3, 4] = True
    return {
        "eo": np.full((1, h, w), _norm(eo_c), np.float32),
        "x": np.where(x_valid, _norm(y_c), 0).astype(np.float32),
        "y": np.full((c, h, w), _norm(y_c), np.float32),
        "x_valid_mask": x_valid, "y_valid_mask": np.ones((c, h, w), bool),
        "x_valid_mask_1d": x_valid.any(axis=0, keepdims=True), "land_mask": ocean,
    }


def test_temperature_panels_use_robust_limits_per_field_and_turbo():
    s = _uniform_sample(h=10, w=10)
    s["eo"][0] = _norm(np.arange(100.0).reshape(10, 10) / 10)       # eo: 0.0 .. 9.9 degC
    s["y"][:] = _norm(np.linspace(10.0, 30.0, 100).reshape(1, 10, 10))
    s["x"] = np.where(s["x_valid_mask"], s["y"], 0).astype(np.float32)
    fig = plot_sample(s)
    eo, x, y = (ax.get_images()[0] for ax in fig.axes[:3])          # colorbar axes come after the panels
    # Hand: numpy's linear percentiles of 0.0 .. 9.9 are 0.198 and 9.702.
    assert (eo.norm.vmin, eo.norm.vmax) == pytest.approx((0.198, 9.702), abs=1e-4)  # float32 z-score round trip
    # x and y share the scale of the level shown, from their 101 values together (y's 100 steps
    # of 20/99 from 10 degC, plus x's one observed cell repeating y[34]): the 2nd and 98th
    # percentiles fall exactly on the 3rd and 99th smallest, y[2] and y[97].
    step = 20 / 99
    for im in (x, y):
        assert (im.norm.vmin, im.norm.vmax) == pytest.approx((10 + 2 * step, 10 + 97 * step), abs=1e-4)
    assert all(im.get_cmap().name == "turbo" for im in (eo, x, y))
    assert np.allclose(eo.get_array(), np.arange(100.0).reshape(10, 10) / 10, atol=1e-4)   # back in degC


def test_temperature_style_without_values_is_the_reference_range():
    style = temperature_style()
    assert (style["vmin"], style["vmax"]) == pytest.approx((REF_MIN_C, REF_MAX_C), abs=1e-12)
    assert temperature_style(np.full(4, np.nan))["vmin"] == pytest.approx(REF_MIN_C)


def test_png_pixel_has_the_turbo_colour_of_its_temperature(tmp_path):
    path = tmp_path / "s.png"
    fig = plot_sample(_uniform_sample(eo_c=20.0), path)
    png = imread(path)
    ax = fig.axes[0]
    bbox = ax.get_window_extent()                                    # display pixels at the figure dpi (100)
    col, row = int((bbox.x0 + bbox.x1) / 2), png.shape[0] - int((bbox.y0 + bbox.y1) / 2)
    # A constant field gets limits 19.5 .. 20.5, so 20 degC is the middle of turbo.
    expected = matplotlib.colormaps["turbo"](0.5)[:3]
    assert np.allclose(png[row, col, :3], expected, atol=2 / 255)


def test_sparse_panel_defaults_to_the_most_observed_level_in_metres_with_markers():
    s = _uniform_sample()
    cells = [(1, 2), (5, 9), (12, 15)]
    for r, c in cells:
        s["x_valid_mask"][7, r, c] = True                          # 3 cells at level 7, 1 at level 0
    s["x"] = np.where(s["x_valid_mask"], s["y"], 0).astype(np.float32)
    extent = (-5.6, -4.0, 43.0, 44.6)                               # 16 px of 0.1 deg
    fig = plot_sample(s, extent=extent)
    ax_x = fig.axes[1]
    # GLORYS level 7 is at 9.573 m (REFERENCE.md 1.2).
    assert ax_x.get_title() == "x at 9.57 m (level 7): 3 observed cells"
    assert fig.axes[2].get_title().startswith("y at 9.57 m (level 7)")
    (markers,) = ax_x.collections
    want = sorted((-5.6 + (c + 0.5) * 0.1, 44.6 - (r + 0.5) * 0.1) for r, c in cells)
    assert np.allclose(sorted(map(tuple, markers.get_offsets())), want)
    assert plot_sample(s, level=0).axes[1].get_title() == "x at 0.494 m (level 0): 1 observed cells"


def test_depth_panel_shows_the_deepest_valid_level_in_metres():
    s = _uniform_sample()
    s["y_valid_mask"][3:, :, :8] = False                           # west half: levels 0..2 valid
    s["y_valid_mask"][:, 0, 0] = False                             # one column with nothing valid
    im = plot_sample(s).axes[4].get_images()[0]
    shown = np.ma.filled(im.get_array(), np.nan)
    assert np.allclose(shown[1:, :8], 2.646, atol=1e-3) and np.allclose(shown[:, 8:], 5727.917, atol=1e-3)  # REF 1.2
    assert np.isnan(shown[0, 0])


def test_sample_axes_are_in_degrees_north_up():
    extent = (-5.6, -4.0, 43.0, 44.6)
    fig = plot_sample(_uniform_sample(), extent=extent)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx(extent[:2]) and ax.get_ylim() == pytest.approx(extent[2:])
    fmt_x, fmt_y = ax.xaxis.get_major_formatter(), ax.yaxis.get_major_formatter()
    assert fmt_x(-5.5, 0) == "5.5°W" and fmt_x(3, 0) == "3°E" and fmt_x(0, 0) == "0°" and fmt_x(190, 0) == "170°W"
    assert fmt_y(44, 0) == "44°N" and fmt_y(-12.5, 0) == "12.5°S"
    # North-up: the single observed x pixel (row 3 from the top) is drawn in the northern part.
    im = fig.axes[1].get_images()[0]
    assert im.origin == "upper" and np.isfinite(im.get_array()[3, 4])


def test_degree_axes_labels():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    degree_axes(ax)
    assert ax.get_xlabel() == "longitude" and ax.get_ylabel() == "latitude"


def test_overview_draws_every_tile_coloured_by_split_and_the_profile_density(cube, tmp_path):
    fig = plot_overview(cube, tmp_path / "overview.png")
    assert (tmp_path / "overview.png").stat().st_size > 0
    ax_tiles, ax_obs = fig.axes[0], fig.axes[1]
    patches = xr.open_zarr(cube, group="patches", zarr_format=3, consolidated=False).load()
    rects = [p for p in ax_tiles.patches if isinstance(p, Rectangle)]
    assert len(rects) == patches.sizes["patch"] == 6
    by_corner = {(round(r.get_x(), 6), round(r.get_y(), 6)): r for r in rects}
    for k in range(patches.sizes["patch"]):
        row0, col0 = int(patches.row0[k]), int(patches.col0[k])
        corner = (round(-20.0 + col0 * 0.1, 6), round(40.0 + row0 * 0.1, 6))      # hand: grid edges + cells
        r = by_corner[corner]
        assert r.get_width() == pytest.approx(TILE * 0.1) and r.get_height() == pytest.approx(TILE * 0.1)
        want = matplotlib.colors.to_rgb(SPLIT_COLOURS[str(patches.split.values[k])])
        assert np.allclose(r.get_facecolor()[:3], want)
    density = ax_obs.get_images()[1]                               # over the ocean mask
    # Hand: profiles = observed (cell, day) pairs, summed per 1-degree block of 10 x 10 cells
    # (4 x 5 blocks over the 32 x 48 grid, the last ones partial).
    expected = np.zeros((4, 5))
    for day, row, col in {(d, r, c) for d, _, r, c, _ in PROFILE_OBS}:
        expected[row // 10, col // 10] += 1
    assert expected[2, 3] == 3 and expected[2, 4] == 1
    assert np.array_equal(np.ma.filled(density.get_array(), 0), expected)
    assert density.get_extent() == pytest.approx([-20.0, -15.0, 40.0, 44.0])
    assert ax_obs.get_xlim() == pytest.approx((-20.0, -15.2)) and ax_obs.get_ylim() == pytest.approx((40.0, 43.2))


def test_plot_cli_writes_overview_and_samples(cube, tmp_path):
    out = tmp_path / "png"
    rc = main(["plot", cube, "--out", str(out), "--sample", "2", "--config", str(DATASET_YAML), "--preset", "ostia_tracks"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "overview.png" and len(names) == 3 and all(n.startswith("sample_") for n in names[1:])
    for name in names:
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300
