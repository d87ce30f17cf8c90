"""Quicklook PNGs of a cube and of its training samples (``depthcube plot``).

Temperature panels use the ``turbo`` colormap with *robust* limits: the 2nd to 98th percentile
of the field shown, per figure and per tile (:func:`robust_limits`). The reference's fixed range
(REFERENCE.md 7, -10.7 .. 43.9 degC) turns one region's SST into a single flat colour; it stays
available as :func:`temperature_style` without values. In a sample, ``x`` and ``y`` at the
shown level share one scale (an observation reads against its target); ``eo`` has its own.
Depths are labelled in metres. The sparse-input panel shows the most-observed level by default
(profiles rarely reach the 0.494 m top level, so level 0 was empty in every sample) and draws
every observed cell as a marker, so a handful of pixels stays visible on a 128 x 128 tile. The
profile density is aggregated per 1 x 1 degree block (profiles = observed cell-days), not drawn
as single-cell specks. Axes are in degrees (``10°W``, ``45°N``); samples are drawn north-up
(row 0 = north), as they are stored.

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

from cube.constants import GLORYS_DEPTHS, PLOT_CMAP, PLOT_TEMP_MAX_C, PLOT_TEMP_MIN_C, denormalise_to_celsius
from cube.tiling import unwrapped_east

from .config import DatasetConfig
from .reader import CubeReader

#: Tile colours by split in the overview (train blue, val orange, sample-level splits grey).
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "all": "#7f7f7f"}
LAND_COLOUR, OCEAN_COLOUR = "#d9cdb6", "#e8f1f8"
#: Percentiles of the robust colour limits.
ROBUST_PERCENTILES = (2.0, 98.0)
#: Side of the profile-density blocks in the overview, degrees.
DENSITY_BLOCK_DEG = 1.0


def robust_limits(*fields) -> tuple[float, float]:
    """(vmin, vmax): the 2nd and 98th percentiles of the finite values of ``fields`` together.
    No finite value gives the reference's fixed range; a constant field gets +-0.5 around it."""
    values = np.concatenate([np.asarray(f, np.float64).ravel() for f in fields]) if fields else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return PLOT_TEMP_MIN_C, PLOT_TEMP_MAX_C
    lo, hi = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-6 else (lo, hi)


def temperature_style(*fields) -> dict:
    """``imshow``/xarray ``plot`` keywords of a temperature panel: ``turbo`` with the robust
    limits of ``fields`` (:func:`robust_limits`), or the reference's fixed range without any."""
    vmin, vmax = robust_limits(*fields) if fields else (PLOT_TEMP_MIN_C, PLOT_TEMP_MAX_C)
    return {"cmap": PLOT_CMAP, "vmin": vmin, "vmax": vmax}


def depth_label(depth_m: float) -> str:
    """``'5.1 m'``: a GLORYS level depth for titles and axes."""
    return f"{depth_m:.3g} m" if depth_m < 100 else f"{depth_m:.0f} m"


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
    """(lat, lon) number of profiles per cell over the whole cube, south-up: the days on which
    the cell holds at least one profile value (two profiles in one cell on one day count once).

    Streams ``profiles/n_obs`` one time chunk at a time, so memory stays at one chunk row.
    """
    arr = reader.root["profiles/n_obs"]
    total = np.zeros(arr.shape[1:], np.int64)
    step = arr.chunks[0]
    for t0 in range(0, arr.shape[0], step):
        total += (arr[t0:t0 + step] > 0).sum(axis=0, dtype=np.int64)
    return total


def block_sums(field: np.ndarray, block: int) -> np.ndarray:
    """Sums over ``block`` x ``block`` cells (the last row/column of blocks may be partial)."""
    nlat, nlon = field.shape
    padded = np.zeros((-(-nlat // block) * block, -(-nlon // block) * block), field.dtype)
    padded[:nlat, :nlon] = field
    return padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).sum(axis=(1, 3))


def plot_overview(cube: str, path: str | Path | None = None, *, storage_options: dict | None = None) -> Figure:
    """Two maps of the cube: its tiles coloured by split over the ocean mask (each labelled with
    its id and profile-value count), and the number of profiles per 1 x 1 degree block (blocks
    of whole cube cells from the grid's south-west corner; log colour scale).

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
    res = (extent[3] - extent[2]) / density.shape[0]
    block = max(1, int(round(DENSITY_BLOCK_DEG / res)))
    blocks = block_sums(density, block)
    block_extent = (extent[0], extent[0] + blocks.shape[1] * block * res, extent[2],
                    extent[2] + blocks.shape[0] * block * res)
    ax_obs.imshow(reader.ocean_mask, origin="lower", extent=extent, interpolation="nearest",
                  cmap=ListedColormap([LAND_COLOUR, OCEAN_COLOUR]), vmin=0, vmax=1)
    im = ax_obs.imshow(np.ma.masked_less(blocks, 1), origin="lower", extent=block_extent, interpolation="nearest",
                       cmap="viridis", norm=LogNorm(vmin=1, vmax=max(int(blocks.max()), 2)), alpha=0.85)
    ax_obs.contour(reader.ocean_mask.astype(float), levels=[0.5], colors="k", linewidths=0.6, origin="lower",
                   extent=extent)
    bar = fig.colorbar(im, ax=ax_obs, label=f"profiles per {block * res:g}° x {block * res:g}° block")
    for axis_formatter in (bar.ax.yaxis.set_major_formatter, bar.ax.yaxis.set_minor_formatter):
        axis_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 2, 5, 10 rather than 2x10^0
    ax_obs.set_title(f"profile density: {int(density.sum())} profiles in {len(reader.days)} days")
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
        lon1 = float(unwrapped_east(p["lon0"], p["lon1"]))
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


def observed_level(sample: Mapping) -> int:
    """The band of ``x`` with the most observed cells (0 when nothing is observed)."""
    counts = _np(sample["x_valid_mask"]).sum(axis=(1, 2))
    return int(np.argmax(counts)) if counts.any() else 0


def pixel_centres(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int],
                  extent: tuple[float, float, float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Plot coordinates of north-up pixel centres: degrees with ``extent``, else column/row."""
    if extent is None:
        return cols.astype(float), rows.astype(float)
    west, east, south, north = extent
    return (west + (cols + 0.5) * (east - west) / shape[1], north - (rows + 0.5) * (north - south) / shape[0])


def _mark_observed(ax, values: np.ndarray, observed: np.ndarray, extent, style: dict | None) -> None:
    """A marker on every observed cell, filled with its value's colour (or black for a mask)."""
    rows, cols = np.nonzero(observed)
    xs, ys = pixel_centres(rows, cols, observed.shape, extent)
    colours = {"c": values[rows, cols], **style} if style else {"c": "k"}
    ax.scatter(xs, ys, s=22, marker="o", edgecolors="k", linewidths=0.6, **colours)


def deepest_valid_depth(y_valid: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """(H, W) depth in metres of the deepest valid level of each column, NaN where none is."""
    any_valid = y_valid.any(axis=0)
    deepest = y_valid.shape[0] - 1 - np.argmax(y_valid[::-1], axis=0)
    return np.where(any_valid, np.asarray(depths, np.float64)[deepest], np.nan)


def plot_sample(sample: Mapping, path: str | Path | None = None, *,
                extent: tuple[float, float, float, float] | None = None, level: int | None = None,
                depths: np.ndarray | None = None, title: str | None = None) -> Figure:
    """One sample in six panels: eo, x and y at band ``level`` (degC, robust limits), the
    observed columns (``x_valid_mask_1d``), the depth reached by ``y`` per column (m) and
    ``land_mask`` (1 = ocean). Observed cells are drawn as markers on the x and mask panels.

    ``level`` None (default) shows the most-observed band (:func:`observed_level`). ``depths``:
    the depth in metres of each band of the sample (default: the 50 GLORYS levels, i.e. a
    sample of all bands). ``extent`` = (west, east, south, north) edges in degrees puts the axes
    in degrees (the sample is north-up); without it the axes are pixel rows/columns. Accepts the
    numpy or torch sample of :class:`loaders.CubeStream`. Writes a PNG to ``path`` when given.
    """
    c = sample_celsius(sample)
    level = observed_level(sample) if level is None else level
    depths = np.asarray(GLORYS_DEPTHS if depths is None else depths, np.float64)
    at = depth_label(depths[level])
    x_valid = _np(sample["x_valid_mask"])
    fig = Figure(figsize=(13, 7.6), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    kw = {"origin": "upper", "interpolation": "nearest", "extent": extent}
    level_style = temperature_style(c["y"][level], c["x"][level])
    panels = [
        ("eo: surface condition", c["eo"], temperature_style(c["eo"])),
        (f"x at {at} (level {level}): {int(x_valid[level].sum())} observed cells", c["x"][level], level_style),
        (f"y at {at} (level {level}): dense target", c["y"][level], level_style),
    ]
    for ax, (name, arr, style) in zip(axes[:3], panels):
        im = ax.imshow(arr, **kw, **style)
        fig.colorbar(im, ax=ax, shrink=0.8, label="degC")
        ax.set_title(name, fontsize=10)
    _mark_observed(axes[1], c["x"][level], x_valid[level], extent, level_style)
    observed_1d = _np(sample["x_valid_mask_1d"])[0].astype(bool)
    masks = [
        (f"x_valid_mask_1d: {int(observed_1d.sum())} columns observed at any level", observed_1d.astype(float),
         "Greys", 0, 1, ""),
        ("depth reached by y (deepest valid level)", deepest_valid_depth(_np(sample["y_valid_mask"]), depths),
         "cividis_r", 0, float(depths.max()), "m"),
        ("land_mask (1 = ocean)", _np(sample["land_mask"])[0], "Blues", 0, 1, ""),
    ]
    for ax, (name, arr, cmap, vmin, vmax, label) in zip(axes[3:], masks):
        im = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, **kw)
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        ax.set_title(name, fontsize=10)
    _mark_observed(axes[3], observed_1d, observed_1d, extent, None)
    for ax in axes:
        if extent is not None:
            degree_axes(ax)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_samples(cube: str, out_dir: str | Path, n: int = 4, config: DatasetConfig | None = None, *,
                 split: str = "all", level: int | None = None, storage_options: dict | None = None) -> list[Path]:
    """PNG quicklooks of ``n`` samples spread evenly over the split's windows (first, last and
    between), written as ``out_dir/sample_<index>.png``; returns their paths. ``level``: the band
    shown (None: each sample's most-observed band)."""
    from .stream import CubeStream

    stream = CubeStream(cube, config or DatasetConfig(), split=split, shuffle=False, storage_options=storage_options)
    if len(stream) == 0 or n <= 0:
        return []
    patches = stream.reader.patches.set_index("patch")
    lo, hi = stream.config.target_bands
    paths = []
    for i in np.unique(np.linspace(0, len(stream) - 1, min(n, len(stream))).round().astype(int)):
        s = stream.sample(int(i))
        p = patches.loc[s["info"]["patch"]]
        lon1 = float(unwrapped_east(p["lon0"], p["lon1"]))
        title = (f"patch {s['info']['patch']} ({s['info']['split']}), window centred {s['info']['day']} "
                 f"({s['info']['window_days']} days), x: {s['info']['x_source']}")
        path = Path(out_dir) / f"sample_{int(i):06d}.png"
        plot_sample(s, path, extent=(p["lon0"], lon1, p["lat0"], p["lat1"]), level=level,
                    depths=GLORYS_DEPTHS[lo:hi], title=title)
        paths.append(path)
    return paths


def plot_cube(cube: str, out_dir: str | Path, n_samples: int = 4, config: DatasetConfig | None = None, *,
              split: str = "all", level: int | None = None, storage_options: dict | None = None) -> list[Path]:
    """``depthcube plot``: ``overview.png`` plus ``n_samples`` sample quicklooks in ``out_dir``."""
    out = Path(out_dir)
    overview = out / "overview.png"
    plot_overview(cube, overview, storage_options=storage_options)
    return [overview] + plot_samples(cube, out, n_samples, config, split=split, level=level,
                                     storage_options=storage_options)
