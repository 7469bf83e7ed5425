"""Crash and interrupt: SIGKILL of the whole process group, Ctrl-C; then resume."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from atlas_fast import process_mbox

from conftest import REPO, mbox_bytes, shm_segments, simple_message

N_MESSAGES = 60_000


@pytest.fixture(scope="module")
def big_mbox(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.mbox"
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12
    path.write_bytes(mbox_bytes(*[simple_message(i, body) for i in range(N_MESSAGES)]))
    return path


def _count(db) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


def _start(args, db) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "atlas_fast.cli", "process", *args, "--db", str(db), "-q",
         "--workers", "2", "--batch-size", "100"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, like a terminal job
    )


def _wait_for_rows(db, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while _count(db) == 0:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no row was committed"
        time.sleep(0.01)


def _group_alive(pgid) -> list:
    alive = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def _unique_rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute('SELECT count(*), count(DISTINCT "offset") FROM messages').fetchone()
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_of_the_process_group_then_rerun(big_mbox, tmp_path):
    db = tmp_path / "killed.sqlite"
    proc = _start([str(big_mbox)], db)
    _wait_for_rows(db, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    before = _count(db)
    assert 0 < before < N_MESSAGES, "the kill must land mid-run"
    leaked = {s for s in shm_segments() if s.startswith(f"atlas_{proc.pid}_")}
    summary = process_mbox(big_mbox, db, workers=2)
    assert before + summary.messages == N_MESSAGES
    assert _unique_rows(db) == (N_MESSAGES, N_MESSAGES)
    # The rerun removes segments a killed run could not unlink.
    assert not (leaked & shm_segments())


@pytest.mark.slow
def test_ctrl_c_commits_what_is_done_and_leaves_nothing(big_mbox, tmp_path):
    db = tmp_path / "interrupted.sqlite"
    before_shm = shm_segments()
    proc = _start([str(big_mbox)], db)
    _wait_for_rows(db, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err and b"rerun to resume" in err
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_alive(proc.pid) == []
    assert shm_segments() == before_shm
    conn = sqlite3.connect(db)
    status, counted = conn.execute("SELECT status, messages FROM runs").fetchone()
    done_offset = conn.execute("SELECT done_offset FROM progress").fetchone()[0]
    conn.close()
    stored = _count(db)
    assert status == "interrupted"
    assert counted == stored and 0 < stored < N_MESSAGES
    assert done_offset > 0
    summary = process_mbox(big_mbox, db, workers=2)
    assert summary.resumed_from == done_offset
    assert stored + summary.messages == N_MESSAGES
    assert _unique_rows(db) == (N_MESSAGES, N_MESSAGES)
