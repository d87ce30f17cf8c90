"""depthcube's cube layer: raw NetCDF readers, regridding, profile rasterisation, the Zarr cube
writer, the patch index and the demo products. Nothing in this package imports torch."""

import warnings

# zarr-python warns on every consolidated-metadata call that the feature is not yet in the v3
# spec; the cube relies on it deliberately (one metadata read, atomic visibility of appends).
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
# The build journal and profile scratch live under <cube>/.build/, outside the Zarr hierarchy.
warnings.filterwarnings("ignore", message="Object at .build is not recognized", category=UserWarning)

__version__ = "0.1.0"
