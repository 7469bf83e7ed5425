"""Run statistics: read a run's history from SQLite and print it as tables.

:func:`run_report` gathers everything the monitor stored about one run (the
``runs`` row, per-stage timings, cache hit rates, counters, throughput and
resource series, verdicts by category) into a plain dict; the dashboard's
JSON API serves that dict and :func:`format_stats` (``atlas-fast stats``)
prints it.  The database is opened read-only, so both work while another
process is still writing the run (WAL mode).
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from .errors import AtlasError

__all__ = ["open_readonly", "list_runs", "latest_run_id", "run_report", "MessageCounts", "format_stats"]

# Series longer than this are thinned for display (every k-th point, last kept).
MAX_POINTS = 600
_INT_COUNTERS = {"rows_written", "bulk_writes", "peak_rss_bytes", "read_chars"}


def open_readonly(db_path) -> sqlite3.Connection:
    """Open ``db_path`` read-only (``mode=ro``), safe beside a writing process.

    Raises
    ------
    AtlasError
        If the file does not exist or is not an SQLite database.
    """
    path = Path(os.fspath(db_path))
    if not path.is_file():
        raise AtlasError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise AtlasError(f"{path}: cannot open database: {exc}") from exc
    return conn


def _tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _rows(conn, sql, params=()) -> list[dict]:
    return [dict(r) for r in conn.execute(sql, params)]


def _json_or_none(text):
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def list_runs(conn, limit: int = 100) -> list[dict]:
    """The most recent runs first, as dicts of the ``runs`` columns."""
    if "runs" not in _tables(conn):
        return []
    runs = _rows(conn, "SELECT * FROM runs ORDER BY run_id DESC LIMIT ?", (limit,))
    for run in runs:
        run["settings"] = _json_or_none(run.get("settings"))
        run["timings"] = _json_or_none(run.get("timings"))
    return runs


def latest_run_id(conn) -> int | None:
    """The newest run's id, or ``None`` in a database without runs."""
    if "runs" not in _tables(conn):
        return None
    row = conn.execute("SELECT MAX(run_id) FROM runs").fetchone()
    return row[0]


def _thin(points: list[dict], key=None) -> list[dict]:
    """Keep at most MAX_POINTS points per series (per ``key`` value)."""
    if key is None:
        if len(points) <= MAX_POINTS:
            return points
        step = -(-len(points) // MAX_POINTS)
        kept = points[::step]
        if kept[-1] is not points[-1]:
            kept.append(points[-1])
        return kept
    groups: dict = {}
    for p in points:
        groups.setdefault(p[key], []).append(p)
    return [p for group in groups.values() for p in _thin(group)]


class _RunCounts:
    """Message counts of one run, grouped by verdict; grown incrementally."""

    def __init__(self):
        self.last_id = 0
        self.groups: dict[tuple, list[int]] = {}  # (label, category, decided_by, rule_id) -> [n, errors]

    def verdicts(self) -> list[dict]:
        out: dict[tuple, list[int]] = {}
        for (label, category, _, _), (n, errors) in self.groups.items():
            acc = out.setdefault((label, category), [0, 0])
            acc[0] += n
            acc[1] += errors
        rows = [{"label": k[0], "category": k[1], "messages": v[0], "errors": v[1]} for k, v in out.items()]
        return sorted(rows, key=lambda r: (r["label"] is None, r["label"] or "", -r["messages"]))

    def decided_by(self) -> list[dict]:
        out: dict = {}
        for (_, _, decided_by, _), (n, _) in self.groups.items():
            out[decided_by] = out.get(decided_by, 0) + n
        return [{"decided_by": k, "messages": v} for k, v in sorted(out.items(), key=lambda kv: -kv[1])]

    def rules(self, limit: int = 15) -> list[dict]:
        out: dict = {}
        for (_, category, _, rule_id), (n, _) in self.groups.items():
            if rule_id is not None:
                out[(rule_id, category)] = out.get((rule_id, category), 0) + n
        ranked = sorted(out.items(), key=lambda kv: -kv[1])[:limit]
        return [{"rule_id": k[0], "category": k[1], "messages": v} for k, v in ranked]


class MessageCounts:
    """Per-run verdict counts, kept between calls so only new rows are read.

    A run only ever appends rows to ``messages`` (rowids grow), so each
    :meth:`update` aggregates the rows past the last rowid it saw: a
    dashboard polling a 10-million-row run reads each row once.  Thread-safe.
    """

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._runs: dict[int, _RunCounts] = {}

    def update(self, conn, run_id: int) -> _RunCounts:
        with self._lock:
            counts = self._runs.setdefault(run_id, _RunCounts())
            # Only a range of (run_id, rowid) or of rowid reads just the new
            # rows; left alone, the planner may prefer another index and scan
            # all.  A run into an empty table drops the indexes until it ends.
            for hint in ("INDEXED BY messages_run", "NOT INDEXED"):
                try:
                    rows = conn.execute(f"""
                        SELECT label, category, decided_by, rule_id, COUNT(*), SUM(error IS NOT NULL), MAX(id)
                        FROM messages {hint} WHERE run_id = ? AND id > ?
                        GROUP BY label, category, decided_by, rule_id""", (run_id, counts.last_id)).fetchall()
                    break
                except sqlite3.OperationalError as exc:
                    if "no such index" not in str(exc) and "no query solution" not in str(exc):
                        raise
            last = counts.last_id
            for label, category, decided_by, rule_id, n, errors, max_id in rows:
                acc = counts.groups.setdefault((label, category, decided_by, rule_id), [0, 0])
                acc[0] += n
                acc[1] += errors or 0
                last = max(last, max_id)
            counts.last_id = last
            return counts


def run_report(conn, run_id: int | None = None, *, recent: int = 15,
               cache: MessageCounts | None = None) -> dict | None:
    """Everything stored about one run (default: the latest).

    Returns
    -------
    dict or None
        Keys ``run`` (the ``runs`` row; ``messages``/``spam``/``ham``/
        ``errors`` counted from ``messages`` while the run is in progress),
        ``stages``, ``cache``, ``counters``, ``throughput``, ``resources``,
        ``processes`` (per pid: role, peak RSS, mean and max CPU),
        ``verdicts`` (per label and category), ``decided_by``, ``rules``
        (top rule ids) and ``recent`` (latest messages).  ``None`` if there is
        no such run.  ``cache`` keeps verdict counts between calls (the
        dashboard passes one; a one-off report reads all rows).
    """
    tables = _tables(conn)
    if "runs" not in tables:
        return None
    if run_id is None:
        run_id = latest_run_id(conn)
        if run_id is None:
            return None
    rows = _rows(conn, "SELECT * FROM runs WHERE run_id = ?", (run_id,))
    if not rows:
        return None
    run = rows[0]
    run["settings"] = _json_or_none(run.get("settings"))
    run["timings"] = _json_or_none(run.get("timings"))
    report: dict = {"run": run}

    has_messages = "messages" in tables
    counts = (cache if cache is not None else MessageCounts()).update(conn, run_id) if has_messages else None
    verdicts = counts.verdicts() if counts else []
    report["verdicts"] = verdicts
    if run.get("status") == "running" or not run.get("messages"):
        run["messages"] = sum(v["messages"] for v in verdicts)
        run["spam"] = sum(v["messages"] for v in verdicts if v["label"] == "spam")
        run["ham"] = sum(v["messages"] for v in verdicts if v["label"] == "ham")
        run["errors"] = sum(v["errors"] or 0 for v in verdicts)

    def table(name, sql):
        return _rows(conn, sql, (run_id,)) if name in tables else []

    report["stages"] = table("run_metrics", """
        SELECT category, operation, count, total_ms, mean_ms, p50_ms, p95_ms, max_ms
        FROM run_metrics WHERE run_id = ? ORDER BY total_ms DESC""")
    report["cache"] = table("run_cache", """
        SELECT namespace, hits, misses, hit_rate FROM run_cache WHERE run_id = ?
        ORDER BY namespace""")
    report["counters"] = {
        r["name"]: int(r["value"]) if r["name"] in _INT_COUNTERS else r["value"]
        for r in table("run_counters", "SELECT name, value FROM run_counters WHERE run_id = ?")
    }
    report["throughput"] = _thin(table("run_throughput", """
        SELECT t, messages, bytes, msgs_per_s, bytes_per_s FROM run_throughput
        WHERE run_id = ? ORDER BY t"""))
    resources = table("run_resources", """
        SELECT t, pid, role, cpu_percent, rss_bytes, read_bytes, read_chars FROM run_resources
        WHERE run_id = ? ORDER BY pid, t""")
    report["resources"] = _thin(resources, key="pid")
    processes: dict[int, dict] = {}
    for r in resources:
        p = processes.setdefault(r["pid"], {"pid": r["pid"], "role": r["role"], "samples": 0,
                                            "peak_rss_bytes": 0, "cpu_sum": 0.0, "max_cpu_percent": 0.0})
        p["samples"] += 1
        p["peak_rss_bytes"] = max(p["peak_rss_bytes"], r["rss_bytes"] or 0)
        p["cpu_sum"] += r["cpu_percent"] or 0.0
        p["max_cpu_percent"] = max(p["max_cpu_percent"], r["cpu_percent"] or 0.0)
    order = {"parent": 0, "splitter": 1, "worker": 2, "writer": 3}
    report["processes"] = [
        {k: v for k, v in p.items() if k != "cpu_sum"} | {"mean_cpu_percent": p["cpu_sum"] / p["samples"]}
        for p in sorted(processes.values(), key=lambda p: (order.get(p["role"], 9), p["pid"]))
    ]
    if has_messages:
        report["decided_by"] = counts.decided_by()
        report["rules"] = counts.rules()
        report["recent"] = _rows(conn, """
            SELECT "offset", from_addr, subject, label, category, score, decided_by, rule_id, error
            FROM messages WHERE run_id = ? ORDER BY id DESC LIMIT ?""", (run_id, recent))
    else:
        report["decided_by"], report["rules"], report["recent"] = [], [], []
    return report


# ---------------------------------------------------------------------------
# Terminal tables
# ---------------------------------------------------------------------------


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mib(n) -> str:
    return "-" if n is None else f"{n / 1048576:,.1f} MiB"


def _table(title: str, headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A boxed text table; ``align`` has one ``l``/``r`` per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)]
        return "  " + "  ".join(parts).rstrip()

    rule = "  " + "  ".join("-" * w for w in widths)
    out = [title, line(headers), rule]
    out += [line(r) for r in cells] if cells else ["  (none)"]
    return "\n".join(out)


def _cell(value) -> str:
    # Email-derived strings may hold control characters: keep the table intact.
    text = value if isinstance(value, str) else _fmt(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def format_stats(db_path, run_id: int | None = None) -> str:
    """The numbers of one run (default: the latest) as terminal tables.

    Parameters
    ----------
    db_path
        The database a run wrote to.
    run_id
        Which run; ``None`` for the latest.

    Returns
    -------
    str
        Run summary, time per stage, cache, resources per process, throughput,
        verdicts by category and the run history.

    Raises
    ------
    AtlasError
        If the database cannot be opened or has no such run.
    """
    conn = open_readonly(db_path)
    try:
        report = run_report(conn, run_id, recent=0)
        if report is None:
            which = "no runs" if run_id is None else f"no run {run_id}"
            raise AtlasError(f"{db_path}: {which}")
        history = list_runs(conn, limit=10)
    finally:
        conn.close()
    run = report["run"]
    counters = report["counters"]
    sections = []
    summary = [
        ["run", run["run_id"]],
        ["source", run.get("source")],
        ["status", run.get("status")],
        ["started", run.get("started_at")],
        ["finished", run.get("finished_at")],
        ["messages", run.get("messages")],
        ["spam", run.get("spam")],
        ["ham", run.get("ham")],
        ["errors", run.get("errors")],
        ["input", _mib(run.get("bytes"))],
        ["elapsed", "-" if run.get("elapsed_s") is None else f"{run['elapsed_s']:,.2f} s"],
        ["messages/s", run.get("msgs_per_sec")],
        ["rows written", counters.get("rows_written")],
        ["bulk writes/s", counters.get("bulk_writes_per_s")],
        ["cache hit rate", None if counters.get("cache_hit_rate") is None
         else f"{counters['cache_hit_rate']:.1%}"],
        ["peak RSS", _mib(counters.get("peak_rss_bytes"))],
    ]
    settings = run.get("settings")
    if isinstance(settings, dict):
        summary.append(["settings", ", ".join(f"{k}={v}" for k, v in settings.items())])
    sections.append(_table(f"Run {run['run_id']}", ["", "value"], summary, "ll"))

    total_ms = sum(s["total_ms"] for s in report["stages"]) or 1.0
    sections.append(_table(
        "Time per stage (ms)",
        ["stage", "count", "total", "share", "mean", "p50", "p95", "max"],
        [[f"{s['category']}.{s['operation']}", s["count"], s["total_ms"],
          f"{s['total_ms'] / total_ms:.1%}", s["mean_ms"], s["p50_ms"], s["p95_ms"], s["max_ms"]]
         for s in report["stages"]],
    ))
    sections.append(_table(
        "Cache",
        ["namespace", "hits", "misses", "hit rate"],
        [[c["namespace"], c["hits"], c["misses"],
          "-" if c["hit_rate"] is None else f"{c['hit_rate']:.1%}"] for c in report["cache"]],
    ))
    sections.append(_table(
        "Processes",
        ["role", "pid", "samples", "peak RSS", "mean CPU %", "max CPU %"],
        [[p["role"], str(p["pid"]), p["samples"], _mib(p["peak_rss_bytes"]),
          p["mean_cpu_percent"], p["max_cpu_percent"]] for p in report["processes"]],
    ))
    tp = report["throughput"]
    if tp:
        rates = [p["msgs_per_s"] for p in tp]
        tp_rows = [["samples", len(tp)], ["peak messages/s", max(rates)],
                   ["mean messages/s", sum(rates) / len(rates)],
                   ["peak MiB/s", max(p["bytes_per_s"] for p in tp) / 1048576]]
    else:
        tp_rows = []
    sections.append(_table("Throughput", ["", "value"], tp_rows, "lr"))
    n = sum(v["messages"] for v in report["verdicts"]) or 1
    sections.append(_table(
        "Verdicts",
        ["label", "category", "messages", "share"],
        [[v["label"] or "(none)", v["category"] or "-", v["messages"], f"{v['messages'] / n:.1%}"]
         for v in report["verdicts"]],
        "llrr",
    ))
    sections.append(_table(
        "Run history (latest 10)",
        ["run", "status", "source", "messages", "spam", "elapsed s", "messages/s"],
        [[str(r["run_id"]), r["status"], os.path.basename(r["source"] or ""), r["messages"], r["spam"],
          r["elapsed_s"], r["msgs_per_sec"]] for r in history],
        "lllrrrr",
    ))
    return "\n\n".join(sections) + "\n"


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m atlas_fast.stats", description=format_stats.__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(format_stats(args.db, args.run))
    except AtlasError as exc:
        print(f"atlas-fast stats: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
