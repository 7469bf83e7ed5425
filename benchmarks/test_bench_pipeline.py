"""End to end: atlas_fast against the plain-Python way, in the same run.

    python -m pytest benchmarks/test_bench_pipeline.py --benchmark-only
"""
from __future__ import annotations

import os

import pytest

from atlas_fast import process_mbox
from conftest import NOTES, PeakRSS, bench_mbox, mbox_slice, record_rate
from plain_python import process_plain_python

WORKERS = 2


def _fresh_db(tmp_path, counter=[0]):
    counter[0] += 1
    db = tmp_path / f"run-{counter[0]}.sqlite"
    return db


@pytest.mark.benchmark(group="end-to-end")
def test_atlas_fast_end_to_end(benchmark, mbox_50k, tmp_path):
    def setup():
        return (mbox_50k, _fresh_db(tmp_path)), {"workers": WORKERS, "cache": False}

    summary = benchmark.pedantic(process_mbox, setup=setup, rounds=3, iterations=1)
    assert summary.messages == 50_000
    record_rate(benchmark, "atlas_fast end to end", 50_000)


@pytest.mark.benchmark(group="end-to-end")
def test_plain_python_end_to_end(benchmark, mbox_50k, tmp_path):
    small = mbox_slice(mbox_50k, 5_000)

    def setup():
        return (small, _fresh_db(tmp_path)), {}

    n = benchmark.pedantic(process_plain_python, setup=setup, rounds=1, iterations=1)
    assert n == 5_000
    record_rate(benchmark, "plain Python end to end", 5_000)


@pytest.mark.benchmark(group="memory")
@pytest.mark.parametrize("gigabytes", [1])
def test_peak_rss_on_a_large_mbox(benchmark, tmp_path, gigabytes):
    # ~5.7 KB per message in the generated corpus.
    n = int(gigabytes * 1e9 / 5_684)
    path = bench_mbox(n)

    def run():
        # Default settings, with a fresh persistent cache: what a user gets.
        with PeakRSS() as rss:
            summary = process_mbox(path, _fresh_db(tmp_path), workers=WORKERS,
                                   cache=str(tmp_path / "cache"))
        return summary, rss.peak, rss.peak_pss

    summary, peak, peak_pss = benchmark.pedantic(run, rounds=1, iterations=1)
    assert summary.messages == n
    benchmark.extra_info["peak_rss_mb"] = round(peak / 2**20)
    benchmark.extra_info["peak_pss_mb"] = round(peak_pss / 2**20)
    NOTES.append(
        f"{os.path.getsize(path) / 1e9:.2f} GB mbox, all processes: peak summed RSS "
        f"{peak / 2**20:.0f} MB, peak summed PSS {peak_pss / 2**20:.0f} MB"
    )
    record_rate(benchmark, f"atlas_fast {gigabytes} GB mbox", n)
