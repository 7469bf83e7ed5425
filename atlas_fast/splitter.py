"""Splitter: streams an mbox (plain or gzip) into buffers of whole messages.

The parent process owns one :class:`MboxSplitter` per input.  Each
:meth:`MboxSplitter.fill` call reads the stream straight into a caller's
buffer (a shared-memory slot), finds the message boundaries with the compiled
scan in :mod:`atlas_fast._splitter`, and returns the message table of the
whole messages in it.  The bytes of the last, incomplete message are carried
to the next slot; a message larger than a slot is returned as an
:class:`Oversized` block of its own.  Nothing reads the whole file into
memory, and no Python code runs per line or per message.

Offsets are positions in the *decompressed* stream, so a ``.gz`` mbox and the
same mbox uncompressed give the same offsets.

A compressed stream that is corrupt or ends early (an interrupted download or
copy) is read up to the last byte it gives: the messages before the damage are
returned as usual, the one the damage cuts short ends there, and
:attr:`MboxSplitter.damage` holds the :class:`InputError` (file and byte
offset) for the caller to raise once they are stored.
"""
from __future__ import annotations

import hashlib
import io
import os
import zlib
from array import array
from dataclasses import dataclass

from ._splitter import find_first_start, scan_starts
from .errors import InputError, NotAnMboxError, SourceChangedError

__all__ = ["MboxSplitter", "Chunk", "Oversized", "split_mbox", "SNIFF_BYTES"]

SNIFF_BYTES = 64 * 1024
try:
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency
    _IsalError = zlib.error
# What a read of a damaged stream raises: a gzip file cut short (EOFError),
# corrupt deflate data (zlib.error; isal's own class, which is no subclass
# of it: "Invalid lookback distance found"), a bad CRC or header (OSError's
# BadGzipFile, what most damage gives), an I/O error.
_READ_ERRORS = (EOFError, zlib.error, _IsalError, OSError)
_GZIP_MAGIC = b"\x1f\x8b"
_WHITESPACE = frozenset(b" \t\r\n")


@dataclass
class Chunk:
    """Whole messages now at the front of the caller's buffer."""

    base: int  # stream offset of buffer[0]
    nbytes: int  # bytes of whole messages in the buffer
    starts: array  # array('q') of message starts, relative to the buffer


@dataclass
class Oversized:
    """One message larger than a slot, held in its own buffer."""

    base: int
    data: bytearray


def _inflate(path: str, start: int):
    """The decompressed bytes of the gzip file ``path`` from stream offset
    ``start`` on, in pieces, member after member (zero padding between
    members skipped, as ``gzip`` does).  Raises EOFError where the file ends
    inside a member and zlib.error at corrupt data (a failed CRC included),
    after every byte before it."""
    skip = start
    with open(path, "rb") as fh:
        inflater, begun, pending = zlib.decompressobj(31), False, b""
        while True:
            if not begun:
                pending = pending.lstrip(b"\0")
            if not pending:
                pending = fh.read(1 << 16)
                if not pending:
                    if begun:
                        raise EOFError("compressed file ended before the end-of-stream marker "
                                       "was reached")
                    return
                continue
            out = inflater.decompress(pending, 1 << 16)
            begun = True
            pending = inflater.unconsumed_tail
            if inflater.eof:
                pending = inflater.unused_data + pending
                inflater, begun = zlib.decompressobj(31), False
            if skip:
                cut = min(skip, len(out))
                out, skip = out[cut:], skip - cut
            if out:
                yield out


def _open_stream(path: str):
    """Opens ``path`` for streaming reads; returns (stream, raw file, is_gzip)."""
    try:
        raw = open(path, "rb", buffering=0)
    except IsADirectoryError:
        raise InputError(path, "is a directory, not an mbox file") from None
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        try:
            from isal import igzip as gzip_module
        except ImportError:  # pragma: no cover - isal is a dependency
            import gzip as gzip_module
        return gzip_module.GzipFile(fileobj=io.BufferedReader(raw, 1 << 20)), raw, True
    return raw, raw, False


class MboxSplitter:
    """Streams one mbox into caller-supplied buffers of whole messages.

    Parameters
    ----------
    path : str or PathLike
        A plain or gzip-compressed mbox.
    start_offset : int
        Stream offset to resume at; must be a message start recorded by an
        earlier run.
    fingerprint : str or None
        When resuming, the fingerprint the earlier run recorded; a different
        file raises :class:`SourceChangedError`.

    Raises
    ------
    InputError
        The file is missing or unreadable.
    NotAnMboxError
        No message start in the first 64 KiB.

    Attributes
    ----------
    damage : InputError or None
        Set when the stream could not be read to its end (a corrupt or
        truncated ``.gz``, a read error): the stream then ends at the last
        byte read, and this error names the file and that offset.
    """

    def __init__(self, path, start_offset: int = 0, fingerprint: str | None = None):
        self.path = os.fspath(path)
        self._stream, self._raw, self.compressed = _open_stream(self.path)
        self.damage: InputError | None = None
        self._read_total = 0  # stream offset of the next byte _read_into gives
        self._salvage = None  # after a failed read: _inflate from there on
        self._salvage_tail = b""
        try:
            self.input_size = os.fstat(self._raw.fileno()).st_size
            head = self._read_exact(SNIFF_BYTES)
            self.fingerprint = hashlib.sha1(head).hexdigest()
            if fingerprint is not None and fingerprint != self.fingerprint:
                raise SourceChangedError(
                    self.path,
                    "differs from the file an earlier run recorded in this database "
                    "(its first 64 KiB changed); use a new database",
                )
            self._carry = bytearray()
            self._pos = 0  # stream offset of _carry[0]
            self._eof = False
            self.leading_junk = 0  # bytes before the first envelope that are not blank
            if start_offset == 0:
                self._start_fresh(head)
            else:
                self._seek_stream(head, start_offset)
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------

    def _read_into(self, view: memoryview) -> int:
        if self.damage is not None:
            return 0  # the stream ends where it broke
        if self._salvage is not None:
            n = self._salvage_into(view)
        else:
            try:
                n = self._stream.readinto(view) or 0
            except _READ_ERRORS as exc:
                n = self._recover(view, exc)
        self._read_total += n
        return n

    def _recover(self, view: memoryview, exc: BaseException) -> int:
        """After a failed read: what the stream holds before the failure,
        into ``view``; records :attr:`damage` where it ends.

        A buffered read that fails part-way loses what it had read, and
        gzip readers drop the last block they inflated before an early
        end, so a compressed file is inflated again with zlib from its
        start up to where this read began (a cost paid on the failure path
        only), then read on from there to the last byte it gives."""
        if not self.compressed:
            return self._broken(exc, self._read_total)
        self._salvage = _inflate(self.path, self._read_total)
        return self._salvage_into(view)

    def _salvage_into(self, view: memoryview) -> int:
        got = 0
        try:
            while got < len(view):
                piece = self._salvage_tail or next(self._salvage, b"")
                if not piece:
                    break
                k = min(len(piece), len(view) - got)
                view[got : got + k] = piece[:k]
                self._salvage_tail = piece[k:]
                got += k
        except _READ_ERRORS as exc:
            self._broken(exc, self._read_total + got)
        return got

    def _broken(self, exc: BaseException, where: int) -> int:
        what = "corrupt or truncated compressed stream" if self.compressed else "read error"
        if self.damage is None:
            self.damage = InputError(self.path, f"{what}: {exc}", where)
        return 0

    def _read_exact(self, size: int) -> bytes:
        buf = bytearray(size)
        got = 0
        with memoryview(buf) as whole:
            while got < size:
                with whole[got:] as view:
                    n = self._read_into(view)
                if n == 0:
                    break
                got += n
        del buf[got:]
        return bytes(buf)

    def _start_fresh(self, head: bytes) -> None:
        if not head:
            self._eof = True
            return
        first = find_first_start(head)
        if first < 0:
            if all(b in _WHITESPACE for b in head) and len(head) < SNIFF_BYTES:
                self._eof = True  # a blank file is an empty mailbox
                return
            raise NotAnMboxError(
                self.path, f"not an mbox: no 'From ' line in the first {SNIFF_BYTES // 1024} KiB", 0
            )
        if first > 0 and all(b in _WHITESPACE for b in head[:first]):
            self._carry = bytearray(head[first:])
            self._pos = first
        else:
            # Text before the first envelope becomes a message of its own,
            # flagged by the worker: nothing in the input is dropped.
            self.leading_junk = first
            self._carry = bytearray(head)

    def _seek_stream(self, head: bytes, offset: int) -> None:
        if offset <= len(head):
            rest = head[offset:]
        else:
            to_skip = offset - len(head)
            if not self.compressed:
                self._stream.seek(offset)
                self._read_total = offset
            else:
                scratch = memoryview(bytearray(1 << 20))
                while to_skip > 0:
                    with scratch[: min(to_skip, len(scratch))] as view:
                        n = self._read_into(view)
                    if n == 0:
                        break
                    to_skip -= n
                if to_skip > 0:
                    raise SourceChangedError(
                        self.path, "is shorter than the resume point recorded in this database", offset
                    )
            rest = self._read_exact(5)
        self._carry = bytearray(rest)
        self._pos = offset
        if rest == b"":
            self._eof = not self._peek_more()
            if self._eof:
                return
        if not rest.startswith(b"From ") and rest:
            raise SourceChangedError(
                self.path, "has no message start at the resume point recorded in this database", offset
            )

    def _peek_more(self) -> bool:
        more = self._read_exact(4096)
        self._carry += more
        return bool(more)

    # -- filling slots ---------------------------------------------------

    @property
    def input_pos(self) -> int:
        """Bytes of the input file consumed so far (compressed bytes for .gz)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.input_size

    @property
    def done(self) -> bool:
        return self._eof and not self._carry

    def fill(self, slot: memoryview):
        """Fill ``slot`` with whole messages.

        Returns
        -------
        Chunk, Oversized or None
            A :class:`Chunk` describing the front of ``slot``; an
            :class:`Oversized` block when the next message does not fit in
            ``slot``; ``None`` at the end of the stream.
        """
        if self.done:
            return None
        cap = len(slot)
        carried = len(self._carry)
        if carried >= cap:
            return self._fill_oversized()
        slot[:carried] = self._carry
        n = carried
        while n < cap and not self._eof:
            # Slices are released at once, even when a read fails: a live
            # export would keep the shared-memory segment from closing.
            with slot[n:cap] as view:
                k = self._read_into(view)
            if k == 0:
                self._eof = True
            n += k
        base = self._pos
        starts, _ = scan_starts(slot, 0, n, stream_start=(base == 0 and self.leading_junk == 0))
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        if self._eof:
            self._carry = bytearray()
            self._pos = base + n
            return Chunk(base, n, starts)
        if len(starts) == 1:
            # One message fills the whole slot: it continues past it.
            self._carry = bytearray(slot[:n])
            return self._fill_oversized()
        last = starts.pop()
        self._carry = bytearray(slot[last:n])
        self._pos = base + last
        return Chunk(base, last, starts)

    def _fill_oversized(self) -> Oversized:
        data = self._carry
        base = self._pos
        scanned = 1
        block = 1 << 20
        while True:
            starts, resume = scan_starts(data, scanned, len(data), stream_start=False)
            if starts:
                end = starts[0]
                self._carry = bytearray(data[end:])
                del data[end:]
                self._pos = base + end
                return Oversized(base, data)
            scanned = max(resume, 1)
            if self._eof:
                self._carry = bytearray()
                self._pos = base + len(data)
                return Oversized(base, data)
            old = len(data)
            data.extend(bytes(block))
            with memoryview(data) as whole, whole[old:] as view:
                k = self._read_into(view)
            del data[old + k :]
            if k == 0:
                self._eof = True
            # Look back far enough to see an "\n\nFrom " that straddles blocks.
            scanned = max(1, min(scanned, old - 2))

    def close(self) -> None:
        for f in (self._stream, self._raw):
            try:
                f.close()
            except Exception:  # pragma: no cover - closing after a failure
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def split_mbox(path, slot_size: int = 4 << 20):
    """Yield ``(offset, raw_bytes)`` for every message of an mbox.

    A convenience for tools and tests (training, evaluation); the pipeline
    uses :class:`MboxSplitter` with shared-memory slots instead.  Each
    ``raw_bytes`` includes the envelope line and the trailing blank line,
    exactly as the pipeline's workers see it.  A damaged stream
    (:attr:`MboxSplitter.damage`) raises its InputError after the messages
    read before the damage.
    """
    slot = memoryview(bytearray(slot_size))
    with MboxSplitter(path) as splitter:
        while True:
            got = splitter.fill(slot)
            if got is None:
                if splitter.damage is not None:
                    raise splitter.damage  # after every message before it
                return
            if isinstance(got, Oversized):
                yield got.base, bytes(got.data)
                continue
            starts = got.starts
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else got.nbytes
                yield got.base + start, bytes(slot[start:end])
