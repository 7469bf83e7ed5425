"""Featurizer.features: the readable view of what csr/score see."""
from atlas_fast._features import Featurizer, feature_bucket
from atlas_fast._parser import parse_message

RAW = (
    b"From: Prize Desk <win@example.com>\r\nTo: you@example.org\r\n"
    b"Subject: FREE money now\r\n\r\nClaim your free prize today, you won $1000!\r\n"
)


def test_features_match_csr_and_feature_bucket():
    fz = Featurizer(16)
    msg = parse_message(RAW)
    feats = fz.features(msg, ["from_dom:example.com"])
    indptr, idx, val = fz.csr([msg], [["from_dom:example.com"]])
    assert [b for _n, b, _v in feats] == list(idx)
    assert [round(v, 6) for _n, _b, v in feats] == [round(float(v), 6) for v in val]
    names = [n for n, _b, _v in feats]
    for name in ("subj:free", "subj:money", "w:claim", "w:prize", "w:$", "from_dom:example.com"):
        assert name in names
        assert dict((n, b) for n, b, _v in feats)[name] == feature_bucket(name, 16)


def test_token_buckets_do_not_depend_on_where_the_token_sits():
    # The tokeniser hashes a token with 8-byte loads that may read past it
    # (masked); feature_bucket reads the name alone.  Every length up to the
    # 30-byte limit, upper case folded, at the start, middle and end of text.
    fz = Featurizer(20)
    letters = "AbCdEfGhIjKlMnOpQrStUvWxYzAbCd"
    for n in range(1, 31):
        word = letters[:n]
        for text in (word, f"{word} zz", f"qq {word}", f"qq {word} zz"):
            msg = parse_message(b"From: a@b.example\r\nSubject: s\r\n\r\n" + text.encode() + b"\r\n")
            buckets = {name: b for name, b, _v in fz.features(msg)}
            assert buckets["w:" + word.lower()] == feature_bucket("w:" + word.lower(), 20)


def test_similar_names_spread():
    # Names differing only in their 7th or 8th byte, or by one byte past the
    # first word, land in different buckets (a multiply's low bits would not
    # see those bytes).
    for a, b in (("computer", "computed"), ("abcdefgh", "abcdefgi"), ("abcdefgXy", "abcdefgXz"),
                 ("information", "informatioN1")):
        assert feature_bucket("w:" + a, 20) != feature_bucket("w:" + b, 20)


def _w0(fz, text: bytes) -> list:
    msg = parse_message(b"From: a@b.example\r\nSubject: s\r\n\r\n" + text + b"\r\n")
    return [(n, v) for n, _b, v in fz.features(msg) if n.startswith("w0:")]


def test_opening_words_are_whole_words_of_the_first_bytes():
    fz = Featurizer(16)
    assert fz.opening_bytes == 256
    short = _w0(fz, b"Dear friend, we offer cheap LOANS")
    assert [n for n, _v in short] == ["w0:dear", "w0:friend", "w0:we", "w0:offer", "w0:cheap",
                                      "w0:loans"]
    assert all(abs(v - 6 ** -0.5) < 1e-6 for _n, v in short)  # their own 1/sqrt(count)
    # A word that the cut at 256 bytes would split is left out, not halved:
    # "abcdefghij" spans bytes 250-259.
    text = b"x " * 125 + b"abcdefghij tail"
    names = [n for n, _v in _w0(fz, text)]
    assert "w0:abcdefghij" not in names and not any(n.startswith("w0:abc") for n in names)
    assert names == ["w0:x"] * 64  # at most 64 opening tokens
    # A cut that falls on whitespace keeps the word before it whole.
    names = [n for n, _v in _w0(fz, b"y" * 250 + b" words\nmore" + b" z" * 200)]
    assert names == ["w0:#long", "w0:words"]
    # opening_bytes=0 (for experiments) turns them off.
    assert _w0(Featurizer(16, opening_bytes=0), b"Dear friend") == []


def test_one_pass_opening_words_match_their_own_pass():
    """The opening words taken in the body's pass (atlas_tokens_open) are
    the features, values and order of tokenising the opening alone, on the
    corpus and on texts built to hit the ways out of the one pass: cuts
    inside a word, CJK runs in the opening, text caps below the opening.
    (The text's token limit cannot be reached within 256 bytes; its
    fallback is defensive.)"""
    import random

    from atlas_fast.evaluate import read_messages
    from conftest import MANIFEST_COUNTS, corpus_file

    msgs = read_messages([corpus_file(n) for n in MANIFEST_COUNTS])
    rng = random.Random(7)
    words = ["Dear", "friend", "$", "!", "1234567", "x" * 40, "caf\u00e9", "\u4e2d\u6587\u5b57",
             "a.b", "'q'", "-", "\n", "  ", "\t", "A1b2C3d4e5", "\u00fc", "ok."]
    texts = ["", " ", "a", "!" * 300, "w " * 1500, "abc" * 100, "\u4e2d" * 100,
             "x" * 255 + " y", "x" * 256 + " y", "x" * 257 + " y", "\u00e9" * 200]
    texts += ["".join(rng.choice(words) + rng.choice([" ", "", "\n"])
                      for _ in range(rng.randrange(1, 120))) for _ in range(3000)]
    for t in texts:
        msgs.append(parse_message(b"From: a@b.example\r\nSubject: s\r\n\r\n"
                                  + t.encode("utf-8") + b"\r\n"))
    for kw in ({}, {"text_cap": 200}, {"opening_bytes": 40}):
        one = Featurizer(16, **kw)
        ref = Featurizer(16, one_pass_opening=False, **kw)
        for m in msgs:
            assert one.features(m) == ref.features(m)
