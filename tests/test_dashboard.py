"""Tests of atlas_fast.dashboard: the JSON API and the /performance page.

The end-to-end test starts the server in a subprocess on a free loopback
port and loads the page in headless Chromium through Selenium (Debian
packages ``chromium`` and ``chromium-driver``, PyPI ``selenium``).  It skips
only when no Chromium binary or driver is installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from monitor_fixtures import XSS_SUBJECTS, make_db

from atlas_fast import migrations

starlette_testclient = pytest.importorskip("starlette.testclient", reason="needs httpx")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path, real = make_db(tmp_path_factory.mktemp("dashboard"))
    print("database from", "process_mbox" if real else "the monitor API (pipeline not importable)")
    return path


@pytest.fixture(scope="module")
def client(db):
    from atlas_fast.dashboard import create_app

    with starlette_testclient.TestClient(create_app(db)) as c:
        yield c


# -- JSON API -------------------------------------------------------------------


def test_root_redirects_to_the_performance_page(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/performance"


def test_page_is_static_and_locked_down(client):
    response = client.get("/performance")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    # No data is rendered into the HTML itself: no email string can reach it.
    assert "<script src=\"/static/dashboard.js\" defer></script>" in response.text
    assert "mallory" not in response.text
    js = client.get("/static/dashboard.js")
    assert js.status_code == 200 and "textContent" in js.text and "innerHTML" not in js.text
    assert client.get("/static/performance.html").status_code == 404
    assert client.get("/static/../dashboard.py").status_code == 404


def test_api_runs_and_reports(client, db):
    runs = client.get("/api/runs").json()["runs"]
    conn = sqlite3.connect(db)
    n_runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    conn.close()
    assert len(runs) == n_runs and runs[0]["run_id"] == max(r["run_id"] for r in runs)
    assert len(client.get("/api/runs?limit=1").json()["runs"]) == 1
    assert client.get("/api/runs?limit=x").status_code == 400

    latest = client.get("/api/runs/latest").json()
    assert latest["run"]["run_id"] == runs[0]["run_id"]
    for key in ("stages", "cache", "counters", "throughput", "resources", "processes", "verdicts", "recent"):
        assert key in latest
    assert {m["subject"] for m in latest["recent"]} >= set(XSS_SUBJECTS)

    first = client.get("/api/runs/1").json()
    assert first["run"]["run_id"] == 1
    assert first["stages"], "run 1 stored no stage timings: the pipeline must call monitor.store_run_metrics"
    assert first["throughput"] and first["resources"], "run 1 stored no ResourceSampler series"
    stage = first["stages"][0]
    assert set(stage) >= {"category", "operation", "count", "total_ms", "mean_ms", "p50_ms", "p95_ms", "max_ms"}
    assert client.get("/api/runs/999999").status_code == 404
    assert client.get("/api/runs/abc").status_code == 400


def test_api_before_the_database_exists(tmp_path):
    from atlas_fast.dashboard import create_app

    db = tmp_path / "later.sqlite"
    with starlette_testclient.TestClient(create_app(db)) as c:
        assert c.get("/api/runs").json() == {"runs": []}
        assert c.get("/api/runs/latest").status_code == 404
        assert c.get("/api/health").json()["exists"] is False
        migrations.connect(db).close()
        assert c.get("/api/runs").json() == {"runs": []}


def test_serve_rejects_a_bad_port(tmp_path):
    from atlas_fast.dashboard import serve
    from atlas_fast.errors import AtlasError

    with pytest.raises(AtlasError, match="port"):
        serve(tmp_path / "x.sqlite", port=70000)


# -- the page in a real browser ---------------------------------------------------


def _find_chromium():
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None)
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running_server(db, log_path: Path):
    """``atlas-fast serve`` (as ``python -m atlas_fast.cli``) on a free loopback port; yields its URL."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atlas_fast.cli", "serve", "--db", str(db), "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/api/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dashboard server did not start: {log_path.read_text(errors='replace')}")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def server(db, tmp_path):
    with _running_server(db, tmp_path / "server.log") as base:
        yield base


@pytest.fixture()
def browser():
    binary, driver_path = _find_chromium()
    if binary is None or driver_path is None:
        pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver  # a hard requirement once Chromium is there
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--lang=en-US"):
        options.add_argument(arg)
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for: {script}")


def _full_page_screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(height + 20, 6000))
    time.sleep(0.3)
    driver.save_screenshot(str(path))


def _chart_counts(driver) -> dict:
    return driver.execute_script("""
        const n = (sel) => document.querySelectorAll(sel).length;
        return {
          throughput: n('#chart-throughput svg circle.pt'),
          stages: n('#chart-stages svg rect.bar'),
          verdicts: n('#chart-verdicts svg rect.bar'),
          rss: n('#chart-rss svg circle.pt'),
          cpu: n('#chart-cpu svg circle.pt'),
          history: n('#chart-history svg rect.bar'),
          runs: n('#table-runs tbody tr'),
        };""")


def test_performance_page_in_headless_chromium(db, server, browser, tmp_path):
    # The first run (the corpus file) for the charts.
    browser.get(server + "/performance?run=1")
    _wait(browser, "return document.body.dataset.rendered === '1'")
    counts = _chart_counts(browser)
    print("chart elements", counts)
    for name in ("throughput", "stages", "verdicts", "rss", "cpu", "history"):
        assert counts[name] > 0, f"chart {name} drew nothing: {counts}"
    assert browser.find_element("id", "run-title").text.startswith("Run 1")
    _full_page_screenshot(browser, tmp_path / "performance-run1.png")

    # The latest run holds the hostile subjects: they must show as text and not run.
    browser.get(server + "/performance")
    _wait(browser, "return document.body.dataset.rendered === '1'")
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#table-recent td')].map((td) => td.textContent)")
    for subject in XSS_SUBJECTS:
        assert subject in cells
    latest = json.loads(urllib.request.urlopen(server + "/api/runs/latest", timeout=10).read())
    senders = {m["from_addr"] for m in latest["recent"] if m["from_addr"]}
    assert senders and senders <= set(cells)  # however the parser stored XSS_FROM, it shows as text
    assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    _full_page_screenshot(browser, tmp_path / "performance-latest.png")
    assert (tmp_path / "performance-latest.png").stat().st_size > 10_000
    time.sleep(2.5)  # a poll cycle later the subjects still did not run
    assert browser.execute_script("return typeof window.__xss") == "undefined"


def test_live_view_follows_a_running_run(tmp_path_factory, browser):
    from monitor_fixtures import make_synthetic_db

    tmp = tmp_path_factory.mktemp("live")
    db = make_synthetic_db(tmp, n_messages=40)
    with _running_server(db, tmp / "server.log") as base:
        browser.get(base + "/performance")
        _wait(browser, "return document.body.dataset.rendered === '1'")
        assert browser.find_element("id", "run-title").text.startswith("Run 1")

        # Another process starts a run and writes to the database.
        conn = migrations.connect(db)
        run_id = conn.execute(
            "INSERT INTO runs (source, started_at) VALUES ('live.mbox', '2026-01-02T00:00:00Z')").lastrowid
        for i in range(3):
            conn.execute("BEGIN")
            conn.executemany(
                'INSERT INTO messages (run_id, source, "offset", length, subject, label) VALUES (?, ?, ?, ?, ?, ?)',
                [(run_id, "live.mbox", i * 100 + j, 10, f"live {i}-{j}", "spam") for j in range(10)])
            conn.execute(
                "INSERT INTO run_throughput (run_id, t, messages, bytes, msgs_per_s, bytes_per_s)"
                " VALUES (?, ?, ?, ?, ?, ?)", (run_id, float(i), (i + 1) * 10, (i + 1) * 1000, 10.0, 1000.0))
            conn.execute("COMMIT")
        conn.close()
        _wait(browser, f"return document.getElementById('run-title').textContent.startsWith('Run {run_id}')"
                       " && document.querySelectorAll('#chart-throughput circle.pt').length === 3")
        assert browser.find_element("id", "live-text").text.startswith("live")
        assert "running" in browser.find_element("id", "run-title").text
        assert "messages\n30" in browser.find_element("id", "cards").text
