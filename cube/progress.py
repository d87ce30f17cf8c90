"""Progress reporting shared by ``build`` and ``download``: a tqdm bar on a terminal, one line elsewhere.

On a terminal (stdout and stderr both TTYs) :class:`Progress` draws a tqdm bar on stderr and,
while it is drawn, routes log records through ``tqdm.write`` so no log line is printed into the
middle of the bar. Anywhere else (a log file, CI, ``| tee``, pytest's capture) it stays quiet while
the phase runs and prints one line when it ends: ``build: read+regrid: 7/7 tasks in 4.2 s`` (none
when it ends with an error: the error is the line to read).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time


def interactive() -> bool:
    """True when stdout and stderr are both terminals (where a redrawn bar is readable)."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Count ``total`` steps of one phase named ``desc``; a context manager (``close`` on exit).

    ``enabled=False`` prints nothing at all.
    """

    def __init__(self, total: int, desc: str, unit: str = "task", enabled: bool = True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = 0
        self._t0 = time.perf_counter()
        self._bar = None
        self._redirect = contextlib.ExitStack()
        if enabled and interactive():
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=True, file=sys.stderr)
            self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger()], tqdm_class=tqdm))

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self, failed: bool = False) -> None:
        """End the phase: close the bar, or print the phase's line (not when it ``failed``: the
        error that stopped it is the line to read)."""
        if self._bar is not None:
            self._bar.close()
            self._redirect.close()
            self._bar = None
        elif self.enabled and self.desc and not failed:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s in {time.perf_counter() - self._t0:.1f} s",
                  file=sys.stderr, flush=True)
            self.enabled = False  # closing twice prints once

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)
