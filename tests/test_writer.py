"""The writer: compiled bulk binding, records read in place from the wire,
resume point bookkeeping, deferred indexes."""
from __future__ import annotations

import os
import queue
import random
import sqlite3

import msgspec
import pytest

from atlas_fast._sqlwriter import BulkConnection, RecordCursor, RecordLayout
from atlas_fast.migrations import MESSAGE_CHECKS, MESSAGE_INDEXES, connect
from atlas_fast.records import ROW_COLUMNS, MessageRecord, RecordBatch, decode_batch, decode_metrics, encode_batch
from atlas_fast.writer import (INSERT_SQL, RECORD_LAYOUT, ROWS_PER_STATEMENT, _ResumeTracker, insert_records,
                               open_batch, run_writer)
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


def test_lone_surrogates_are_stored_not_lost(tmp_path):
    db = tmp_path / "s.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t (a)").connection.close()
    conn = BulkConnection(str(db))
    assert conn.executemany("INSERT INTO t VALUES (?)", [("lone \udcff surrogate",), ("ok ✓",)]) == 2
    conn.close()
    got = [r[0] for r in sqlite3.connect(db).execute("SELECT a FROM t")]
    assert got == ["lone ? surrogate", "ok ✓"]  # '?' as the workers' scrub writes it


# -- records bound straight from the wire ------------------------------------

def _messages_db(tmp_path, name="m.sqlite"):
    db = tmp_path / name
    connect(db).close()
    conn = BulkConnection(str(db))
    conn.exec("PRAGMA ignore_check_constraints = ON")  # as the writer runs
    return db, conn


def _stored(db):
    conn = sqlite3.connect(db)
    try:
        cols = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
        return [tuple(r) for r in conn.execute(f'SELECT run_id, source, {cols} FROM messages ORDER BY "offset"')]
    finally:
        conn.close()


_TEXT = ["", "a", "Sübject ✓ 日本語 🎉", "x" * 31, "y" * 32, "z" * 255, "w" * 256, "v" * 70_000,
         "nul\x00inside", "'); DROP TABLE messages;--"]
_INTS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63 - 1, -1, -32, -33, -129, -2**63]


def _random_record(rng, offset):
    def text():
        return rng.choice([None, rng.choice(_TEXT)])

    return MessageRecord(
        offset, rng.choice(_INTS), text(), text(), text(), text(), text(),
        rng.choice([None, "spam", "ham"]), text(), rng.choice([None, 0.0, -0.0, 1.0, 0.123456789, 1e300]),
        rng.choice([None, "rule", "model", "cache"]), text(), text(), rng.choice(_INTS), rng.choice(_INTS),
        rng.choice(_INTS), text(), text(), text(), text(), text(), text(), text(),
    )


def test_wire_records_bind_like_msgspec_decodes_them(tmp_path):
    """Every column type, NULLs, int edges, long and non-ASCII text: what the
    compiled reader binds equals what msgspec decodes from the same bytes."""
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    db, conn = _messages_db(tmp_path)
    records = [_random_record(rng, i) for i in range(3 * ROWS_PER_STATEMENT + 5)]
    data = encode_batch(RecordBatch(0, 0, 1, records, {"parse.chunk": [1.5]}))
    cursor = RecordCursor(RECORD_LAYOUT, data)
    assert (cursor.seq, cursor.start, cursor.end, cursor.n_records) == (0, 0, 1, len(records))
    assert cursor.violations == 0
    conn.exec("BEGIN")
    assert insert_records(conn, cursor, 10**9, 7, "/src.mbox") == len(records)
    conn.exec("COMMIT")
    conn.close()
    assert cursor.remaining == 0
    expected = [(7, "/src.mbox", *astuple(r)) for r in decode_batch(data).records]
    assert _stored(db) == expected
    assert decode_metrics(cursor.metrics()) == {"parse.chunk": [1.5]}


def test_wire_records_in_parts_and_duplicates(tmp_path):
    """Rows are taken a few at a time across transactions (multi-row and
    one-row statements), and rows already stored are skipped, not counted."""
    db, conn = _messages_db(tmp_path)
    records = [MessageRecord(i, 1, subject=f"s{i}", score=i / 10) for i in range(2 * ROWS_PER_STATEMENT + 3)]
    data = encode_batch(RecordBatch(3, 0, 9, records))
    cursor = RecordCursor(RECORD_LAYOUT, data)
    taken = 0
    for step in (1, ROWS_PER_STATEMENT + 1, 5, 10**6):
        conn.exec("BEGIN")
        n = insert_records(conn, cursor, step, 1, "src")
        conn.exec("COMMIT")
        assert n == min(step, len(records) - taken)
        taken += n
        assert cursor.remaining == len(records) - taken
    again = RecordCursor(RECORD_LAYOUT, data)
    assert insert_records(conn, again, 10**6, 2, "src") == 0  # UNIQUE (source, offset)
    assert again.remaining == 0
    # Old and new rows interleaved within one multi-row statement: only the new count.
    mixed = [MessageRecord(i, 2) for i in range(0, 2 * len(records), 2)]
    new = sum(r.offset >= len(records) for r in mixed)
    assert 0 < new < len(mixed)
    assert insert_records(conn, RecordCursor(RECORD_LAYOUT, encode_batch(RecordBatch(4, 9, 10, mixed))),
                          10**6, 3, "src") == new
    conn.close()
    stored = _stored(db)
    assert [r[2] for r in stored] == sorted(set(range(len(records))) | {r.offset for r in mixed})
    assert {r[2]: r[0] for r in stored} == {**{i: 1 for i in range(len(records))},
                                            **{r.offset: 3 for r in mixed if r.offset >= len(records)}}


def test_short_record_arrays_take_the_defaults(tmp_path):
    """msgspec accepts an array_like record without its trailing defaults."""
    db, conn = _messages_db(tmp_path)
    data = msgspec.msgpack.encode([1, 0, 5, [[10, 3], [20, 4, "<id>", None, None, None, None, "ham"]]])
    cursor = RecordCursor(RECORD_LAYOUT, data)
    assert cursor.metrics() is None and decode_metrics(cursor.metrics()) == {}
    assert insert_records(conn, cursor, 10, 1, "src") == 2
    conn.close()
    assert _stored(db) == [(1, "src", *astuple(r)) for r in decode_batch(data).records]
    assert _stored(db)[0][15:18] == (0, 0, 0)  # n_parts, n_attachments, n_urls


@pytest.mark.parametrize("value", [
    [1, 0, 5, [["x", 3]]],                        # str for an int
    [1, 0, 5, [[True, 3]]],                       # bool for an int
    [1, 0, 5, [[1.5, 3]]],                        # float for an int
    [1, 0, 5, [[None, 3]]],                       # None for a required int
    [1, 0, 5, [[1, 3, 5]]],                       # int for a str
    [1, 0, 5, [[1, 3, None, None, None, None, None, None, None, "0.5"]]],  # str for a float
    [1, 0, 5, [[1, 3, None, None, None, None, None, None, None, None, None, None, None, None]]],  # None for n_parts
    [1, 0, 5, [[1]]],                             # a required field missing
    [1, 0, 5, [[1, 2] + [None] * 30]],            # too many fields
    [1, 0, 5, [[1, 3, b"bytes"]]],                # bin for a str
    [1, 0, 5, [[1, 3, [1]]]],                     # array for a str
    [1, 0, 5],                                    # no records
    ["1", 0, 5, [[1, 3]]],                        # seq not an int
    [1, 0, 5, {"a": 1}],                          # records not an array
    {"seq": 1},                                   # not an array at all
])
def test_wire_reader_rejects_what_msgspec_rejects(value):
    data = msgspec.msgpack.encode(value)
    with pytest.raises(ValueError):
        decode_batch(data)
    with pytest.raises(ValueError, match="record batch"):
        RecordCursor(RECORD_LAYOUT, data)


@pytest.mark.parametrize("value, match", [
    ([1, 0, 5, [[2**64 - 1, 3]]], "record 0 field 0"),      # an int SQLite cannot hold
    ([1, 0, 5, [[1, 3]], {}, 9], "array of 4 or 5 items"),   # an item the batch does not have
])
def test_wire_reader_is_stricter_than_msgspec_where_it_must_be(value, match):
    """msgspec takes these; the writer refuses them rather than store a wrong
    value or drop a field it does not know (our encoder writes neither)."""
    data = msgspec.msgpack.encode(value)
    decode_batch(data)
    with pytest.raises(ValueError, match=match):
        RecordCursor(RECORD_LAYOUT, data)


def test_wire_reader_rejects_bad_bytes():
    good = encode_batch(RecordBatch(1, 0, 5, [MessageRecord(1, 3, subject="héllo")]))
    for cut in range(len(good)):  # every truncation
        with pytest.raises(ValueError, match="record batch"):
            RecordCursor(RECORD_LAYOUT, good[:cut])
    for bad in (b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xc0\xaf", b"\xf4\x90\x80\x80"):  # not UTF-8, surrogate, overlong, > U+10FFFF
        data = good.replace("héllo".encode(), (b"h" + bad + b"llo")[:6].ljust(6, b"o"))
        assert len(data) == len(good)
        with pytest.raises(ValueError):
            decode_batch(data)
        with pytest.raises(ValueError, match="invalid UTF-8"):
            RecordCursor(RECORD_LAYOUT, data)
    with pytest.raises(ValueError, match="trailing data"):
        RecordCursor(RECORD_LAYOUT, msgspec.msgpack.encode([1, 0, 5, [[1, 3]]]) + b"\x00")


def test_record_layout_matches_the_record():
    assert RECORD_LAYOUT.nfields == len(ROW_COLUMNS) and RECORD_LAYOUT.nrequired == 2
    with pytest.raises(ValueError, match="kinds"):
        RecordLayout("Ix")
    with pytest.raises(ValueError, match="required fields must come first"):
        RecordLayout("iI")
    with pytest.raises(ValueError, match="not a str field"):
        RecordLayout("Ii", {1: ("a",)})


def test_check_constraints_match_the_schema(tmp_path):
    """The writer enforces MESSAGE_CHECKS instead of SQLite: they must be the
    schema's CHECK constraints, neither looser nor stricter."""
    conn = connect(tmp_path / "c.sqlite")
    for col, allowed in MESSAGE_CHECKS.items():
        for value in (*allowed, None):
            conn.execute(f'INSERT INTO messages (run_id, source, "offset", length, {col}) VALUES (1, ?, 0, 0, ?)',
                         (f"{col}{value}", value))
        for value in ("x", allowed[0].upper(), allowed[0] + " "):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute(f'INSERT INTO messages (run_id, source, "offset", length, {col}) VALUES (1, ?, 0, 0, ?)',
                             (f"{col}{value}", value))
    conn.close()


def test_a_value_the_schema_forbids_keeps_its_row(tmp_path):
    """SQLite's CHECK with INSERT OR IGNORE would silently drop such a row;
    the writer stores it with the value moved to ``error``."""
    db, conn = _messages_db(tmp_path)
    records = [MessageRecord(0, 1, label="Spam", decided_by="rules", error="bad date"),
               MessageRecord(1, 1, label="ham", decided_by="model")]
    data = encode_batch(RecordBatch(0, 0, 2, records))
    assert RecordCursor(RECORD_LAYOUT, data).violations == 2
    cursor = open_batch(data)
    assert cursor.violations == 0
    assert insert_records(conn, cursor, 10, 1, "src") == 2
    conn.close()
    rows = sqlite3.connect(db).execute('SELECT label, decided_by, error FROM messages ORDER BY "offset"').fetchall()
    assert rows == [(None, None, "bad date; invalid label 'Spam'; invalid decided_by 'rules'"), ("ham", "model", None)]


def test_run_writer_commits_batches_of_rows_and_the_resume_point(tmp_path):
    """The writer loop, in this process: chunks out of order, batch_size rows
    per transaction, the resume point over the contiguous prefix only."""
    db = tmp_path / "w.sqlite"
    conn = connect(db)
    conn.execute("INSERT INTO runs (run_id, source, started_at) VALUES (1, 'src', 'now')")
    conn.execute("INSERT INTO progress (source, fingerprint, updated_at) VALUES ('src', '', 'now')")
    conn.close()
    chunks = [[MessageRecord(100 * seq + i, 1, label="spam", score=0.5) for i in range(n)]
              for seq, n in enumerate((40, 0, 75, 3))]
    inq, acks = queue.Queue(), queue.Queue()
    for seq in (2, 0, 1):  # chunk 3 never arrives, as if the run was stopped
        inq.put(encode_batch(RecordBatch(seq, 100 * seq, 100 * seq + 100, chunks[seq], {"w.x": [1.0]})))
    inq.put(encode_batch(RecordBatch(-1, 0, 0, [], {"w.y": [2.0]})))
    inq.put(None)
    try:
        run_writer(db, 1, "src", 0, 7, inq, acks, os.getppid())
    finally:
        import gc

        gc.enable()
        gc.unfreeze()
    msgs = []
    while not acks.empty():
        msgs.append(acks.get())
    kind, stats, _ = msgs[-1]
    assert kind == "done"
    assert stats["rows_received"] == stats["rows_inserted"] == 115
    assert stats["transactions"] == 17  # ceil(115 / 7)
    assert stats["done_offset"] == 300
    commits = [m for m in msgs if m[0] == "commit"]
    assert [m[1] for m in commits] == [min(7 * (i + 1), 115) for i in range(17)]
    assert commits[0][2] == 0 and commits[-1][2] == 300  # chunk 2 came first: no progress until 0 and 1
    check = sqlite3.connect(db)
    assert check.execute("SELECT done_offset FROM progress").fetchone() == (300,)
    assert check.execute("SELECT messages FROM runs").fetchone() == (115,)
    got = [r[0] for r in check.execute('SELECT "offset" FROM messages ORDER BY "offset"')]
    check.close()
    assert got == [r.offset for r in chunks[0] + chunks[2]]
