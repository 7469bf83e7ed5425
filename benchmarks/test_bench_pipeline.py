"""End to end: atlas_fast against the plain-Python way, in the same run.

    python -m pytest benchmarks/test_bench_pipeline.py --benchmark-only
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from atlas_fast import process_mbox
from conftest import NOTES, PeakRSS, attachment_mbox, bench_mbox, mbox_slice, record_rate
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
def test_atlas_fast_end_to_end_cold_cache(benchmark, mbox_50k, tmp_path):
    """The CLI's default: the persistent cache on, each round a fresh one."""
    def setup():
        db = _fresh_db(tmp_path)
        return (mbox_50k, db), {"workers": WORKERS, "cache": tmp_path / f"{db.stem}-cache"}

    summary = benchmark.pedantic(process_mbox, setup=setup, rounds=3, iterations=1)
    assert summary.messages == 50_000
    record_rate(benchmark, "atlas_fast end to end, cold cache", 50_000)


@pytest.mark.benchmark(group="end-to-end")
def test_plain_python_end_to_end(benchmark, mbox_50k, tmp_path):
    small = mbox_slice(mbox_50k, 5_000)

    def setup():
        return (small, _fresh_db(tmp_path)), {}

    n = benchmark.pedantic(process_plain_python, setup=setup, rounds=3, iterations=1)
    assert n == 5_000
    record_rate(benchmark, "plain Python end to end", 5_000)


@pytest.mark.benchmark(group="attachments")
def test_atlas_fast_attachment_heavy(benchmark, tmp_path):
    """Bytes, not messages, bound a mail export full of attachments: 1,000
    messages of about 500 KB (a 0.5 GB mbox), in MB/s."""
    mbox = attachment_mbox(1_000)

    def setup():
        return (mbox, _fresh_db(tmp_path)), {"workers": WORKERS, "cache": False}

    summary = benchmark.pedantic(process_mbox, setup=setup, rounds=3, iterations=1)
    assert summary.messages == 1_000
    record_rate(benchmark, "atlas_fast, 500 KB attachments", 1_000)
    _record_mb_per_s(benchmark, mbox, "atlas_fast")


@pytest.mark.benchmark(group="attachments")
def test_plain_python_attachment_heavy(benchmark, tmp_path):
    small = mbox_slice(attachment_mbox(1_000), 100)

    def setup():
        return (small, _fresh_db(tmp_path)), {}

    n = benchmark.pedantic(process_plain_python, setup=setup, rounds=3, iterations=1)
    assert n == 100
    record_rate(benchmark, "plain Python, 500 KB attachments", 100)
    _record_mb_per_s(benchmark, small, "plain Python")


def _record_mb_per_s(benchmark, mbox, who: str) -> None:
    rate = os.path.getsize(mbox) / 1e6 / benchmark.stats.stats.median
    benchmark.extra_info["mb_per_s"] = round(rate, 1)
    NOTES.append(f"{who}, 500 KB attachments: {rate:,.0f} MB/s")


@pytest.mark.benchmark(group="memory")
@pytest.mark.parametrize("gigabytes", [1, 4])
def test_peak_rss_on_a_large_mbox(benchmark, tmp_path, gigabytes):
    # ~5.7 KB per message in the generated corpus.
    n = int(gigabytes * 1e9 / 5_684)
    path = bench_mbox(n)

    def run():
        # What a user runs: the CLI with default settings and a fresh
        # persistent cache, in a process of its own (this test process holds
        # other benchmarks' data, which must not count).
        db = _fresh_db(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "atlas_fast.cli", "process", str(path), "--db", str(db),
             "--workers", str(WORKERS), "--cache-dir", str(tmp_path / "cache"), "-q"],
            stdout=subprocess.DEVNULL)
        with PeakRSS(pid=proc.pid) as rss:
            proc.wait()
        assert proc.returncode == 0
        conn = sqlite3.connect(db)
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        conn.close()
        return stored, rss.peak, rss.peak_pss

    stored, peak, peak_pss = benchmark.pedantic(run, rounds=1, iterations=1)
    assert stored == n
    benchmark.extra_info["peak_rss_mb"] = round(peak / 2**20)
    benchmark.extra_info["peak_pss_mb"] = round(peak_pss / 2**20)
    NOTES.append(
        f"{os.path.getsize(path) / 1e9:.2f} GB mbox, all processes: peak summed RSS "
        f"{peak / 2**20:.0f} MB, peak summed PSS {peak_pss / 2**20:.0f} MB"
    )
    record_rate(benchmark, f"atlas_fast {gigabytes} GB mbox", n)
