"""Writer: the one process that owns the SQLite connection during a run.

It reads the workers' msgspec batches in place (``_sqlwriter.RecordCursor``:
no Python object per row) and commits rows in transactions of
``batch_size`` rows, several rows per INSERT statement.  In the same
transaction it advances the resume point: the end of the longest run of
chunks, in input order, whose rows are all committed.  A rerun after a crash
starts there; chunks after it that were already written are skipped by the
``UNIQUE (source, offset)`` constraint (``INSERT OR IGNORE``), so no message
is ever stored twice.
"""
from __future__ import annotations

import gc
import os
import queue as queue_module
import sqlite3
import time
import traceback
from datetime import datetime, timezone

from ._sqlwriter import BulkConnection, RecordCursor, RecordLayout
from .errors import StorageError
from .migrations import MESSAGE_CHECKS, ensure_indexes
from .monitor import PerformanceMetrics, monitor_operation
from .records import ROW_COLUMNS, WIRE_KINDS, decode_batch, decode_metrics, encode_batch

__all__ = ["WriterStats", "run_writer", "INSERT_SQL", "insert_sql", "RECORD_LAYOUT", "ROWS_PER_STATEMENT",
           "insert_records", "open_batch", "utc_now"]

_COLUMNS = "INSERT OR IGNORE INTO messages (run_id, source, " + ", ".join(f'"{c}"' for c in ROW_COLUMNS) + ")"


def insert_sql(rows: int = 1) -> str:
    """The INSERT of ``rows`` messages rows: parameters 1 and 2 are the run
    id and source, shared by every row, then each row's record fields."""
    if rows == 1:
        return _COLUMNS + " VALUES (" + ", ".join("?" * (len(ROW_COLUMNS) + 2)) + ")"
    n = len(ROW_COLUMNS)
    values = (
        "(?1, ?2, " + ", ".join(f"?{3 + r * n + j}" for j in range(n)) + ")" for r in range(rows)
    )
    return _COLUMNS + " VALUES " + ", ".join(values)


INSERT_SQL = insert_sql(1)
# Rows per INSERT: SQLite opens and closes its B-tree cursors and halts its
# VM once per statement; at one row per statement that was ~2 µs of a ~6 µs
# insert (measured 1/8/16/32/64 rows: 16 to 32 is the flat bottom).
ROWS_PER_STATEMENT = 32
_INSERT_MANY = insert_sql(ROWS_PER_STATEMENT)
RECORD_LAYOUT = RecordLayout(
    WIRE_KINDS, {ROW_COLUMNS.index(col): values for col, values in MESSAGE_CHECKS.items()}
)
_UPDATE_PROGRESS = "UPDATE progress SET done_offset = ?, updated_at = ? WHERE source = ?"
_UPDATE_RUN = "UPDATE runs SET messages = messages + ?, bytes = ? WHERE run_id = ?"


def insert_records(conn: BulkConnection, records: RecordCursor, max_rows: int, run_id: int, source: str) -> int:
    """Insert up to ``max_rows`` of ``records`` as ``messages`` rows of this
    run; returns the rows inserted (a message already stored is skipped)."""
    return conn.insert_records(records, max_rows, (run_id, source), INSERT_SQL, _INSERT_MANY,
                               ROWS_PER_STATEMENT)


def open_batch(data: bytes) -> RecordCursor:
    """A cursor over one encoded batch, checked; a value that breaks one of
    the ``messages`` CHECK constraints (which the writer's connection does not
    evaluate) is moved to the row's ``error`` column, so the row is kept."""
    cursor = RecordCursor(RECORD_LAYOUT, data)
    if cursor.violations:
        batch = decode_batch(data)
        for rec in batch.records:
            for col, allowed in MESSAGE_CHECKS.items():
                value = getattr(rec, col)
                if value is not None and value not in allowed:
                    setattr(rec, col, None)
                    note = f"invalid {col} {value!r}"
                    rec.error = note if rec.error is None else f"{rec.error}; {note}"
        cursor = RecordCursor(RECORD_LAYOUT, encode_batch(batch))
    return cursor


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class WriterStats:
    """What the writer did, sent to the parent when it finishes."""

    __slots__ = ("rows_received", "rows_inserted", "transactions", "write_s", "decode_s", "done_offset")

    def __init__(self):
        self.rows_received = 0
        self.rows_inserted = 0
        self.transactions = 0
        self.write_s = 0.0
        self.decode_s = 0.0
        self.done_offset = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


# Rows per cache write transaction.  Cache keys are digests, so each row
# lands on a random leaf of diskcache's key index and a commit writes every
# leaf it dirtied to the WAL: larger transactions share those pages between
# more rows.  50,000 verdict-sized rows into a fresh cache: 2048 rows per
# commit 22.8 us/row, 16384 rows 16.4 us/row (medians of 2).  Pending rows
# are Python tuples of key, msgpack value and flag, ~300 bytes each (an
# estimate): ~5 MB at the limit; the session-6 memory benchmark's summed
# RSS rose 9-13 MB with this change.
_CACHE_FLUSH_ROWS = 16384


class _CacheWrites:
    """The classification cache's writes, batched: the writer is the one
    process that writes it during a run (workers only read)."""

    def __init__(self, directory, ack_queue=None):
        self.directory = directory
        self.ack_queue = ack_queue  # a cache it cannot write is reported there
        self.cache = None
        self.pending: list = []
        self.rows = 0
        self.reported = False

    def add(self, entries) -> None:
        if self.directory is None:
            return
        self.pending.append(entries)
        self.rows += sum(len(items) for _ns, _ttl, items in entries)
        if self.rows >= _CACHE_FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        with monitor_operation("cache", "store"):
            if self.cache is None:
                from .cache import ClassifierCache

                self.cache = ClassifierCache(self.directory, warn=False)
            try:
                self.cache.write_deferred(self.pending)
            except Exception as exc:  # noqa: BLE001 - a cache is never worth failing a run
                self.cache._drop_disk(exc)
        self.pending = []
        self.rows = 0
        error = self.cache.disk_error
        if error is not None and not self.reported and self.ack_queue is not None:
            self.ack_queue.put(("cache-error", error))
            self.reported = True

    def close(self) -> None:
        self.flush()
        if self.cache is not None:
            self.cache.close()


class _ResumeTracker:
    """Chunks arrive out of order; the resume point only moves over a
    contiguous prefix of fully committed chunks."""

    def __init__(self, start_offset: int):
        self.done_offset = start_offset
        self._next_seq = 0
        self._finished: dict[int, int] = {}  # seq -> end offset

    def finish(self, seq: int, end: int) -> None:
        self._finished[seq] = end
        while self._next_seq in self._finished:
            self.done_offset = self._finished.pop(self._next_seq)
            self._next_seq += 1


def run_writer(db_path, run_id, source, start_offset, batch_size, in_queue, ack_queue, parent_pid,
               rebuild_indexes=False, cache_dir=None):
    """Entry point of the writer process.

    Reads encoded batches from ``in_queue`` until a ``None`` sentinel, then
    commits what is left and puts ``("done", stats)`` on ``ack_queue``.  After
    every commit it puts ``("commit", rows_committed, done_offset, metrics)``
    there so the parent can report progress; ``metrics`` is the monitor delta
    of the writer and of the workers' batches it received.  On an error it puts ``("error", text)``
    and exits non-zero.  With ``rebuild_indexes`` (a bulk load into an empty
    table, whose secondary indexes the parent dropped) it builds them once at
    the end.  Workers also send ``("cache", entries)``: verdicts for the
    classification cache in ``cache_dir``, which this process writes (see
    ``ClassifierCache.defer_disk_writes``) every ``_CACHE_FLUSH_ROWS`` and at
    the end.
    """
    stats = WriterStats()
    stats.done_offset = start_offset
    try:
        conn = BulkConnection(os.fspath(db_path))
        conn.exec("PRAGMA journal_mode = WAL")
        conn.exec("PRAGMA synchronous = NORMAL")
        conn.exec("PRAGMA cache_size = -32768")
        # Checkpoint every ~40 MB of WAL rather than every 4 MB: each
        # checkpoint fsyncs, and at 500-row commits the default made the
        # writer wait on the disk (36k -> 55k rows/s wall, measured alone).
        page_size = conn.scalar_int("PRAGMA page_size")
        conn.exec(f"PRAGMA wal_autocheckpoint = {(40 << 20) // page_size}")
        conn.exec("PRAGMA temp_store = MEMORY")  # the end-of-run index sorts
        # The CHECK constraints are enforced by open_batch, per row in C;
        # SQLite's own evaluation of them was ~40 % of the insert's CPU.
        conn.exec("PRAGMA ignore_check_constraints = ON")
        tracker = _ResumeTracker(start_offset)
        cache_writes = _CacheWrites(cache_dir, ack_queue)
        # Received chunks whose rows are not all committed, in arrival order.
        pending: list[RecordCursor] = []
        pending_rows = 0

        metrics = PerformanceMetrics.get_instance()

        def commit(limit: int) -> None:
            nonlocal pending_rows
            t0 = time.perf_counter()
            timer = monitor_operation("write", "commit")
            timer.__enter__()
            conn.exec("BEGIN")
            inserted = 0
            left = limit
            for cursor in pending:
                if left == 0:
                    break
                take = min(left, cursor.remaining)
                inserted += insert_records(conn, cursor, take, run_id, source)
                left -= take
            done = 0
            for cursor in pending:
                if cursor.remaining:
                    break
                tracker.finish(cursor.seq, cursor.end)
                done += 1
            conn.execute(_UPDATE_PROGRESS, (tracker.done_offset, utc_now(), source))
            conn.execute(_UPDATE_RUN, (inserted, tracker.done_offset, run_id))
            conn.exec("COMMIT")
            timer.__exit__(None, None, None)
            written = limit - left
            metrics.record_rows_written(written)
            stats.write_s += time.perf_counter() - t0
            stats.rows_inserted += inserted
            stats.transactions += 1
            stats.done_offset = tracker.done_offset
            del pending[:done]
            pending_rows -= written
            ack_queue.put(
                ("commit", stats.rows_received - pending_rows, tracker.done_offset, metrics.drain_delta())
            )

        gc.freeze()  # batches are freed by refcount; see pipeline._pause_gc
        gc.disable()
        received = 0
        while True:
            received += 1
            if received % 64 == 0:
                gc.collect(1)
            try:
                data = in_queue.get(timeout=1.0)
            except queue_module.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent is gone: nothing will come
                continue
            if data is None:
                break
            if type(data) is tuple:  # ("cache", entries) from a worker
                cache_writes.add(data[1])
                continue
            t0 = time.perf_counter()
            with monitor_operation("decode", "batch"):
                cursor = open_batch(data)
                metrics.merge_delta(decode_metrics(cursor.metrics()))
            stats.decode_s += time.perf_counter() - t0
            if cursor.seq < 0:  # a worker's last metrics, no rows
                continue
            stats.rows_received += cursor.n_records
            pending.append(cursor)
            pending_rows += cursor.n_records
            while pending_rows >= batch_size:
                commit(batch_size)
        if pending:
            commit(pending_rows)
        cache_writes.close()
        if rebuild_indexes:
            with monitor_operation("write", "index"):
                ensure_indexes(conn)
        try:
            conn.exec("PRAGMA wal_checkpoint(TRUNCATE)")  # leave a small WAL behind
        except RuntimeError:
            pass  # a reader holds it open: SQLite checkpoints later
        conn.close()
        ack_queue.put(("done", stats.as_dict(), metrics.drain_delta()))
    except (StorageError, sqlite3.Error) as exc:  # the database or its disk, not a bug
        ack_queue.put(("error", str(exc), None))
        raise SystemExit(1)
    except BaseException as exc:  # report, then let the parent decide
        ack_queue.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise SystemExit(1)
