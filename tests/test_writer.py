"""The writer: compiled bulk binding, resume point bookkeeping, deferred indexes."""
from __future__ import annotations

import sqlite3

import pytest

from atlas_fast._sqlwriter import BulkConnection
from atlas_fast.migrations import MESSAGE_INDEXES, connect
from atlas_fast.writer import INSERT_SQL, _ResumeTracker
from atlas_fast.records import MessageRecord
from msgspec.structs import astuple


def test_resume_point_moves_over_the_contiguous_prefix_only():
    t = _ResumeTracker(100)
    t.finish(1, 300)
    assert t.done_offset == 100  # chunk 0 is not committed yet
    t.finish(0, 200)
    assert t.done_offset == 300
    t.finish(3, 500)
    assert t.done_offset == 300
    t.finish(2, 400)
    assert t.done_offset == 500


def test_bulk_connection_binds_every_type(tmp_path):
    db = tmp_path / "b.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t (a, b, c, d, e, f)").connection.close()
    conn = BulkConnection(str(db))
    conn.exec("BEGIN")
    n = conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
                         [(2**62, 1.5, "x ✓ '); DROP TABLE t;--", None, b"\x00\xff"),
                          (True, -0.0, "", None, b"")], prefix=("p",))
    conn.exec("COMMIT")
    conn.close()
    assert n == 2
    got = sqlite3.connect(db).execute("SELECT * FROM t").fetchall()
    assert got == [("p", 2**62, 1.5, "x ✓ '); DROP TABLE t;--", None, b"\x00\xff"),
                   ("p", 1, -0.0, "", None, b"")]


def test_bulk_connection_errors(tmp_path):
    db = tmp_path / "b.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t (a UNIQUE)").connection.close()
    conn = BulkConnection(str(db))
    with pytest.raises(TypeError, match="cannot bind list"):
        conn.executemany("INSERT INTO t VALUES (?)", [([1],)])
    with pytest.raises(ValueError, match="row has 2 values"):
        conn.executemany("INSERT INTO t VALUES (?)", [(1, 2)])
    with pytest.raises(UnicodeEncodeError):
        conn.executemany("INSERT INTO t VALUES (?)", [("lone \udcff surrogate",)])
    conn.executemany("INSERT INTO t VALUES (?)", [(1,)])
    with pytest.raises(RuntimeError, match="UNIQUE constraint failed"):
        conn.executemany("INSERT INTO t VALUES (?)", [(1,)])
    assert conn.executemany("INSERT OR IGNORE INTO t VALUES (?)", [(1,), (2,)]) == 1
    with pytest.raises(RuntimeError, match="no such table"):
        conn.exec("SELECT * FROM nope")
    conn.close()
    conn.close()
    with pytest.raises(OSError, match="cannot open database"):
        BulkConnection(str(tmp_path / "missing" / "x.sqlite"))


def test_insert_sql_matches_the_record(tmp_path):
    db = tmp_path / "m.sqlite"
    connect(db).close()
    conn = BulkConnection(str(db))
    rec = MessageRecord(5, 10, subject="s", error="e")
    assert conn.executemany(INSERT_SQL, [astuple(rec)], prefix=(1, "src")) == 1
    conn.close()
    row = sqlite3.connect(db).execute('SELECT run_id, source, "offset", length, subject, error FROM messages').fetchone()
    assert row == (1, "src", 5, 10, "s", "e")


def _indexes(db):
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def test_missing_indexes_are_rebuilt_on_open(tmp_path):
    db = tmp_path / "i.sqlite"
    connect(db).close()
    conn = sqlite3.connect(db)
    for name in MESSAGE_INDEXES:
        conn.execute(f"DROP INDEX {name}")
    conn.close()
    assert not set(MESSAGE_INDEXES) & _indexes(db)  # as a killed bulk load leaves it
    connect(db).close()
    assert set(MESSAGE_INDEXES) <= _indexes(db)
