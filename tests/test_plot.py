"""Quicklook plots: the reference's fixed colour range and colormap, degree axes, the overview's
tiles and profile density (checked against the analytic cube's hand-known layout), the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from _cubes import GRID, PROFILE_OBS, TILE, make_analytic_cube
from cube.cli import main
from loaders.plot import SPLIT_COLOURS, degree_axes, plot_overview, plot_sample

# REFERENCE.md 7, copied here so the test does not read the code's own constants.
REF_MIN_C, REF_MAX_C = -10.740821939496481, 43.92616549843217
Y_MEAN_K, Y_STD_K = 289.74267177946783, 10.933397487585731
DATASET_YAML = Path(__file__).resolve().parents[1] / "configs" / "dataset.yaml"


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


def test_temperature_panels_use_the_reference_range_and_turbo():
    fig = plot_sample(_uniform_sample())
    temperature_axes = fig.axes[:3]  # eo, x, y (colorbar axes come after the six panels)
    for ax in temperature_axes:
        im = ax.get_images()[0]
        assert im.norm.vmin == pytest.approx(REF_MIN_C, abs=1e-12)
        assert im.norm.vmax == pytest.approx(REF_MAX_C, abs=1e-12)
        assert im.get_cmap().name == "turbo"
    eo_shown = temperature_axes[0].get_images()[0].get_array()
    assert np.allclose(eo_shown, 20.0, atol=1e-4)                   # denormalised back to degC


def test_png_pixel_has_the_turbo_colour_of_its_temperature(tmp_path):
    path = tmp_path / "s.png"
    fig = plot_sample(_uniform_sample(eo_c=20.0), path)
    png = imread(path)
    ax = fig.axes[0]
    bbox = ax.get_window_extent()                                    # display pixels at the figure dpi (100)
    col, row = int((bbox.x0 + bbox.x1) / 2), png.shape[0] - int((bbox.y0 + bbox.y1) / 2)
    expected = matplotlib.colormaps["turbo"]((20.0 - REF_MIN_C) / (REF_MAX_C - REF_MIN_C))[:3]
    assert np.allclose(png[row, col, :3], expected, atol=2 / 255)


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
    density = ax_obs.get_images()[0].get_array()
    expected = np.zeros((GRID.nlat, GRID.nlon))
    for _, _, row, col, _ in PROFILE_OBS:
        expected[row, col] += 1
    assert np.array_equal(np.ma.filled(density, 0), expected)
    assert ax_obs.get_images()[0].get_extent() == pytest.approx([-20.0, -15.2, 40.0, 43.2])


def test_plot_cli_writes_overview_and_samples(cube, tmp_path):
    out = tmp_path / "png"
    rc = main(["plot", cube, "--out", str(out), "--sample", "2", "--config", str(DATASET_YAML), "--preset", "ostia_tracks"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "overview.png" and len(names) == 3 and all(n.startswith("sample_") for n in names[1:])
    for name in names:
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300
