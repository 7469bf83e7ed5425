"""Shared fixtures: the labelled corpus beside the repo, and mbox builders."""
from __future__ import annotations

import gzip
import os
import sqlite3
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
SAMPLE = REPO / "samples" / "sample.mbox"

# Message counts per file, from ../shared/corpus/MANIFEST.md.
MANIFEST_COUNTS = {
    "spamassassin-train-ham.mbox.gz": 3376,
    "spamassassin-train-spam.mbox.gz": 1511,
    "spamassassin-test-ham.mbox.gz": 774,
    "spamassassin-test-spam.mbox.gz": 385,
    "csdmc2010-train-ham.mbox.gz": 954,
    "csdmc2010-train-spam.mbox.gz": 628,
}


def load_tool(name: str):
    """``tools/<name>.py`` as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {path} not present")
    return path


def mbox_bytes(*messages: bytes, envelope: bytes = b"From sender@example.com Thu Jan  1 00:00:00 1970\n") -> bytes:
    """An mboxo file of ``messages`` as Python's mailbox writes it: envelope,
    message, blank line."""
    out = []
    for m in messages:
        if not m.endswith(b"\n"):
            m += b"\n"
        out.append(envelope + m + b"\n")
    return b"".join(out)


def write_mbox(path: Path, *messages: bytes, compress: bool = False) -> Path:
    data = mbox_bytes(*messages)
    if compress:
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def rows(db, where: str = "", params=()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f'SELECT * FROM messages {where} ORDER BY source, "offset"', params).fetchall()
    finally:
        conn.close()


def shm_segments() -> set[str]:
    try:
        # This process's segments only: other test runs may share /dev/shm.
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"atlas_{os.getpid()}_")}
    except OSError:
        return set()


def simple_message(i: int, body: str = "hello") -> bytes:
    return (
        f"From: Sender {i} <sender{i}@example.com>\n"
        f"To: someone@example.org\n"
        f"Subject: message number {i}\n"
        f"Date: Mon, 3 Mar 2025 09:14:52 +0000\n"
        f"Message-ID: <msg-{i}@example.com>\n"
        f"\n{body} {i}\n"
    ).encode()


@pytest.fixture
def tmp_db(tmp_path):
    return tmp_path / "atlas.sqlite"


@pytest.fixture(scope="session", autouse=True)
def _compiled_rules_dir(tmp_path_factory):
    """Compiled rule databases for this session only: the tests exercise the
    compile-and-store path every session, as on a fresh machine, and never
    read or write the user's ``~/.cache``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ATLAS_RULES_CACHE_DIR", str(tmp_path_factory.mktemp("compiled-rules")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _empty_verdict_cache(tmp_path_factory, monkeypatch):
    """Every test starts with an empty default verdict cache of its own.

    The default cache directory lives under ``$XDG_CACHE_HOME``; shared, it
    made a test's verdicts (``decided_by = 'cache'`` or not) depend on what
    earlier tests, or earlier runs on the same machine, had cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
