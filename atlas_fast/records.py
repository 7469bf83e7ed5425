"""Records that cross process boundaries, serialised with msgspec.

Workers encode one :class:`RecordBatch` per chunk; the writer decodes it and
binds each :class:`MessageRecord` as one row of the ``messages`` table.  The
structs are ``array_like`` so that a batch encodes as positional arrays,
without repeating field names for every message.
"""
from __future__ import annotations

import msgspec

__all__ = [
    "MessageRecord", "RecordBatch", "encode_batch", "decode_batch", "ROW_COLUMNS", "WIRE_KINDS",
    "decode_metrics",
]


class MessageRecord(msgspec.Struct, array_like=True, gc=False):
    """One message's row, minus the per-run columns (``run_id``, ``source``)."""

    offset: int
    length: int
    message_id: str | None = None
    from_addr: str | None = None
    from_domain: str | None = None
    subject: str | None = None
    date: str | None = None
    label: str | None = None
    category: str | None = None
    score: float | None = None
    decided_by: str | None = None
    rule_id: str | None = None
    reasons: str | None = None
    n_parts: int = 0
    n_attachments: int = 0
    n_urls: int = 0
    registered_domain: str | None = None
    origin_ip: str | None = None
    origin_country: str | None = None
    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    error: str | None = None


# Column names in MessageRecord field order; the writer's INSERT uses them.
ROW_COLUMNS = MessageRecord.__struct_fields__


def _wire_kinds(struct) -> str:
    """One letter per field of ``struct`` for the writer's compiled reader
    (``_sqlwriter.RecordLayout``), which binds fields straight from the
    encoded batch: ``I`` required int, ``i`` int defaulting to 0, ``s`` str or
    None, ``f`` float or None."""
    kinds = []
    for f in msgspec.structs.fields(struct):
        if f.type is int and f.required:
            kinds.append("I")
        elif f.type is int and f.default == 0:
            kinds.append("i")
        elif f.type == (str | None) and f.default is None:
            kinds.append("s")
        elif f.type == (float | None) and f.default is None:
            kinds.append("f")
        else:
            raise TypeError(f"{struct.__name__}.{f.name}: the writer cannot bind {f.type} = {f.default!r}")
    return "".join(kinds)


WIRE_KINDS = _wire_kinds(MessageRecord)


class RecordBatch(msgspec.Struct, array_like=True, gc=False):
    """All records of one chunk, with the chunk's place in the input.

    ``records`` are MessageRecords, or tuples of their fields in order (the
    workers' ``_features.chunk_records``): both encode as the same arrays,
    and decode as MessageRecords.  ``seq`` numbers chunks in input order;
    ``start``/``end`` are the byte range of the input the chunk covers, so
    the writer can advance the resume point once every chunk before it is
    committed.  ``metrics`` carries the
    worker's performance-monitor delta (see :mod:`atlas_fast.monitor`):
    ``"category.operation"`` -> every duration measured, in ms, and
    ``"#counter"`` -> ``[value]``.  A batch with ``seq == -1`` carries only a
    worker's last metrics, no records.
    """

    seq: int
    start: int
    end: int
    records: list[MessageRecord]
    metrics: dict[str, list[float]] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RecordBatch)
_metrics_decoder = msgspec.msgpack.Decoder(dict[str, list[float]])


def encode_batch(batch: RecordBatch) -> bytes:
    """Serialise a batch for the writer queue."""
    return _encoder.encode(batch)


def decode_batch(data: bytes) -> RecordBatch:
    """Inverse of :func:`encode_batch`; validates every field's type."""
    return _decoder.decode(data)


def decode_metrics(data: bytes | None) -> dict[str, list[float]]:
    """The ``metrics`` field of an encoded batch, given its bytes alone (the
    writer reads the records in place and only decodes this tail)."""
    return {} if data is None else _metrics_decoder.decode(data)
