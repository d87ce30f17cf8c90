"""``depthcube plot`` and ``depthcube export geotiff`` (registered by :mod:`depthcube.cli`).

Handlers import their modules lazily, so ``depthcube --help`` stays fast. Options that point at
a cube take any fsspec URL; ``--storage-options JSON`` passes credentials/endpoints to fsspec
(the AWS_* environment variables work as well for ``s3://``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DATASET_CONFIG = "configs/dataset.yaml"


def _storage_options(text: str | None) -> dict | None:
    from cube.spec import storage_options_from_json

    return storage_options_from_json(text)


def _dataset_config(path: str, preset: str | None):
    """The preset from ``path``; the built-in defaults when the default file is absent (outside a checkout)."""
    from .config import DatasetConfig, load_dataset_config

    if path == DEFAULT_DATASET_CONFIG and not Path(path).exists() and preset is None:
        return DatasetConfig()
    return load_dataset_config(path, preset=preset)


def _plot(args) -> int:
    from .plot import plot_cube

    cfg = _dataset_config(args.config, args.preset)
    paths = plot_cube(args.cube, args.out, n_samples=args.sample, config=cfg, split=args.split, level=args.level,
                      storage_options=_storage_options(args.storage_options))
    for p in paths:
        print(f"wrote {p}")
    return 0


def _export_geotiff(args) -> int:
    import rasterio  # noqa: F401  (the 'export' extra: missing -> one line, before anything is written)

    from .export import ExportOptions, export_geotiff
    from .stream import CubeStream  # noqa: F401  (torch, which the 'export' extra brings too)

    cfg = _dataset_config(args.config, args.preset)
    options = ExportOptions(split=args.split, start=args.start, limit=args.limit,
                            shuffle_block_size=args.shuffle_block_size, shuffle_seed=args.shuffle_seed,
                            overwrite=args.overwrite)
    r = export_geotiff(args.cube, args.outdir, cfg, options, storage_options=_storage_options(args.storage_options),
                       progress=not args.quiet)
    shuffle = f", block-shuffled (B={args.shuffle_block_size}, seed {r.shuffle_seed})" if args.shuffle_block_size else ""
    print(f"{r.selected} windows{shuffle}: {r.written} written, {r.skipped_sparse} skipped "
          f"(< 4 observed columns), {r.resumed} already done; manifest {r.manifest} ({r.seconds:.1f} s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_DATASET_CONFIG, help="dataset config YAML (default: %(default)s)")
    p.add_argument("--preset", help="preset of the dataset config (default: its `default`)")
    p.add_argument("--split", choices=("train", "val", "all"), default="all", help="windows of this split (default: all)")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec storage options for the cube URL")


def register(sub) -> None:
    """Add the ``plot`` and ``export`` subcommands to ``depthcube``'s subparsers."""
    p = sub.add_parser("plot", help="quicklook PNGs: cube overview (tiles by split, profile density) and samples",
                       description="Write overview.png (tiles coloured by split over the ocean mask, profile "
                                   "density per 1-degree block) and sample_<index>.png quicklooks (eo, x, y, masks) "
                                   "with robust (2nd-98th percentile) colour limits per tile and depths in metres.")
    p.add_argument("cube", help="cube path or URL")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--sample", type=int, default=4, metavar="N", help="number of sample quicklooks (default: 4)")
    p.add_argument("--level", type=int, default=None,
                   help="depth band shown for x and y (default: the most-observed band of each sample)")
    _common(p)
    p.set_defaults(func=_plot)

    e = sub.add_parser("export", help="export cube windows to other formats (geotiff)")
    formats = e.add_subparsers(dest="format", required=True)
    g = formats.add_parser("geotiff", help="the reference's per-window GeoTIFF triplets + manifest CSV",
                           description="Per window: ostia (1 band), argo (50 bands, NaN where unobserved) and "
                                       "glorys (50 bands, int16 degC x100, nodata -32768) GeoTIFFs in EPSG:4326, "
                                       "north-up, and one row per window in OUTDIR/ostia_argo_tiff_index.csv. "
                                       "Resumable: windows already recorded are not redone.")
    g.add_argument("cube", help="cube path or URL")
    g.add_argument("outdir", help="local output folder")
    _common(g)
    g.add_argument("--start", type=int, default=0, help="first window of the split to export (default: 0)")
    g.add_argument("--limit", type=int, help="export at most this many windows")
    g.add_argument("--shuffle-block-size", type=int, metavar="B", help="block-shuffled order in blocks of B windows")
    g.add_argument("--shuffle-seed", type=int, metavar="S", help="seed of the block order (default: fresh, printed)")
    g.add_argument("--overwrite", action="store_true", help="redo windows already recorded in the manifest")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_export_geotiff)
