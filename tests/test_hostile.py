"""Hostile input: every case is stored as exactly one row per message, never
a crash; malformed messages carry ``error``.  Email text is data: SQL and
HTML in headers are stored verbatim."""
from __future__ import annotations

import base64
import os
import random
import sqlite3

import pytest

from atlas_fast import process_mbox

from conftest import mbox_bytes, rows, simple_message

ENV = b"From hostile@example.com Thu Jan  1 00:00:00 1970\n"


def store(tmp_path, data: bytes, workers: int = 1):
    path = tmp_path / "hostile.mbox"
    path.write_bytes(data)
    summary = process_mbox(path, tmp_path / "h.sqlite", workers=workers)
    got = rows(tmp_path / "h.sqlite")
    assert summary.messages == len(got)
    offsets = [r["offset"] for r in got]
    assert len(set(offsets)) == len(offsets)
    assert sum(r["length"] for r in got) == len(data)  # every byte is in a row
    return got


def test_crlf_file(tmp_path):
    msgs = [simple_message(i).replace(b"\n", b"\r\n") for i in range(3)]
    data = b"".join(ENV.replace(b"\n", b"\r\n") + m + b"\r\n" for m in msgs)
    got = store(tmp_path, data)
    assert [r["subject"] for r in got] == [f"message number {i}" for i in range(3)]
    assert [r["from_addr"] for r in got] == [f"sender{i}@example.com" for i in range(3)]
    assert all(r["error"] is None for r in got)


def test_last_message_without_trailing_newline(tmp_path):
    data = mbox_bytes(simple_message(1)) + ENV + simple_message(2).rstrip(b"\n")
    got = store(tmp_path, data)
    assert [r["subject"] for r in got] == ["message number 1", "message number 2"]


def test_quoted_from_lines_stay_in_the_message(tmp_path):
    body = "first line\n>From the quoted line\nFrom an unquoted line, no blank before it"
    got = store(tmp_path, mbox_bytes(simple_message(1, body), simple_message(2)))
    assert len(got) == 2


@pytest.mark.parametrize("empty", [b"", b"\n", b"\n\n\n"])
def test_empty_messages(tmp_path, empty):
    data = ENV + empty + b"\n" + mbox_bytes(simple_message(1))
    got = store(tmp_path, data)
    assert len(got) == 2
    assert got[0]["error"] is not None
    assert got[1]["error"] is None


def test_envelope_line_only_at_end_of_file(tmp_path):
    got = store(tmp_path, mbox_bytes(simple_message(1)) + b"From nobody Thu Jan  1 00:00:00 1970")
    assert len(got) == 2 and got[1]["error"] is not None


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?B?not base64!!?=",
        "=?utf-8?Q?unterminated",
        "=?utf-8?X?bad-encoding?=",
        "=??B?AAAA?=",
        "=?x-unknown-charset-42?Q?caf=E9?=",
        "=?utf-8?B?" + "A" * 100000 + "?=",
    ],
)
def test_malformed_encoded_words(tmp_path, subject):
    msg = f"From: a@example.com\nSubject: {subject}\n\nbody\n".encode()
    got = store(tmp_path, mbox_bytes(msg))
    assert isinstance(got[0]["subject"], str)


def test_unknown_charset_in_body(tmp_path):
    msg = (
        b"From: a@example.com\nSubject: charset\nContent-Type: text/plain; charset=x-klingon\n"
        b"\ncaf\xe9 \xff\xfe\n"
    )
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["subject"] == "charset"


def test_nul_bytes_in_headers_and_body(tmp_path):
    msg = b"From: a@exa\x00mple.com\nSubject: nul\x00here\n\nbody\x00\x00 with nul\n"
    got = store(tmp_path, mbox_bytes(msg, simple_message(2)))
    assert len(got) == 2 and got[1]["subject"] == "message number 2"


def test_invalid_utf8_and_encoded_surrogates(tmp_path):
    msg = b"From: \xed\xa0\x80 <a@example.com>\nSubject: bad \xc3\x28 \xed\xa0\x80 utf8\n\nbody \xff\n"
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["subject"].startswith("bad ")


def test_charset_decoding_to_lone_surrogates_is_parsed_and_classified(tmp_path):
    # UTF-7 decodes "+2D3AAA-" to a lone surrogate: the message once became
    # an error row with nothing parsed (tools/fuzz.py found it).
    msg = (b"From: a@example.com\nSubject: utf7\nContent-Type: text/html; charset=utf-7\n"
           b"\n<p>cheap +2D3AAA- pills <a href=http://x.example/>here</a></p>\n")
    got = store(tmp_path, mbox_bytes(msg, simple_message(2)))
    assert [r["error"] for r in got] == [None, None]
    assert got[0]["subject"] == "utf7" and got[0]["decided_by"] in ("rule", "model")


def test_unterminated_multipart(tmp_path):
    msg = (
        b"From: a@example.com\nSubject: cut\nContent-Type: multipart/mixed; boundary=XYZ\n\n"
        b"--XYZ\nContent-Type: text/plain\n\nfirst part\n--XYZ\nContent-Type: text/plain\n\nsecond, never closed\n"
    )
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["error"] is not None and "multipart" in got[0]["error"]


def test_mime_nested_thousands_deep(tmp_path):
    depth = 5000
    head = b"From: a@example.com\nSubject: deep\n"
    parts = []
    for i in range(depth):
        parts.append(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i))
    inner = b"Content-Type: text/plain\n\nbottom\n"
    tail = b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    msg = head + b"".join(parts) + inner + tail
    got = store(tmp_path, mbox_bytes(msg, simple_message(2)))
    assert "depth" in got[0]["error"]
    assert got[1]["error"] is None


def test_part_count_bomb(tmp_path):
    n = 20000
    body = b"".join(b"--P\nContent-Type: text/plain\n\npart %d\n" % i for i in range(n)) + b"--P--\n"
    msg = b"From: a@example.com\nSubject: parts\nContent-Type: multipart/mixed; boundary=P\n\n" + body
    got = store(tmp_path, mbox_bytes(msg))
    assert "part" in got[0]["error"]


def test_multi_megabyte_header(tmp_path):
    huge = b"X-Junk: " + b"A" * (3 << 20) + b"\n"
    msg = b"From: a@example.com\nSubject: big header\n" + huge + b"\nbody\n"
    got = store(tmp_path, mbox_bytes(msg, simple_message(2)))
    assert "header" in got[0]["error"]
    assert got[1]["subject"] == "message number 2"


def test_header_count_bomb(tmp_path):
    msg = b"From: a@example.com\n" + b"X-A: b\n" * 200000 + b"Subject: many\n\nbody\n"
    got = store(tmp_path, mbox_bytes(msg))
    assert len(got) == 1


def test_thirty_megabyte_attachment(tmp_path):
    blob = base64.encodebytes(os.urandom(30 << 20))
    msg = (
        b"From: a@example.com\nSubject: big attachment\nContent-Type: multipart/mixed; boundary=Q\n\n"
        b"--Q\nContent-Type: text/plain\n\nsee attached\n"
        b"--Q\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"big.bin\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + blob + b"--Q--\n"
    )
    got = store(tmp_path, mbox_bytes(simple_message(1), msg, simple_message(3)), workers=2)
    assert [r["subject"] for r in got] == ["message number 1", "big attachment", "message number 3"]
    assert got[1]["n_attachments"] == 1 and got[1]["error"] is None


def test_single_ten_megabyte_line(tmp_path):
    msg = b"From: a@example.com\nSubject: long line\n\n" + b"x" * (10 << 20) + b"\n"
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["subject"] == "long line"


def test_random_binary_messages(tmp_path):
    seed = 20261129
    print("seed", seed)
    rng = random.Random(seed)
    msgs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))).replace(b"\nFrom ", b"\nFrum ") for _ in range(50)]
    data = b"".join(ENV + m + b"\n\n" for m in msgs)
    got = store(tmp_path, data)
    assert len(got) == 50


SQL_AND_HTML = [
    "'); DROP TABLE messages; --",
    "Robert\"); DELETE FROM runs WHERE (\"1\"=\"1",
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=\"alert(1)\">",
    "%s %d {0} ${HOME} \\x00",
]


@pytest.mark.parametrize("payload", SQL_AND_HTML)
def test_injection_strings_are_stored_verbatim(tmp_path, payload):
    msg = f"From: \"{payload}\" <evil@example.com>\nSubject: {payload}\nMessage-ID: <{payload}>\n\nbody\n".encode()
    got = store(tmp_path, mbox_bytes(msg, simple_message(2)))
    assert got[0]["subject"] == payload
    conn = sqlite3.connect(tmp_path / "h.sqlite")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"messages", "runs", "progress"} <= tables


def test_duplicate_message_ids_are_two_rows(tmp_path):
    got = store(tmp_path, mbox_bytes(simple_message(1), simple_message(1)))
    assert len(got) == 2 and got[0]["message_id"] == got[1]["message_id"]


@pytest.mark.parametrize("date", ["yesterday", "Mon, 32 Foo 2025 99:99:99 +9999", "", "0"])
def test_garbage_dates_are_null(tmp_path, date):
    msg = f"From: a@example.com\nSubject: d\nDate: {date}\n\nbody\n".encode()
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["date"] is None


def test_broken_base64_and_quoted_printable(tmp_path):
    msg = (
        b"From: a@example.com\nSubject: enc\nContent-Type: multipart/mixed; boundary=E\n\n"
        b"--E\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not*base64$$$===\n"
        b"--E\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ=4=\n<b>x</b>=\n"
        b"--E--\n"
    )
    got = store(tmp_path, mbox_bytes(msg))
    assert got[0]["subject"] == "enc"


def test_text_before_the_first_envelope_is_a_row(tmp_path):
    data = b"stray text that is not a message\n\n" + mbox_bytes(simple_message(1))
    got = store(tmp_path, data)
    assert len(got) == 2
    assert got[0]["offset"] == 0 and "envelope" in got[0]["error"]
