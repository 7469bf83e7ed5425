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
