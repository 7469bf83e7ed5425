"""Builds databases with monitored runs for the stats and dashboard tests.

``make_processed_db`` runs the real pipeline (``atlas_fast.process_mbox``)
over a corpus file plus a tiny mbox of hostile subjects; while the pipeline
is not importable, ``make_synthetic_db`` stores a run through the monitor's
own API (real timings, a real ResourceSampler) and inserts message rows.
"""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from atlas_fast import migrations
from atlas_fast.monitor import PerformanceMetrics, ResourceSampler, monitor_operation, store_run_metrics

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SPAM_CORPUS = CORPUS / "spamassassin-test-spam.mbox.gz"

XSS_SUBJECTS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
]
XSS_FROM = '"<b>Mallory</b>" <mallory@evil.example>'


def write_hostile_mbox(path: Path) -> Path:
    """A small mbox whose subjects and senders are HTML/JS injections."""
    parts = []
    for i, subject in enumerate(XSS_SUBJECTS * 2):
        parts.append(
            f"From mallory@evil.example Mon Jan  1 00:00:0{i} 2024\n"
            f"From: {XSS_FROM}\n"
            f"To: victim@example.org\n"
            f"Subject: {subject}\n"
            f"Message-ID: <xss{i}@evil.example>\n"
            f"Date: Mon, 1 Jan 2024 00:00:0{i} +0000\n"
            "Content-Type: text/plain\n\n"
            "Claim your prize now! Click http://evil.example/win to win $1,000,000.\n\n"
        )
    path.write_text("".join(parts))
    return path


def pipeline_available() -> bool:
    try:
        import atlas_fast
    except ImportError:
        return False
    return callable(getattr(atlas_fast, "process_mbox", None))


def make_processed_db(tmp_path: Path) -> Path:
    """Process the spam corpus file and the hostile mbox with the real pipeline."""
    import atlas_fast

    db = tmp_path / "mail.sqlite"
    atlas_fast.process_mbox(SPAM_CORPUS, db=db, workers=2)
    atlas_fast.process_mbox(write_hostile_mbox(tmp_path / "hostile.mbox"), db=db, workers=1)
    return db


def make_synthetic_db(tmp_path: Path, n_messages: int = 400) -> Path:
    """A run stored through the monitor API, with rows inserted directly."""
    db = tmp_path / "mail.sqlite"
    conn = migrations.connect(db)
    source = str(SPAM_CORPUS)
    raw = gzip.open(SPAM_CORPUS, "rb").read() if SPAM_CORPUS.exists() else b"From x\n" * 1000
    metrics = PerformanceMetrics.get_instance()
    metrics.reset()
    categories = ["phishing", "advance_fee", "marketing", "health", "financial", None]
    with ResourceSampler(interval=0.1) as sampler:
        cur = conn.execute(
            "INSERT INTO runs (source, started_at, settings) VALUES (?, ?, ?)",
            (source, "2026-01-01T00:00:00Z", json.dumps({"workers": 2, "batch_size": 500, "cache": True})),
        )
        run_id = cur.lastrowid
        done = 0
        chunk = max(1, n_messages // 8)
        rows = []
        for start in range(0, n_messages, chunk):
            with monitor_operation("split", "scan"):
                raw.count(b"\nFrom ")
            with monitor_operation("parse", "chunk"):
                sum(len(line) for line in raw[: 200_000].split(b"\n"))
            with monitor_operation("model", "score"):
                time.sleep(0.01)
            batch = []
            for i in range(start, min(start + chunk, n_messages)):
                category = categories[i % len(categories)]
                label = "ham" if category is None else "spam"
                if i >= n_messages - len(XSS_SUBJECTS):  # the latest rows: shown on the page
                    subject, label, category = XSS_SUBJECTS[n_messages - 1 - i], "spam", "phishing"
                else:
                    subject = f"Offer number {i}"
                metrics.record_cache_hit("classification") if i % 3 else metrics.record_cache_miss("classification")
                batch.append((run_id, source, i * 1000, 1000, f"<m{i}@example>", XSS_FROM, "evil.example",
                              subject, label, category, 0.9 if label == "spam" else 0.1,
                              "rule" if i % 2 else "model", f"R{i % 4}" if i % 2 else None))
            with monitor_operation("write", "executemany"):
                conn.executemany(
                    'INSERT INTO messages (run_id, source, "offset", length, message_id, from_addr,'
                    " from_domain, subject, label, category, score, decided_by, rule_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            metrics.record_rows_written(len(batch))
            rows.extend(batch)
            done += len(batch)
            sampler.set_progress(done, done * 1000)
            time.sleep(0.05)
    spam = sum(1 for r in rows if r[8] == "spam")
    conn.execute(
        "UPDATE runs SET status = 'done', finished_at = ?, messages = ?, spam = ?, ham = ?,"
        " bytes = ?, elapsed_s = ?, msgs_per_sec = ? WHERE run_id = ?",
        ("2026-01-01T00:00:01Z", len(rows), spam, len(rows) - spam, len(rows) * 1000,
         sampler.elapsed_s, len(rows) / max(sampler.elapsed_s, 1e-6), run_id),
    )
    store_run_metrics(conn, run_id, metrics.get_stats(), sampler)
    metrics.reset()
    conn.close()
    return db


def make_db(tmp_path: Path) -> tuple[Path, bool]:
    """The real pipeline's database if it runs, else a synthetic one."""
    if pipeline_available():
        return make_processed_db(tmp_path), True
    return make_synthetic_db(tmp_path), False
