"""msgspec records round-trip across the process boundary."""
import msgspec
import pytest

from atlas_fast.records import ROW_COLUMNS, MessageRecord, RecordBatch, decode_batch, encode_batch


def test_batch_round_trips():
    recs = [
        MessageRecord(0, 10, "<a@b>", "a@b.c", "b.c", "Sübject ✓", "2002-01-01T00:00:00Z",
                      "spam", "phishing", 0.97, "rule", "PHISH_1", "PHISH_1,subj:verify", 2, 1, 3,
                      "b.c", "1.2.3.4", "US", "pass", "fail", "none", None),
        MessageRecord(10, 5, error="empty message"),
    ]
    batch = RecordBatch(7, 100, 115, recs, {"parse": [1.5, 2.0]})
    assert decode_batch(encode_batch(batch)) == batch


def test_columns_match_the_schema():
    from atlas_fast.migrations import connect

    conn = connect(":memory:")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(messages)")]
    conn.close()
    assert cols[:3] == ["id", "run_id", "source"]
    assert tuple(cols[3:]) == ROW_COLUMNS


def test_decoder_rejects_wrong_types():
    bad = msgspec.msgpack.encode([1, 0, 1, [["not an int", 3]], {}])
    with pytest.raises(msgspec.ValidationError):
        decode_batch(bad)
