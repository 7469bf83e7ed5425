"""Performance monitor: per-stage timings, cache and write counters, resources.

Every stage of the pipeline times itself *per chunk* (never per message)::

    from atlas_fast.monitor import monitor_operation, performance_monitor

    with monitor_operation("parse", "chunk"):
        records = parse_chunk(buf)

    @performance_monitor("rules")          # category "rules", operation "scan_chunk"
    def scan_chunk(...): ...

Each process has one :class:`PerformanceMetrics` (``get_instance()``), reset in
a child after ``fork``.  Workers and the writer ship what they measured since
the last batch with the batch they already send (:meth:`drain_delta` into
``RecordBatch.metrics``); the receiving process folds it in with
:meth:`merge_delta`.  Deltas chain: the writer merges the workers' deltas and
forwards them with its own.

Delta format (``dict[str, list[float]]``, msgpack-friendly):

- ``"<category>.<operation>"`` -> every duration measured, in milliseconds,
  in order.  Raw values travel, so p50/p95 of the merged run are exact.
- ``"#<counter>"`` -> ``[value]``: ``#cache_hit.<namespace>``,
  ``#cache_miss.<namespace>``, ``#rows_written``, ``#bulk_writes``.

:class:`ResourceSampler` runs a background thread in the parent that samples
the whole process tree with psutil (CPU %, RSS, bytes read per process, with
a role per pid) and the throughput the parent reports through
:meth:`ResourceSampler.set_progress`.  :func:`store_run_metrics` writes all of
it to the ``run_*`` tables once a run is over.

Set ``ATLAS_MONITOR=0`` (or call :func:`set_enabled`) to switch timing off.
"""
from __future__ import annotations

import functools
import json
import os
import threading
import time
from array import array
from collections import defaultdict

__all__ = [
    "PerformanceMetrics",
    "ResourceSampler",
    "monitor_operation",
    "performance_monitor",
    "percentile",
    "set_enabled",
    "is_enabled",
    "store_run_metrics",
]

_perf_ns = time.perf_counter_ns
_enabled = os.environ.get("ATLAS_MONITOR", "1").strip().lower() not in {"0", "false", "no", "off"}


def set_enabled(enabled: bool) -> None:
    """Switch timing on or off for this process (and children forked later)."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    """Whether :func:`monitor_operation` and :func:`performance_monitor` record."""
    return _enabled


def percentile(sorted_values, q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, linear interpolation.

    Same definition as NumPy's default (``method="linear"``).
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    pos = (n - 1) * q
    low = int(pos)
    high = min(low + 1, n - 1)
    frac = pos - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def _float_array() -> array:
    return array("d")


def _summarise(values) -> dict:
    ordered = sorted(values)
    total = sum(ordered)
    return {
        "count": len(ordered),
        "total_ms": total,
        "mean_ms": total / len(ordered),
        "p50_ms": percentile(ordered, 0.50),
        "p95_ms": percentile(ordered, 0.95),
        "max_ms": ordered[-1],
    }


class PerformanceMetrics:
    """Timings and counters of one process.  Thread-safe.

    Use :meth:`get_instance`; a forked child starts from an empty instance.
    """

    _instance: PerformanceMetrics | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Every duration of the run is kept for exact percentiles: 8 bytes
        # each in an array (a list of floats took 32), ~50 KB per GB of mail
        # in each process.
        self._durations: dict[str, array] = defaultdict(_float_array)
        self._counters: dict[str, float] = defaultdict(float)
        self._pending_durations: dict[str, list[float]] = defaultdict(list)
        self._pending_counters: dict[str, float] = defaultdict(float)

    @classmethod
    def get_instance(cls) -> PerformanceMetrics:
        """The process-local singleton."""
        inst = cls._instance
        if inst is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
                inst = cls._instance
        return inst

    @classmethod
    def _after_fork(cls) -> None:
        cls._instance_lock = threading.Lock()
        cls._instance = None

    # -- recording ---------------------------------------------------------

    def record(self, category: str, operation: str, duration_ms: float) -> None:
        """Add one measured duration of ``category.operation``."""
        if "." in category or "#" in category:
            raise ValueError(f"category must not contain '.' or '#': {category!r}")
        key = f"{category}.{operation}"
        with self._lock:
            self._durations[key].append(duration_ms)
            self._pending_durations[key].append(duration_ms)

    def _count(self, name: str, amount: float) -> None:
        with self._lock:
            self._counters[name] += amount
            self._pending_counters[name] += amount

    def record_cache_hit(self, namespace: str = "general", count: int = 1) -> None:
        """Count ``count`` cache hits in ``namespace``."""
        self._count(f"cache_hit.{namespace}", count)

    def record_cache_miss(self, namespace: str = "general", count: int = 1) -> None:
        """Count ``count`` cache misses in ``namespace``."""
        self._count(f"cache_miss.{namespace}", count)

    def record_rows_written(self, rows: int) -> None:
        """Count one bulk write (one ``executemany``) of ``rows`` rows.

        Time the write itself with ``monitor_operation("write", ...)``: bulk
        writes/s in :meth:`get_stats` is rows written per second spent in the
        ``write`` category.
        """
        with self._lock:
            for name, amount in (("rows_written", rows), ("bulk_writes", 1)):
                self._counters[name] += amount
                self._pending_counters[name] += amount

    # -- crossing processes ------------------------------------------------

    def drain_delta(self) -> dict[str, list[float]]:
        """What was recorded (or merged) since the last drain; then forget it.

        Put the result in ``RecordBatch.metrics``.  Empty dict if nothing new.
        """
        with self._lock:
            delta: dict[str, list[float]] = dict(self._pending_durations)
            for name, value in self._pending_counters.items():
                delta["#" + name] = [value]
            self._pending_durations = defaultdict(list)
            self._pending_counters = defaultdict(float)
        return delta

    def merge_delta(self, delta: dict[str, list[float]] | None) -> None:
        """Fold another process's :meth:`drain_delta` into this one.

        The merged values also join this process's own pending delta, so a
        process in the middle (the writer) forwards them with its own.
        """
        if not delta:
            return
        with self._lock:
            for key, values in delta.items():
                if key.startswith("#"):
                    name = key[1:]
                    amount = sum(values)
                    self._counters[name] += amount
                    self._pending_counters[name] += amount
                else:
                    self._durations[key].extend(values)
                    self._pending_durations[key].extend(values)

    def reset(self) -> None:
        """Forget everything (start of a new run in the same process)."""
        with self._lock:
            self._durations.clear()
            self._counters.clear()
            self._pending_durations.clear()
            self._pending_counters.clear()

    # -- reading -----------------------------------------------------------

    def get_stats(self) -> dict:
        """Summary of everything recorded and merged so far.

        Returns
        -------
        dict
            ``operations``: ``{"category.operation": {category, operation,
            count, total_ms, mean_ms, p50_ms, p95_ms, max_ms}}``;
            ``cache``: ``{namespace: {hits, misses, hit_rate}}``;
            ``cache_hit_rate`` (all namespaces, ``None`` without lookups);
            ``rows_written``, ``bulk_writes``, ``write_ms`` and
            ``bulk_writes_per_s`` (rows per second of ``write`` time, ``None``
            without timed writes).
        """
        with self._lock:
            durations = {k: list(v) for k, v in self._durations.items() if v}
            counters = dict(self._counters)
        operations = {}
        for key in sorted(durations):
            category, _, operation = key.partition(".")
            operations[key] = {"category": category, "operation": operation, **_summarise(durations[key])}
        cache: dict[str, dict] = {}
        for name, value in counters.items():
            kind, _, namespace = name.partition(".")
            if kind in ("cache_hit", "cache_miss"):
                entry = cache.setdefault(namespace, {"hits": 0, "misses": 0})
                entry["hits" if kind == "cache_hit" else "misses"] += int(value)
        for entry in cache.values():
            lookups = entry["hits"] + entry["misses"]
            entry["hit_rate"] = entry["hits"] / lookups if lookups else None
        hits = sum(e["hits"] for e in cache.values())
        lookups = hits + sum(e["misses"] for e in cache.values())
        write_ms = sum(op["total_ms"] for op in operations.values() if op["category"] == "write")
        rows = int(counters.get("rows_written", 0))
        return {
            "operations": operations,
            "cache": dict(sorted(cache.items())),
            "cache_hit_rate": hits / lookups if lookups else None,
            "rows_written": rows,
            "bulk_writes": int(counters.get("bulk_writes", 0)),
            "write_ms": write_ms,
            "bulk_writes_per_s": rows / (write_ms / 1000.0) if write_ms > 0 else None,
        }


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PerformanceMetrics._after_fork)


class monitor_operation:
    """Context manager timing one ``category``/``operation`` (one chunk).

    ``with monitor_operation("parse", "chunk"): ...``.  The duration is
    recorded even if the block raises.  Costs about a microsecond; a no-op
    while the monitor is disabled.
    """

    __slots__ = ("category", "operation", "_start")

    def __init__(self, category: str, operation: str) -> None:
        self.category = category
        self.operation = operation
        self._start = 0

    def __enter__(self) -> monitor_operation:
        if _enabled:
            self._start = _perf_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._start:
            elapsed_ms = (_perf_ns() - self._start) / 1e6
            self._start = 0
            PerformanceMetrics.get_instance().record(self.category, self.operation, elapsed_ms)


def performance_monitor(name: str):
    """Decorator timing every call of the function.

    ``@performance_monitor("parse")`` records under category ``parse``,
    operation = the function's name; ``@performance_monitor("parse.headers")``
    names both.  Use it on per-chunk functions, not per-message ones.
    """
    category, _, operation = name.partition(".")

    def decorate(func):
        op = operation or func.__name__

        @functools.wraps(func)
        def timed(*args, **kwargs):
            if not _enabled:
                return func(*args, **kwargs)
            start = _perf_ns()
            try:
                return func(*args, **kwargs)
            finally:
                PerformanceMetrics.get_instance().record(category, op, (_perf_ns() - start) / 1e6)

        return timed

    return decorate


# ---------------------------------------------------------------------------
# Resource sampling (parent process, background thread)
# ---------------------------------------------------------------------------


class ResourceSampler:
    """Samples the process tree and the run's throughput about once a second.

    Parameters
    ----------
    interval
        Seconds between samples (default 1.0).
    root_pid
        Top of the process tree (default: this process, role ``parent``).

    Use::

        sampler = ResourceSampler()
        # fork the children first: a thread running across fork() is unsafe
        sampler.register(worker.pid, "worker")     # and "writer"
        sampler.attach(db_path, run_id)            # optional: live rows for the dashboard
        sampler.start()
        sampler.set_progress(messages_done, bytes_done)   # as work completes
        ...
        sampler.stop()
        store_run_metrics(conn, run_id, PerformanceMetrics.get_instance().get_stats(), sampler)

    Children that were not registered are sampled with role ``child``.
    """

    def __init__(self, interval: float = 1.0, root_pid: int | None = None) -> None:
        import psutil  # noqa: F401  (fail early if missing)

        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.interval = float(interval)
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._roles: dict[int, str] = {self.root_pid: "parent"}
        self._procs: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None
        self._progress = (0, 0)
        self.resources: list[dict] = []   # t, pid, role, cpu_percent, rss_bytes, read_bytes, read_chars
        self.throughput: list[dict] = []  # t, messages, bytes, msgs_per_s, bytes_per_s
        self.started_at: float | None = None
        self.elapsed_s: float = 0.0
        self._live: tuple[str, int, float] | None = None  # db path, run_id, flush interval
        self._flushed = (0, 0)  # resources, throughput rows already written live
        self._last_flush = 0.0

    def register(self, pid: int, role: str) -> None:
        """Name the role of ``pid`` (``parent``, ``worker``, ``writer``...)."""
        with self._lock:
            self._roles[pid] = role

    def attach(self, db_path, run_id: int, flush_interval: float = 2.0) -> None:
        """Also write samples to ``db_path`` while the run goes on (live view).

        The sampling thread appends new rows to ``run_resources`` and
        ``run_throughput`` every ``flush_interval`` seconds on its own
        connection; a busy database just postpones the flush.
        :func:`store_run_metrics` rewrites the complete series at the end.
        """
        self._live = (os.fspath(db_path), int(run_id), float(flush_interval))

    def set_progress(self, messages: int, nbytes: int) -> None:
        """Report the cumulative messages and input bytes done so far."""
        self._progress = (int(messages), int(nbytes))

    def start(self) -> ResourceSampler:
        """Start the sampling thread (takes a first sample at once)."""
        if self._thread is not None:
            raise RuntimeError("ResourceSampler already started")
        self._t0 = time.monotonic()
        self.started_at = time.time()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="atlas-resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    self._sample()
                    if self._live is not None:
                        conn = self._flush_live(conn)
                except Exception:  # pragma: no cover - never let sampling kill a run
                    pass
        finally:
            if conn is not None:
                conn.close()

    def _flush_live(self, conn):
        import sqlite3

        db_path, run_id, every = self._live
        now = time.monotonic()
        if now - self._last_flush < every:
            return conn
        self._last_flush = now
        if conn is None:
            conn = sqlite3.connect(db_path, timeout=0.5, isolation_level=None)
        with self._lock:
            res_done, tp_done = self._flushed
            resources = self.resources[res_done:]
            throughput = self.throughput[tp_done:]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO run_resources (run_id, t, pid, role, cpu_percent, rss_bytes,"
                " read_bytes, read_chars) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _resource_rows(run_id, resources, self._roles))
            conn.executemany(
                "INSERT OR REPLACE INTO run_throughput (run_id, t, messages, bytes, msgs_per_s,"
                " bytes_per_s) VALUES (?, ?, ?, ?, ?, ?)", _throughput_rows(run_id, throughput))
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return conn  # busy or schema not there yet: try again next time
        self._flushed = (res_done + len(resources), tp_done + len(throughput))
        return conn

    def _tree(self):
        import psutil

        try:
            root = self._procs.get(self.root_pid) or psutil.Process(self.root_pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return []
        tree = []
        for proc in procs:
            known = self._procs.get(proc.pid)
            if known is None:
                self._procs[proc.pid] = known = proc
                try:
                    proc.cpu_percent(None)  # prime: the first call always says 0
                except psutil.Error:
                    continue
            tree.append(known)
        return tree

    def _sample(self) -> None:
        import psutil

        t = round(time.monotonic() - self._t0, 3)
        rows = []
        for proc in self._tree():
            try:
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
                    try:
                        io = proc.io_counters()
                        read_bytes, read_chars = io.read_bytes, getattr(io, "read_chars", io.read_bytes)
                    except (psutil.AccessDenied, AttributeError):
                        read_bytes = read_chars = None
            except psutil.Error:
                self._procs.pop(proc.pid, None)
                continue
            with self._lock:
                role = self._roles.get(proc.pid, "child")
            rows.append({
                "t": t, "pid": proc.pid, "role": role, "cpu_percent": cpu,
                "rss_bytes": rss, "read_bytes": read_bytes, "read_chars": read_chars,
            })
        messages, nbytes = self._progress
        with self._lock:
            self.resources.extend(rows)
            self.elapsed_s = t
            tp = self.throughput
            if tp and t <= tp[-1]["t"]:
                return
            # A rate over a sliver of time (the last sample, taken at stop())
            # is noise: measure it from the point before if that is too close.
            ref = tp[-2] if len(tp) >= 2 and t - tp[-1]["t"] < self.interval / 2 else (tp[-1] if tp else None)
            dt = t - ref["t"] if ref else 0.0
            tp.append({
                "t": t, "messages": messages, "bytes": nbytes,
                "msgs_per_s": (messages - ref["messages"]) / dt if dt > 0 else 0.0,
                "bytes_per_s": (nbytes - ref["bytes"]) / dt if dt > 0 else 0.0,
            })


# ---------------------------------------------------------------------------
# Storing a run's metrics
# ---------------------------------------------------------------------------


def _resource_rows(run_id, resources, roles):
    return [
        (run_id, r["t"], r["pid"], roles.get(r["pid"], r["role"]), r["cpu_percent"], r["rss_bytes"],
         r["read_bytes"], r["read_chars"])
        for r in resources
    ]


def _throughput_rows(run_id, throughput):
    return [(run_id, p["t"], p["messages"], p["bytes"], p["msgs_per_s"], p["bytes_per_s"]) for p in throughput]


def store_run_metrics(conn, run_id: int, stats: dict | None = None, sampler: ResourceSampler | None = None) -> None:
    """Write a run's monitor stats and resource samples to the ``run_*`` tables.

    Call once at the end of a run, in the parent, after the writer finished.
    Rewrites whatever was stored for ``run_id`` before, in one transaction.

    Parameters
    ----------
    conn
        Connection from :func:`atlas_fast.migrations.connect` (schema >= 2).
    run_id
        The ``runs`` row the metrics belong to.
    stats
        :meth:`PerformanceMetrics.get_stats` (default: this process's).
    sampler
        The run's stopped :class:`ResourceSampler`, or ``None``.
    """
    if stats is None:
        stats = PerformanceMetrics.get_instance().get_stats()
    op_rows = [
        (run_id, op["category"], op["operation"], op["count"], op["total_ms"], op["mean_ms"],
         op["p50_ms"], op["p95_ms"], op["max_ms"])
        for op in stats.get("operations", {}).values()
    ]
    cache_rows = [
        (run_id, ns, c["hits"], c["misses"], c["hit_rate"]) for ns, c in stats.get("cache", {}).items()
    ]
    counters = {
        "rows_written": stats.get("rows_written"),
        "bulk_writes": stats.get("bulk_writes"),
        "write_ms": stats.get("write_ms"),
        "bulk_writes_per_s": stats.get("bulk_writes_per_s"),
        "cache_hit_rate": stats.get("cache_hit_rate"),
    }
    resource_rows, throughput_rows = [], []
    if sampler is not None:
        with sampler._lock:
            resources = list(sampler.resources)
            throughput = list(sampler.throughput)
            roles = dict(sampler._roles)
        resource_rows = _resource_rows(run_id, resources, roles)
        throughput_rows = _throughput_rows(run_id, throughput)
        counters["sampled_s"] = sampler.elapsed_s
        counters["sample_interval_s"] = sampler.interval
        if resources:
            counters["peak_rss_bytes"] = max(r["rss_bytes"] for r in resources)
            # Bytes read by the whole tree: each process's last counter value.
            last_read: dict[int, int] = {}
            for r in resources:
                if r["read_chars"] is not None:
                    last_read[r["pid"]] = r["read_chars"]
            counters["read_chars"] = sum(last_read.values())
        if throughput:
            counters["peak_msgs_per_s"] = max(p["msgs_per_s"] for p in throughput)
    counter_rows = [(run_id, k, v) for k, v in counters.items() if v is not None]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in ("run_metrics", "run_cache", "run_counters", "run_resources", "run_throughput"):
            conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        conn.executemany(
            "INSERT INTO run_metrics (run_id, category, operation, count, total_ms, mean_ms,"
            " p50_ms, p95_ms, max_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", op_rows)
        conn.executemany(
            "INSERT INTO run_cache (run_id, namespace, hits, misses, hit_rate) VALUES (?, ?, ?, ?, ?)",
            cache_rows)
        conn.executemany("INSERT INTO run_counters (run_id, name, value) VALUES (?, ?, ?)", counter_rows)
        conn.executemany(
            "INSERT INTO run_resources (run_id, t, pid, role, cpu_percent, rss_bytes, read_bytes,"
            " read_chars) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", resource_rows)
        conn.executemany(
            "INSERT INTO run_throughput (run_id, t, messages, bytes, msgs_per_s, bytes_per_s)"
            " VALUES (?, ?, ?, ?, ?, ?)", throughput_rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite ends it itself on some errors (a full disk)
            conn.execute("ROLLBACK")
        raise


def stats_to_json(stats: dict) -> str:
    """``get_stats()`` as JSON (e.g. for the ``runs.timings`` column)."""
    return json.dumps(stats, sort_keys=True)
