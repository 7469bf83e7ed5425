"""Writer: the one process that owns the SQLite connection during a run.

It decodes the workers' msgspec batches and commits rows with
``executemany`` in transactions of ``batch_size`` rows.  In the same
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
import time
import traceback
from datetime import datetime, timezone

from msgspec.structs import astuple

from ._sqlwriter import BulkConnection
from .migrations import ensure_indexes
from .monitor import PerformanceMetrics, monitor_operation
from .records import ROW_COLUMNS, decode_batch

__all__ = ["WriterStats", "run_writer", "INSERT_SQL", "utc_now"]

INSERT_SQL = (
    "INSERT OR IGNORE INTO messages (run_id, source, "
    + ", ".join(f'"{c}"' for c in ROW_COLUMNS)
    + ") VALUES ("
    + ", ".join("?" * (len(ROW_COLUMNS) + 2))
    + ")"
)
_UPDATE_PROGRESS = "UPDATE progress SET done_offset = ?, updated_at = ? WHERE source = ?"
_UPDATE_RUN = "UPDATE runs SET messages = messages + ?, bytes = ? WHERE run_id = ?"


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
               rebuild_indexes=False):
    """Entry point of the writer process.

    Reads encoded batches from ``in_queue`` until a ``None`` sentinel, then
    commits what is left and puts ``("done", stats)`` on ``ack_queue``.  After
    every commit it puts ``("commit", rows_committed, done_offset, metrics)``
    there so the parent can report progress; ``metrics`` is the monitor delta
    of the writer and of the workers' batches it received.  On an error it puts ``("error", text)``
    and exits non-zero.  With ``rebuild_indexes`` (a bulk load into an empty
    table, whose secondary indexes the parent dropped) it builds them once at
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
        conn.exec("PRAGMA wal_autocheckpoint = 10000")
        conn.exec("PRAGMA temp_store = MEMORY")  # the end-of-run index sorts
        tracker = _ResumeTracker(start_offset)
        pending: list[tuple] = []
        # (seq, end offset, index in `pending` just past the chunk's last row)
        pending_chunks: list[tuple[int, int, int]] = []
        prefix = (run_id, source)

        metrics = PerformanceMetrics.get_instance()

        def commit(limit: int) -> None:
            rows = pending[:limit]
            t0 = time.perf_counter()
            timer = monitor_operation("write", "commit")
            timer.__enter__()
            conn.exec("BEGIN")
            inserted = conn.executemany(INSERT_SQL, rows, prefix)
            done = 0
            for seq, end, stop in pending_chunks:
                if stop > limit:
                    break
                tracker.finish(seq, end)
                done += 1
            conn.execute(_UPDATE_PROGRESS, (tracker.done_offset, utc_now(), source))
            conn.execute(_UPDATE_RUN, (inserted, tracker.done_offset, run_id))
            conn.exec("COMMIT")
            timer.__exit__(None, None, None)
            metrics.record_rows_written(len(rows))
            stats.write_s += time.perf_counter() - t0
            stats.rows_inserted += inserted
            stats.transactions += 1
            stats.done_offset = tracker.done_offset
            del pending[:limit]
            del pending_chunks[:done]
            for i, (seq, end, stop) in enumerate(pending_chunks):
                pending_chunks[i] = (seq, end, stop - limit)
            ack_queue.put(
                ("commit", stats.rows_received - len(pending), tracker.done_offset, metrics.drain_delta())
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
            t0 = time.perf_counter()
            with monitor_operation("decode", "batch"):
                batch = decode_batch(data)
                metrics.merge_delta(batch.metrics)
                if batch.seq < 0:  # a worker's last metrics, no rows
                    continue
                pending.extend([astuple(rec) for rec in batch.records])
            stats.decode_s += time.perf_counter() - t0
            stats.rows_received += len(batch.records)
            pending_chunks.append((batch.seq, batch.end, len(pending)))
            while len(pending) >= batch_size:
                commit(batch_size)
        if pending or pending_chunks:
            commit(len(pending))
        if rebuild_indexes:
            with monitor_operation("write", "index"):
                ensure_indexes(conn)
        try:
            conn.exec("PRAGMA wal_checkpoint(TRUNCATE)")  # leave a small WAL behind
        except RuntimeError:
            pass  # a reader holds it open: SQLite checkpoints later
        conn.close()
        ack_queue.put(("done", stats.as_dict(), metrics.drain_delta()))
    except BaseException as exc:  # report, then let the parent decide
        ack_queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1)
