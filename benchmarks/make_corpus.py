"""Build an N-message benchmark mbox from the shared corpus.

Messages are taken from ``../shared/corpus/*.mbox.gz`` in a fixed order and
cycled until N are written; each copy gets its own Message-ID and a Subject
suffix, so every message of the output is unique (and a classification cache
cannot answer for a repeat).  The result is deterministic for a given N.

    python benchmarks/make_corpus.py -n 50000 -o bench-data/bench-50000.mbox
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CORPUS = REPO.parent / "shared" / "corpus"
FILES = [
    "spamassassin-train-ham.mbox.gz",
    "spamassassin-train-spam.mbox.gz",
    "csdmc2010-train-ham.mbox.gz",
    "csdmc2010-train-spam.mbox.gz",
    "spamassassin-test-ham.mbox.gz",
    "spamassassin-test-spam.mbox.gz",
]
_MSGID = re.compile(rb"^message-id:[^\n]*(\n[ \t][^\n]*)*", re.I | re.M)
_SUBJECT = re.compile(rb"^subject:[^\n]*(\n[ \t][^\n]*)*", re.I | re.M)


def load_messages() -> list[bytes]:
    from atlas_fast.splitter import split_mbox

    out = []
    for name in FILES:
        path = CORPUS / name
        if path.exists():
            out.extend(raw for _, raw in split_mbox(path))
    if not out:
        raise SystemExit(f"no corpus files found in {CORPUS}")
    return out


def make_unique(raw: bytes, i: int) -> bytes:
    """Give one message copy its own Message-ID and Subject."""
    nl = raw.find(b"\n")
    envelope, rest = raw[: nl + 1], raw[nl + 1 :]
    sep = rest.find(b"\n\n")
    if sep < 0:
        sep = len(rest)
    head, body = rest[:sep], rest[sep:]
    crlf = b"\r" if head.endswith(b"\r") else b""
    msgid = b"Message-ID: <bench-%d@atlas-bench.invalid>" % i
    head, n = _MSGID.subn(lambda m: msgid + crlf, head, count=1)
    if n == 0:
        head = msgid + crlf + b"\n" + head
    m = _SUBJECT.search(head)
    if m:
        end = m.end() - (1 if head[m.end() - 1 : m.end()] == b"\r" else 0)
        head = head[:end] + b" [#%d]" % i + head[end:]
    else:
        head = b"Subject: [#%d]" % i + crlf + b"\n" + head
    return envelope + head + body


def build(n: int, out: Path) -> Path:
    messages = load_messages()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    with open(tmp, "wb") as f:
        for i in range(n):
            f.write(make_unique(messages[i % len(messages)], i))
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000, help="messages (default %(default)s)")
    ap.add_argument("-o", "--out", type=Path, help="output mbox (default bench-data/bench-N.mbox)")
    args = ap.parse_args(argv)
    out = args.out or REPO / "bench-data" / f"bench-{args.n}.mbox"
    build(args.n, out)
    print(f"{out}: {args.n} messages, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
