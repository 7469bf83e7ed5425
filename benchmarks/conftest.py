"""Benchmark fixtures: generated mboxes (cached under bench-data/) and the
ratio report printed at the end of a run."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
DATA = REPO / "bench-data"
CORPUS = REPO.parent / "shared" / "corpus"
# The shared corpus's train files: the messages the model is trained on.
TRAIN_FILES = [
    "spamassassin-train-ham.mbox.gz",
    "spamassassin-train-spam.mbox.gz",
    "csdmc2010-train-ham.mbox.gz",
    "csdmc2010-train-spam.mbox.gz",
]

RATES: dict[str, float] = {}  # benchmark name -> messages per second (median)
NOTES: list[str] = []


def bench_mbox(n: int) -> Path:
    """The N-message mbox of make_corpus.py, built once and kept."""
    from make_corpus import build

    path = DATA / f"bench-{n}.mbox"
    if not path.exists():
        build(n, path)
    return path


def mbox_slice(src: Path, n: int) -> Path:
    """The first ``n`` messages of ``src``, as a file of their own."""
    from atlas_fast.splitter import split_mbox

    out = DATA / f"{src.stem}-first-{n}.mbox"
    if not out.exists():
        end = 0
        for i, (offset, raw) in enumerate(split_mbox(src)):
            if i == n:
                break
            end = offset + len(raw)
        with open(src, "rb") as f, open(out, "wb") as g:
            g.write(f.read(end))
    return out


class PeakRSS:
    """Samples this process and all its descendants: the peak of the summed
    RSS (which counts a page shared by several processes once in each: the
    shared-memory slots, and what workers inherit from the parent by fork)
    and the peak of the summed PSS (each shared page split between its
    sharers: the memory the run really occupies)."""

    def __init__(self, interval: float = 0.1, pid: int | None = None):
        self.interval = interval
        self.pid = pid  # the top of the tree; default: this process
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process(self.pid)
        while not self._stop.is_set():
            rss = pss = 0
            try:
                tree = [me, *me.children(recursive=True)]
            except psutil.Error:
                break  # the process is gone
            for p in tree:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.peak = max(self.peak, rss)
            self.peak_pss = max(self.peak_pss, pss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def record_rate(benchmark, name: str, messages: int) -> None:
    median = benchmark.stats.stats.median
    RATES[name] = messages / median
    benchmark.extra_info["messages"] = messages
    benchmark.extra_info["msgs_per_sec"] = round(RATES[name])


def pytest_terminal_summary(terminalreporter):
    if not RATES and not NOTES:
        return
    tr = terminalreporter
    tr.section("atlas_fast rates (median)")
    for name, rate in RATES.items():
        tr.write_line(f"{name:<40} {rate:>12,.0f} msg/s")
    pairs = [
        ("atlas_fast end to end", "plain Python end to end"),
        ("split atlas_fast", "split plain Python"),
        ("parse atlas_fast", "parse plain Python"),
        ("writer atlas_fast (rows)", "writer plain Python (rows)"),
        ("atlas_fast, 500 KB attachments", "plain Python, 500 KB attachments"),
    ]
    for fast, slow in pairs:
        if fast in RATES and slow in RATES:
            tr.write_line(f"ratio {fast} / {slow}: {RATES[fast] / RATES[slow]:,.1f}x")
    for note in NOTES:
        tr.write_line(note)


@pytest.fixture(scope="session")
def mbox_50k() -> Path:
    return bench_mbox(50_000)


def attachment_mbox(n: int, attachment_bytes: int = 375_000) -> Path:
    """``n`` short messages, each with one base64 attachment of
    ``attachment_bytes`` (about 500 KB encoded): the shape of a mail
    export whose bytes are mostly attachments (Gmail Takeout).  Built once
    and kept; the attachment bytes are seeded."""
    import base64
    import random

    path = DATA / f"attachments-{n}.mbox"
    if path.exists():
        return path
    rng = random.Random(20261130)
    blob = base64.encodebytes(rng.randbytes(attachment_bytes))
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        for i in range(n):
            f.write(
                b"From sender@example.com Thu Jan  1 00:00:00 1970\n"
                + (f"From: Reports <reports{i % 7}@example.com>\nTo: me@example.org\n"
                   f"Subject: monthly report {i}\nDate: Mon, 3 Mar 2025 09:14:52 +0000\n"
                   f"Message-ID: <report-{i}@example.com>\nMIME-Version: 1.0\n"
                   'Content-Type: multipart/mixed; boundary="b0"\n\n'
                   "--b0\nContent-Type: text/plain; charset=utf-8\n\n"
                   f"The report for period {i} is attached.\n\n"
                   f'--b0\nContent-Type: application/pdf; name="report-{i}.pdf"\n'
                   "Content-Transfer-Encoding: base64\n"
                   f'Content-Disposition: attachment; filename="report-{i}.pdf"\n\n').encode()
                + blob + b"\n--b0--\n\n")
    tmp.replace(path)
    return path
