"""Mutation fuzzer: splitter, parser, classifier, rows, rule and model files.

    python tools/fuzz.py [--seconds 60 | --rounds N] [--seed 1] [--corpus ../shared/corpus]
                         [--crash-dir fuzz-crashes] [--max-seeds 2000] [--pipeline-every 100]

Seeds are real messages (the shared corpus's train files, when present, and
``samples/sample.mbox``) plus hand-made edge cases.  Each round mutates one
or a few of them (bytes flipped, ranges cut, repeated or spliced, MIME and
HTML fragments inserted, lines folded, huge runs) and checks:

* the splitter, on the batch written as an mbox file: its messages hold
  every byte of the file once, in order;
* what a pipeline worker runs: ``parse_chunk`` over one buffer holding the
  batch, each message also alone in its chunk (the same result) and through
  ``parse_message`` (never raises, no str UTF-8 cannot carry), the
  classifier (rules, enrichment, features, model: ``ham`` or ``spam``, a
  finite score in [0, 1], the same twice) and ``chunk_records``, whose rows
  must encode with msgpack;
* every 10th batch, a damaged gzip copy: the splitter's messages up to an
  InputError that names the file, nothing else;
* every 20th, a user rule file with a random pattern: both engines load and
  scan it, or raise a RuleError naming the file and the rule;
* every 50th, the shipped model file damaged: refused with a ModelError;
* every ``--pipeline-every``-th, a whole ``process_mbox`` run: one row per
  message the splitter finds.

Python exceptions and broken invariants are reported with the input saved
under ``--crash-dir``.  Memory errors in C need a sanitizer build, which
aborts the process at the first bad access:

    ATLAS_SANITIZE=1 python setup.py build_ext --inplace   # in a separate worktree
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
    ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc python tools/fuzz.py --seconds 600

The batch being tried is written to ``<crash-dir>/current.mbox`` before each
round, so after an abort it holds the input that caused it.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

# Fragments that steer the parser into its less travelled paths.
TOKENS = [
    b"\r", b"\n", b"\r\n", b"\n\n", b"\x00", b"\xff", b"\xc3", b"\xe2\x80", b"\xf0\x9f\x98",
    b"\t", b" ", b":", b";", b"\"", b"'", b"<", b">", b"@", b"%", b"=", b"?", b"[", b"]",
    b"=?utf-8?b?", b"=?iso-8859-1?q?", b"=?gb2312?B?", b"=?x-unknown?q?", b"?=", b"=\n", b"=3D",
    b"=C3=A9", b"=\r\n", b"--", b"--b--\n", b"--b\n", b"\n--b\nContent-Type: text/html\n\n",
    b"Content-Type: multipart/mixed; boundary=\"b\"\n",
    b"Content-Type: multipart/alternative; boundary=b\n",
    b"Content-Type: message/rfc822\n", b"Content-Type: text/html; charset=\"utf-7\"\n",
    b"Content-Type: text/plain; charset=shift_jis\n", b"Content-Type: text/plain; charset=utf-16\n",
    b"charset=iso-2022-jp", b"charset=hz", b"charset=unicode_escape", b"charset=utf-7",
    b"=?utf-16?b?", b"=?utf-7?q?+2D3AAA-?=",
    b"Content-Transfer-Encoding: base64\n", b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\n",
    b"Content-Disposition: attachment; filename*=utf-8''a%20b.docm\n",
    b"<html>", b"<body>", b"<a href=\"", b"\">", b"</a>", b"<a href=http://x.example/a?b=c>",
    b"&#x", b"&#", b"&#128512;", b"&amp", b"&nbsp;", b"<!--", b"-->", b"<script>", b"</script>",
    b"<style>", b"</style>", b"<![CDATA[", b"<br>", b"<p", b"<img src=\"cid:x\">",
    b"http://", b"https://", b"www.", b"http://[::1]/", b"http://192.168.0.1:80/x",
    b"hxxp://", b"http://xn--pypal-4ve.com/", b"paypal.com-secure.example",
    b"From ", b">From ", b"\nFrom x@y Thu Jan  1 00:00:00 1970\n",
    b"Received: from a.example (a.example [203.0.113.9]) by b.example; ",
    b"Received: from x ([2001:db8::1])\n", b"Received: from x\n (y [198.51.100.7])\n",
    b"Authentication-Results: mx; spf=pass; dkim=fail (bad sig); dmarc=none\n",
    b"Received-SPF: softfail (domain of x) client-ip=203.0.113.9;\n",
    b"Date: Thu, 31 Feb 2099 25:61:61 +9999\n", b"Date: \n",
    b"From: \"=?utf-8?q?a=2C_b?=\" <x@y>\n", b"From: <>\n", b"From: a@b@c\n",
    b"Subject: ", b"Subject: =?utf-8?b?8J+Ygg==?=\n", b"Message-ID: <a@b>\n",
    b"To: undisclosed-recipients:;\n", b"Reply-To: x@\n",
]

# Pieces of user rule patterns (RE2 / Hyperscan syntax and beyond it).
PATTERN_PIECES = [
    "a", "b", " ", "\\s", "\\s+", "\\s*", "\\s{0,3}", "\\d", "\\w", ".", "*", "+", "?", "{2}",
    "{0,30}", "{,3}", "{3,}", "(", ")", "(?:", "(?i)", "(?s)", "(?m)", "(?x)", "(?=", "(?!", "(?<=",
    "(?P<n>", "\\1", "\\k<n>", "[", "]", "[^", "a-z", "[[:alpha:]]", "|", "^", "$", "\\b", "\\B",
    "\\A", "\\z", "\\Z", "\\x00", "\\xff", "\\u00e9", "\u00e9", "\\p{L}", "\\Q", "\\E", "(?#c)",
    "{", "}", "\\\\", "'", "\"", "\\n", "\\t", "\\h", "\\R", "\\X", "\\C", "*?", "++", "\x00",
]

EDGE_CASES = [
    b"",
    b"\n",
    b"\n\n\n",
    b"Subject: only headers",
    b"Subject: x\n\n",
    b"no colon header line\n\nbody\n",
    b"Subject: a\n b\n\tc\n\nfolded\n",
    b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n\n--\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--b--\n",
    b"Content-Type: multipart/mixed\n\nno boundary\n",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n====\n",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nQUJD\x00REVG\n",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=\n=4\n=ZZ\n",
    b"Content-Type: text/html\n\n<" + b"<" * 5000 + b"\n",
    b"Content-Type: text/html\n\n&#" + b"9" * 300 + b";&#x" + b"f" * 300 + b";\n",
    b"Content-Type: text/html\n\n<a href=\"" + b"h" * 70000 + b"\n",
    b"Subject: " + b"=?utf-8?b?" * 2000 + b"\n\nx\n",
    b"X-Long: " + b"a" * 200000 + b"\n\nbody\n",
    b"Received: " + b"from x (y [1.2.3.4]) " * 3000 + b"\n\n",
    b"\r\n".join([b"Subject: crlf", b"", b"body"]),
    b"Subject: nul\x00inside\n\nbody\x00\x00\n",
    b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
             for i in range(200)),
]


def _seed_messages(corpus: str | None, max_seeds: int, rng: random.Random) -> list:
    from atlas_fast.splitter import split_mbox

    seeds = list(EDGE_CASES)
    paths = [os.path.join(REPO, "samples", "sample.mbox")]
    if corpus and os.path.isdir(corpus):
        paths += sorted(os.path.join(corpus, n) for n in os.listdir(corpus)
                        if "-train-" in n and n.endswith(".mbox.gz"))
    real = []
    for path in paths:
        if os.path.exists(path):
            real += [raw for _off, raw in split_mbox(path)]
    rng.shuffle(real)
    return seeds + real[:max_seeds]


def mutate(data: bytes, rng: random.Random, seeds: list) -> bytes:
    """``data`` changed by one to four random edits."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(b)
        at = rng.randint(0, n)
        if op == 0 and n:  # flip bits
            for _k in range(rng.randint(1, 8)):
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # cut a range
            del b[at:at + rng.choice((1, 2, 8, 64, 4096))]
        elif op == 2 and n:  # repeat a range
            part = b[at:at + rng.choice((1, 4, 32, 512))]
            b[at:at] = part * rng.choice((1, 2, 16, 256))
        elif op in (3, 4, 5):  # insert a fragment
            b[at:at] = rng.choice(TOKENS)
        elif op == 6:  # a long run
            b[at:at] = rng.choice(TOKENS + [b"a", b"A1", b"\xe4", b"$", b"!"]) * rng.choice(
                (100, 1000, 20000))
        elif op == 7 and n:  # truncate
            del b[at:]
        elif op == 8:  # splice another message in
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            b[at:] = other[cut:] if rng.random() < 0.5 else other[:cut] + b[at:]
        elif op == 9:  # fold or end the header at a random line
            line = b.find(b"\n", at)
            if line >= 0:
                b[line + 1:line + 1] = rng.choice((b" ", b"\t", b"\n", b"\r\n", b"X: "))
    return bytes(b)


def make_batch(rng: random.Random, seeds: list) -> list:
    """One to eight inputs, most of them mutated seeds."""
    out = []
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        data = rng.choice(seeds)
        if rng.random() < 0.9:
            data = mutate(data, rng, seeds)
        out.append(data)
    return out


def mbox_of(messages: list) -> tuple:
    """(buffer, starts, ends) of ``messages`` as one mbox chunk, each with
    an envelope line (unless it starts with one) and the blank separator."""
    buf = bytearray()
    starts, ends = array("q"), array("q")
    for m in messages:
        starts.append(len(buf))
        if not m.startswith(b"From "):
            buf += b"From fuzz@example.com Thu Jan  1 00:00:00 1970\n"
        buf += m
        buf += b"\n" if m.endswith(b"\n") else b"\n\n"
        ends.append(len(buf))
    return bytes(buf), starts, ends


class Failure(Exception):
    pass


def _snapshot(parsed) -> tuple:
    return tuple(getattr(parsed, a) for a in (
        "error", "subject", "from_addr", "from_domain", "from_name", "to_addr", "date",
        "message_id", "text", "urls", "header_names", "received", "n_attachments",
        "attachments", "html_only", "has_html", "n_parts"))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _strings(v)


def _split_offsets(path: str, data: bytes | None = None) -> int:
    """Walk ``split_mbox(path)``: each message must start where the one
    before ended (and, with ``data``, hold the file's bytes there); returns
    where the last one ended."""
    from atlas_fast.splitter import split_mbox

    at = 0
    for offset, raw in split_mbox(path):
        if offset != at or (data is not None and data[at:at + len(raw)] != raw):
            raise Failure(f"split_mbox {path}: message at {offset} is not the file's bytes "
                          f"at {at}")
        at += len(raw)
    return at


def check_split(path: str, data: bytes) -> None:
    """The splitter cuts the file into messages that hold every byte once,
    in order (a mutated message may hold a "From " line of its own)."""
    at = _split_offsets(path, data)
    if at != len(data):
        raise Failure(f"split_mbox covered {at} of {len(data)} bytes")


def check_gzip(path: str, data: bytes, rng: random.Random) -> None:
    """The mbox gzipped and damaged (bytes flipped, cut short or cut
    inside): the splitter yields contiguous messages and then either ends
    or raises the InputError that names the file and, when known, the byte
    offset; nothing else."""
    import gzip

    from atlas_fast.errors import InputError

    z = bytearray(gzip.compress(data, compresslevel=1, mtime=0))
    op = rng.randrange(3)
    if op == 0:
        for _k in range(rng.randint(1, 3)):
            z[rng.randrange(len(z))] ^= 1 << rng.randrange(8)
    elif op == 1:
        del z[rng.randrange(len(z)):]
    else:
        at = rng.randrange(len(z))
        del z[at:at + rng.randint(1, 64)]
    with open(path, "wb") as fh:
        fh.write(z)
    try:
        _split_offsets(path)  # the bytes before the damage may differ from data
    except InputError as exc:
        if exc.path != path or not str(exc).startswith(path):
            raise Failure(f"split_mbox (damaged gzip): the error does not name the file: {exc}")
    os.remove(path)  # kept only when the check fails


def check_rule_pattern(pattern: str, directory: str, messages: list) -> None:
    """A user rule file with ``pattern`` loads and scans in both engines, or
    raises a RuleError naming the file and the rule; nothing else."""
    import json

    from atlas_fast.errors import RuleError
    from atlas_fast.rules import RuleSet, load_rules

    path = os.path.join(directory, "fuzz_rules.toml")
    # A JSON string of BMP text is a TOML basic string.
    text = ('[[rule]]\nid = "FUZZ_RULE"\ncategory = "marketing"\nconfidence = 0.99\n'
            f'fields = ["subject", "body", "urls"]\npatterns = [{json.dumps(pattern)}]\n')
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)
    for engine in ("hyperscan", "re2"):
        try:
            ruleset = RuleSet(load_rules([path], builtin=False), engine=engine)
        except RuleError as exc:
            if path not in str(exc) or "FUZZ_RULE" not in str(exc):
                raise Failure(f"{engine}: the RuleError names neither file nor rule: {exc}")
            continue
        ruleset.scan_chunk(messages)


def check_model_file(model: bytes, rng: random.Random) -> None:
    """The shipped model file with a bit flipped, cut short or its header
    length changed: decode_model refuses it with a ModelError (the file's
    checksum covers every byte), and never loads it."""
    from atlas_fast.errors import ModelError
    from atlas_fast.model import decode_model

    b = bytearray(model)
    op = rng.randrange(3)
    if op == 0:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:
        del b[rng.randrange(len(b)):]
    else:
        b[8:12] = rng.randrange(1 << 32).to_bytes(4, "little")
    if bytes(b) == model:
        return
    try:
        decode_model(bytes(b), "fuzz-model.bin")
    except ModelError as exc:
        if "fuzz-model.bin" not in str(exc):
            raise Failure(f"the ModelError does not name the file: {exc}")
        return
    raise Failure(f"a damaged model file loaded (mutation {op})")


def check_pipeline(path: str, data: bytes, db: str) -> None:
    """``process_mbox`` stores one row per message the splitter finds, at
    its offset and length: the rows cover the file."""
    import sqlite3

    from atlas_fast import process_mbox
    from atlas_fast.splitter import split_mbox

    if os.path.exists(db):
        os.remove(db)
    summary = process_mbox(path, db, workers=1, cache=False)
    expected = [(offset, len(raw)) for offset, raw in split_mbox(path)]
    conn = sqlite3.connect(db)
    try:
        got = conn.execute('SELECT "offset", length FROM messages ORDER BY "offset"').fetchall()
    finally:
        conn.close()
    if summary.messages != len(expected) or got != expected:
        raise Failure(f"process_mbox stored {summary.messages} rows {got[:4]}... for the "
                      f"splitter's {len(expected)} messages {expected[:4]}...")
    if sum(n for _o, n in got) != len(data):
        raise Failure("process_mbox rows do not cover the file")


def check_batch(messages: list, classifier) -> None:
    """Run ``messages`` through the worker's path; raise Failure (or let a
    Python exception through) when an invariant breaks."""
    import msgspec

    from atlas_fast._features import chunk_records
    from atlas_fast._parser import parse_chunk, parse_message

    buf, starts, ends = mbox_of(messages)
    parsed = parse_chunk(buf, starts, ends)
    if len(parsed) != len(messages):
        raise Failure(f"parse_chunk gave {len(parsed)} results for {len(messages)} messages")
    for i, pm in enumerate(parsed):
        # Alone in its chunk: nothing of the messages before it carries over.
        one = buf[starts[i]:ends[i]]
        alone = parse_chunk(one, array("q", [0]), array("q", [len(one)]))[0]
        if _snapshot(alone) != _snapshot(pm):
            raise Failure(f"message {i}: parsed alone and in its chunk, it differs")
        parse_message(messages[i])  # never raises for bad input
        for value in _strings(_snapshot(pm)):
            value.encode("utf-8")  # no lone surrogates: UTF-8 carries every field
    again = parse_chunk(buf, starts, ends)
    if [_snapshot(p) for p in again] != [_snapshot(p) for p in parsed]:
        raise Failure("parse_chunk is not deterministic")
    verdicts = classifier.classify_chunk(parsed)
    if len(verdicts) != len(parsed):
        raise Failure(f"{len(verdicts)} verdicts for {len(parsed)} messages")
    for i, v in enumerate(verdicts):
        if v.label not in ("ham", "spam"):
            raise Failure(f"message {i}: label {v.label!r}")
        if not (isinstance(v.score, float) and math.isfinite(v.score) and 0.0 <= v.score <= 1.0):
            raise Failure(f"message {i}: score {v.score!r}")
    if classifier.classify_chunk(parsed) != verdicts:
        raise Failure("classify_chunk is not deterministic")
    records = chunk_records(parsed, verdicts, starts, ends, 0)
    if len(records) != len(messages):
        raise Failure(f"{len(records)} rows for {len(messages)} messages")
    msgspec.msgpack.decode(msgspec.msgpack.encode(records))


def run(seconds: float, seed: int, corpus: str | None, crash_dir: str, max_seeds: int,
        rounds: int | None = None, log=print, pipeline_every: int = 0) -> dict:
    """Fuzz for ``seconds`` (or ``rounds`` batches); returns the counts.
    Every ``pipeline_every``-th batch (0: none) also goes through
    :func:`check_pipeline`: a whole run, writer and SQLite included."""
    from atlas_fast._parser import parse_message
    from atlas_fast.classify import Classifier
    from atlas_fast.model import default_model_path

    rng = random.Random(seed)
    seeds = _seed_messages(corpus, max_seeds, rng)
    classifier = Classifier(cache=False)
    parsed_sample = [parse_message(m) for m in EDGE_CASES[:12]]
    with open(default_model_path(), "rb") as fh:
        model_bytes = fh.read()
    os.makedirs(crash_dir, exist_ok=True)
    current = os.path.join(crash_dir, "current.mbox")
    current_gz = current + ".gz"
    done = messages = failures = 0
    start = time.perf_counter()
    next_log = start + 10
    while True:
        if rounds is not None and done >= rounds:
            break
        if rounds is None and time.perf_counter() - start >= seconds:
            break
        batch = make_batch(rng, seeds)
        data = mbox_of(batch)[0]
        with open(current, "wb") as fh:
            fh.write(data)
        try:
            check_split(current, data)
            check_batch(batch, classifier)
            if done % 10 == 0:
                check_gzip(current_gz, data, rng)
            if done % 50 == 0:
                check_model_file(model_bytes, rng)
            if done % 20 == 0:
                pattern = "".join(rng.choice(PATTERN_PIECES) for _ in range(rng.randint(1, 8)))
                check_rule_pattern(pattern, crash_dir, parsed_sample)
            if pipeline_every and done % pipeline_every == 0:
                check_pipeline(current, data, os.path.join(crash_dir, "fuzz.sqlite"))
        except Exception as exc:  # report, keep the input, go on
            failures += 1
            path = os.path.join(crash_dir, f"failure-{seed}-{done}.mbox")
            os.replace(current, path)
            if os.path.exists(current_gz):  # check_gzip failed: its damaged copy
                os.replace(current_gz, path + ".gz")
            log(f"FAIL round {done}: {type(exc).__name__}: {exc} -> {path}")
        done += 1
        messages += len(batch)
        now = time.perf_counter()
        if now >= next_log:
            log(f"{done} rounds, {messages} messages, {failures} failures, "
                f"{messages / (now - start):.0f} messages/s")
            next_log = now + 10
    for name in ("current.mbox", "current.mbox.gz", "fuzz.sqlite", "fuzz_rules.toml"):
        if os.path.exists(os.path.join(crash_dir, name)):
            os.remove(os.path.join(crash_dir, name))
    return {"rounds": done, "messages": messages, "failures": failures, "seeds": len(seeds)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=None, help="stop after this many batches")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus"))
    ap.add_argument("--crash-dir", default="fuzz-crashes")
    ap.add_argument("--max-seeds", type=int, default=2000)
    ap.add_argument("--pipeline-every", type=int, default=100,
                    help="run process_mbox on every N-th batch (0: never)")
    args = ap.parse_args(argv)
    out = run(args.seconds, args.seed, args.corpus, args.crash_dir, args.max_seeds,
              args.rounds, pipeline_every=args.pipeline_every)
    print(out)
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
