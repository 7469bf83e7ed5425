"""Typing stub for the compiled message parser (atlas_fast/_parser.pyx)."""
from array import array
from typing import Any, TypeAlias

# Any C-contiguous buffer works (bytes, bytearray, memoryview, mmap, numpy).
Buffer: TypeAlias = bytes | bytearray | memoryview | array[int] | Any

MAX_URLS: int
TEXT_CAP: int

class ParsedMessage:
    message_id: str | None
    from_addr: str | None
    from_domain: str | None
    from_name: str | None
    to_addr: str | None
    reply_to_addr: str | None
    return_path: str | None
    subject: str | None
    date: str | None
    content_type: str | None
    x_mailer: str | None
    auth_results: str | None
    received_spf: str | None
    received: list[str]
    header_names: list[str]
    plain: str | None
    text: str
    has_html: bool
    html_only: bool
    urls: list[str]
    attachments: list[tuple[str, str]]
    n_parts: int
    n_attachments: int
    n_urls: int
    n_headers: int
    header_bytes: int
    error: str | None
    date_raw: str | None
    received_date: str | None
    header_tokens: list[str]

def parse_chunk(buf: Buffer, starts: Buffer, ends: Buffer) -> list[ParsedMessage]: ...
def parse_message(raw: Buffer) -> ParsedMessage: ...
