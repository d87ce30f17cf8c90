"""bench/fetch_ab.py: the local vs HTTP measurement runs end to end and reports what it served."""

from pathlib import Path

from bench.fetch_ab import format_table, run

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset.yaml"


def test_run_measures_local_and_http_and_counts_the_requests(tiny_cube):
    result = run(str(tiny_cube), "argo_real", delay_s=0.0, workers=(0,), prefetch=(None, 0), split="all",
                 dataset_config=str(CONFIGS))
    rows = {(r["source"], r["prefetch_bytes"]): r for r in result["rows"]}
    assert set(rows) == {("local", None), ("local", 0), ("http", None), ("http", 0)}
    assert len({r["samples"] for r in rows.values()}) == 1 and rows["local", None]["samples"] > 0
    http = rows["http", None]
    assert http["requests"] >= http["requests_fetched"] > 0  # chunk reads, plus the static masks read through zarr
    assert http["requests_per_sample"] == round(http["requests"] / http["samples"], 3)
    assert set(result["ratios"]) == {"workers=0 prefetch=None decode_threads=None raw_cache=None",
                                     "workers=0 prefetch=0 decode_threads=None raw_cache=None"}
    assert "| http | 0 |" in format_table(result)
