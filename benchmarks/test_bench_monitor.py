"""What the performance monitor costs: monitor on vs off.

    python -m pytest benchmarks/test_bench_monitor.py --benchmark-only

The stages are timed per chunk, so the monitor's cost is a few timer calls
per chunk of hundreds of messages.  ``monitor_call`` measures one timed
block; ``end-to-end`` runs the whole pipeline with the monitor on and off
(``ATLAS_MONITOR`` and :func:`atlas_fast.monitor.set_enabled`, inherited by
forked workers) and prints the throughput ratio.
"""
from __future__ import annotations

import os

import pytest

from atlas_fast import monitor
from atlas_fast.monitor import PerformanceMetrics, monitor_operation, performance_monitor
from conftest import NOTES, RATES, record_rate

CALLS = 100_000


@pytest.fixture(autouse=True)
def restore_monitor():
    yield
    monitor.set_enabled(True)
    os.environ.pop("ATLAS_MONITOR", None)
    PerformanceMetrics.get_instance().reset()


def _timed_blocks():
    for _ in range(CALLS):
        with monitor_operation("parse", "chunk"):
            pass
    PerformanceMetrics.get_instance().reset()


@performance_monitor("model.score")
def _decorated():
    return None


def _decorated_calls():
    for _ in range(CALLS):
        _decorated()
    PerformanceMetrics.get_instance().reset()


@pytest.mark.benchmark(group="monitor-call")
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("kind", ["context", "decorator"])
def test_monitor_call_cost(benchmark, enabled, kind):
    monitor.set_enabled(enabled)
    benchmark(_timed_blocks if kind == "context" else _decorated_calls)
    per_call_ns = benchmark.stats.stats.median / CALLS * 1e9
    benchmark.extra_info["ns_per_call"] = round(per_call_ns)
    NOTES.append(f"monitor {kind} {'on ' if enabled else 'off'}: {per_call_ns:,.0f} ns per timed block")


@pytest.mark.benchmark(group="monitor-end-to-end")
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_pipeline_with_monitor(benchmark, enabled, mbox_50k, tmp_path):
    from atlas_fast import process_mbox

    monitor.set_enabled(enabled)
    os.environ["ATLAS_MONITOR"] = "1" if enabled else "0"  # for non-fork start methods
    counter = [0]

    def setup():
        counter[0] += 1
        return (mbox_50k, tmp_path / f"run-{counter[0]}.sqlite"), {"workers": 2, "cache": False}

    summary = benchmark.pedantic(process_mbox, setup=setup, rounds=3, iterations=1)
    assert summary.messages == 50_000
    record_rate(benchmark, f"pipeline, monitor {'on' if enabled else 'off'}", 50_000)
    on, off = RATES.get("pipeline, monitor on"), RATES.get("pipeline, monitor off")
    if on and off:
        NOTES.append(f"monitor overhead end to end: {(off - on) / off:+.2%} of throughput (median of 3)")
