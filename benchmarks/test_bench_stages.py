"""One benchmark group per stage, each beside the plain-Python way.

    python -m pytest benchmarks/test_bench_stages.py --benchmark-only
"""
from __future__ import annotations

import email
import email.policy
import mailbox
import os
import sqlite3
from array import array

import pytest

from atlas_fast._parser import parse_chunk
from atlas_fast._sqlwriter import BulkConnection
from atlas_fast.migrations import MIGRATIONS, drop_indexes
from atlas_fast.records import MessageRecord
from atlas_fast.splitter import MboxSplitter, Oversized
from atlas_fast.writer import INSERT_SQL
from conftest import mbox_slice, record_rate
from msgspec.structs import astuple
from plain_python import _fields

N_PARSE = 5_000


def _count_split(path) -> int:
    slot = memoryview(bytearray(4 << 20))
    n = 0
    with MboxSplitter(path) as sp:
        while (got := sp.fill(slot)) is not None:
            n += 1 if isinstance(got, Oversized) else len(got.starts)
    slot.release()
    return n


@pytest.mark.benchmark(group="split")
def test_split_atlas_fast(benchmark, mbox_50k):
    n = benchmark.pedantic(_count_split, args=(mbox_50k,), rounds=3, iterations=1)
    assert n == 50_000
    record_rate(benchmark, "split atlas_fast", n)


@pytest.mark.benchmark(group="split")
def test_split_plain_python(benchmark, mbox_50k):
    def split():
        box = mailbox.mbox(mbox_50k, create=False)
        try:
            return sum(1 for _ in box.iterkeys() for _ in [box.get_bytes(_)])
        finally:
            box.close()

    n = benchmark.pedantic(split, rounds=1, iterations=1)
    assert n == 50_000
    record_rate(benchmark, "split plain Python", n)


@pytest.fixture(scope="module")
def parse_input(mbox_50k):
    """The first N_PARSE messages as one buffer with its offsets table."""
    path = mbox_slice(mbox_50k, N_PARSE)
    data = path.read_bytes()
    from atlas_fast._splitter import scan_starts

    starts, _ = scan_starts(data, 0, len(data), True)
    ends = array("q", starts[1:])
    ends.append(len(data))
    return data, starts, ends


@pytest.mark.benchmark(group="parse")
def test_parse_atlas_fast(benchmark, parse_input):
    data, starts, ends = parse_input
    out = benchmark(parse_chunk, data, starts, ends)
    assert len(out) == N_PARSE
    record_rate(benchmark, "parse atlas_fast", N_PARSE)


@pytest.mark.benchmark(group="parse")
def test_parse_plain_python(benchmark, parse_input):
    data, starts, ends = parse_input
    raws = [data[data.index(b"\n", s) + 1 : e] for s, e in zip(starts, ends)]

    def parse():
        return [_fields(email.message_from_bytes(r, policy=email.policy.default)) for r in raws]

    out = benchmark.pedantic(parse, rounds=1, iterations=1)
    assert len(out) == N_PARSE
    record_rate(benchmark, "parse plain Python", N_PARSE)


@pytest.fixture(scope="module")
def writer_rows(parse_input):
    data, starts, ends = parse_input
    parsed = parse_chunk(data, starts, ends)
    rows = []
    for rep in range(10):  # 50k rows
        base = rep * len(data)
        for s, e, m in zip(starts, ends, parsed):
            rows.append(astuple(MessageRecord(
                base + s, e - s, m.message_id, m.from_addr, m.from_domain, m.subject, m.date,
                "spam", "phishing", 0.93, "model", None, "subj:verify,url_dom:example.biz",
                m.n_parts, m.n_attachments, m.n_urls, m.from_domain, "192.0.2.7", "US",
                "pass", "none", None, m.error)))
    return rows


def _fresh_db(tmp_path, name, bulk):
    db = tmp_path / name
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(MIGRATIONS[0])
    if bulk:
        drop_indexes(conn)
    conn.close()
    return db


@pytest.mark.benchmark(group="writer")
def test_writer_atlas_fast(benchmark, writer_rows, tmp_path):
    def write(db):
        conn = BulkConnection(str(db))
        conn.exec("PRAGMA synchronous = NORMAL")
        for i in range(0, len(writer_rows), 500):
            conn.exec("BEGIN")
            conn.executemany(INSERT_SQL, writer_rows[i : i + 500], (1, "/bench.mbox"))
            conn.exec("COMMIT")
        from atlas_fast.migrations import ensure_indexes

        ensure_indexes(conn)
        conn.close()

    benchmark.pedantic(write, setup=lambda: ((_fresh_db(tmp_path, "a.sqlite", True),), {}),
                       rounds=3, iterations=1)
    record_rate(benchmark, "writer atlas_fast (rows)", len(writer_rows))


@pytest.mark.benchmark(group="writer")
def test_writer_plain_python(benchmark, writer_rows, tmp_path):
    rows = [(1, "/bench.mbox", *r) for r in writer_rows]

    def write(db):
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA synchronous = NORMAL")
        for i in range(0, len(rows), 500):
            conn.executemany(INSERT_SQL, rows[i : i + 500])
            conn.commit()
        conn.close()

    benchmark.pedantic(write, setup=lambda: ((_fresh_db(tmp_path, "b.sqlite", False),), {}),
                       rounds=3, iterations=1)
    record_rate(benchmark, "writer plain Python (rows)", len(rows))
