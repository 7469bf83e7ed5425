"""process_mbox end to end: one row per message, resume, options, clean exits."""
from __future__ import annotations

import gzip
import os
import sqlite3
import zlib

import psutil
import pytest

import atlas_fast
from atlas_fast import ConfigError, InputError, NotAnMboxError, process_mbox

from conftest import (
    MANIFEST_COUNTS,
    SAMPLE,
    corpus_file,
    mbox_bytes,
    rows,
    shm_segments,
    simple_message,
    write_mbox,
)


def our_children():
    """Child processes of this test process, except multiprocessing's
    resource tracker: one per interpreter, it lives as long as we do."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd:
            out.append(child)
    return out


@pytest.mark.parametrize("name", sorted(MANIFEST_COUNTS))
def test_corpus_file_gets_one_row_per_message(name, tmp_db):
    path = corpus_file(name)
    summary = process_mbox(path, tmp_db, workers=2)
    expected = MANIFEST_COUNTS[name]
    assert summary.messages == expected
    assert summary.status == "done"
    conn = sqlite3.connect(tmp_db)
    n, distinct = conn.execute('SELECT count(*), count(DISTINCT "offset") FROM messages').fetchone()
    conn.close()
    assert n == distinct == expected


def test_sample_mbox_fills_header_columns(tmp_db):
    summary = process_mbox(SAMPLE, tmp_db, workers=1)
    assert summary.messages == 6
    got = rows(tmp_db)
    first = got[0]
    assert first["source"] == str(SAMPLE)
    assert first["offset"] == 0
    assert first["from_addr"] == "alice@example.org"
    assert first["from_domain"] == "example.org"
    assert first["subject"] == "Lunch on Thursday?"
    assert first["message_id"] == "<20250303091452.1234@example.org>"
    assert first["date"] == "2025-03-03T08:14:52Z"
    assert got[2]["subject"] == "Your account has been suspended"
    assert got[3]["n_attachments"] == 1
    assert all(r["length"] > 0 for r in got)
    data = SAMPLE.read_bytes()
    assert sum(r["length"] for r in got) == len(data)
    assert all(data[r["offset"] : r["offset"] + 5] == b"From " for r in got)


def _table(db):
    conn = sqlite3.connect(db)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)") if r[1] not in ("id", "run_id")]
        quoted = ", ".join(f'"{c}"' for c in cols)
        return conn.execute(f'SELECT {quoted} FROM messages ORDER BY "offset"').fetchall()
    finally:
        conn.close()


def test_one_and_two_workers_store_identical_rows(tmp_path):
    path = corpus_file("spamassassin-test-spam.mbox.gz")
    # Each run with a cold cache of its own: the second must not be served
    # the first one's verdicts (decided_by would read 'cache').
    one = process_mbox(path, tmp_path / "one.sqlite", workers=1, memory_limit_mb=32,
                       cache=tmp_path / "cache-one")
    two = process_mbox(path, tmp_path / "two.sqlite", workers=2, cache=tmp_path / "cache-two")
    assert one.messages == two.messages == 385
    assert _table(tmp_path / "one.sqlite") == _table(tmp_path / "two.sqlite")


def test_rerun_resumes_and_writes_nothing_twice(tmp_path, tmp_db):
    msgs = [simple_message(i) for i in range(300)]
    path = write_mbox(tmp_path / "m.mbox", *msgs)
    first = process_mbox(path, tmp_db, workers=2, batch_size=7)
    assert first.messages == 300
    again = process_mbox(path, tmp_db, workers=2)
    assert again.messages == 0
    assert again.resumed_from == path.stat().st_size
    # The mailbox grows: only the new messages are processed.
    with open(path, "ab") as f:
        f.write(mbox_bytes(*[simple_message(i) for i in range(300, 310)]))
    grown = process_mbox(path, tmp_db, workers=1)
    assert grown.messages == 10
    assert len(rows(tmp_db)) == 310
    conn = sqlite3.connect(tmp_db)
    runs = conn.execute("SELECT status, messages FROM runs ORDER BY run_id").fetchall()
    conn.close()
    assert runs == [("done", 300), ("done", 0), ("done", 10)]


def test_replaced_file_is_refused(tmp_path, tmp_db):
    path = write_mbox(tmp_path / "m.mbox", *[simple_message(i) for i in range(5)])
    process_mbox(path, tmp_db, workers=1)
    write_mbox(path, *[simple_message(i, "other") for i in range(5)])
    with pytest.raises(atlas_fast.SourceChangedError, match=r"m\.mbox: differs from the file"):
        process_mbox(path, tmp_db, workers=1)


def test_gzip_and_plain_give_the_same_rows(tmp_path):
    msgs = [simple_message(i) for i in range(50)]
    plain = write_mbox(tmp_path / "m.mbox", *msgs)
    gz = write_mbox(tmp_path / "m.mbox.gz", *msgs, compress=True)
    process_mbox(plain, tmp_path / "a.sqlite", workers=1, cache=tmp_path / "cache-a")
    process_mbox(gz, tmp_path / "b.sqlite", workers=1, cache=tmp_path / "cache-b")
    a = [tuple(r)[3:] for r in rows(tmp_path / "a.sqlite")]
    b = [tuple(r)[3:] for r in rows(tmp_path / "b.sqlite")]
    assert a == b and len(a) == 50


def test_progress_callback_reaches_the_file_size(tmp_path, tmp_db):
    path = write_mbox(tmp_path / "m.mbox", *[simple_message(i, "z" * 3000) for i in range(400)])
    seen = []
    process_mbox(path, tmp_db, workers=1, memory_limit_mb=32, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_summary_counts_and_runs_row(tmp_db):
    summary = process_mbox(SAMPLE, tmp_db, workers=1)
    assert summary.messages == summary.spam + summary.ham or summary.spam + summary.ham == 0
    assert summary.msgs_per_sec > 0
    conn = sqlite3.connect(tmp_db)
    row = conn.execute("SELECT status, messages, errors, settings FROM runs").fetchone()
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert row[:3] == ("done", 6, 0)
    assert '"workers":1' in row[3]
    assert version == atlas_fast.migrations.SCHEMA_VERSION


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"workers": 0}, ConfigError, "workers must be a positive integer"),
        ({"workers": "two"}, ConfigError, "workers must be a positive integer"),
        ({"workers": 2.5}, TypeError, "workers must be an int"),
        ({"batch_size": -1}, ConfigError, "batch_size must be a positive integer"),
        ({"memory_limit_mb": 1}, ConfigError, "memory_limit_mb must be at least 32"),
        ({"cache": 3}, TypeError, "cache must be a path"),
        ({"progress": 5}, TypeError, "progress must be a callable"),
    ],
)
def test_bad_options(kwargs, exc, match, tmp_db):
    with pytest.raises(exc, match=match):
        process_mbox(SAMPLE, tmp_db, **kwargs)


def test_bad_environment_is_an_error_not_a_default(monkeypatch, tmp_db):
    monkeypatch.setenv("ATLAS_WORKER_COUNT", "lots")
    with pytest.raises(ConfigError, match=r"'lots' \(env ATLAS_WORKER_COUNT\)"):
        process_mbox(SAMPLE, tmp_db)
    monkeypatch.setenv("ATLAS_WORKER_COUNT", "1")
    monkeypatch.setenv("ATLAS_BULK_BATCH_SIZE", "3")
    summary = process_mbox(SAMPLE, tmp_db)
    assert summary.settings["workers"] == 1 and summary.settings["batch_size"] == 3


def test_bad_paths(tmp_path, tmp_db):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        process_mbox(42, tmp_db)
    with pytest.raises(InputError, match=r"missing\.mbox: no such file"):
        process_mbox(tmp_path / "missing.mbox", tmp_db)
    junk = tmp_path / "data.bin"
    junk.write_bytes(os.urandom(70000).replace(b"From ", b"xxxxx"))
    with pytest.raises(NotAnMboxError, match=r"data\.bin: not an mbox"):
        process_mbox(junk, tmp_db)
    with pytest.raises(atlas_fast.AtlasError, match="cannot open database"):
        process_mbox(SAMPLE, SAMPLE)  # a text file is not a database


def test_nothing_left_behind_after_normal_and_failed_runs(tmp_path, tmp_db):
    before = shm_segments()
    process_mbox(SAMPLE, tmp_db, workers=2)
    assert our_children() == []
    assert shm_segments() == before
    # A run that fails mid-stream: a gzip file cut in half.
    data = gzip.compress(mbox_bytes(*[simple_message(i, "q" * 4000) for i in range(3000)]))
    cut = tmp_path / "cut.mbox.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mbox\.gz: corrupt or truncated"):
        process_mbox(cut, tmp_path / "cut.sqlite", workers=2)
    assert our_children() == []
    assert shm_segments() == before
    conn = sqlite3.connect(tmp_path / "cut.sqlite")
    status, n = conn.execute("SELECT status, messages FROM runs").fetchone()
    stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    assert status == "failed" and n == stored


def test_a_truncated_gzip_stores_every_message_before_the_cut(tmp_path):
    """An interrupted download: the messages before the cut are stored, the
    last one with an error saying where it was cut, and the run fails with
    the file and offset; a rerun resumes there and stores nothing twice."""
    plain = mbox_bytes(*[simple_message(i, "q" * (i * 53 % 4000)) for i in range(2000)])
    data = gzip.compress(plain)
    cut = tmp_path / "cut.mbox.gz"
    cut.write_bytes(data[: len(data) * 3 // 5])
    inflater = zlib.decompressobj(31)
    prefix = inflater.decompress(cut.read_bytes())
    n = prefix.count(b"\n\nFrom ") + 1
    db = tmp_path / "cut.sqlite"
    for attempt in range(2):
        with pytest.raises(InputError, match=(
                rf"cut\.mbox\.gz: corrupt or truncated compressed stream: compressed file ended "
                rf".*\(byte {len(prefix)}\)$")):
            process_mbox(cut, db, workers=2)
        got = rows(db)
        assert len(got) == n and len({r["offset"] for r in got}) == n
        assert all(r["error"] is None for r in got[:-1])
        assert got[-1]["error"].startswith(f"cut short: the input breaks off at byte {len(prefix)}")
        assert got[-1]["offset"] + got[-1]["length"] == len(prefix)
        assert [r["message_id"] for r in got[:-1]] == [f"<msg-{i}@example.com>" for i in range(n - 1)]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT status, messages FROM runs ORDER BY run_id").fetchall() == [
        ("failed", n), ("failed", 0)]
    conn.close()


def test_memory_limit_shrinks_slots():
    from atlas_fast.config import resolve_settings
    from atlas_fast.pipeline import _slot_plan

    count, size = _slot_plan(resolve_settings(workers=2, memory_limit_mb=32))
    assert count * size <= 32 * (1 << 20) // 4
    assert count >= 3
    big_count, big_size = _slot_plan(resolve_settings(workers=2))
    assert big_count * big_size > count * size


def _mapping_rss_kb(address: int) -> int:
    """Resident KiB of this process's mapping that contains ``address``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise AssertionError("mapping not found")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux /proc")
def test_slot_pages_are_dropped_but_their_data_kept():
    import ctypes

    from atlas_fast.pipeline import _SlotRing, _unmap_pages

    ring = _SlotRing(2, 1 << 20)
    try:
        slot = ring.slots[0]
        address = ctypes.addressof(ctypes.c_char.from_buffer(slot))
        data = os.urandom(1 << 20)
        slot[:] = data
        assert _mapping_rss_kb(address) >= 1024
        _unmap_pages(slot, len(data))
        assert _mapping_rss_kb(address) == 0  # no longer in this process's RSS
        assert slot[:] == data  # still in the shared memory
    finally:
        ring.close()


def test_no_resource_tracker_and_no_segment_left(tmp_path):
    """A run starts no multiprocessing resource tracker (one more process),
    even with a message larger than a slot, which gets a named segment."""
    import subprocess
    import sys

    big = simple_message(1, "x" * (3 << 20))  # larger than a 2 MiB slot
    path = write_mbox(tmp_path / "big.mbox", simple_message(0), big, simple_message(2))
    code = (
        "import sys; from atlas_fast import process_mbox;"
        "from multiprocessing import resource_tracker as rt;"
        f"s = process_mbox({str(path)!r}, {str(tmp_path / 'db.sqlite')!r}, workers=2, cache=False);"
        "assert s.messages == 3, s.messages;"
        "assert rt._resource_tracker._pid is None, 'resource tracker started';"
        "import os; print(os.getpid())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pid = out.stdout.strip()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"atlas_{pid}_")]


def test_bulk_load_ends_with_every_index(tmp_path, tmp_db):
    from atlas_fast.migrations import MESSAGE_INDEXES

    process_mbox(SAMPLE, tmp_db, workers=1)
    conn = sqlite3.connect(tmp_db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM messages WHERE label = 'spam' AND category = 'phishing'"
    ).fetchall()
    conn.close()
    assert set(MESSAGE_INDEXES) <= names
    assert "messages_label_category" in str(plan)


def test_sample_verdicts(tmp_db):
    """The shipped rules and model on the repo's clear-cut sample messages."""
    process_mbox(SAMPLE, tmp_db, workers=1, cache=False)
    got = [(r["label"], r["category"], r["decided_by"]) for r in rows(tmp_db)]
    assert [g[0] for g in got] == ["ham", "spam", "spam", "ham", "spam", "ham"]
    assert [g[1] for g in got] == [None, "advance_fee", "phishing", None, "auto_warranty", None]
    assert all(g[2] in ("rule", "model") for g in got)


def test_persistent_cache_filled_by_one_run_serves_the_next(tmp_path):
    """Workers read the cache and the writer process writes it: a second
    run over the same mail finds every verdict, and verdicts match a run
    without the cache."""
    mbox = corpus_file("spamassassin-test-spam.mbox.gz")
    cache = tmp_path / "cache"
    runs = {}
    for name, kwargs in (("cold", dict(cache=cache)), ("warm", dict(cache=cache)),
                         ("off", dict(cache=False))):
        db = tmp_path / f"{name}.sqlite"
        summary = process_mbox(mbox, db, workers=2, **kwargs)
        runs[name + ":summary"] = summary.cache.get("classification")
        conn = sqlite3.connect(db)
        runs[name] = conn.execute(
            'SELECT "offset", label, category, score, rule_id, reasons, registered_domain,'
            ' origin_ip, origin_country, spf, dkim, dmarc FROM messages ORDER BY "offset"'
        ).fetchall()
        runs[name + ":cache"] = dict(
            (ns, (hits, misses)) for ns, hits, misses in
            conn.execute("SELECT namespace, hits, misses FROM run_cache"))
        conn.close()
        assert summary.messages == len(runs[name]) == 385
    assert runs["cold:cache"]["classification"] == (0, 385)
    assert runs["warm:cache"]["classification"] == (385, 0)
    # The run summary reports the same counts.
    assert runs["cold:summary"] == {"hits": 0, "misses": 385}
    assert runs["warm:summary"] == {"hits": 385, "misses": 0}
    assert runs["cold"] == runs["warm"] == runs["off"]


def test_a_damaged_cache_warns_once_and_changes_no_verdict(tmp_path):
    """Workers and writer go on without a cache they cannot read; the
    parent warns once, sets the database aside, and the next run starts a
    fresh cache.  Every row is the one a run without a cache stores."""
    mbox = corpus_file("spamassassin-test-spam.mbox.gz")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cache.db").write_bytes(b"\xff" * 16384)
    query = 'SELECT "offset", label, category, score, rule_id, decided_by FROM messages ORDER BY "offset"'
    with pytest.warns(atlas_fast.CacheWarning) as caught:
        process_mbox(mbox, tmp_path / "damaged.sqlite", workers=2, cache=cache)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{mbox}: cache {cache / 'cache.db'} is damaged (file is not a database): moved to "
        "cache.db.damaged, the next run starts a fresh one; this run went on without it "
        "(verdicts are the same)")
    assert (cache / "cache.db.damaged").read_bytes() == b"\xff" * 16384
    process_mbox(mbox, tmp_path / "off.sqlite", workers=2, cache=False)
    process_mbox(mbox, tmp_path / "fresh.sqlite", workers=2, cache=cache)  # no warning
    got = {}
    for name in ("damaged", "off", "fresh"):
        conn = sqlite3.connect(tmp_path / f"{name}.sqlite")
        got[name] = conn.execute(query).fetchall()
        conn.close()
    assert len(got["off"]) == 385
    assert got["damaged"] == got["off"] == got["fresh"]
    warm = process_mbox(mbox, tmp_path / "warm.sqlite", workers=2, cache=cache)
    assert warm.messages == 385
    conn = sqlite3.connect(tmp_path / "warm.sqlite")
    assert conn.execute("SELECT count(*) FROM messages WHERE decided_by = 'cache'").fetchone()[0] == 385
    conn.close()
