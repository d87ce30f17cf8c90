"""Batched, retried reads of stored objects and byte ranges, a bounded cache of compressed bytes,
and the background prefetch thread: the I/O under :class:`loaders.reader.CubeReader`.

Concurrency. :func:`fetch_batch` hands a whole list of objects to one ``fs.cat([...],
on_error="return")`` and a list of byte ranges (inner chunks of shards, shard indexes) to one
``fs.cat_ranges``; fsspec's async filesystems (HTTP, S3, GCS, ...) run those requests concurrently,
so a block of windows pays about one round trip instead of one per chunk. Local files are read one
after another (no latency to hide).

Faults. fsspec's HTTP filesystem does not retry by itself (a 5xx is raised at once as
``aiohttp.ClientResponseError``), so :func:`fetch_batch` retries the requests that failed with a
transient error (:func:`is_transient`: HTTP 408/429/5xx, connection refused or reset, timeouts)
up to ``retries`` times with exponential backoff (``backoff_s``, doubling), and then raises
:class:`FetchError` naming the URL. A missing object (``FileNotFoundError``, HTTP 404) is not an
error: it is a chunk zarr never wrote (its fill value). Any other error is raised at once.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

log = logging.getLogger("depthcube.loaders")

#: HTTP statuses worth retrying (request timeout, rate limit, server errors).
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

try:  # the HTTP filesystem's errors (aiohttp comes with fsspec's http extra)
    import aiohttp

    _TRANSIENT_TYPES: tuple = (TimeoutError, ConnectionError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
except ImportError:  # pragma: no cover - no HTTP support installed
    _TRANSIENT_TYPES = (TimeoutError, ConnectionError)


class FetchError(OSError):
    """A stored object could not be read (after retries, for a transient error); names its URL."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed read is worth retrying: HTTP 408/429/5xx, a refused, reset or dropped
    connection, a timeout. A missing object or a permission error is not."""
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(status, int):
        return status in TRANSIENT_STATUS
    return isinstance(exc, _TRANSIENT_TYPES)


#: One request: (path on the filesystem, start, stop); start = stop = None reads the whole object,
#: a negative start with stop None reads the last -start bytes.
Request = tuple[str, int | None, int | None]


def fetch_batch(fs, requests: Sequence[Request], retries: int = 4, backoff_s: float = 0.1,
                url_of: Callable[[str], str] = str) -> list[bytes | None]:
    """The bytes of every request, in order (None for an object that does not exist).

    Whole objects go to one ``fs.cat`` and ranges to one ``fs.cat_ranges`` per attempt; requests
    that failed transiently are sent again after ``backoff_s * 2**attempt`` seconds, at most
    ``retries`` times; then :class:`FetchError` names the URL (``url_of(path)``) and the last error.
    """
    out: list = [None] * len(requests)
    pending = list(range(len(requests)))
    last: dict[int, BaseException] = {}
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        results = _send(fs, [requests[i] for i in pending])
        retry = []
        for i, result in zip(pending, results):
            if not isinstance(result, BaseException):
                out[i] = bytes(result)
            elif isinstance(result, FileNotFoundError):
                out[i] = None
            elif is_transient(result):
                retry.append(i)
                last[i] = result
            else:
                raise FetchError(f"{url_of(requests[i][0])}: cannot be read: {type(result).__name__}: {result}") from result
        pending = retry
        if not pending:
            return out
    i = pending[0]
    raise gave_up(url_of(requests[i][0]), retries + 1, last[i]) from last[i]


def retry_call(read: Callable, url: str, retries: int = 4, backoff_s: float = 0.1):
    """``read()``, sent again after ``backoff_s * 2**attempt`` seconds when it fails transiently,
    at most ``retries`` times (as :func:`fetch_batch` retries its requests); then :func:`gave_up`."""
    for attempt in range(retries + 1):
        try:
            return read()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == retries:
                raise gave_up(url, attempt + 1, e) from e
            time.sleep(backoff_s * 2 ** attempt)


def gave_up(url: str, attempts: int, error: BaseException) -> FetchError:
    """The error once every attempt at ``url`` failed transiently."""
    return FetchError(f"{url}: cannot be read after {attempts} attempts (the store is down or failing): "
                      f"{type(error).__name__}: {error}")


def _send(fs, requests: Sequence[Request]) -> list:
    """One attempt: bytes or the exception, per request."""
    whole = [k for k, (_, a, b) in enumerate(requests) if a is None and b is None]
    ranged = [k for k, (_, a, b) in enumerate(requests) if not (a is None and b is None)]
    results: list = [None] * len(requests)
    if whole:
        paths = [requests[k][0] for k in whole]
        got = _cat(fs, paths)
        for k, p in zip(whole, paths):
            results[k] = got[p] if p in got else KeyError(f"{p}: not in the filesystem's answer")
    if ranged:
        got = _cat_ranges(fs, [requests[k][0] for k in ranged], [requests[k][1] for k in ranged],
                          [requests[k][2] for k in ranged])
        for k, value in zip(ranged, got):
            results[k] = value
    return results


def _cat(fs, paths: list[str]) -> dict:
    try:
        got = fs.cat(list(dict.fromkeys(paths)), on_error="return")
    except Exception as e:  # a failure of the whole call (e.g. the session could not start)
        return {p: e for p in paths}
    return got if isinstance(got, dict) else {paths[0]: got}


def _cat_ranges(fs, paths: list[str], starts: list, stops: list) -> list:
    try:
        return list(fs.cat_ranges(paths, starts, stops, on_error="return"))
    except Exception as e:
        return [e] * len(paths)


class ByteCache:
    """A thread-safe LRU of stored bytes (compressed chunks) bounded by their total size.

    Values are ``bytes`` or None (an object that does not exist, counted as 0 bytes). ``on_evict``
    is called with each key dropped to stay under the bound."""

    def __init__(self, max_bytes: int, on_evict: Callable[[Hashable], None] | None = None):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key, default=KeyError):
        """The cached value (marked most recently used); ``default`` when absent (KeyError if not given)."""
        with self._lock:
            if key not in self._items:
                if default is KeyError:
                    raise KeyError(key)
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value: bytes | None) -> None:
        dropped = []
        with self._lock:
            if key in self._items:
                self._bytes -= _size(self._items.pop(key))
            self._items[key] = value
            self._bytes += _size(value)
            while self._bytes > self.max_bytes and self._items:
                old, data = self._items.popitem(last=False)
                self._bytes -= _size(data)
                dropped.append(old)
        for old in dropped:
            if self._on_evict is not None:
                self._on_evict(old)


def _size(value) -> int:
    return 0 if value is None else len(value)


class Prefetcher:
    """One background thread that fetches the chunks of the next block while the current one is
    assembled, within a byte budget.

    ``owner`` (held weakly: the thread never keeps a reader and its caches alive, and ends once
    the owner is gone) provides ``fetch_ahead(keys)`` (the batched fetch, storing what it got),
    ``held_bytes()`` (fetched ahead and not yet decoded) and ``estimate(key)`` (a chunk's expected
    compressed size). :meth:`submit` replaces any job not yet started (the consumer has moved on);
    the thread sends keys in batches whose estimated size fits under ``max_bytes - held_bytes()``
    and waits (until :meth:`wake`) when nothing fits, so in-flight plus held bytes stay within
    ``max_bytes``. Errors are not raised here: the consumer fetches what is missing itself and sees
    them there. The thread is a daemon started on first :meth:`submit` in the process that
    iterates; it never crosses a pickle (the reader drops it)."""

    def __init__(self, owner, max_bytes: int):
        self._owner = weakref.ref(owner)
        self.max_bytes = int(max_bytes)
        self._cond = threading.Condition()
        self._job: list | None = None
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.batches = 0

    def submit(self, keys: list) -> None:
        with self._cond:
            self._job, self._seq = list(keys), self._seq + 1
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="depthcube-prefetch", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Bytes were consumed (decoded or evicted): a waiting batch may fit now."""
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None:
                    if self._owner() is None:
                        return
                    self._cond.wait(timeout=0.5)
                keys, seq, self._job = self._job, self._seq, None
            while keys:
                batch = self._fitting(keys, seq)
                owner = self._owner()
                if batch is None or owner is None:  # a newer job came in, or the reader is gone
                    break
                try:
                    owner.fetch_ahead(batch)
                except Exception as e:  # the consumer refetches and reports it
                    log.debug("prefetch failed: %s: %s", type(e).__name__, e)
                    break
                finally:
                    del owner
                self.batches += 1
                keys = keys[len(batch):]

    def _fitting(self, keys: list, seq: int) -> list | None:
        """The longest prefix of ``keys`` that fits the budget now (waiting until one key fits),
        or None once a newer job replaced this one or the owner is gone."""
        with self._cond:
            while True:
                owner = self._owner()
                if self._seq != seq or owner is None:
                    return None
                room = self.max_bytes - owner.held_bytes()
                take, used = 0, 0
                for key in keys:
                    size = owner.estimate(key)
                    if used + size > room:
                        break
                    take, used = take + 1, used + size
                del owner
                if take:
                    return keys[:take]
                self._cond.wait(timeout=0.5)
