"""_features.chunk_records: the workers' rows, against MessageRecord."""
from array import array

import pytest

from atlas_fast._features import chunk_records
from atlas_fast._parser import parse_message
from atlas_fast.classify import Classifier
from atlas_fast.records import MessageRecord, RecordBatch, decode_batch, encode_batch

SAMPLES = [
    b"From: A <a@example.com>\r\nTo: b@example.org\r\nSubject: hello\r\nMessage-ID: <1@x>\r\n"
    b"Date: Mon, 2 Jan 2006 15:04:05 +0000\r\n\r\nSee http://example.com/x today\r\n",
    b"From: win@lottery.example\r\nSubject: You WON $1,000,000!!!\r\n\r\nClaim your prize now\r\n",
    b"Subject: no sender\r\n\r\n",
]


def _reference(parsed, verdicts, starts, ends, base):
    out = []
    for i, msg in enumerate(parsed):
        offset, length = base + starts[i], ends[i] - starts[i]
        if isinstance(msg, Exception):
            out.append(MessageRecord(offset, length, error=f"parser failure: {type(msg).__name__}"))
            continue
        v = verdicts[i]
        out.append(MessageRecord(
            offset, length, msg.message_id, msg.from_addr, msg.from_domain, msg.subject, msg.date,
            v.label, v.category, v.score, v.decided_by, v.rule_id, v.reasons, msg.n_parts,
            msg.n_attachments, msg.n_urls, v.registered_domain, v.origin_ip, v.origin_country,
            v.spf, v.dkim, v.dmarc, msg.error))
    return out


def test_tuples_encode_like_message_records():
    parsed = [parse_message(r) for r in SAMPLES]
    verdicts = Classifier(cache=False).classify_chunk(parsed)
    parsed.append(ValueError("boom"))
    verdicts.append(None)
    starts = array("q", [0, 100, 250, 400])
    ends = array("q", [100, 250, 400, 420])
    got = chunk_records(parsed, verdicts, starts, ends, 1 << 33)
    want = _reference(parsed, verdicts, starts, ends, 1 << 33)
    assert [tuple(getattr(r, f) for f in r.__struct_fields__) for r in want] == got
    data = encode_batch(RecordBatch(3, 0, 420, got))
    assert data == encode_batch(RecordBatch(3, 0, 420, want))
    assert decode_batch(data).records == want
    assert got[-1][22] == "parser failure: ValueError"


def test_rejects_other_objects():
    with pytest.raises(TypeError):
        chunk_records([object()], [None], array("q", [0]), array("q", [1]), 0)


def test_scrub_replaces_lone_surrogates_in_tuples():
    import msgspec

    from atlas_fast.pipeline import _scrub

    rec = (0, 5, "<id\udcff@x>", None, None, "subj \ud800", None, "ham", None, 0.1, "model",
           None, "", 1, 0, 0, None, None, None, None, None, None, None)
    records = [rec]
    # msgspec raises UnicodeEncodeError here; the worker catches both.
    with pytest.raises((msgspec.EncodeError, UnicodeEncodeError)):
        encode_batch(RecordBatch(0, 0, 5, records))
    _scrub(records)
    got = decode_batch(encode_batch(RecordBatch(0, 0, 5, records))).records[0]
    assert (got.message_id, got.subject, got.score, got.n_parts) == ("<id?@x>", "subj ?", 0.1, 1)
