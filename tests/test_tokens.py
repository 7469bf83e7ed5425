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


PIECES = ["a", "Bc", "word", "Hello", "x1", "12345", "abc123def", "e-mail", "it's", "a.b.c",
          "x..y", "_", "-", ".", "'", "$", "!", "$100", " ", "  ", "\n", ",", "; ", "Ä", "straße",
          "日本語", "A" * 29, "b" * 31, "9" * 13, "MiXeD", "U.S.A.", "--", "end.", "\t", "@", "[x]"]


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
                  "Straße", "a-", "-a", "a_b_c_d_e"):
        text = " " * offset + piece + " tail"
        for max_tokens in (2048, 1, 2, 3):
            assert tokens(text, max_tokens) == reference(text, max_tokens), (offset, piece)


def test_lengths_around_blocks():
    rng = random.Random(7)
    for n in list(range(0, 200)) + [4095, 4096, 4097, 8191, 8192]:
        text = "".join(rng.choice("aB1 .-'$!xY\u00e9") for _ in range(n))
        assert tokens(text) == reference(text)
