"""Errors raised for bad input. Each names the file and what is wrong with it.

``InputError`` is a ``ValueError`` so callers that only know builtins still catch it; the builder
catches it per file and records ``(path, reason)`` in the cube's reject list instead of crashing.
"""

from __future__ import annotations


class DepthcubeError(Exception):
    """Base class of depthcube's own errors."""


class InputError(DepthcubeError, ValueError):
    """A raw input file cannot be used: unreadable, wrong schema or units, or no valid data.

    ``reason`` is a short machine-friendly code (``unreadable``, ``missing_variable``, ``bad_units``,
    ``no_valid_data``, ``bad_grid``, ``bad_time``, ...); ``detail`` says what was found and expected.
    """

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f": {detail}" if detail else ""))


class ConfigError(DepthcubeError, ValueError):
    """A configuration value is unknown, of the wrong type or impossible; the message names its key path."""
