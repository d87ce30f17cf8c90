"""The reader's I/O layer (issue 13 item 3, issue 15): sharded cubes through the direct decode,
batched and prefetched fetches, parallel decode, the compressed-bytes cache, retries and faults.

Remote reads go through ``bench.serve.LoopbackServer`` (stdlib HTTP on 127.0.0.1 with injected
latency and failures); the expectation is always the same cube read from local disk, or the
zarr v3 sharding spec read by hand."""

from __future__ import annotations

import pickle
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from torch.utils.data import DataLoader

from bench.serve import LoopbackServer
from _cubes import assert_direct_decode_equals_zarr
from conftest import tiny_cube_config
from cube.build import build
from loaders import CubeStream, load_dataset_config
from loaders.fetch import ByteCache, FetchError, Prefetcher, fetch_batch, is_transient, retry_call
from loaders.reader import ChunkError, CubeReader
from loaders.stream import SampleError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"
PRESETS = list(yaml.safe_load(CONFIGS.read_text())["presets"])


@pytest.fixture(scope="module")
def sharded_cube(tiny_demo, tmp_path_factory) -> Path:
    """The tiny cube again, sharded (2 x 2 chunks per shard)."""
    cfg = tiny_cube_config(tiny_demo, tmp_path_factory.mktemp("sharded") / "cube.zarr",
                           chunks={"days": 4, "shard_tiles": 2})
    build(cfg, progress=False)
    return Path(cfg.output)


def epoch(stream) -> list[dict]:
    return list(stream)


def assert_same_samples(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for s, t in zip(a, b):
        assert s.keys() == t.keys()
        assert s["info"] == t["info"]
        for k in s:
            if k != "info":
                assert torch.equal(s[k], t[k]), k


def shard_index(path: Path, per_shard: int) -> np.ndarray:
    """A shard's index read by hand (zarr v3 sharding spec: at the end, uint64 offset/nbytes per
    inner chunk, then a 4-byte crc32c)."""
    raw = path.read_bytes()[-(per_shard * 16 + 4):-4]
    return np.frombuffer(raw, "<u8").reshape(-1, 2)


# -- sharded cubes ------------------------------------------------------------------------------

def test_sharded_cube_uses_the_direct_decode_and_equals_zarr_chunk_by_chunk(sharded_cube, tmp_path):
    """Every chunk, edge chunks, empty inner chunks (index entry 2**64-1) and a missing shard
    (deleted here: zarr reads it as the fill value) included."""
    cube = tmp_path / "cube.zarr"
    shutil.copytree(sharded_cube, cube)
    (cube / "profiles" / "count" / "c" / "1" / "0" / "0" / "1").unlink()
    reader = CubeReader(str(cube))
    paths = ("profiles/count", "profiles/sum", "profiles/n_obs", "glorys/thetao", "ostia/analysed_sst",
             "static/ocean_mask")
    empty_inner = missing_shard = 0
    for path in paths:
        arr = reader.array(path)
        assert arr.shards is not None, path
        assert_direct_decode_equals_zarr(reader, path)
        for (p, shard), index in reader._io.shard_index.items():
            if p == path:
                missing_shard += index is None
                empty_inner += 0 if index is None else int((index == 2**64 - 1).all(axis=-1).sum())
    assert missing_shard and empty_inner  # both kinds of "never written" were read as fill values


@pytest.mark.parametrize("preset", PRESETS)
def test_sharded_samples_equal_unsharded_samples(tiny_cube, sharded_cube, preset):
    cfg = load_dataset_config(CONFIGS, preset)
    plain = epoch(CubeStream(str(tiny_cube), cfg, split="all"))
    sharded = CubeStream(str(sharded_cube), cfg, split="all")
    assert_same_samples(plain, epoch(sharded))
    assert sharded.reader.requests > 0  # read by the direct path, not zarr's


def test_damaged_inner_chunk_names_the_shard_and_the_inner_chunk(sharded_cube, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(sharded_cube, cube)
    shard = cube / "ostia" / "analysed_sst" / "c" / "1" / "0" / "0"
    index = shard_index(shard, 4)
    k = int(np.flatnonzero(index[:, 1] != 2**64 - 1)[0])      # the first inner chunk written
    offset, nbytes = (int(v) for v in index[k])
    data = bytearray(shard.read_bytes())
    mid = offset + nbytes // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    shard.write_bytes(bytes(data))
    inner = (1,) + tuple(int(v) for v in np.unravel_index(k, (2, 2)))
    reader = CubeReader(str(cube))
    rows, cols = slice(inner[1] * 16, inner[1] * 16 + 16), slice(inner[2] * 16, inner[2] * 16 + 16)
    with pytest.raises(ChunkError) as info:
        reader.read("ostia/analysed_sst", slice(4, 5), rows, cols)
    assert str(info.value).startswith(f"ostia/analysed_sst: chunk c/1/0/0 (inner chunk {inner}): damaged: "
                                      "its crc32c checksum does not match")


def test_damaged_shard_index_names_the_shard(sharded_cube, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(sharded_cube, cube)
    shard = cube / "ostia" / "analysed_sst" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ChunkError, match=r"^ostia/analysed_sst: shard c/1/0/0: index: damaged: its crc32c"):
        CubeReader(str(cube)).read("ostia/analysed_sst", slice(4, 5), slice(0, 16), slice(0, 16))


# -- prefetch, parallel decode, pickling --------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_prefetch_and_parallel_decode_do_not_change_samples(tiny_cube, preset):
    cfg = load_dataset_config(CONFIGS, preset)
    plain = epoch(CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=0, decode_threads=1))
    fast = CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=64 * 2**20, decode_threads=3)
    assert_same_samples(plain, epoch(fast))
    prefetcher, deadline = fast.reader._io.prefetcher(), time.time() + 5
    while not prefetcher.batches and time.time() < deadline:  # the thread runs on its own schedule
        time.sleep(0.01)
    assert prefetcher.batches > 0                               # the prefetch thread did fetch ahead


def test_chunks_decoded_ahead_give_the_same_samples_and_stay_within_their_bound(tiny_cube):
    """The prefetch thread hands the next block's chunks to the decode pool; a consumer slower than
    the decode (a training step) then finds them decoded. Pending results stay under half the
    decoded cache, and none outlives the block it was decoded for."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    plain = epoch(CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=0, decode_threads=1))
    cache = 2**20
    stream = CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=64 * 2**20, decode_threads=2,
                        cache_bytes=cache)
    slow, pending = [], []
    for sample in stream:
        slow.append(sample)
        time.sleep(0.02)  # the training step
        io = stream.reader._io
        pending.append(sum(size for _, size in io.ahead.values()))
    assert_same_samples(plain, slow)
    assert stream.reader.chunks_decoded_ahead > 0
    assert max(pending) <= cache // 2
    assert len(stream.reader._io.ahead) <= len(stream._block_chunks(stream.shard_indices(0), range(cfg.block_size)))


@pytest.mark.parametrize("raw_cache_bytes", [0, 1000])
def test_a_compressed_cache_smaller_than_a_chunk_still_gives_the_right_samples(tiny_cube, raw_cache_bytes):
    """Bytes evicted as soon as they arrive are fetched again, never read as a chunk never written."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    plain = epoch(CubeStream(str(tiny_cube), cfg, split="all"))
    assert_same_samples(plain, epoch(CubeStream(str(tiny_cube), cfg, split="all", raw_cache_bytes=raw_cache_bytes)))


def test_reader_pickles_with_url_and_settings_only_after_threads_started(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    stream = CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=2**20, decode_threads=2)
    epoch(stream)
    clone = pickle.loads(pickle.dumps(stream.reader))
    assert clone.url == stream.reader.url and clone.prefetch_bytes == 2**20 and clone.decode_threads == 2
    assert "_io_state" not in clone.__dict__ and not clone._cache


class FakeOwner:
    """What a Prefetcher needs from its reader: 100-byte chunks, a fetch that takes 10 ms."""

    def __init__(self):
        self.held, self.peak, self.lock = {}, 0, threading.Lock()

    def fetch_ahead(self, keys):
        with self.lock:
            self.peak = max(self.peak, self.held_bytes() + 100 * len(keys))
        time.sleep(0.01)
        with self.lock:
            self.held.update(dict.fromkeys(keys, 100))

    def held_bytes(self):
        return sum(self.held.values())

    def estimate(self, key):
        return 100


def test_prefetch_keeps_in_flight_plus_held_bytes_within_its_bound():
    """The thread never has more than the bound fetched ahead and undecoded plus in flight, and
    goes on once the consumer decodes."""
    owner = FakeOwner()
    pre = Prefetcher(owner, max_bytes=350)
    pre.submit(list(range(10)))
    deadline = time.time() + 5
    while len(owner.held) < 3 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(owner.held) == 3                              # 3 x 100 fit under 350, a 4th does not
    with owner.lock:
        for k in list(owner.held)[:2]:
            owner.held[k] = 0                                 # decoded
    pre.wake()
    while len(owner.held) < 5 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(owner.held) == 5 and owner.peak <= 350


def test_a_dropped_reader_is_collected_and_its_prefetch_thread_ends(tiny_cube):
    import gc
    import weakref

    cfg = load_dataset_config(CONFIGS, "argo_real")
    stream = CubeStream(str(tiny_cube), cfg, split="all", prefetch_bytes=2**20)
    epoch(stream)
    prefetcher = stream.reader._io.prefetcher()
    assert prefetcher.alive
    gone = weakref.ref(stream.reader)
    del stream
    gc.collect()
    assert gone() is None                                     # caches freed with the reader
    deadline = time.time() + 5
    while prefetcher.alive and time.time() < deadline:
        time.sleep(0.05)
    assert not prefetcher.alive


def test_byte_cache_is_bounded_and_reports_evictions():
    dropped = []
    cache = ByteCache(10, on_evict=dropped.append)
    for k in range(4):
        cache.put(k, b"abcd")
    assert dropped == [0, 1] and cache.nbytes == 8 and 3 in cache and 0 not in cache
    cache.put("missing", None)
    assert cache.get("missing") is None and cache.get("other", default="x") == "x"


# -- fetch_batch: concurrency through fsspec's batch calls, retries -----------------------------

class FlakyFS:
    """A stand-in filesystem: ``fail`` maps a path to the errors its next reads raise."""

    def __init__(self, files: dict, fail: dict | None = None):
        self.files, self.fail, self.calls = files, fail or {}, []

    def _one(self, path, start=None, stop=None):
        errors = self.fail.get(path)
        if errors:
            return errors.pop(0)
        if path not in self.files:
            return FileNotFoundError(path)
        return self.files[path][start:stop]

    def cat(self, paths, on_error="return"):
        self.calls.append(("cat", list(paths)))
        return {p: self._one(p) for p in paths}

    def cat_ranges(self, paths, starts, stops, on_error="return"):
        self.calls.append(("cat_ranges", list(paths)))
        return [self._one(p, a, b) for p, a, b in zip(paths, starts, stops)]


class Status(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


def test_fetch_batch_sends_one_call_per_kind_and_retries_only_the_transient_failures():
    fs = FlakyFS({"a": b"AAAA", "b": b"BBBB", "s": b"0123456789"},
                 {"a": [Status(503)], "s": [ConnectionResetError("reset")]})
    got = fetch_batch(fs, [("a", None, None), ("b", None, None), ("gone", None, None), ("s", 2, 5), ("s", -3, None)],
                      retries=2, backoff_s=0)
    assert got == [b"AAAA", b"BBBB", None, b"234", b"789"]
    assert fs.calls == [("cat", ["a", "b", "gone"]), ("cat_ranges", ["s", "s"]), ("cat", ["a"]), ("cat_ranges", ["s"])]


def test_retry_call_retries_transient_failures_only():
    failures = [Status(503), ConnectionResetError("reset")]

    def flaky():
        if failures:
            raise failures.pop(0)
        return "metadata"

    assert retry_call(flaky, "store://zarr.json", retries=2, backoff_s=0) == "metadata"
    with pytest.raises(FetchError, match=r"^store://zarr.json: cannot be read after 3 attempts .*HTTP 500"):
        retry_call(lambda: (_ for _ in ()).throw(Status(500)), "store://zarr.json", retries=2, backoff_s=0)
    calls = []

    def denied():
        calls.append(1)
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        retry_call(denied, "store://zarr.json", retries=5, backoff_s=0)
    assert len(calls) == 1  # not retried


def test_fetch_batch_gives_up_after_its_retries_naming_the_url():
    fs = FlakyFS({"a": b"A"}, {"a": [Status(500)] * 10})
    with pytest.raises(FetchError, match=r"^store://a: cannot be read after 3 attempts .*HTTP 500"):
        fetch_batch(fs, [("a", None, None)], retries=2, backoff_s=0, url_of=lambda p: f"store://{p}")
    fs = FlakyFS({"a": b"A"}, {"a": [PermissionError("denied")]})
    with pytest.raises(FetchError, match="denied"):
        fetch_batch(fs, [("a", None, None)], retries=5, backoff_s=0)
    assert len(fs.calls) == 1  # not retried


def test_transient_errors():
    import aiohttp

    assert is_transient(Status(500)) and is_transient(Status(503)) and is_transient(Status(429))
    assert not is_transient(Status(404)) and not is_transient(Status(403))
    assert is_transient(ConnectionRefusedError()) and is_transient(TimeoutError())
    assert is_transient(aiohttp.ServerDisconnectedError())
    assert not is_transient(FileNotFoundError()) and not is_transient(ValueError())


# -- over HTTP ----------------------------------------------------------------------------------

def served(cube: Path, **faults) -> LoopbackServer:
    return LoopbackServer(cube.parent, **faults).start()


def test_http_epoch_equals_local_and_never_refetches_a_cached_chunk(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    local = CubeStream(str(tiny_cube), cfg, split="all")
    server = served(tiny_cube, delay_s=0.002)
    try:
        remote = CubeStream(f"{server.url}/{tiny_cube.name}", cfg, split="all")
        # statics and the profile table's index: read once per process, not per block
        remote.reader.ocean_mask, remote.reader.bottom_level, remote.reader.profile_index
        server.reset_stats()
        samples = epoch(remote)
        requests = server.stats()["requests"]
    finally:
        server.stop()
    assert_same_samples(epoch(local), samples)
    b = cfg.block_size
    order = remote.shard_indices(0)
    per_block = [len({k for i in order[s:s + b] for k in remote.window_chunks(int(i))}) for s in range(0, len(order), b)]
    # Requests per sample <= distinct chunks per block / block size, summed over the epoch's blocks.
    assert 0 < requests <= sum(per_block)
    assert requests == remote.reader.requests


def test_a_stream_that_goes_away_leaves_the_shared_http_filesystem_usable(tiny_cube):
    """fsspec shares one HTTP filesystem (and its session) between readers: dropping one reader
    must not close it for the next."""
    import gc

    cfg = load_dataset_config(CONFIGS, "ostia_tracks")
    server = served(tiny_cube)
    try:
        url = f"{server.url}/{tiny_cube.name}"
        first = CubeStream(url, cfg, split="all")
        next(iter(first))
        del first
        gc.collect()
        second = CubeStream(url, cfg, split="all")
        assert len(epoch(second)) == len(second)
    finally:
        server.stop()


def test_random_order_fetches_each_chunk_once_from_the_compressed_cache(tiny_cube):
    """Blocks of one window in shuffled order with a decoded cache of one chunk: every read
    decodes again, but from the compressed bytes kept, so nothing is fetched twice."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    import dataclasses

    cfg = dataclasses.replace(cfg, block_size=1)
    server = served(tiny_cube)
    try:
        stream = CubeStream(f"{server.url}/{tiny_cube.name}", cfg, split="all", cache_bytes=1)
        stream.reader.ocean_mask, stream.reader.bottom_level, stream.reader.profile_index  # once per process
        server.reset_stats()
        epoch(stream)
        requests = server.stats()["requests"]
    finally:
        server.stop()
    distinct = {k for i in range(len(stream)) for k in stream.window_chunks(i)}
    assert requests <= len(distinct) < stream.reader.chunks_decoded


def test_a_server_failing_one_request_in_ten_gives_the_local_samples(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    server = served(tiny_cube)
    try:
        remote = CubeStream(f"{server.url}/{tiny_cube.name}", cfg, split="all", prefetch_bytes=0)
        server.set_faults(fail_every=10)
        samples = epoch(remote)
        served_requests = server.stats()["requests"]
    finally:
        server.stop()
    assert_same_samples(epoch(CubeStream(str(tiny_cube), cfg, split="all")), samples)
    assert served_requests >= 10  # the failures did happen


def test_a_store_that_is_down_gives_a_sample_error_naming_the_url(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    server = served(tiny_cube)
    url = f"{server.url}/{tiny_cube.name}"
    remote = CubeStream(url, cfg, split="all")
    server.stop()
    t0 = time.monotonic()
    with pytest.raises(SampleError) as info:
        next(iter(remote))
    assert time.monotonic() - t0 < 20
    message = str(info.value)
    assert message.startswith(f"{url}: window patch ") and f"{url}/" in message.split(": window", 1)[1]
    assert "cannot be read after" in message


def test_a_stalled_server_does_not_block_the_dataloader_past_its_timeout(tiny_cube):
    cfg = load_dataset_config(CONFIGS, "argo_real")
    server = served(tiny_cube)
    try:
        remote = CubeStream(f"{server.url}/{tiny_cube.name}", cfg, split="all")
        server.set_faults(stall_s=60)
        loader = DataLoader(remote, batch_size=2, num_workers=1, timeout=2)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="timed out"):
            next(iter(loader))
        assert time.monotonic() - t0 < 2 + 15
    finally:
        server.stop()


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_two_workers_over_http_each_with_their_own_prefetch_give_the_local_samples(tiny_cube, context):
    """Each worker opens the store, its filesystem and its prefetch thread itself (nothing
    thread- or loop-related is pickled or inherited), and the epoch is the local one."""
    cfg = load_dataset_config(CONFIGS, "argo_real")
    server = served(tiny_cube, delay_s=0.002)
    try:
        remote = CubeStream(f"{server.url}/{tiny_cube.name}", cfg, split="all", prefetch_bytes=2**20)
        epoch(remote)  # the main process's threads and sessions exist before the workers start
        remote.set_epoch(0)
        got = list(DataLoader(remote, batch_size=None, num_workers=2, multiprocessing_context=context))
    finally:
        server.stop()
    local = CubeStream(str(tiny_cube), cfg, split="all")
    expected = {s["info"]["index"]: s for s in epoch(local)}
    assert sorted(s["info"]["index"] for s in got) == sorted(expected)
    for s in got:
        for k in s:
            if k != "info":
                assert torch.equal(s[k], expected[s["info"]["index"]][k]), k


def test_gridded_chunks_are_cached_north_up_and_read_with_zarr_s_values(tiny_cube):
    """The decoded cache keeps gridded chunks with their rows north-up: a north-up read of one
    chunk's box (``copy=False``, what the stream reads) is a C-contiguous array, and both
    orientations hold zarr's values."""
    reader = CubeReader(str(tiny_cube))
    root = zarr.open_group(str(tiny_cube), mode="r")
    for path in ("glorys/thetao", "ostia/analysed_sst"):
        arr = root[path]
        lead = slice(arr.chunks[0], 2 * arr.chunks[0])   # the second time chunk
        rows, cols = slice(0, arr.chunks[-2]), slice(arr.chunks[-1], 2 * arr.chunks[-1])
        expected = np.asarray(arr[(lead,) + (slice(None),) * (arr.ndim - 3) + (rows, cols)])
        north_up = reader.read(path, lead, rows, cols, north_up=True, copy=False)
        assert north_up.flags.c_contiguous, path
        np.testing.assert_array_equal(north_up, expected[..., ::-1, :])
        np.testing.assert_array_equal(reader.read(path, lead, rows, cols, copy=False), expected)
        np.testing.assert_array_equal(reader.read(path, lead, rows, cols), expected)
