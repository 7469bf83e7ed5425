"""Tests of atlas_fast.stats: run reports and the `atlas-fast stats` tables."""
from __future__ import annotations

import re
import sqlite3

import pytest
from monitor_fixtures import XSS_SUBJECTS, make_db, make_synthetic_db

from atlas_fast import migrations
from atlas_fast.errors import AtlasError
from atlas_fast.stats import format_stats, list_runs, open_readonly, run_report


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path, real = make_db(tmp_path_factory.mktemp("stats"))
    print("database from", "process_mbox" if real else "the monitor API (pipeline not importable)")
    return path


def _value(text: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}\s+(.+)$", text, re.M)
    assert match, f"no {label!r} line in:\n{text}"
    return match.group(1).strip()


def test_format_stats_of_the_latest_run(db):
    conn = sqlite3.connect(db)
    run_id, messages, spam, ham = conn.execute(
        "SELECT run_id, messages, spam, ham FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    stages = conn.execute(
        "SELECT category || '.' || operation, count FROM run_metrics WHERE run_id = ?", (run_id,)).fetchall()
    conn.close()
    text = format_stats(db)
    print(text)
    assert text.startswith(f"Run {run_id}\n")
    assert _value(text, "messages") == f"{messages:,}"
    assert _value(text, "spam") == f"{spam:,}"
    assert _value(text, "ham") == f"{ham:,}"
    assert "Time per stage (ms)" in text and "Processes" in text and "Verdicts" in text
    assert stages, "the run stored no stage timings: the pipeline must call monitor.store_run_metrics"
    for name, count in stages:
        assert re.search(rf"^  {re.escape(name)}\s+{count:,}\s", text, re.M), name
    assert re.search(r"^  parent\s+\d+\s+\d+\s+[\d.,]+ MiB", text, re.M)
    # Every run shows up in the history table.
    for run in list_runs(open_readonly(db)):
        assert re.search(rf"^  {run['run_id']}\s+{run['status']}\s", text, re.M)


def test_format_stats_of_a_chosen_run(db):
    first = format_stats(db, run_id=1)
    assert first.startswith("Run 1\n")


def test_report_counts_match_the_messages_table(db):
    conn = open_readonly(db)
    report = run_report(conn)
    run_id = report["run"]["run_id"]
    raw = sqlite3.connect(db)
    total = raw.execute("SELECT COUNT(*) FROM messages WHERE run_id = ?", (run_id,)).fetchone()[0]
    raw.close()
    assert sum(v["messages"] for v in report["verdicts"]) == total
    assert {m["subject"] for m in report["recent"]} >= set(XSS_SUBJECTS)
    assert report["processes"], "no resource samples stored: the pipeline must run a ResourceSampler"
    assert report["processes"][0]["role"] == "parent"
    assert report["throughput"], "no throughput series stored"


def test_missing_run_and_missing_database(db, tmp_path):
    with pytest.raises(AtlasError, match="no run 999"):
        format_stats(db, run_id=999)
    with pytest.raises(AtlasError, match="no such database"):
        format_stats(tmp_path / "absent.sqlite")
    empty = tmp_path / "empty.sqlite"
    migrations.connect(empty).close()
    with pytest.raises(AtlasError, match="no runs"):
        format_stats(empty)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AtlasError, match="cannot open database"):
        format_stats(tmp_path / "junk.sqlite")


def test_control_characters_cannot_break_the_table(tmp_path):
    db = make_synthetic_db(tmp_path, n_messages=20)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET source = 'evil\x1b[2J\nname.mbox'")
    conn.commit()
    conn.close()
    text = format_stats(db)
    assert "\x1b" not in text
    assert "evil?[2J?name.mbox" in text


def test_stats_read_while_a_writer_holds_a_transaction(tmp_path):
    db = make_synthetic_db(tmp_path, n_messages=20)
    writer = migrations.connect(db)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET status = 'running'")
    try:
        text = format_stats(db)  # sees the last committed state, does not block
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert _value(text, "status") == "done"


def test_message_counts_read_only_new_rows(tmp_path):
    from atlas_fast.stats import MessageCounts

    db = tmp_path / "grow.sqlite"
    writer = migrations.connect(db)
    run_id = writer.execute("INSERT INTO runs (source, started_at) VALUES ('g.mbox', 'now')").lastrowid
    insert = ('INSERT INTO messages (run_id, source, "offset", length, label, category, decided_by, rule_id,'
              " error) VALUES (?, 'g.mbox', ?, 1, ?, ?, ?, ?, ?)")
    writer.executemany(insert, [(run_id, i, "spam", "phishing", "rule", "R1", None) for i in range(5)])
    counts = MessageCounts()
    reader = open_readonly(db)
    first = run_report(reader, run_id, cache=counts)
    assert first["run"]["messages"] == 5 and first["rules"] == [
        {"rule_id": "R1", "category": "phishing", "messages": 5}]
    writer.executemany(insert, [(run_id, 10 + i, "ham", None, "model", None, "bad" if i == 0 else None)
                                for i in range(3)])
    second = run_report(reader, run_id, cache=counts)
    assert second["run"]["messages"] == 8 and second["run"]["errors"] == 1
    assert second["verdicts"] == [
        {"label": "ham", "category": None, "messages": 3, "errors": 1},
        {"label": "spam", "category": "phishing", "messages": 5, "errors": 0},
    ]
    assert second["decided_by"] == [{"decided_by": "rule", "messages": 5}, {"decided_by": "model", "messages": 3}]
    assert run_report(reader, run_id)["verdicts"] == second["verdicts"]  # same as a full scan


def test_atlas_fast_stats_command(db):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "atlas_fast.cli", "stats", "--db", str(db), "--run", "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out == format_stats(db, 1)
    bad = subprocess.run([sys.executable, "-m", "atlas_fast.cli", "stats", "--db", str(db), "--run", "999"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no run 999" in bad.stderr
