"""One benchmark group per stage, each beside the plain-Python way.

    python -m pytest benchmarks/test_bench_stages.py --benchmark-only
"""
from __future__ import annotations

import email
import email.policy
import gc
import mailbox
import os
import queue
import sqlite3
import time
from array import array

import pytest

from atlas_fast._parser import parse_chunk
from atlas_fast.migrations import connect, drop_indexes
from atlas_fast.records import MessageRecord, RecordBatch, decode_batch, encode_batch
from atlas_fast.splitter import MboxSplitter, Oversized
from atlas_fast.writer import INSERT_SQL, run_writer
from conftest import NOTES, mbox_slice, record_rate
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
def writer_batches(parse_input):
    """50k records as the writer receives them: one encoded RecordBatch per
    2 MiB chunk of input (a worker's slot), the first N_PARSE messages'
    fields repeated 10 times at growing offsets."""
    data, starts, ends = parse_input
    parsed = parse_chunk(data, starts, ends)
    batches, records, chunk_start, seq = [], [], 0, 0
    for rep in range(10):  # 50k rows
        base = rep * len(data)
        for s, e, m in zip(starts, ends, parsed):
            if base + e - chunk_start > (2 << 20) and records:
                batches.append(encode_batch(RecordBatch(seq, chunk_start, base + s, records, {})))
                records, chunk_start, seq = [], base + s, seq + 1
            records.append(MessageRecord(
                base + s, e - s, m.message_id, m.from_addr, m.from_domain, m.subject, m.date,
                "spam", "phishing", 0.93, "model", None, "subj:verify,url_dom:example.biz",
                m.n_parts, m.n_attachments, m.n_urls, m.from_domain, "192.0.2.7", "US",
                "pass", "none", None, m.error))
    batches.append(encode_batch(RecordBatch(seq, chunk_start, 10 * len(data), records, {})))
    return batches


WRITER_ROWS = 10 * N_PARSE
CPU: dict[str, list[float]] = {}


def _fresh_db(tmp_path, name, bulk):
    """An empty database as a run finds it (schema, a runs row, a resume
    point); ``bulk``: with the secondary indexes dropped, as a run into an
    empty table does."""
    db = tmp_path / name
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    conn = connect(db)
    conn.execute("INSERT INTO runs (run_id, source, started_at) VALUES (1, '/bench.mbox', 'now')")
    conn.execute("INSERT INTO progress (source, fingerprint, updated_at) VALUES ('/bench.mbox', '', 'now')")
    if bulk:
        drop_indexes(conn)
    conn.close()
    return db


def _cpu_note(name):
    """Median CPU time per row of a benchmark's rounds (process_time, so a
    busy machine does not inflate it the way it inflates wall time)."""
    times = sorted(CPU[name])
    us = 1e6 * times[len(times) // 2] / WRITER_ROWS
    NOTES.append(f"{name}: {us:.2f} µs CPU/row ({1e6 / us:,.0f} rows/s of CPU)")


@pytest.mark.benchmark(group="writer")
def test_writer_atlas_fast(benchmark, writer_batches, tmp_path):
    """The writer process's own loop (run_writer, in this process): read the
    encoded batches, commit in 500-row transactions with the resume point,
    rebuild the deferred indexes at the end."""
    CPU["writer atlas_fast"] = []

    def write(db):
        inq, acks = queue.Queue(), queue.Queue()
        for data in writer_batches:
            inq.put(data)
        inq.put(None)
        t0 = time.process_time()
        try:
            run_writer(db, 1, "/bench.mbox", 0, 500, inq, acks, os.getppid(), rebuild_indexes=True)
        finally:
            gc.enable()  # run_writer turns the cyclic GC off for its process
            gc.unfreeze()
        CPU["writer atlas_fast"].append(time.process_time() - t0)
        while (msg := acks.get_nowait())[0] != "done":
            pass
        assert msg[1]["rows_inserted"] == WRITER_ROWS

    benchmark.pedantic(write, setup=lambda: ((_fresh_db(tmp_path, "a.sqlite", True),), {}),
                       rounds=3, iterations=1)
    record_rate(benchmark, "writer atlas_fast (rows)", WRITER_ROWS)
    _cpu_note("writer atlas_fast")


@pytest.mark.benchmark(group="writer")
def test_writer_plain_python(benchmark, writer_batches, tmp_path):
    """The same batches the plain way: msgspec decode, a tuple per row,
    ``sqlite3.executemany`` and a commit every 500 rows."""
    CPU["writer plain Python"] = []

    def write(db):
        t0 = time.process_time()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA synchronous = NORMAL")
        rows = []
        for data in writer_batches:
            rows.extend((1, "/bench.mbox", *astuple(r)) for r in decode_batch(data).records)
            while len(rows) >= 500:
                conn.executemany(INSERT_SQL, rows[:500])
                conn.commit()
                del rows[:500]
        conn.executemany(INSERT_SQL, rows)
        conn.commit()
        conn.close()
        CPU["writer plain Python"].append(time.process_time() - t0)

    benchmark.pedantic(write, setup=lambda: ((_fresh_db(tmp_path, "b.sqlite", False),), {}),
                       rounds=3, iterations=1)
    record_rate(benchmark, "writer plain Python (rows)", WRITER_ROWS)
    _cpu_note("writer plain Python")


def _compile_rules_cold(monkeypatch, cores: int):
    # Every round compiles the built-in rules from nothing: no in-process
    # memo, no stored databases (a first run on a machine, or a run after
    # the user's rule files changed).
    from atlas_fast import config
    from atlas_fast import rules as R

    monkeypatch.setenv("ATLAS_RULES_CACHE_DIR", "")
    monkeypatch.setattr(config, "usable_cores", lambda: cores)
    rules = R.load_rules()

    def build():
        R._HS_MEMO.clear()
        return R.RuleSet(rules, engine="hyperscan")

    return build


@pytest.mark.benchmark(group="rules-compile")
def test_rules_compile_cold(benchmark, monkeypatch):
    """Hyperscan databases of the built-in rules compiled on one thread per
    usable core (the compiler releases the GIL)."""
    from atlas_fast.config import usable_cores

    build = _compile_rules_cold(monkeypatch, usable_cores())
    benchmark.pedantic(build, rounds=3, iterations=1)
    benchmark.extra_info["threads"] = usable_cores()


@pytest.mark.benchmark(group="rules-compile")
def test_rules_compile_cold_one_thread(benchmark, monkeypatch):
    """The same, one database after another."""
    build = _compile_rules_cold(monkeypatch, 1)
    benchmark.pedantic(build, rounds=3, iterations=1)
    benchmark.extra_info["threads"] = 1
