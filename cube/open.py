"""Open a published cube as a lazy xarray DataTree (for notebooks) and summarise it (``depthcube info``)."""

from __future__ import annotations

import numpy as np
import xarray as xr
import zarr

from .errors import DepthcubeError
from .layout import check_contract, decode_attrs
from .store import fs_and_path, zarr_options


def open_cube(path: str, chunks: dict | None | str = "auto", storage_options: dict | None = None) -> xr.DataTree:
    """The cube at ``path`` (any fsspec URL) as a lazy :class:`xarray.DataTree`.

    Groups ``ostia``, ``glorys``, ``profiles``, ``static``, ``patches``; nothing is read until
    values are asked for. ``chunks="auto"`` (default) gives dask arrays on the stored chunks;
    ``chunks=None`` gives xarray's lazy backend arrays without dask (what the training loaders use).
    Opening uses the consolidated metadata, so a reader never sees an append in progress, and
    checks the contract first (:func:`cube.layout.check_contract`): a store that is not a cube of
    this contract raises ``ContractError`` in one line.
    """
    kwargs = zarr_options(str(path), storage_options)
    if chunks == "auto":
        chunks = {}
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=True, **kwargs)
    except FileNotFoundError:
        raise DepthcubeError(f"{path}: no cube here (run `depthcube build` first)") from None
    check_contract(root, str(path))
    return xr.open_datatree(str(path), engine="zarr", consolidated=True, chunks=chunks, zarr_format=3, **kwargs)


def _stored_mb(path: str, storage_options: dict | None = None) -> float | None:
    """Bytes the cube occupies in its store (None if the store cannot say)."""
    if not path:
        return None
    try:
        fs, root = fs_and_path(path, storage_options)
        return fs.du(root) / 1e6
    except Exception:  # a summary line is not worth failing `info` for
        return None


def describe(tree: xr.DataTree, path: str = "", storage_options: dict | None = None) -> str:
    """A human summary: grid, sizes, time range, tiles per split, profiles used/rejected, rejects
    (``storage_options`` reach ``path`` to size the stored cube)."""
    a = decode_attrs(tree.attrs)
    build = a.get("build", {})
    grid = build.get("grid", {})
    days = tree["ostia"].time.values
    lines = [f"cube {path}".rstrip(), f"  contract     {a.get('contract')}  ({a.get('software')})"]
    stored = _stored_mb(path, storage_options)
    if stored is not None:
        lines.append(f"  stored       {stored:.1f} MB")
    if grid:
        lines.append(
            f"  grid         {grid['nlat']} x {grid['nlon']} cells at {grid['resolution']:.4g} deg, "
            f"lat {grid['lat_south']:.3f}..{grid['lat_south'] + grid['nlat'] * grid['resolution']:.3f}, "
            f"lon {grid['lon_west']:.3f}..{grid['lon_west'] + grid['nlon'] * grid['resolution']:.3f}")
    if len(days):
        lines.append(f"  days         {str(days[0])[:10]} .. {str(days[-1])[:10]} ({len(days)} days)")
    gt = tree["glorys"].time.values
    lines.append(f"  glorys       {len(gt)} snapshots" + (f" {str(gt[0])[:10]} .. {str(gt[-1])[:10]}" if len(gt) else ""))
    sst = tree["ostia/analysed_sst"]
    lines.append(f"  ostia        analysed_sst {tuple(sst.shape)} {sst.dtype}")
    patches = tree["patches"].to_dataset()
    if "split" in patches:
        splits = dict(zip(*np.unique(np.asarray(patches["split"].values, dtype=object).astype(str), return_counts=True)))
        lines.append(f"  tiles        {patches.sizes['patch']} ({', '.join(f'{k} {v}' for k, v in splits.items())}), "
                     f"tile {patches.attrs.get('tile_size')} cells")
    prof = a.get("profiles", {})
    rejected = prof.get("rejected", {})
    lines.append(f"  profiles     {prof.get('used', 0)} used; rejected: "
                 + (", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none")
                 + f"; {prof.get('levels_rejected', 0)} levels rejected by QC")
    inputs = a.get("inputs", [])
    by_product: dict[str, list] = {}
    for i in inputs:
        by_product.setdefault(i["product"], []).append(i["size"])
    lines.append("  inputs       " + ", ".join(f"{k} {len(v)} files ({sum(v) / 1e6:.1f} MB)" for k, v in by_product.items()))
    rejects = a.get("rejects", [])
    lines.append(f"  rejects      {len(rejects)} file(s)")
    for r in rejects[:20]:
        lines.append(f"    {r['file'].rsplit('/', 1)[-1]}: {r['reason']}" + (f" ({r['detail']})" if r.get("detail") else ""))
    if len(rejects) > 20:
        lines.append(f"    ... and {len(rejects) - 20} more")
    return "\n".join(lines)
