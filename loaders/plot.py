"""Quicklook PNGs of a cube and of its training samples (``depthcube plot``).

Every temperature panel uses the reference's fixed plotting range and colormap (REFERENCE.md 7:
``PLOT_TEMP_MIN_C`` .. ``PLOT_TEMP_MAX_C`` = mean -/+ 2.5 sigma, ``turbo``, a perceptual
colormap), so two figures of different days or tiles compare colour for colour. Axes are in
degrees (``10°W``, ``45°N``); samples are drawn north-up (row 0 = north), as they are stored.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state), so this
module is safe in scripts, DataLoader workers and notebooks alike (a returned figure displays
inline in Jupyter). It reads the cube through :class:`loaders.reader.CubeReader`, never raw NetCDF.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from cube.constants import PLOT_CMAP, PLOT_TEMP_MAX_C, PLOT_TEMP_MIN_C, denormalise_to_celsius

from .config import DatasetConfig
from .reader import CubeReader

#: Tile colours by split in the overview (train blue, val orange, sample-level splits grey).
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "all": "#7f7f7f"}
LAND_COLOUR, OCEAN_COLOUR = "#d9cdb6", "#e8f1f8"


def temperature_style() -> dict:
    """``imshow`` keywords of every temperature panel: the reference's fixed range and colormap."""
    return {"cmap": PLOT_CMAP, "vmin": PLOT_TEMP_MIN_C, "vmax": PLOT_TEMP_MAX_C}


def _lon_label(v: float, _pos=None) -> str:
    v = (v + 180.0) % 360.0 - 180.0  # unwrapped (> 180) east edges read as west longitudes
    return "0°" if abs(v) < 1e-9 else f"{abs(v):g}°{'E' if v > 0 else 'W'}"


def _lat_label(v: float, _pos=None) -> str:
    return "0°" if abs(v) < 1e-9 else f"{abs(v):g}°{'N' if v > 0 else 'S'}"


def degree_axes(ax, *, x: bool = True, y: bool = True) -> None:
    """Label an axes' x ticks as longitudes and y ticks as latitudes (``10°W``, ``45°N``);
    ``y=False`` leaves the y axis alone (e.g. depth in a section)."""
    if x:
        ax.xaxis.set_major_formatter(FuncFormatter(_lon_label))
        ax.set_xlabel("longitude")
    if y:
        ax.yaxis.set_major_formatter(FuncFormatter(_lat_label))
        ax.set_ylabel("latitude")


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


# --------------------------------------------------------------------------------------------
# Cube overview
# --------------------------------------------------------------------------------------------


def grid_extent(reader: CubeReader) -> tuple[float, float, float, float]:
    """(west, east, south, north) cell *edges* of the cube grid, from its cell-centre coordinates."""
    lat, lon = reader.root["static/lat"][:], reader.root["static/lon"][:]
    res_lat = float(lat[1] - lat[0]) if lat.size > 1 else 0.1
    res_lon = float(lon[1] - lon[0]) if lon.size > 1 else res_lat
    return (float(lon[0] - res_lon / 2), float(lon[-1] + res_lon / 2),
            float(lat[0] - res_lat / 2), float(lat[-1] + res_lat / 2))


def profile_density(reader: CubeReader) -> np.ndarray:
    """(lat, lon) number of profile values per cell over the whole cube, south-up.

    Streams ``profiles/n_obs`` one time chunk at a time, so memory stays at one chunk row.
    """
    arr = reader.root["profiles/n_obs"]
    total = np.zeros(arr.shape[1:], np.int64)
    step = arr.chunks[0]
    for t0 in range(0, arr.shape[0], step):
        total += arr[t0:t0 + step].sum(axis=0, dtype=np.int64)
    return total


def plot_overview(cube: str, path: str | Path | None = None, *, storage_options: dict | None = None) -> Figure:
    """Two maps of the cube: its tiles coloured by split over the ocean mask (each labelled with
    its id and profile count), and the profile observation density per cell (log colour scale).

    Writes a PNG to ``path`` when given; returns the figure.
    """
    from matplotlib.colors import ListedColormap, LogNorm

    reader = CubeReader(cube, storage_options=storage_options)
    extent = grid_extent(reader)
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    ax_tiles, ax_obs = fig.subplots(1, 2)
    ax_tiles.imshow(reader.ocean_mask, origin="lower", extent=extent, interpolation="nearest",
                    cmap=ListedColormap([LAND_COLOUR, OCEAN_COLOUR]), vmin=0, vmax=1)
    _draw_tiles(ax_tiles, reader, extent)
    ax_tiles.set_title(f"{len(reader.patches)} tiles of {reader.tile} cells by split over the ocean mask")
    density = profile_density(reader)
    masked = np.ma.masked_less(density, 1)
    im = ax_obs.imshow(masked, origin="lower", extent=extent, interpolation="nearest", cmap="viridis",
                       norm=LogNorm(vmin=1, vmax=max(int(density.max()), 2)))
    ax_obs.imshow(np.ma.masked_where(reader.ocean_mask, reader.ocean_mask), origin="lower", extent=extent,
                  cmap=ListedColormap([LAND_COLOUR]), interpolation="nearest")
    fig.colorbar(im, ax=ax_obs, label="profile values per cell (all days, all levels)")
    ax_obs.set_title(f"profile observation density: {int(density.sum())} values in {len(reader.days)} days")
    for ax in (ax_tiles, ax_obs):
        degree_axes(ax)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    return _save(fig, path)


def _draw_tiles(ax, reader: CubeReader, extent) -> None:
    patches = reader.patches
    obs = reader.obs_count.sum(axis=1)
    width = extent[1] - extent[0]
    for (_, p), n in zip(patches.iterrows(), obs):
        colour = SPLIT_COLOURS.get(p["split"], SPLIT_COLOURS["all"])
        lon1 = p["lon1"] + 360.0 if p["lon1"] <= p["lon0"] else p["lon1"]
        # A tile wrapping the dateline is drawn at both ends of a global map.
        for shift in (0.0, -360.0) if lon1 > extent[1] + 1e-9 and width > 359 else (0.0,):
            ax.add_patch(Rectangle((p["lon0"] + shift, p["lat0"]), lon1 - p["lon0"], p["lat1"] - p["lat0"],
                                   facecolor=colour, edgecolor="k", alpha=0.45, linewidth=0.8,
                                   label=p["split"]))
        ax.text(p["lon_center"], p["lat_center"], f"#{p['patch']}\n{int(n)} obs", ha="center", va="center",
                fontsize=7)
    handles = [Rectangle((0, 0), 1, 1, facecolor=c, alpha=0.45, edgecolor="k", label=s)
               for s, c in SPLIT_COLOURS.items() if s in set(patches["split"])]
    ax.legend(handles=handles, loc="upper right", fontsize=8)


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


def _np(v) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def sample_celsius(sample: Mapping) -> dict[str, np.ndarray]:
    """eo, x and y of a sample (torch or numpy, normalised) in degC with NaN where invalid.

    Validity: ``x_valid_mask`` / ``y_valid_mask`` for x and y; for eo the ocean (``land_mask``)
    minus exact zeros, the fill of invalid eo pixels (a display rule only: a real 16.59 degC
    pixel that normalises to exactly 0.0 would be hidden too).
    """
    eo = _np(sample["eo"])[0]
    ocean = _np(sample["land_mask"])[0] > 0.5
    eo_ok = ocean & (eo != 0)
    return {
        "eo": np.where(eo_ok, denormalise_to_celsius(eo), np.nan),
        "x": np.where(_np(sample["x_valid_mask"]), denormalise_to_celsius(_np(sample["x"])), np.nan),
        "y": np.where(_np(sample["y_valid_mask"]), denormalise_to_celsius(_np(sample["y"])), np.nan),
    }


def plot_sample(sample: Mapping, path: str | Path | None = None, *,
                extent: tuple[float, float, float, float] | None = None, level: int = 0,
                title: str | None = None) -> Figure:
    """One sample in six panels: eo, x and y at band ``level`` (degC, fixed reference range),
    ``x_valid_mask_1d``, the number of valid y levels per column, and ``land_mask`` (1 = ocean).

    ``extent`` = (west, east, south, north) edges in degrees puts the axes in degrees (the
    sample is north-up); without it the axes are pixel rows/columns. Accepts the numpy or torch
    sample of :class:`loaders.CubeStream`. Writes a PNG to ``path`` when given.
    """
    c = sample_celsius(sample)
    fig = Figure(figsize=(13, 7.6), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    kw = {"origin": "upper", "interpolation": "nearest", "extent": extent}
    n_obs = int(_np(sample["x_valid_mask"])[level].sum())
    panels = [
        ("eo: surface condition (degC)", c["eo"], temperature_style()),
        (f"x band {level}: sparse input (degC), {n_obs} px", c["x"][level], temperature_style()),
        (f"y band {level}: dense target (degC)", c["y"][level], temperature_style()),
    ]
    for ax, (name, arr, style) in zip(axes[:3], panels):
        im = ax.imshow(arr, **kw, **style)
        fig.colorbar(im, ax=ax, shrink=0.8, label="degC")
        ax.set_title(name, fontsize=10)
    masks = [
        ("x_valid_mask_1d: any band observed", _np(sample["x_valid_mask_1d"])[0].astype(float), "Greys", 1),
        ("valid y bands per column", _np(sample["y_valid_mask"]).sum(axis=0).astype(float), "cividis",
         _np(sample["y_valid_mask"]).shape[0]),
        ("land_mask (1 = ocean)", _np(sample["land_mask"])[0], "Blues", 1),
    ]
    for ax, (name, arr, cmap, vmax) in zip(axes[3:], masks):
        im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=vmax, **kw)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(name, fontsize=10)
    for ax in axes:
        if extent is not None:
            degree_axes(ax)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_samples(cube: str, out_dir: str | Path, n: int = 4, config: DatasetConfig | None = None, *,
                 split: str = "all", level: int = 0, storage_options: dict | None = None) -> list[Path]:
    """PNG quicklooks of ``n`` samples spread evenly over the split's windows (first, last and
    between), written as ``out_dir/sample_<index>.png``; returns their paths."""
    from .stream import CubeStream

    stream = CubeStream(cube, config or DatasetConfig(), split=split, shuffle=False, storage_options=storage_options)
    if len(stream) == 0 or n <= 0:
        return []
    patches = stream.reader.patches.set_index("patch")
    paths = []
    for i in np.unique(np.linspace(0, len(stream) - 1, min(n, len(stream))).round().astype(int)):
        s = stream.sample(int(i))
        p = patches.loc[s["info"]["patch"]]
        lon1 = p["lon1"] + 360.0 if p["lon1"] <= p["lon0"] else p["lon1"]
        title = (f"patch {s['info']['patch']} ({s['info']['split']}), window centred {s['info']['day']} "
                 f"({s['info']['window_days']} days), x: {s['info']['x_source']}")
        path = Path(out_dir) / f"sample_{int(i):06d}.png"
        plot_sample(s, path, extent=(p["lon0"], lon1, p["lat0"], p["lat1"]), level=level, title=title)
        paths.append(path)
    return paths


def plot_cube(cube: str, out_dir: str | Path, n_samples: int = 4, config: DatasetConfig | None = None, *,
              split: str = "all", level: int = 0, storage_options: dict | None = None) -> list[Path]:
    """``depthcube plot``: ``overview.png`` plus ``n_samples`` sample quicklooks in ``out_dir``."""
    out = Path(out_dir)
    overview = out / "overview.png"
    plot_overview(cube, overview, storage_options=storage_options)
    return [overview] + plot_samples(cube, out, n_samples, config, split=split, level=level,
                                     storage_options=storage_options)
