"""The block tokeniser against a byte-at-a-time reference.

``_features.tokens`` runs the C tokeniser (64-byte class masks, runs found
with count-trailing-zeros); ``reference`` below is the plain loop it
replaced, transcribed: same tokens, bigrams, shapes, token limit and case
counts, on text built to put every boundary case at every block offset.
"""
import random

import pytest

from atlas_fast._features import tokens

TOK = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") | set(range(128, 256))
JOIN = set(b"'.-_")
SOLO = set(b"$!")
SHAPES = ["#n5", "#n6", "#n7", "#n8", "#n9", "#n10", "#n11", "#n12", "#n13+"]


def _fold(b: bytes) -> str:
    return b.translate(bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                       b"abcdefghijklmnopqrstuvwxyz")).decode("utf-8", "replace")


def reference(text: str, max_tokens: int = 2048, bigrams: bool = True):
    p = text.encode("utf-8", "surrogatepass")
    n = len(p)
    out = []
    i = count = 0
    prev_start = -1
    while i < n and count < max_tokens:
        c = p[i]
        if c in SOLO:
            out.append("w:" + chr(c))
            count += 1
            i += 1
            prev_start = -1
            continue
        if c not in TOK:
            i += 1
            continue
        start = i
        digit = False
        while True:
            digit |= 48 <= p[i] <= 57
            i += 1
            if i >= n:
                break
            if p[i] in TOK:
                continue
            if p[i] in JOIN and i + 1 < n and p[i + 1] in TOK:
                continue
            break
        tlen = i - start
        if _has_cjk(p[start:i]):
            count, prev_start, stop = _cjk_run(p, start, i, out, count, prev_start, max_tokens,
                                               bigrams)
            if stop:
                break
            continue
        if tlen > 30:
            out.append("w:#long")
        elif digit and tlen > 4:
            out.append("w:" + SHAPES[tlen - 5 if tlen < 13 else 8])
        else:
            out.append("w:" + _fold(p[start:i]))
            if bigrams and prev_start >= 0:
                out.append("w2:" + _fold(p[prev_start:i]))
                count += 1
            prev_start = start
        count += 1
    upper = sum(65 <= c <= 90 for c in p[:i])
    letters = sum(97 <= (c | 32) <= 122 for c in p[:i])
    return out, upper, letters


def _utf8_at(p: bytes, q: int, end: int):
    """(code point, length) of the UTF-8 sequence at p[q:end]; an invalid
    or truncated one is one byte, U+FFFD."""
    c = p[q]
    for length, lo, hi, min_cp in ((2, 0xC2, 0xE0, 0x80), (3, 0xE0, 0xF0, 0x800),
                                   (4, 0xF0, 0xF5, 0x10000)):
        if lo <= c < hi and end - q >= length and all(0x80 <= b < 0xC0 for b in p[q + 1:q + length]):
            cp = ord(p[q:q + length].decode("utf-8", "surrogatepass")) if length < 4 else (
                (c & 7) << 18 | (p[q + 1] & 63) << 12 | (p[q + 2] & 63) << 6 | (p[q + 3] & 63))
            if cp >= min_cp:
                return cp, length
    return (c, 1) if c < 0x80 else (0xFFFD, 1)


def _cjk_class(cp: int) -> str:
    if 0x3000 <= cp <= 0x303F:
        return "sep"
    if (0x3040 <= cp <= 0x30FF or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF
            or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF or 0xFF66 <= cp <= 0xFF9F):
        return "cjk"
    if 0xFF01 <= cp <= 0xFF65 and not (0xFF10 <= cp <= 0xFF19 or 0xFF21 <= cp <= 0xFF3A
                                       or 0xFF41 <= cp <= 0xFF5A):
        return "sep"
    return "other"


def _has_cjk(run: bytes) -> bool:
    q = 0
    while q < len(run):
        cp, n = _utf8_at(run, q, len(run))
        if _cjk_class(cp) == "cjk":
            return True
        q += n
    return False


def _cjk_run(p, start, end, out, count, prev_start, max_tokens, bigrams):
    """Feature version 6: a run holding CJK characters, as segments."""
    chars = []  # (start, end, class)
    q = start
    while q < end:
        cp, n = _utf8_at(p, q, end)
        chars.append((q, q + n, _cjk_class(cp)))
        q += n
    chars.append((end, end + 1, "sep"))  # flushes the last stretch
    other = start
    stretch = []  # the CJK characters of the current stretch
    for a, b, cls in chars:
        # A CJK stretch ends at any other character; a lone one is a token.
        # (A pending word and a pending stretch never coexist.)
        if cls != "cjk":
            if len(stretch) == 1:
                out.append("w:" + p[stretch[0][0]:stretch[0][1]].decode())
                count += 1
                if count >= max_tokens:
                    return count, prev_start, True
            stretch = []
            if cls == "other":
                continue
        ws, we = other, a
        while ws < we and p[ws] in JOIN:
            ws += 1
        while we > ws and p[we - 1] in JOIN:
            we -= 1
        if we > ws:
            word = p[ws:we]
            if len(word) > 30:
                out.append("w:#long")
            elif len(word) > 4 and any(48 <= c <= 57 for c in word):
                out.append("w:" + SHAPES[len(word) - 5 if len(word) < 13 else 8])
            else:
                out.append("w:" + _fold(word))
                if bigrams and prev_start >= 0:
                    out.append("w2:" + _fold(p[prev_start:we]))
                    count += 1
                prev_start = ws
            count += 1
            if count >= max_tokens:
                return count, prev_start, True
        if cls == "cjk":
            if stretch:
                out.append("w:" + p[stretch[-1][0]:b].decode())
                count += 1
                if count >= max_tokens:
                    return count, prev_start, True
            stretch.append((a, b))
        if a < end:
            prev_start = -1
        other = b
    return count, prev_start, False


PIECES = ["a", "Bc", "word", "Hello", "x1", "12345", "abc123def", "e-mail", "it's", "a.b.c",
          "x..y", "_", "-", ".", "'", "$", "!", "$100", " ", "  ", "\n", ",", "; ", "Ä", "straße",
          "日本語", "漢", "テキスト。", "、", "（", "ＡＢ", "한국어", "\uff76", "A" * 29, "b" * 31, "9" * 13, "MiXeD", "U.S.A.", "--", "end.", "\t", "@", "[x]"]


def _random_text(rng, n_pieces):
    return "".join(rng.choice(PIECES) for _ in range(n_pieces))


@pytest.mark.parametrize("seed", range(40))
def test_tokens_match_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(50):
        text = _random_text(rng, rng.randrange(0, 120))
        for max_tokens in (2048, rng.randrange(0, 40)):
            for bigrams in (True, False):
                assert tokens(text, max_tokens, bigrams) == reference(text, max_tokens, bigrams), (
                    text, max_tokens, bigrams)


@pytest.mark.parametrize("offset", range(56, 72))
def test_block_boundaries(offset):
    # Tokens, joiners, digits and solo bytes straddling the 64-byte block edge.
    for piece in ("abc.def", "ab1234cd", "x'y", "a..b", "$1", "word!", "A" * 30, "12.34.56",
                  "Straße", "a-", "-a", "a_b_c_d_e", "日本語テキスト", "ab漢字cd", "x。y"):
        text = " " * offset + piece + " tail"
        for max_tokens in (2048, 1, 2, 3):
            assert tokens(text, max_tokens) == reference(text, max_tokens), (offset, piece)


def test_lengths_around_blocks():
    rng = random.Random(7)
    for n in list(range(0, 200)) + [4095, 4096, 4097, 8191, 8192]:
        text = "".join(rng.choice("aB1 .-'$!xY\u00e9") for _ in range(n))
        assert tokens(text) == reference(text)


def test_cjk_text_gives_character_bigrams():
    """Feature version 6: CJK runs are character bigrams, not one #long."""
    assert tokens("免費無限次任打中港長途電話")[0] == [
        "w:免費", "w:費無", "w:無限", "w:限次", "w:次任", "w:任打", "w:打中", "w:中港", "w:港長",
        "w:長途", "w:途電", "w:電話"]
    # Punctuation separates; a lone character is a token; Latin words keep
    # their bigrams, up to a run's first CJK character but not across it.
    assert tokens("Hello 世界。こんにちは world 2002年9月 漢")[0] == [
        "w:hello", "w:世界", "w:こん", "w:んに", "w:にち", "w:ちは", "w:world", "w:2002",
        "w2:world 2002", "w:年", "w:9", "w:月", "w:漢"]
    assert tokens("Buy 今すぐ NOW now")[0] == [
        "w:buy", "w:今す", "w:すぐ", "w:now", "w:now", "w2:now now"]
    # Hangul too; text without CJK characters is tokenised as before.
    assert tokens("무료 상담")[0] == ["w:무료", "w:상담"]
    assert tokens("café ＡＢＣ straße")[0] == ["w:café", "w:ＡＢＣ",
                                              "w2:café ＡＢＣ", "w:straße", "w2:ＡＢＣ straße"]
