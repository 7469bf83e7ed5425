"""SQLite schema and its migrations.

The schema version lives in the database as ``PRAGMA user_version``.  Opening a
database through :func:`connect` runs every migration it lacks, in order, each
in its own transaction.  Run by hand with::

    python -m atlas_fast.migrations mail.sqlite
"""
from __future__ import annotations

import sqlite3
import sys

from .errors import AtlasError

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "MESSAGE_INDEXES", "MESSAGE_CHECKS", "PAGE_SIZE", "connect", "migrate",
    "ensure_indexes", "drop_indexes",
]

# Each entry upgrades the schema from version i to i + 1.  Never edit a
# released entry: append a new one.
MIGRATIONS: list[str] = [
    # 1: messages, runs and the resume point.
    """
    CREATE TABLE runs (
        run_id        INTEGER PRIMARY KEY,
        source        TEXT NOT NULL,
        status        TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
        started_at    TEXT NOT NULL,
        finished_at   TEXT,
        resumed_from  INTEGER NOT NULL DEFAULT 0,
        bytes         INTEGER NOT NULL DEFAULT 0,
        messages      INTEGER NOT NULL DEFAULT 0,
        spam          INTEGER NOT NULL DEFAULT 0,
        ham           INTEGER NOT NULL DEFAULT 0,
        errors        INTEGER NOT NULL DEFAULT 0,
        elapsed_s     REAL,
        msgs_per_sec  REAL,
        settings      TEXT,
        timings       TEXT,
        version       TEXT
    );
    CREATE TABLE messages (
        id                INTEGER PRIMARY KEY,
        run_id            INTEGER NOT NULL REFERENCES runs (run_id),
        source            TEXT NOT NULL,
        "offset"          INTEGER NOT NULL,
        length            INTEGER NOT NULL,
        message_id        TEXT,
        from_addr         TEXT,
        from_domain       TEXT,
        subject           TEXT,
        date              TEXT,
        label             TEXT CHECK (label IN ('spam', 'ham')),
        category          TEXT,
        score             REAL,
        decided_by        TEXT CHECK (decided_by IN ('rule', 'model', 'cache')),
        rule_id           TEXT,
        reasons           TEXT,
        n_parts           INTEGER NOT NULL DEFAULT 0,
        n_attachments     INTEGER NOT NULL DEFAULT 0,
        n_urls            INTEGER NOT NULL DEFAULT 0,
        registered_domain TEXT,
        origin_ip         TEXT,
        origin_country    TEXT,
        spf               TEXT,
        dkim              TEXT,
        dmarc             TEXT,
        error             TEXT,
        UNIQUE (source, "offset")
    );
    CREATE INDEX messages_label_category ON messages (label, category);
    CREATE INDEX messages_from_domain ON messages (from_domain);
    CREATE INDEX messages_date ON messages (date);
    CREATE INDEX messages_run ON messages (run_id);
    CREATE TABLE progress (
        source       TEXT PRIMARY KEY,
        size         INTEGER,
        fingerprint  TEXT NOT NULL,
        done_offset  INTEGER NOT NULL DEFAULT 0,
        complete     INTEGER NOT NULL DEFAULT 0,
        updated_at   TEXT NOT NULL
    );
    """,
    # 2: run history of the performance monitor (atlas_fast.monitor).
    """
    CREATE TABLE run_metrics (
        run_id     INTEGER NOT NULL REFERENCES runs (run_id),
        category   TEXT NOT NULL,
        operation  TEXT NOT NULL,
        count      INTEGER NOT NULL,
        total_ms   REAL NOT NULL,
        mean_ms    REAL NOT NULL,
        p50_ms     REAL NOT NULL,
        p95_ms     REAL NOT NULL,
        max_ms     REAL NOT NULL,
        PRIMARY KEY (run_id, category, operation)
    );
    CREATE TABLE run_cache (
        run_id     INTEGER NOT NULL REFERENCES runs (run_id),
        namespace  TEXT NOT NULL,
        hits       INTEGER NOT NULL,
        misses     INTEGER NOT NULL,
        hit_rate   REAL,
        PRIMARY KEY (run_id, namespace)
    );
    CREATE TABLE run_counters (
        run_id     INTEGER NOT NULL REFERENCES runs (run_id),
        name       TEXT NOT NULL,
        value      REAL NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE run_throughput (
        run_id       INTEGER NOT NULL REFERENCES runs (run_id),
        t            REAL NOT NULL,
        messages     INTEGER NOT NULL,
        bytes        INTEGER NOT NULL,
        msgs_per_s   REAL NOT NULL,
        bytes_per_s  REAL NOT NULL,
        PRIMARY KEY (run_id, t)
    );
    CREATE TABLE run_resources (
        run_id       INTEGER NOT NULL REFERENCES runs (run_id),
        t            REAL NOT NULL,
        pid          INTEGER NOT NULL,
        role         TEXT NOT NULL,
        cpu_percent  REAL,
        rss_bytes    INTEGER,
        read_bytes   INTEGER,
        read_chars   INTEGER,
        PRIMARY KEY (run_id, t, pid)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# Secondary indexes of ``messages`` for the common queries.  A run into an
# empty table drops them and builds them once at the end (a sort is several
# times cheaper than updating four B-trees per row); :func:`connect` puts back
# any that a killed run left missing.
MESSAGE_INDEXES = {
    "messages_label_category": "messages (label, category)",
    "messages_from_domain": "messages (from_domain)",
    "messages_date": "messages (date)",
    "messages_run": "messages (run_id)",
}


# The CHECK constraints of ``messages`` (migration 1), as data.  The writer
# runs with ``PRAGMA ignore_check_constraints`` and enforces these itself:
# SQLite evaluates ``decided_by IN ('rule', 'model', 'cache')`` by building a
# temporary B-tree for every row inserted, which was ~40 % of the insert's CPU.
MESSAGE_CHECKS: dict[str, tuple[str, ...]] = {
    "label": ("spam", "ham"),
    "decided_by": ("rule", "model", "cache"),
}

# Page size of a new database.  16 KiB pages hold ~45 rows of ``messages``
# rather than ~11: fewer page splits, WAL frames and B-tree levels per row
# (bulk insert plus index rebuild: ~25 % less CPU than 4 KiB, measured).  An
# existing database keeps the size it was created with.
PAGE_SIZE = 16384


def ensure_indexes(conn) -> None:
    """Create the secondary indexes of ``messages`` that are missing.

    ``conn`` is a ``sqlite3`` connection or a ``BulkConnection`` (anything
    with ``exec`` or ``execute`` taking one SQL string).
    """
    run = getattr(conn, "exec", None) or conn.execute
    for name, target in MESSAGE_INDEXES.items():
        run(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def drop_indexes(conn) -> None:
    """Drop the secondary indexes of ``messages`` (before a bulk load)."""
    for name in MESSAGE_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s schema up to :data:`SCHEMA_VERSION`.

    Returns
    -------
    int
        The number of migrations applied.

    Raises
    ------
    AtlasError
        If the database is newer than this version of atlas_fast knows.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise AtlasError(
            f"database schema version {version} is newer than this atlas_fast "
            f"supports ({SCHEMA_VERSION}); upgrade atlas_fast"
        )
    applied = 0
    for number in range(version, SCHEMA_VERSION):
        # executescript commits first; wrap each step so it applies whole or not at all.
        conn.executescript(
            "BEGIN;\n" + MIGRATIONS[number] + f"\nPRAGMA user_version = {number + 1};\nCOMMIT;"
        )
        applied += 1
    return applied


def connect(path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with the schema up to date.

    Raises
    ------
    AtlasError
        If the file is not an SQLite database or cannot be opened.
    """
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a no-op once the file has pages
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
            ensure_indexes(conn)
    except sqlite3.DatabaseError as exc:
        raise AtlasError(f"{path}: cannot open database: {exc}") from exc
    return conn


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m atlas_fast.migrations DB", file=sys.stderr)
        return 2
    conn = sqlite3.connect(args[0], isolation_level=None)
    applied = migrate(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    print(f"{args[0]}: schema version {version} ({applied} migration(s) applied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
