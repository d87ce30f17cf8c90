"""Streaming loaders: open the cube lazily, cut patch x time windows, assemble and corrupt samples,
and feed torch. Loaders never read raw NetCDF; they only read a published cube."""

from cube.open import describe, open_cube

from .config import DatasetConfig, EOConfig, XConfig, load_dataset_config

__all__ = ["open_cube", "describe", "DatasetConfig", "EOConfig", "XConfig", "load_dataset_config",
           "CubeStream", "StreamLoader"]


def __getattr__(name):
    # torch is imported only when the stream is asked for (notebooks can open cubes without it).
    if name in ("CubeStream", "StreamLoader", "CubeMap", "CubeBatches"):
        from . import stream

        return getattr(stream, name)
    raise AttributeError(name)
