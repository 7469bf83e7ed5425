"""The atlas-fast command line, run as a user would."""
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
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 6
    conn.close()


def test_errors_are_one_line_and_exit_2(tmp_path):
    res = run("process", str(tmp_path / "missing.mbox"), "--db", str(tmp_path / "x.sqlite"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"atlas-fast: error: {tmp_path / 'missing.mbox'}: no such file"
    res = run("process", str(SAMPLE), "--db", str(tmp_path / "x.sqlite"), "--workers", "0")
    assert res.returncode == 2 and "workers must be a positive integer" in res.stderr


def test_config_shows_sources():
    res = run("config", env={"ATLAS_WORKER_COUNT": "3", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0
    assert "workers" in res.stdout and "env ATLAS_WORKER_COUNT" in res.stdout
