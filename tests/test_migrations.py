"""Schema version lives in the database; migrations are idempotent."""
import sqlite3
import subprocess
import sys

import pytest

from atlas_fast import AtlasError
from atlas_fast.migrations import PAGE_SIZE, SCHEMA_VERSION, connect, migrate

from conftest import REPO


def test_fresh_database_gets_the_current_version(tmp_path):
    conn = connect(tmp_path / "a.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert migrate(conn) == 0
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    assert {"messages_label_category", "messages_from_domain", "messages_date"} <= indexes


def test_newer_database_is_refused(tmp_path):
    db = tmp_path / "future.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(AtlasError, match="newer than this atlas_fast supports"):
        connect(db)


def test_command_line(tmp_path):
    db = tmp_path / "cli.sqlite"
    out = subprocess.run([sys.executable, "-m", "atlas_fast.migrations", str(db)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert f"schema version {SCHEMA_VERSION} ({SCHEMA_VERSION} migration(s) applied)" in out
    out = subprocess.run([sys.executable, "-m", "atlas_fast.migrations", str(db)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "(0 migration(s) applied)" in out


def test_new_databases_get_the_page_size_old_ones_keep_theirs(tmp_path):
    new = tmp_path / "new.sqlite"
    conn = connect(new)
    assert conn.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,) != (4096,)
    conn.close()
    old = tmp_path / "old.sqlite"
    plain = sqlite3.connect(old)
    plain.execute("PRAGMA page_size = 4096")
    plain.execute("CREATE TABLE keep (x)")
    plain.close()
    conn = connect(old)
    assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()
