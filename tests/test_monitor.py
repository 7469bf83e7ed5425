"""Tests of atlas_fast.monitor: timings, percentiles, threads, processes, storage."""
from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import threading
import time

import msgspec
import pytest

from atlas_fast import migrations, monitor
from atlas_fast.monitor import (
    PerformanceMetrics,
    ResourceSampler,
    monitor_operation,
    percentile,
    performance_monitor,
    store_run_metrics,
)


@pytest.fixture(autouse=True)
def fresh_metrics():
    PerformanceMetrics.get_instance().reset()
    monitor.set_enabled(True)
    yield PerformanceMetrics.get_instance()
    monitor.set_enabled(True)
    PerformanceMetrics.get_instance().reset()


# -- percentiles --------------------------------------------------------------


@pytest.mark.parametrize(
    "values, q, expected",
    [
        ([5.0], 0.5, 5.0),
        ([5.0], 0.95, 5.0),
        ([1.0, 2.0], 0.5, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([float(i) for i in range(1, 101)], 0.95, 95.05),
        ([float(i) for i in range(1, 101)], 0.5, 50.5),
        ([float(i) for i in range(0, 21)], 0.95, 19.0),
        ([2.0, 4.0, 8.0], 1.0, 8.0),
        ([2.0, 4.0, 8.0], 0.0, 2.0),
    ],
)
def test_percentile_linear_interpolation(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_stats_summarise_recorded_durations(fresh_metrics):
    seed = 1234
    print("seed", seed)
    rng = random.Random(seed)
    values = [rng.uniform(0.1, 50.0) for _ in range(999)]
    for v in values:
        fresh_metrics.record("parse", "chunk", v)
    op = fresh_metrics.get_stats()["operations"]["parse.chunk"]
    assert op["count"] == 999
    assert op["total_ms"] == pytest.approx(sum(values))
    assert op["mean_ms"] == pytest.approx(sum(values) / 999)
    assert op["p50_ms"] == pytest.approx(statistics.median(values))
    assert op["p95_ms"] == pytest.approx(statistics.quantiles(values, n=20, method="inclusive")[18])
    assert op["max_ms"] == max(values)
    assert (op["category"], op["operation"]) == ("parse", "chunk")


# -- decorator and context manager -------------------------------------------


def test_context_manager_times_the_block(fresh_metrics):
    with monitor_operation("split", "scan"):
        time.sleep(0.02)
    op = fresh_metrics.get_stats()["operations"]["split.scan"]
    assert op["count"] == 1
    assert 15.0 <= op["total_ms"] < 5000.0


def test_context_manager_records_when_the_block_raises(fresh_metrics):
    with pytest.raises(KeyError):
        with monitor_operation("rules", "scan"):
            raise KeyError("x")
    assert fresh_metrics.get_stats()["operations"]["rules.scan"]["count"] == 1


def test_decorator_names(fresh_metrics):
    @performance_monitor("model")
    def score_chunk(x):
        return x * 2

    @performance_monitor("parse.headers")
    def anything(x):
        return x + 1

    assert score_chunk(2) == 4
    assert anything(2) == 3
    assert score_chunk.__name__ == "score_chunk"
    ops = fresh_metrics.get_stats()["operations"]
    assert set(ops) == {"model.score_chunk", "parse.headers"}


def test_disabled_monitor_records_nothing(fresh_metrics):
    monitor.set_enabled(False)
    assert not monitor.is_enabled()

    @performance_monitor("model")
    def score_chunk():
        return 1

    with monitor_operation("parse", "chunk"):
        pass
    assert score_chunk() == 1
    assert fresh_metrics.get_stats()["operations"] == {}


def test_category_with_a_dot_is_refused(fresh_metrics):
    with pytest.raises(ValueError, match="category"):
        fresh_metrics.record("a.b", "c", 1.0)


def test_cache_and_write_counters(fresh_metrics):
    fresh_metrics.record_cache_hit("classification", 3)
    fresh_metrics.record_cache_miss("classification")
    fresh_metrics.record_cache_miss("domain", 4)
    fresh_metrics.record_rows_written(500)
    fresh_metrics.record_rows_written(250)
    fresh_metrics.record("write", "executemany", 250.0)
    fresh_metrics.record("write", "commit", 250.0)
    stats = fresh_metrics.get_stats()
    assert stats["cache"]["classification"] == {"hits": 3, "misses": 1, "hit_rate": 0.75}
    assert stats["cache"]["domain"] == {"hits": 0, "misses": 4, "hit_rate": 0.0}
    assert stats["cache_hit_rate"] == pytest.approx(3 / 8)
    assert stats["rows_written"] == 750
    assert stats["bulk_writes"] == 2
    assert stats["write_ms"] == 500.0
    assert stats["bulk_writes_per_s"] == pytest.approx(1500.0)


def test_empty_stats(fresh_metrics):
    stats = fresh_metrics.get_stats()
    assert stats["operations"] == {} and stats["cache"] == {}
    assert stats["cache_hit_rate"] is None and stats["bulk_writes_per_s"] is None


# -- deltas -----------------------------------------------------------------


def test_delta_drains_and_round_trips_through_a_record_batch(fresh_metrics):
    from atlas_fast.records import RecordBatch, decode_batch, encode_batch

    fresh_metrics.record("parse", "chunk", 1.5)
    fresh_metrics.record("parse", "chunk", 2.5)
    fresh_metrics.record_cache_hit("domain", 2)
    delta = fresh_metrics.drain_delta()
    assert delta == {"parse.chunk": [1.5, 2.5], "#cache_hit.domain": [2.0]}
    assert fresh_metrics.drain_delta() == {}
    # Draining does not forget the process's own totals.
    assert fresh_metrics.get_stats()["operations"]["parse.chunk"]["count"] == 2

    batch = decode_batch(encode_batch(RecordBatch(seq=0, start=0, end=10, records=[], metrics=delta)))
    parent = PerformanceMetrics()
    parent.merge_delta(batch.metrics)
    parent.merge_delta({})
    parent.merge_delta(None)
    stats = parent.get_stats()
    assert stats["operations"]["parse.chunk"]["total_ms"] == 4.0
    assert stats["cache"]["domain"]["hits"] == 2


def test_merged_deltas_are_forwarded_by_the_middle_process():
    worker, writer, parent = PerformanceMetrics(), PerformanceMetrics(), PerformanceMetrics()
    worker.record("parse", "chunk", 3.0)
    writer.merge_delta(worker.drain_delta())
    writer.record("write", "executemany", 7.0)
    writer.record_rows_written(10)
    parent.merge_delta(writer.drain_delta())
    stats = parent.get_stats()
    assert set(stats["operations"]) == {"parse.chunk", "write.executemany"}
    assert stats["rows_written"] == 10 and stats["bulk_writes"] == 1


def test_delta_is_valid_msgspec_metrics_type(fresh_metrics):
    fresh_metrics.record("model", "score", 0.25)
    fresh_metrics.record_rows_written(3)
    data = msgspec.msgpack.encode(fresh_metrics.drain_delta())
    msgspec.msgpack.decode(data, type=dict[str, list[float]])


# -- concurrency --------------------------------------------------------------


def test_threads_record_concurrently_and_totals_are_exact(fresh_metrics):
    n_threads, per_thread = 8, 2000
    barrier = threading.Barrier(n_threads)

    def work(i):
        barrier.wait()
        for j in range(per_thread):
            with monitor_operation("parse", "chunk"):
                pass
            fresh_metrics.record("rules", "scan", float(i))
            fresh_metrics.record_cache_hit("classification")
            if j % 2:
                fresh_metrics.drain_delta()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = fresh_metrics.get_stats()
    assert stats["operations"]["parse.chunk"]["count"] == n_threads * per_thread
    assert stats["operations"]["rules.scan"]["count"] == n_threads * per_thread
    assert stats["operations"]["rules.scan"]["total_ms"] == per_thread * sum(range(n_threads))
    assert stats["cache"]["classification"]["hits"] == n_threads * per_thread


def test_drains_from_many_threads_lose_and_duplicate_nothing():
    metrics = PerformanceMetrics()
    merged = PerformanceMetrics()
    stop = threading.Event()
    lock = threading.Lock()

    def produce():
        for _ in range(5000):
            metrics.record("parse", "chunk", 1.0)
            metrics.record_rows_written(2)

    def drain():
        while not stop.is_set():
            delta = metrics.drain_delta()
            with lock:
                merged.merge_delta(delta)

    producers = [threading.Thread(target=produce) for _ in range(4)]
    drainers = [threading.Thread(target=drain) for _ in range(2)]
    for t in producers + drainers:
        t.start()
    for t in producers:
        t.join()
    stop.set()
    for t in drainers:
        t.join()
    merged.merge_delta(metrics.drain_delta())
    stats = merged.get_stats()
    assert stats["operations"]["parse.chunk"]["count"] == 20000
    assert stats["rows_written"] == 40000 and stats["bulk_writes"] == 20000


def _worker_process(index, n_chunks, queue):
    metrics = PerformanceMetrics.get_instance()
    # After fork the child starts empty, whatever the parent had recorded.
    queue.put(("fresh", index, metrics.get_stats()["operations"] == {}))
    for j in range(n_chunks):
        metrics.record("parse", "chunk", float(index * 1000 + j))
        metrics.record_cache_hit("classification", 2)
        metrics.record_cache_miss("classification", 1)
        if j % 10 == 9:
            queue.put(("delta", index, metrics.drain_delta()))
    queue.put(("delta", index, metrics.drain_delta()))
    queue.put(("done", index, None))


def test_processes_merge_exactly_in_the_parent(fresh_metrics):
    ctx = multiprocessing.get_context("fork")
    fresh_metrics.record("split", "scan", 99.0)  # the parent's own, must not leak into children
    queue = ctx.Queue()
    n_procs, n_chunks = 4, 55
    procs = [ctx.Process(target=_worker_process, args=(i, n_chunks, queue)) for i in range(n_procs)]
    for p in procs:
        p.start()
    done = 0
    fresh_flags = []
    while done < n_procs:
        kind, _index, payload = queue.get(timeout=60)
        if kind == "fresh":
            fresh_flags.append(payload)
        elif kind == "delta":
            fresh_metrics.merge_delta(payload)
        else:
            done += 1
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert fresh_flags == [True] * n_procs
    stats = fresh_metrics.get_stats()
    chunk = stats["operations"]["parse.chunk"]
    all_values = sorted(float(i * 1000 + j) for i in range(n_procs) for j in range(n_chunks))
    assert chunk["count"] == n_procs * n_chunks
    assert chunk["total_ms"] == sum(all_values)
    assert chunk["p50_ms"] == percentile(all_values, 0.5)
    assert chunk["p95_ms"] == percentile(all_values, 0.95)
    assert chunk["max_ms"] == all_values[-1]
    assert stats["operations"]["split.scan"]["count"] == 1
    assert stats["cache"]["classification"] == {
        "hits": 2 * n_procs * n_chunks, "misses": n_procs * n_chunks, "hit_rate": pytest.approx(2 / 3)}


# -- resource sampler and storage -----------------------------------------------


def _busy_child(seconds):
    end = time.monotonic() + seconds
    blob = []
    while time.monotonic() < end:
        blob.append(bytearray(1024 * 64))
        if len(blob) > 200:
            blob.clear()


def test_sampler_sees_the_process_tree_with_roles():
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_busy_child, args=(0.8,))
    child.start()  # fork before the sampler thread exists
    sampler = ResourceSampler(interval=0.1)
    sampler.register(child.pid, "worker")
    sampler.start()
    for i in range(1, 6):
        sampler.set_progress(i * 100, i * 10_000)
        time.sleep(0.12)
    child.join()
    sampler.stop()
    roles = {(r["pid"], r["role"]) for r in sampler.resources}
    assert (os.getpid(), "parent") in roles
    assert (child.pid, "worker") in roles
    assert all(r["rss_bytes"] > 0 for r in sampler.resources if r["pid"] == os.getpid())
    assert any(r["rss_bytes"] > 0 for r in sampler.resources if r["pid"] == child.pid)  # 0 once a zombie
    worker_cpu = max(r["cpu_percent"] for r in sampler.resources if r["pid"] == child.pid)
    assert worker_cpu > 0
    assert sampler.throughput[-1]["messages"] == 500
    assert sampler.throughput[-1]["bytes"] == 50_000
    assert any(p["msgs_per_s"] > 0 for p in sampler.throughput)
    times = [p["t"] for p in sampler.throughput]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_sampler_rejects_bad_interval():
    with pytest.raises(ValueError, match="interval"):
        ResourceSampler(interval=0)


def _new_run(conn, source="x.mbox"):
    cur = conn.execute(
        "INSERT INTO runs (source, started_at) VALUES (?, '2026-01-01T00:00:00Z')", (source,))
    return cur.lastrowid


def test_store_run_metrics_writes_every_table(tmp_path, fresh_metrics):
    conn = migrations.connect(tmp_path / "m.sqlite")
    run_id = _new_run(conn)
    for v in (1.0, 2.0, 3.0, 10.0):
        fresh_metrics.record("parse", "chunk", v)
    fresh_metrics.record("write", "executemany", 20.0)
    fresh_metrics.record_rows_written(40)
    fresh_metrics.record_cache_hit("classification", 9)
    fresh_metrics.record_cache_miss("classification", 1)
    with ResourceSampler(interval=0.05) as sampler:
        sampler.set_progress(40, 4000)
        time.sleep(0.15)
    store_run_metrics(conn, run_id, fresh_metrics.get_stats(), sampler)
    store_run_metrics(conn, run_id, fresh_metrics.get_stats(), sampler)  # rewrites, no duplicates
    row = conn.execute(
        "SELECT count, total_ms, p50_ms, max_ms FROM run_metrics WHERE run_id = ? AND category = 'parse'",
        (run_id,)).fetchone()
    assert row == (4, 16.0, 2.5, 10.0)
    assert conn.execute("SELECT hits, misses, hit_rate FROM run_cache").fetchall() == [(9, 1, 0.9)]
    counters = dict(conn.execute("SELECT name, value FROM run_counters WHERE run_id = ?", (run_id,)))
    assert counters["rows_written"] == 40 and counters["bulk_writes_per_s"] == 2000.0
    assert counters["peak_rss_bytes"] > 0
    n_tp = conn.execute("SELECT COUNT(*) FROM run_throughput").fetchone()[0]
    assert n_tp == len(sampler.throughput) >= 2
    assert conn.execute("SELECT COUNT(*) FROM run_resources").fetchone()[0] == len(sampler.resources)
    assert conn.execute("SELECT MAX(messages) FROM run_throughput").fetchone()[0] == 40


def test_sampler_writes_live_while_attached(tmp_path):
    db = tmp_path / "live.sqlite"
    conn = migrations.connect(db)
    run_id = _new_run(conn)
    sampler = ResourceSampler(interval=0.05)
    sampler.attach(db, run_id, flush_interval=0.1)
    sampler.start()
    deadline = time.monotonic() + 10
    n = 0
    while n < 3 and time.monotonic() < deadline:
        sampler.set_progress(n * 10, n * 100)
        time.sleep(0.1)
        n = conn.execute("SELECT COUNT(*) FROM run_throughput WHERE run_id = ?", (run_id,)).fetchone()[0]
    sampler.stop()
    assert n >= 3
    assert conn.execute("SELECT COUNT(*) FROM run_resources WHERE role = 'parent'").fetchone()[0] >= 1


def test_a_late_sample_right_after_another_is_rated_over_a_full_interval():
    sampler = ResourceSampler(interval=10.0)  # the thread will not sample by itself
    sampler.start()
    base = sampler.throughput[0]["t"]
    sampler._t0 -= 10.0  # pretend ten seconds went by
    sampler.set_progress(1000, 10_000)
    sampler._sample()
    sampler._t0 -= 0.01  # and the stop() sample comes 10 ms later
    sampler.set_progress(1010, 10_100)
    sampler.stop()
    last = sampler.throughput[-1]
    assert last["messages"] == 1010
    # Over 10 ms the rate would read 1000/s; over the full window it is ~101/s.
    assert last["msgs_per_s"] == pytest.approx(1010 / (last["t"] - base), rel=1e-6)
    assert last["msgs_per_s"] < 200
