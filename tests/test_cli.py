"""The atlas-fast command line, run as a user would."""
import gzip
import re
import sqlite3
import subprocess
import sys

from conftest import REPO, SAMPLE


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "atlas_fast.cli", *args], cwd=REPO,
                          capture_output=True, text=True, **kw)


def test_process_prints_a_summary(tmp_path):
    db = tmp_path / "s.sqlite"
    res = run("process", str(SAMPLE), "--db", str(db), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "messages" in res.stdout and " 6" in res.stdout
    assert "100.0%" in res.stderr  # the progress bar's last line
    # The default cache (empty: see conftest), its lookups in the summary.
    assert res.stdout.splitlines()[-1].split(None, 1) == [
        "cache", "verdicts 0 hits, 6 misses; enrichment 0 hits, 6 misses"]
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "again.sqlite"), "-q")
    assert res.stdout.splitlines()[-1].split(None, 1) == [
        "cache", "verdicts 6 hits, 0 misses; enrichment 0 hits, 0 misses"]
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "off.sqlite"), "-q", "--no-cache")
    assert res.stdout.splitlines()[-1].split() == ["cache", "off"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 6
    conn.close()


def test_errors_are_one_line_and_exit_2(tmp_path):
    res = run("process", str(tmp_path / "missing.mbox"), "--db", str(tmp_path / "x.sqlite"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"atlas-fast: error: {tmp_path / 'missing.mbox'}: no such file"
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "x.sqlite"), "--workers", "0")
    assert res.returncode == 2 and "workers must be a positive integer" in res.stderr
    res = run("train", "--ham", str(SAMPLE), "--spam", str(SAMPLE), "-o", str(tmp_path / "m.bin"),
              "--jobs", "0")
    assert res.returncode == 2 and "jobs must be a positive integer" in res.stderr
    assert not (tmp_path / "m.bin").exists()
    res = run("train", "--ham", str(SAMPLE), "--spam", str(SAMPLE), "-o", str(tmp_path / "m.bin"),
              "--target-fpr", "1.5")
    assert res.returncode == 2 and res.stderr.startswith(
        "atlas-fast: error: target_fpr must be a fraction of the ham") and "1.5" in res.stderr
    assert not (tmp_path / "m.bin").exists()


def test_config_shows_sources():
    res = run("config", env={"ATLAS_WORKER_COUNT": "3", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0
    assert "workers" in res.stdout and "env ATLAS_WORKER_COUNT" in res.stdout


def test_train_then_eval_with_the_new_model(tmp_path):
    from conftest import corpus_file

    ham = corpus_file("csdmc2010-train-ham.mbox.gz")
    spam = corpus_file("csdmc2010-train-spam.mbox.gz")
    model = tmp_path / "mine.bin"
    res = run("train", "--ham", str(ham), "--spam", str(spam), "-o", str(model), "-q",
              "--url-domains", "--target-fpr", "0.002")
    assert res.returncode == 0, res.stderr
    assert "954 ham and 628 spam" in res.stdout and model.exists()
    # Where the operating point landed, from the cross-validated margins.
    fpr, recall = re.search(r"cross-validated: ([\d.]+)% of the ham called spam, "
                            r"([\d.]+)% of the spam caught", res.stdout).groups()
    assert float(fpr) <= 0.2 and 90 < float(recall) <= 100
    from atlas_fast.model import load_model

    header = load_model(model).header
    assert header.url_domain_features is True
    assert header.training["params"]["target_fpr"] == 0.002
    res = run("eval", "--ham", str(SAMPLE), "--spam", str(SAMPLE), "--model", str(model), "--json")
    assert res.returncode == 0, res.stderr
    import json

    report = json.loads(res.stdout)
    assert isinstance(report, dict) and report
    db = tmp_path / "m.sqlite"
    res = run("process", str(SAMPLE), "--db", str(db), "--model", str(model), "-q", "--no-cache")
    assert res.returncode == 0, res.stderr
    conn = sqlite3.connect(db)
    labels = conn.execute("SELECT count(*) FROM messages WHERE label IN ('spam', 'ham')").fetchone()[0]
    conn.close()
    assert labels == 6


def test_bad_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model")
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "x.sqlite"), "--model", str(bad), "-q")
    assert res.returncode == 2
    assert "bad.bin" in res.stderr and "Traceback" not in res.stderr


def test_a_damaged_cache_is_a_one_line_warning(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cache.db").write_bytes(b"garbage" * 1000)
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "s.sqlite"), "--workers", "1",
              "--cache-dir", str(cache), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"atlas-fast: warning: {SAMPLE}: cache {cache / 'cache.db'} is damaged (file is not a "
        "database): moved to cache.db.damaged, the next run starts a fresh one; this run went "
        "on without it (verdicts are the same)"]
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 6
    conn.close()


def test_a_full_disk_is_a_one_line_error_and_a_rerun_resumes(tmp_path):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes SQLite's
    writes fail as on a full disk: one line naming the database and what
    stays committed, exit 2; a rerun without the limit finishes the file
    and stores nothing twice."""
    import resource
    import signal

    from conftest import MANIFEST_COUNTS, corpus_file

    mbox = corpus_file("spamassassin-train-ham.mbox.gz")
    db = tmp_path / "mail.sqlite"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    res = run("process", str(mbox), "--db", str(db), "--no-cache", "-q", preexec_fn=limit)
    assert res.returncode == 2, res.stderr
    line, = res.stderr.splitlines()
    assert re.fullmatch(
        rf"atlas-fast: error: {re.escape(str(db))}: (disk I/O error|database or disk is full) "
        r"\(code \d+\); \d+ messages of this run are committed, rerun to resume at byte \d+", line)
    committed = int(re.search(r"; (\d+) messages", line).group(1))
    assert 0 < committed < MANIFEST_COUNTS["spamassassin-train-ham.mbox.gz"]
    res = run("process", str(mbox), "--db", str(db), "--no-cache", "-q")
    assert res.returncode == 0, res.stderr
    conn = sqlite3.connect(db)
    total, distinct = conn.execute('SELECT count(*), count(DISTINCT "offset") FROM messages').fetchone()
    runs = conn.execute("SELECT status, messages FROM runs ORDER BY run_id").fetchall()
    conn.close()
    assert total == distinct == MANIFEST_COUNTS["spamassassin-train-ham.mbox.gz"]
    assert runs[0] == ("failed", committed) and runs[-1][0] == "done"


def test_process_json_is_one_line_per_mbox(tmp_path):
    import json

    db = tmp_path / "j.sqlite"
    gz = tmp_path / "sample.mbox.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    res = run("process", str(SAMPLE), str(gz), "--db", str(db), "-q", "--json", "--no-cache")
    assert res.returncode == 0, res.stderr
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert (first["source"], second["source"]) == (str(SAMPLE), str(gz))
    conn = sqlite3.connect(db)
    for got in (first, second):
        assert got["status"] == "done" and got["db"] == str(db)
        assert got["messages"] == got["spam"] + got["ham"] == 6
        assert (got["spam"],) == conn.execute(
            "SELECT count(*) FROM messages WHERE label = 'spam' AND source = ?",
            (got["source"],)).fetchone()
        assert got["settings"]["cache"] is False
        assert got["msgs_per_sec"] > 0
    conn.close()
