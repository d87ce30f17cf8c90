"""A loopback HTTP server for a folder (a cube), with injected latency and faults.

What ``depthcube bench`` uses to measure reading a cube from object storage on one machine, and
what the tests use to show retries and timeouts: the stdlib ``ThreadingHTTPServer`` on
127.0.0.1 (never any other address), bounded (daemon threads, a request timeout, stopped on
exit), serving ``GET`` and ``HEAD`` with single byte ranges (``Range: bytes=a-b``, what fsspec's
HTTP filesystem and zarr's sharded reads send), and counting requests and bytes served.

    with LoopbackServer("data/cube.zarr", delay_s=0.02) as server:
        stream = CubeStream(server.url, ...)
        ...
        server.stats()  # {'requests': ..., 'bytes': ...}

Faults: ``delay_s`` sleeps before each response (the round trip of a far store);
``fail_every=n`` answers every n-th GET with HTTP 500 (a flaky store); ``stall_s`` makes every
GET wait that long first (a hung store); :meth:`LoopbackServer.stop` then a request = a store
that is down (connection refused). ``require_headers`` answers 403 to a request without those
headers (a store that needs credentials: what ``storage_options={"headers": ...}`` must bring).
"""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
import time
from functools import partial
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores do

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        server = self.server
        n = server.count_request()
        if any(self.headers.get(k) != v for k, v in server.require_headers.items()):
            self._reply(403, b"forbidden: a required header is missing\n")
            return
        if server.stall_s:
            time.sleep(server.stall_s)
        if server.delay_s:
            time.sleep(server.delay_s)
        if body and server.fail_every and n % server.fail_every == 0:
            self._reply(500, b"injected failure\n")
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self._reply(404, b"not found\n")
            return
        size = path.stat().st_size
        start, stop = 0, size
        status = 200
        match = _RANGE.match(self.headers.get("Range", "").strip())
        if match:
            a, b = match.groups()
            if a == "":  # a suffix: the last b bytes
                start, stop = max(size - int(b), 0), size
            else:
                start, stop = int(a), size if b == "" else min(int(b) + 1, size)
            if start >= size or start >= stop:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(stop - start)
            self.wfile.write(data)
            server.count_bytes(len(data))

    def _reply(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, handler, delay_s: float, fail_every: int, stall_s: float,
                 require_headers: dict[str, str] | None = None):
        super().__init__(address, handler)
        self.delay_s, self.fail_every, self.stall_s = delay_s, fail_every, stall_s
        self.require_headers = dict(require_headers or {})
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-response (a DataLoader worker shut down) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def count_request(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n


class LoopbackServer:
    """Serve ``folder`` at ``self.url`` (``http://127.0.0.1:<port>``) in a background thread.

    ``delay_s``: seconds added to every request (default 0); ``fail_every``: every n-th GET is
    an HTTP 500 (0 = never); ``stall_s``: seconds every GET waits before answering;
    ``require_headers``: headers every request must carry (403 otherwise). Use as a context
    manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, folder: str | os.PathLike, delay_s: float = 0.0, fail_every: int = 0, stall_s: float = 0.0,
                 require_headers: dict[str, str] | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: not a folder to serve")
        self.delay_s, self.fail_every, self.stall_s = float(delay_s), int(fail_every), float(stall_s)
        self.require_headers = dict(require_headers or {})
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> "LoopbackServer":
        handler = partial(_Handler, directory=str(self.folder))
        self._server = _Server(("127.0.0.1", 0), handler, self.delay_s, self.fail_every, self.stall_s,
                               self.require_headers)
        self._server.timeout = 30
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="depthcube-loopback-http", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop serving (later requests are refused: a store that is down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def stats(self) -> dict:
        """Requests answered and body bytes sent so far."""
        s = self._server
        return {"requests": s.requests if s else 0, "bytes": s.bytes if s else 0}

    def reset_stats(self) -> None:
        if self._server is not None:
            with self._server._lock:
                self._server.requests = self._server.bytes = 0

    def set_faults(self, delay_s: float | None = None, fail_every: int | None = None, stall_s: float | None = None) -> None:
        """Change the injected latency or faults of the running server."""
        s = self._server
        if delay_s is not None:
            self.delay_s = s.delay_s = float(delay_s)
        if fail_every is not None:
            self.fail_every = s.fail_every = int(fail_every)
        if stall_s is not None:
            self.stall_s = s.stall_s = float(stall_s)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
