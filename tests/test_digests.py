"""chunk_digests: the classification cache's keys."""
import re
import types

from atlas_fast._features import chunk_digests
from atlas_fast._parser import parse_message

RAW = (
    b"From: Prize Desk <win@example.com>\r\nTo: you@example.org\r\n"
    b"Reply-To: claims@example.net\r\nReturn-Path: <bounce@example.com>\r\n"
    b"Message-ID: <abc@example.com>\r\nDate: Tue, 3 Sep 2002 10:00:00 +0000\r\n"
    b"Received: from mx.example.com (mx.example.com [192.0.2.7]) by mail.example.org;"
    b" Tue, 3 Sep 2002 10:00:05 +0000\r\n"
    b"Authentication-Results: mail.example.org; spf=pass\r\nReceived-SPF: pass\r\n"
    b"X-Mailer: Bulk 1.0\r\nSubject: FREE money\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Claim your prize at http://example.com/win today.\r\n"
)

STR_FIELDS = ("from_addr", "from_name", "subject", "text", "to_addr", "reply_to_addr",
              "return_path", "x_mailer", "content_type", "from_domain", "message_id", "date",
              "auth_results", "received_spf", "date_raw", "received_date")
LIST_FIELDS = ("urls", "header_names", "received", "header_tokens", "attachments")
FLAG_FIELDS = {"html_only": True, "has_html": True, "n_urls": 7, "n_parts": 3}


def _lookalike(pm):
    names = STR_FIELDS + LIST_FIELDS + tuple(FLAG_FIELDS)
    return types.SimpleNamespace(**{n: getattr(pm, n) for n in names})


def test_keys_are_128_bit_hex_and_depend_on_seed_and_context():
    pm = parse_message(RAW)
    a, = chunk_digests([pm], None, 1)
    assert re.fullmatch(r"[0-9a-f]{32}", a)
    assert chunk_digests([pm], None, 1) == [a]
    assert chunk_digests([pm], None, 2) != [a]
    assert chunk_digests([pm], ["ctx"], 1) != [a]


def test_parsed_message_and_lookalike_give_the_same_key():
    pm = parse_message(RAW)
    assert pm.urls and pm.received and pm.header_tokens and pm.auth_results
    assert chunk_digests([pm], None, 5) == chunk_digests([_lookalike(pm)], None, 5)
    pm.attachments = [("a.exe", "application/octet-stream")]
    assert chunk_digests([pm], ["c"], 5) == chunk_digests([_lookalike(pm)], ["c"], 5)


def _key_with(name, value):
    pm = parse_message(RAW)
    setattr(pm, name, value)
    return chunk_digests([pm], None, 9)[0]


def test_every_field_a_verdict_reads_changes_the_key():
    base = parse_message(RAW)
    changes = [(n, v) for n in STR_FIELDS for v in (None, (getattr(base, n) or "") + "x")]
    changes += [(n, v) for n in LIST_FIELDS
                for v in ([], (getattr(base, n) or [])
                          + ([("b.zip", "application/zip")] if n == "attachments" else ["x"]))]
    changes += list(FLAG_FIELDS.items())
    seen = {chunk_digests([base], None, 9)[0]}
    for name, value in changes:
        if value == getattr(base, name):
            continue
        key = _key_with(name, value)
        assert key not in seen, name
        seen.add(key)
    # A value moved from one field to the next is another message.
    pm = parse_message(RAW)
    pm.from_name, pm.subject = pm.from_name + pm.subject, ""
    assert chunk_digests([pm], None, 9)[0] not in seen


def test_lone_surrogate_is_hashed_not_raised():
    pm = parse_message(RAW)
    pm.subject = "x\udc80y"
    other = parse_message(RAW)
    other.subject = "x\ufffdy"
    k1, = chunk_digests([pm], None, 1)
    k2, = chunk_digests([other], None, 1)
    assert re.fullmatch(r"[0-9a-f]{32}", k1) and k1 != k2
