"""The loopback HTTP server the remote-read bench and tests use: byte ranges, faults, counts."""

import urllib.error
import urllib.request

import numpy as np
import pytest
import zarr

from bench.serve import LoopbackServer


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def test_serves_files_and_single_byte_ranges(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "blob").write_bytes(bytes(range(100)))
    with LoopbackServer(tmp_path) as server:
        assert _get(f"{server.url}/a/blob") == (200, bytes(range(100)))
        assert _get(f"{server.url}/a/blob", {"Range": "bytes=10-19"}) == (206, bytes(range(10, 20)))
        assert _get(f"{server.url}/a/blob", {"Range": "bytes=95-"}) == (206, bytes(range(95, 100)))
        assert _get(f"{server.url}/a/blob", {"Range": "bytes=-3"}) == (206, bytes([97, 98, 99]))
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _get(f"{server.url}/a/missing")
        assert server.stats() == {"requests": 5, "bytes": 100 + 10 + 5 + 3}


def test_every_nth_get_fails_and_a_stopped_server_refuses(tmp_path):
    (tmp_path / "blob").write_bytes(b"x")
    server = LoopbackServer(tmp_path, fail_every=3).start()
    codes = []
    for _ in range(6):
        try:
            codes.append(_get(f"{server.url}/blob")[0])
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    assert codes == [200, 200, 500, 200, 200, 500]
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        _get(f"{url}/blob")


def test_zarr_reads_over_the_server_equal_the_local_store(tmp_path):
    local = tmp_path / "store.zarr"
    arr = zarr.create_array(local, shape=(20, 30), chunks=(8, 8), shards=(16, 16), dtype="float32")
    values = np.arange(600, dtype=np.float32).reshape(20, 30)
    arr[:] = values
    with LoopbackServer(tmp_path, delay_s=0.001) as server:
        remote = zarr.open_array(f"{server.url}/store.zarr", mode="r")
        np.testing.assert_array_equal(remote[3:17, 5:29], values[3:17, 5:29])
        assert server.stats()["requests"] > 0
