"""Benchmarks (public APIs only): ``depthcube bench`` (:mod:`bench.suite`, CubeStream against the
peers of :mod:`bench.peers`), and the one-off measurement scripts behind README figures
(``chunking.py``, ``presets.py``, ``regrid_methods.py``, run as ``.venv/bin/python bench/<name>.py``).
Needs the ``bench`` and ``train`` extras."""
