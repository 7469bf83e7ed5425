"""The splitter finds every message boundary and loses no byte."""
from __future__ import annotations

import gzip
import mailbox
import random
import zlib

import pytest

from atlas_fast import InputError, NotAnMboxError, process_mbox
from atlas_fast._splitter import find_first_start, scan_starts
from atlas_fast.splitter import Chunk, MboxSplitter, split_mbox

from conftest import MANIFEST_COUNTS, corpus_file, mbox_bytes, rows, simple_message


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"From a\nx\n\nFrom b\ny\n", [0, 10]),
        (b"From a\r\nx\r\n\r\nFrom b\r\n", [0, 13]),  # CRLF
        (b"From a\nx\nFrom b\n", [0]),  # no empty line before: content
        (b"From a\n\n>From b\n\nFrom c\n", [0, 17]),  # quoted >From stays content
        (b"From a\n\n\nFrom b\n", [0, 9]),
        (b"x\n\nFrom b\n", [3]),
        (b"", []),
        (b"From ", [0]),
    ],
)
def test_scan_starts_table(data, expected):
    starts, _ = scan_starts(data, 0, len(data), stream_start=True)
    assert list(starts) == expected


def test_scan_resume_covers_a_boundary_straddling_the_end():
    data = b"From a\nbody\n\nFrom b\n"
    cut = data.index(b"\nFrom b") + 3  # "\nFr" | "om b"
    starts, resume = scan_starts(data, 0, cut, stream_start=True)
    assert list(starts) == [0]
    more, _ = scan_starts(data, resume, len(data))
    assert list(more) == [data.index(b"From b")]


def test_find_first_start():
    assert find_first_start(b"From x\n") == 0
    assert find_first_start(b"\n\nFrom x\n") == 2
    assert find_first_start(b"junk\n\nFrom x") == 6
    assert find_first_start(b"\x89PNG\r\n\x1a\n") == -1
    assert find_first_start(b"") == -1


@pytest.mark.parametrize("name", sorted(MANIFEST_COUNTS))
def test_corpus_counts_and_bytes(name):
    path = corpus_file(name)
    data = gzip.open(path).read()
    parts = list(split_mbox(path))
    assert len(parts) == MANIFEST_COUNTS[name]
    assert b"".join(p for _, p in parts) == data  # nothing lost, nothing doubled
    assert all(data[o : o + len(p)] == p for o, p in parts)


@pytest.mark.parametrize("slot_size", [64, 4096, 1 << 16])
def test_small_slots_and_oversized_messages(tmp_path, slot_size):
    seed = 1234
    print("seed", seed)
    rng = random.Random(seed)
    msgs = [simple_message(i, "x" * rng.randrange(0, 20000)) for i in range(40)]
    path = tmp_path / "m.mbox"
    path.write_bytes(mbox_bytes(*msgs))
    parts = list(split_mbox(path, slot_size))
    assert len(parts) == 40
    assert b"".join(p for _, p in parts) == path.read_bytes()


def test_agrees_with_stdlib_mailbox(tmp_path):
    path = tmp_path / "m.mbox"
    mb = mailbox.mbox(path)
    for i in range(25):
        mb.add(simple_message(i, "From the start\nFrom here too"))
    mb.flush()
    mb.close()
    ours = [raw for _, raw in split_mbox(path)]
    theirs = mailbox.mbox(path)
    try:
        assert len(ours) == len(theirs) == 25
        for raw, msg in zip(ours, theirs):
            assert msg.get_payload(decode=True).rstrip(b"\n") in raw
            assert b">From the start" in raw
    finally:
        theirs.close()


def test_gzip_offsets_match_plain(tmp_path):
    data = mbox_bytes(*[simple_message(i) for i in range(100)])
    plain = tmp_path / "m.mbox"
    gz = tmp_path / "m.mbox.gz"
    plain.write_bytes(data)
    gz.write_bytes(gzip.compress(data))
    assert [o for o, _ in split_mbox(plain, 4096)] == [o for o, _ in split_mbox(gz, 4096)]


def test_resume_at_offset(tmp_path):
    data = mbox_bytes(*[simple_message(i) for i in range(50)])
    path = tmp_path / "m.mbox.gz"
    path.write_bytes(gzip.compress(data))
    offsets = [o for o, _ in split_mbox(path)]
    resume = offsets[20]
    slot = memoryview(bytearray(1 << 16))
    with MboxSplitter(path, resume) as sp:
        got = sp.fill(slot)
        assert isinstance(got, Chunk)
        assert got.base == resume
        assert [got.base + s for s in got.starts] == offsets[20:]


def test_leading_blank_lines_are_skipped_and_text_is_kept(tmp_path):
    blank = tmp_path / "blank.mbox"
    blank.write_bytes(b"\n\n" + mbox_bytes(simple_message(1)))
    assert [o for o, _ in split_mbox(blank)] == [2]
    junk = tmp_path / "junk.mbox"
    junk.write_bytes(b"stray text\n\n" + mbox_bytes(simple_message(1)))
    parts = list(split_mbox(junk))
    assert [o for o, _ in parts] == [0, 12]
    assert parts[0][1] == b"stray text\n\n"


def test_not_an_mbox(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300)
    with pytest.raises(NotAnMboxError, match=r"picture\.png: not an mbox: no 'From ' line in the first 64 KiB \(byte 0\)"):
        MboxSplitter(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mbox: no such file"):
        MboxSplitter(tmp_path / "nope.mbox")
    with pytest.raises(InputError, match="is a directory"):
        MboxSplitter(tmp_path)


def _inflatable_prefix(data: bytes) -> bytes:
    """All that zlib can inflate of a (possibly cut) gzip file, member
    after member."""
    out = []
    while data:
        inflater = zlib.decompressobj(31)
        try:
            out.append(inflater.decompress(data))
        except zlib.error:
            break
        if not inflater.eof:
            break
        data = inflater.unused_data.lstrip(b"\0")
    return b"".join(out)


def split_mbox_bytes(data: bytes):
    starts = [0] + [i + 2 for i in range(len(data)) if data.startswith(b"\n\nFrom ", i)]
    return [(s, data[s:e]) for s, e in zip(starts, starts[1:] + [len(data)])]


@pytest.mark.parametrize("slot_size", [1 << 12, 1 << 16, 4 << 20])
@pytest.mark.parametrize("cut", [0.02, 0.5, 0.97])
def test_a_truncated_gzip_gives_every_byte_before_the_cut(tmp_path, cut, slot_size):
    """Messages before the cut come out whole, the last one ends at the
    cut, and then the error names the file and that offset."""
    plain = mbox_bytes(*[simple_message(i, "y" * (i * 37 % 5000)) for i in range(300)])
    data = gzip.compress(plain)
    path = tmp_path / "cut.mbox.gz"
    path.write_bytes(data[: int(len(data) * cut)])
    prefix = _inflatable_prefix(path.read_bytes())
    assert 0 < len(prefix) < len(plain) and plain.startswith(prefix)
    got = []
    with pytest.raises(InputError, match=rf"cut\.mbox\.gz: corrupt or truncated compressed stream: "
                                         rf"compressed file ended .*\(byte {len(prefix)}\)$"):
        for offset, raw in split_mbox(path, slot_size=slot_size):
            got.append((offset, raw))
    assert b"".join(raw for _, raw in got) == prefix
    assert [o for o, _ in got] == [o for o, _ in split_mbox_bytes(prefix)]


def test_a_cut_in_a_later_gzip_member(tmp_path):
    """Concatenated members (gzip -c a >> f; gzip -c b >> f), zero padding
    between them, the second cut short."""
    one = mbox_bytes(*[simple_message(i) for i in range(50)])
    two = mbox_bytes(*[simple_message(i, "z" * 900) for i in range(50, 120)])
    second = gzip.compress(two)
    path = tmp_path / "members.mbox.gz"
    path.write_bytes(gzip.compress(one) + b"\0" * 64 + second[: len(second) * 2 // 3])
    prefix = _inflatable_prefix(path.read_bytes())
    assert prefix.startswith(one) and len(prefix) > len(one)
    with pytest.raises(InputError, match=rf"\(byte {len(prefix)}\)$"):
        list(split_mbox(path, slot_size=1 << 12))
    got = []
    splitter = MboxSplitter(path)
    slot = memoryview(bytearray(1 << 14))
    while (chunk := splitter.fill(slot)) is not None:
        got.append(bytes(slot[: chunk.nbytes]) if isinstance(chunk, Chunk) else bytes(chunk.data))
    splitter.close()
    assert b"".join(got) == prefix
    assert splitter.damage.offset == len(prefix)


def test_corrupt_gzip_data_ends_the_stream_with_an_error(tmp_path):
    data = bytearray(gzip.compress(mbox_bytes(*[simple_message(i, "w" * 3000) for i in range(200)])))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    path = tmp_path / "bad.mbox.gz"
    path.write_bytes(bytes(data))
    offsets = []
    with pytest.raises(InputError, match=r"bad\.mbox\.gz: corrupt or truncated compressed stream: "
                                         r".*\(byte \d+\)$"):
        for offset, _raw in split_mbox(path):
            offsets.append(offset)
    assert offsets and offsets[0] == 0


def _isal_rejects(data: bytes) -> bool:
    # A streaming read, as the splitter's, fails with isal's own class.
    import io

    from isal import igzip
    from isal.isal_zlib import error as IsalError

    try:
        igzip.GzipFile(fileobj=io.BytesIO(data)).read()
    except IsalError:
        return True
    except Exception:
        return False
    return False


def test_corruption_isal_reports_in_its_own_class_is_an_input_error(tmp_path):
    # isal raises IsalError, no subclass of zlib.error or OSError, for some
    # corrupt deflate data ("Invalid lookback distance found"): it once
    # escaped split_mbox and process_mbox as is (tools/fuzz.py found it).
    # Text that compresses like mail (most flips then fail the CRC instead).
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    plain = mbox_bytes(*[simple_message(i, " ".join(rng.choice(words) for _ in range(150)))
                         for i in range(200)])
    good = gzip.compress(plain, mtime=0)
    for at in range(len(good) // 2, len(good) - 8):
        data = bytearray(good)
        data[at] ^= 0x10
        if _isal_rejects(bytes(data)):
            break
    else:
        pytest.fail("no bit flip that isal rejects with IsalError")
    path = tmp_path / "flip.mbox.gz"
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(InputError, match=r"flip\.mbox\.gz: corrupt or truncated compressed stream: "
                                         r".*\(byte \d+\)$") as err:
        for _offset, raw in split_mbox(path):
            got.append(raw)
    assert len(got) > 50 and plain.startswith(b"".join(got[:-1]))
    assert err.value.offset == len(b"".join(got))
    with pytest.raises(InputError, match=r"flip\.mbox\.gz: corrupt"):
        process_mbox(path, tmp_path / "flip.sqlite", workers=1, cache=False)
    stored = rows(tmp_path / "flip.sqlite")
    assert [r["length"] for r in stored] == [len(raw) for raw in got]


def test_not_gzip_data_after_the_magic_bytes(tmp_path):
    path = tmp_path / "fake.mbox.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match=r"fake\.mbox\.gz: corrupt or truncated .*\(byte 0\)$"):
        list(split_mbox(path))


def test_empty_file_is_an_empty_mailbox(tmp_path):
    path = tmp_path / "empty.mbox"
    path.write_bytes(b"")
    assert list(split_mbox(path)) == []
