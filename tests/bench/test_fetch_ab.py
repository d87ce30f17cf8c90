"""bench.remote.compare and its command line bench/fetch_ab.py: CubeStream options local vs HTTP,
rounds interleaved with medians, the server's counts, the table."""

import inspect
from pathlib import Path

import pytest

import bench.remote as remote
from bench.fetch_ab import main
from bench.remote import compare, format_table, measure_configs, median_entry

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"


def test_compare_measures_local_and_http_and_counts_the_requests(tiny_cube):
    result = compare(str(tiny_cube), "argo_real", latency_ms=0.0, workers=(0,), prefetch=(None, 0),
                     dataset_config=str(CONFIGS), echo=lambda line: None)
    keys = {(name.split("_", 1)[0], e["options"]["prefetch_bytes"]) for name, e in result["loaders"].items()}
    assert keys == {("local", None), ("local", 0), ("remote", None), ("remote", 0)}
    entries = result["loaders"].values()
    assert len({e["samples"] for e in entries}) == 1 and next(iter(entries))["samples"] > 0  # the whole epoch
    for name, e in result["loaders"].items():
        assert e["cpu_ms_per_sample"] > 0 and e["chunks_decoded"] > 0, name
        if name.startswith("remote_"):
            # the server saw the reader's chunk reads, plus the metadata and the static masks read through zarr
            assert e["requests"] >= e["requests_fetched"] > 0, name
            assert e["requests_per_sample"] == e["requests"] / e["samples"], name
    assert set(result["ratios"]) == {f"workers=0 prefetch_bytes={p} decode_threads=None raw_cache_bytes=None cache_bytes=None"
                                     f"_remote_vs_local" for p in (None, 0)}
    table = format_table(result)
    assert "| remote | 0 | 0 |" in table and "| local | 0 |  |" in table


def test_the_command_line_prints_one_row_per_source_and_configuration(tiny_cube, capsys, monkeypatch):
    monkeypatch.chdir(CONFIGS.parents[1])
    main(["--cube", str(tiny_cube), "--latency-ms", "0", "--workers", "0", "--prefetch", "0", "--raw-cache", "0",
          "none", "--cache", "4194304", "--order", "random", "--max-samples", "4", "--batch-size", "2", "--sources", "remote"])
    out = capsys.readouterr().out.splitlines()
    assert '"order": "random"' in out[0] and '"block_size": 1' in out[0]
    rows = [line for line in out if line.startswith("| remote |")]
    assert [row.split(" | ")[4] for row in rows] == ["0", ""]  # raw_cache_bytes 0, then the default
    assert all(row.split(" | ")[5] == "4194304" for row in rows)  # cache_bytes
    assert all(int(row.split(" | ")[6]) == 4 for row in rows)  # samples: the first 4 windows, 2 batches


class FakeServer:
    """Counts like LoopbackServer: ``stats`` are the requests since ``reset_stats``."""
    def __init__(self):
        self.requests = 0

    def reset_stats(self):
        self.requests = 0

    def stats(self):
        return {"requests": self.requests, "bytes": 10 * self.requests}


def test_measure_configs_interleaves_the_rounds_and_counts_remote_entries_only():
    server, calls = FakeServer(), []

    def config(name, rates):
        def run(url):
            calls.append((url, name))
            server.requests += 3
            return {"samples": 2, "samples_per_s": rates.pop(0)}
        return run

    entries = measure_configs(server, {"local": "L", "remote": "R"},
                              {"a": config("a", [1.0, 5.0, 3.0, 9.0, 7.0, 8.0]), "b": config("b", [2.0] * 6)},
                              rounds=3, echo=lambda line: None)
    assert calls == [("L", "a"), ("R", "a"), ("L", "b"), ("R", "b")] * 3  # each configuration's pair back to back
    assert entries["local_a"]["samples_per_s_rounds"] == [1.0, 3.0, 7.0] and entries["local_a"]["samples_per_s"] == 3.0
    assert entries["remote_a"]["samples_per_s_rounds"] == [5.0, 9.0, 8.0] and entries["remote_a"]["samples_per_s"] == 8.0
    assert "requests" not in entries["local_b"]
    assert entries["remote_b"]["requests"] == 3 and entries["remote_b"]["requests_per_sample"] == 1.5
    assert entries["remote_b"]["bytes_per_sample"] == 15


def test_median_entry():
    rounds = [{"samples_per_s": 3.0, "cpu_ms_per_sample": 5.0, "r": 1}, {"samples_per_s": 1.0, "cpu_ms_per_sample": 7.0, "r": 2},
              {"samples_per_s": 2.0, "cpu_ms_per_sample": 6.0, "r": 3}]
    m = median_entry(rounds)
    assert (m["samples_per_s"], m["cpu_ms_per_sample"], m["r"]) == (2.0, 6.0, 3)
    assert median_entry(rounds[:1]) is rounds[0]
    failed = [rounds[0], {"error": "boom"}]
    assert median_entry(failed) == {"error": "boom"}


def test_stream_options_leave_out_none_and_what_this_cubestream_lacks(monkeypatch):
    class Old:
        def __init__(self, url, cfg, split="train", *, prefetch_bytes=None):
            pass

    monkeypatch.setattr(remote, "CubeStream", Old)
    assert remote.stream_options(prefetch_bytes=0, decode_threads=2, raw_cache_bytes=None) == {"prefetch_bytes": 0}
    assert remote.stream_options(prefetch_bytes=None) == {}


def test_compare_rejects_an_unknown_order():
    with pytest.raises(ValueError, match="order: one of"):
        compare("nowhere.zarr", order="block")
    assert "order" in inspect.signature(compare).parameters


def test_distinct_chunks_per_sample_counts_each_chunk_once_per_block():
    class Stream:
        class config:
            block_size = 2
        chunks = {0: [("a", (0,)), ("b", (0,))], 1: [("a", (0,)), ("a", (1,))], 2: [("a", (1,))], 3: [("b", (0,))],
                  4: [("a", (0,))]}

        def epoch_order(self, epoch):
            return [3, 0, 1, 2, 4]

        def window_chunks(self, i):
            return self.chunks[i]

    # blocks [3, 0]: b0, a0 -> 2; [1, 2]: a0, a1 -> 2; [4]: a0 -> 1; 5 over 5 windows
    assert remote.distinct_chunks_per_sample(Stream()) == 1.0
    Stream.config.block_size = 5  # one block: a0, a1, b0
    assert remote.distinct_chunks_per_sample(Stream()) == 3 / 5
