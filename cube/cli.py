"""The cube layer's subcommands of ``depthcube``: demo, build, index, download, info.

:func:`register` adds them to the parser of :mod:`depthcube.cli` (the entry point, which also
turns user errors into one line and exit 2). Each handler imports its module when it runs, so
registering them imports nothing heavy and ``depthcube build`` never imports torch.
"""

from __future__ import annotations

import argparse


def _region(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT_MIN,LAT_MAX,LON_MIN,LON_MAX numbers, got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected 4 comma-separated numbers LAT_MIN,LAT_MAX,LON_MIN,LON_MAX, got {text!r}")
    return vals


def _demo(args) -> int:
    from .demo import DemoSpec, write_demo

    overrides = {k: v for k, v in (("region", args.region), ("start", args.start), ("end", args.end),
                                   ("seed", args.seed)) if v is not None}
    if args.glorys_monthly:
        overrides["glorys_monthly"] = True
    spec = DemoSpec.preset(args.preset, **overrides)
    paths = write_demo(args.outdir, spec, progress=not args.quiet)
    for product, files in paths.items():
        print(f"{product:7s} {len(files):4d} files in {args.outdir}/{product}")
    return 0


def _storage_options(text: str | None, flag: str = "--storage-options") -> dict | None:
    from .spec import storage_options_from_json

    return storage_options_from_json(text, flag)


def _build(args) -> int:
    import dataclasses

    from .build import build
    from .config import load_cube_config
    from .open import describe, open_cube

    cfg = load_cube_config(args.config)
    if args.output:
        cfg = dataclasses.replace(cfg, output=args.output)
    inputs = _storage_options(args.input_storage_options, "--input-storage-options")
    if inputs:
        cfg = dataclasses.replace(cfg, inputs=dataclasses.replace(
            cfg.inputs, storage_options={**cfg.inputs.storage_options, **inputs}))
    output = _storage_options(args.storage_options)
    if output:
        cfg = dataclasses.replace(cfg, output_storage_options={**cfg.output_storage_options, **output})
    report = build(cfg, strict=args.strict or None,
                   progress=False if args.quiet else None, scheduler=args.scheduler,
                   local_cluster=args.local_cluster, rebuild=args.rebuild)
    print(f"{report.status}: {report.output} in {report.seconds:.1f} s "
          f"({report.tasks_run} tasks run, {report.tasks_skipped} skipped, {report.bytes_read / 1e6:.1f} MB of inputs)")
    for line in report.warnings:
        print(f"  warning: {line}")
    for verb, entries in (("rejected", report.rejects), ("skipped", report.skipped)):
        for r in entries:
            print(f"  {verb} {r['file']}: {r['reason']}" + (f" ({r['detail']})" if r.get("detail") else ""))
    if not args.quiet:
        options = cfg.output_storage_options
        print(describe(open_cube(report.output, storage_options=options), report.output, options))
    return 0


def _index(args) -> int:
    import dataclasses

    from .tiling import PatchSpec, SplitSpec
    from .index import export_index, rebuild_index
    from .open import describe, open_cube
    from .spec import from_dict

    options = _storage_options(args.storage_options)
    if args.rebuild or any(v is not None for v in (args.tile_size, args.stride, args.threshold, args.split, args.val_fraction, args.seed)):
        tree = open_cube(args.cube, storage_options=options)
        from .layout import decode_attrs

        cfg = decode_attrs(tree.attrs)["build"]["config"]
        p = dataclasses.replace(from_dict(PatchSpec, cfg["patches"]), **{k: v for k, v in (
            ("tile_size", args.tile_size), ("stride", args.stride), ("invalid_threshold", args.threshold)) if v is not None})
        s = dataclasses.replace(from_dict(SplitSpec, cfg["split"]), **{k: v for k, v in (
            ("method", args.split), ("val_fraction", args.val_fraction), ("seed", args.seed), ("val_year", args.val_year)) if v is not None})
        patches = rebuild_index(args.cube, p, s, storage_options=options)
        print(f"patch index rebuilt: {len(patches)} tiles " + str(patches["split"].value_counts().to_dict()))
    if args.export:
        export_index(args.cube, args.export, storage_options=options)
        print(f"wrote {args.export}")
    if not (args.export or args.rebuild):
        print(describe(open_cube(args.cube, storage_options=options), args.cube, options))
    return 0


def _download(args) -> int:
    from .download import download, dry_run, load_request

    options = {"output": args.outdir, "region": args.region, "start": args.start, "end": args.end,
               "products": [p for p in args.products.split(",") if p], "ostia": args.ostia, "glorys": args.glorys,
               "glorys_step_days": args.glorys_every, "argo_floats": args.argo_floats or [],
               **({"en4_url": args.en4_url} if args.en4_url else {}),
               **({"argo_gdac": args.argo_gdac} if args.argo_gdac else {})}
    request = load_request(options, label="options")
    if args.dry_run:
        print("\n".join(dry_run(request)))
        return 0
    report = download(request, progress=not args.quiet)
    for product in request.products:
        print(f"{product:7s} {report.fetched[product]:5d} fetched, {report.skipped[product]:5d} already complete "
              f"in {request.folder(product)}")
    if report.config:
        print(f"wrote {report.config}; build with: depthcube build {report.config}")
    return 0


def _download_region(text: str) -> tuple[float, float, float, float]:
    return (-90.0, 90.0, -180.0, 180.0) if text.strip().lower() == "global" else _region(text)


def _floats(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated WMO numbers, got {text!r}") from None


def _info(args) -> int:
    from .open import describe, open_cube

    options = _storage_options(args.storage_options)
    tree = open_cube(args.cube, storage_options=options)
    print(describe(tree, args.cube, options))
    if args.tree:
        print(tree)
    return 0


def register(sub) -> None:
    """Add the ``demo``, ``build``, ``index``, ``download`` and ``info`` subcommands to ``depthcube``'s subparsers."""
    d = sub.add_parser("demo", help="write demo raw products (OSTIA, GLORYS, EN4) in the real file formats",
                       description="Write OSTIA L4, GLORYS12 thetao and EN4.2.2 profile files for a region and period, "
                                   "all driven by one hidden 'truth' ocean, deterministic from the seed.")
    d.add_argument("outdir", help="output folder (ostia/, glorys/, en4/ are created inside)")
    d.add_argument("--preset", choices=("tiny", "small"), default="small",
                   help="tiny: seconds, for tests; small: the `make cube` demo (default)")
    d.add_argument("--region", type=_region, metavar="LAT_MIN,LAT_MAX,LON_MIN,LON_MAX",
                   help="override the preset's region (degrees, lon in -180..180)")
    d.add_argument("--start", help="first day YYYY-MM-DD (default: the preset's)")
    d.add_argument("--end", help="last day YYYY-MM-DD, inclusive (default: the preset's)")
    d.add_argument("--seed", type=int, help="random seed of the hidden truth and the products (default: the preset's)")
    d.add_argument("--glorys-monthly", action="store_true", help="write GLORYS monthly means instead of 7-daily snapshots")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)

    b = sub.add_parser("build", help="build or update cube.zarr from raw NetCDF",
                       description="Read, regrid and rasterise the raw products named in CONFIG into a Zarr v3 cube.")
    b.add_argument("config", help="cube config YAML (see configs/cube.yaml)")
    b.add_argument("-o", "--output", help="cube path or URL (overrides the config's output)")
    b.add_argument("--strict", action="store_true", help="fail on the first bad input file instead of rejecting it")
    b.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler address (default: local threads)")
    b.add_argument("--local-cluster", type=int, metavar="N", help="run on a dask LocalCluster of N worker processes")
    b.add_argument("--rebuild", action="store_true",
                   help="build from scratch and replace the existing cube (needed when it cannot be brought up to "
                        "date in place); a path that is not a depthcube cube is never replaced")
    b.add_argument("--storage-options", metavar="JSON",
                   help="fsspec storage options of the output store, over the config's output_storage_options key "
                        "by key, e.g. '{\"endpoint_url\": \"http://127.0.0.1:9000\", \"key\": \"...\", \"secret\": \"...\"}'")
    b.add_argument("--input-storage-options", metavar="JSON",
                   help="fsspec storage options of the input URLs, over the config's inputs.storage_options key by key")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    b.set_defaults(func=_build)

    i = sub.add_parser("index", help="rebuild or export the patch index of a cube without rebuilding the cube")
    i.add_argument("cube", help="cube path or URL")
    i.add_argument("--rebuild", action="store_true", help="recompute tiles and splits (implied by any option below)")
    i.add_argument("--tile-size", type=int)
    i.add_argument("--stride", type=int)
    i.add_argument("--threshold", type=float, help="invalid_threshold: drop tiles with a larger non-ocean fraction")
    i.add_argument("--split", choices=("patch", "window", "year", "random"))
    i.add_argument("--val-fraction", type=float)
    i.add_argument("--val-year", type=int)
    i.add_argument("--seed", type=int)
    i.add_argument("--export", metavar="PATH", help="write the index as .csv or .parquet")
    i.add_argument("--storage-options", metavar="JSON", help="fsspec storage options for the cube URL")
    i.set_defaults(func=_index)

    w = sub.add_parser("download", help="fetch the real OSTIA, GLORYS, EN4 and Argo inputs of a region and span",
                       description="Fetch OSTIA L4 and GLORYS12 (copernicusmarine, your own credentials), EN4.2.2 "
                                   "profiles (Met Office zips) and Argo GDAC *_prof.nc files into OUTDIR/<product>/, "
                                   "the layout configs/cube.yaml reads. Resumable: complete files are skipped.")
    w.add_argument("outdir", help="output folder (ostia/, glorys/, en4/, argo/ are created inside)")
    w.add_argument("--region", type=_download_region, required=True, metavar="LAT_MIN,LAT_MAX,LON_MIN,LON_MAX",
                   help="degrees, lon in -180..180; 'global' for the globe (or --region=-90,90,-180,180)")
    w.add_argument("--start", required=True, help="first day YYYY-MM-DD")
    w.add_argument("--end", required=True, help="last day YYYY-MM-DD, inclusive")
    w.add_argument("--products", default="ostia,glorys,en4,argo", help="comma-separated (default: all four)")
    w.add_argument("--ostia", choices=("rep", "nrt"), default="rep", help="reprocessed (010_011) or near real time (010_001)")
    w.add_argument("--glorys", choices=("daily", "monthly"), default="daily", help="GLORYS daily or monthly means")
    w.add_argument("--glorys-every", type=int, default=7, metavar="DAYS",
                   help="one GLORYS daily mean every DAYS days (default 7, the reference's weekly snapshots)")
    w.add_argument("--argo-floats", type=_floats, metavar="WMO,...", help="fetch these Argo floats instead of by region and span")
    w.add_argument("--en4-url", help="EN4 download area (default: the Met Office's)")
    w.add_argument("--argo-gdac", help="Argo GDAC base URL (default https://data-argo.ifremer.fr)")
    w.add_argument("--dry-run", action="store_true", help="print what would be fetched and its estimated size; fetch nothing")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=_download)

    n = sub.add_parser("info", help="summarise a cube")
    n.add_argument("cube", help="cube path or URL")
    n.add_argument("--tree", action="store_true", help="also print the xarray DataTree")
    n.add_argument("--storage-options", metavar="JSON", help="fsspec storage options for the cube URL")
    n.set_defaults(func=_info)
