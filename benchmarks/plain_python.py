"""The plain-Python way, as a user would write it without atlas_fast.

stdlib ``mailbox`` to split, ``email`` with ``policy.default`` to parse, the
same columns atlas_fast stores, and ``sqlite3.executemany`` to save.  The
benchmarks run it on a slice of the same mbox to get the baseline rate.
"""
from __future__ import annotations

import email
import email.policy
import email.utils
import mailbox
import re
import sqlite3
from datetime import timezone

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.I)


def _text(value):
    """sqlite3 cannot store the lone surrogates email leaves for bad bytes."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _fields(msg) -> tuple:
    def header(name):
        try:
            value = msg[name]
        except Exception:
            return None
        return None if value is None else str(value)

    from_addr = from_domain = date = None
    try:
        addrs = msg["from"].addresses if msg["from"] is not None else ()
        if addrs:
            from_addr = addrs[0].addr_spec.lower()
            from_domain = addrs[0].domain.lower() or None
    except Exception:
        pass
    try:
        dt = msg["date"].datetime if msg["date"] is not None else None
        if dt is not None:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            date = dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except Exception:
        pass
    parts = attachments = urls = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        parts += 1
        if part.get_filename():
            attachments += 1
            continue
        if part.get_content_maintype() == "text":
            try:
                urls += len(_URL.findall(part.get_content()))
            except Exception:
                pass
    return tuple(_text(v) for v in (header("message-id"), from_addr, from_domain,
                                     header("subject"), date, parts, attachments, urls))


def process_plain_python(path, db, limit=None) -> int:
    """Parse ``path`` with the stdlib and store one row per message in ``db``."""
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (offset INTEGER, message_id TEXT, from_addr TEXT,"
        " from_domain TEXT, subject TEXT, date TEXT, n_parts INTEGER, n_attachments INTEGER,"
        " n_urls INTEGER)"
    )
    box = mailbox.mbox(path, factory=None, create=False)
    rows = []
    try:
        for i, key in enumerate(box.iterkeys()):
            if limit is not None and i >= limit:
                break
            raw = box.get_bytes(key)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            rows.append((i, *_fields(msg)))
            if len(rows) >= 500:
                conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?)", rows)
                conn.commit()
                rows.clear()
    finally:
        box.close()
    conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    n = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    return n
