"""Dataset config (configs/dataset.yaml): how samples are cut and corrupted. One class covers every
dataset of the reference (eo_4band, ostia, ostia_argo, ostia_argo_disk with synthetic mode)
through modes; defaults match the reference pipeline (REFERENCE.md sections 5, 6, 9). Loaded with
:func:`cube.spec.load_config`, so every error names its key path (``dataset.yaml: presets.x.eo...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cube.errors import ConfigError
from cube.spec import check, load_config, read_yaml
from cube.tiling import odd_window

from .corruption import CorruptionSpec
from .eo import EODegradation


#: ``x`` (the sparse sub-surface input) is specified by the corruption layer's own spec:
#: ``argo`` (real profiles: window sum of sums / window sum of counts), ``tracks`` / ``rectangles``
#: (corruption of y, REFERENCE.md 6), ``synthetic_pixels`` (~N(pixel_count, 10%) pixels of y,
#: fresh each epoch) or ``none``; defaults match the reference (mask_fraction 0.975).
XConfig = CorruptionSpec


@dataclass(frozen=True)
class EOConfig(EODegradation):
    """Surface condition ``eo``: OSTIA window mean (zero over land) or GLORYS level 0 (``glorys_surface``,
    the reference eo_4band), with the optional degradations of :class:`loaders.eo.EODegradation`.

    ``min_days``: an OSTIA pixel needs a value on at least this many days of the window to be
    valid (``eo_valid_mask``); its eo is the mean over those days (see loaders.sample).
    """

    source: Literal["ostia", "glorys_surface"] = "ostia"
    min_days: int = 1

    def __post_init__(self):
        super().__post_init__()
        check(self.min_days >= 1, f"eo.min_days: must be >= 1, got {self.min_days}")


@dataclass(frozen=True)
class DatasetConfig:
    window_days: int = 7
    x: CorruptionSpec = field(default_factory=lambda: CorruptionSpec(source="argo"))
    eo: EOConfig = field(default_factory=EOConfig)
    target_bands: tuple[int, int] = (0, 50)
    augment: bool = False
    feb29_to_feb28: bool = True
    min_profiles: int = 0
    seed: int = 7
    block_size: int = 16
    on_error: Literal["raise", "skip"] = "raise"

    def __post_init__(self):
        check(self.window_days >= 1, f"window_days: must be >= 1, got {self.window_days}")
        lo, hi = self.target_bands
        check(0 <= lo < hi <= 50, f"target_bands: need 0 <= start < end <= 50, got {self.target_bands}")
        check(self.min_profiles >= 0, f"min_profiles: must be >= 0, got {self.min_profiles}")
        check(self.block_size >= 1, f"block_size: must be >= 1, got {self.block_size}")
        check(self.seed >= 0, f"seed: must be >= 0 (it seeds numpy generators), got {self.seed}")
        check(self.eo.min_days <= self.window, f"eo.min_days: {self.eo.min_days} is more than the "
                                                f"{self.window} days of a window")

    @property
    def window(self) -> int:
        """Odd window length: an even ``window_days`` is incremented by one (REFERENCE.md 3.1)."""
        return odd_window(self.window_days)


def load_dataset_config(path: str | Path = "configs/dataset.yaml", preset: str | None = None) -> DatasetConfig:
    """Load one preset of configs/dataset.yaml (``presets: {name: {...}}``, ``default: name``)."""
    data = read_yaml(path, "dataset config")
    presets = data.get("presets", {}) if isinstance(data, dict) else None
    if not isinstance(presets, dict):
        raise ConfigError(f"{Path(path).name}: presets: expected a mapping of preset name -> settings")
    name = preset or data.get("default")
    if name not in presets:
        raise ConfigError(f"{Path(path).name}: unknown preset {name!r}; available: {sorted(presets)}")
    return load_config(presets[name] or {}, DatasetConfig, label=Path(path).name, prefix=f"presets.{name}")
