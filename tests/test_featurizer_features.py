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
