import pytest

from atlas_fast.classify import Classifier, Verdict

from conftest import corpus_file


def _msgs():
    from atlas_fast.evaluate import read_messages

    ham = read_messages([corpus_file("spamassassin-test-ham.mbox.gz")])[:150]
    spam = read_messages([corpus_file("spamassassin-test-spam.mbox.gz")])[:150]
    return ham + spam


def _strip(v):
    return (v.label, v.category, v.score, v.rule_id, v.reasons, v.registered_domain,
            v.origin_ip, v.origin_country, v.spf, v.dkim, v.dmarc)


def test_verdicts_same_with_cache_off_cold_warm(tmp_path):
    msgs = _msgs()
    off = Classifier(cache=False).classify_chunk(msgs)
    assert all(v.decided_by in ("rule", "model") for v in off)
    cold_clf = Classifier(cache=tmp_path)
    cold = cold_clf.classify_chunk(msgs)
    warm_mem = cold_clf.classify_chunk(msgs)  # in-process LRU
    warm_disk = Classifier(cache=tmp_path).classify_chunk(msgs)  # new process-like instance
    assert [_strip(v) for v in cold] == [_strip(v) for v in off]
    assert [_strip(v) for v in warm_mem] == [_strip(v) for v in off]
    assert [_strip(v) for v in warm_disk] == [_strip(v) for v in off]
    assert all(v.decided_by == "cache" for v in warm_disk)
    stats = cold_clf.stats()["classification"]
    assert stats["misses"] >= 1 and stats["lru_hits"] == len(msgs)


def test_verdict_fields():
    msgs = _msgs()
    for v in Classifier(cache=False).classify_chunk(msgs):
        assert isinstance(v, Verdict)
        assert v.label in ("spam", "ham") and 0.0 <= v.score <= 1.0
        assert (v.category is None) == (v.label == "ham")
        assert (v.rule_id is not None) == (v.decided_by == "rule")


def test_error_message_still_classified():
    from atlas_fast._parser import parse_message

    m = parse_message(b"From x\nSubject: =?bogus?Q?x?=\nContent-Type: multipart/mixed\n\n")
    m.error = "mime depth limit"
    (v,) = Classifier(cache=False).classify_chunk([m])
    assert v.label in ("spam", "ham")


@pytest.mark.parametrize("bad", [1.5, object()])
def test_bad_cache_argument(bad):
    with pytest.raises(TypeError):
        Classifier(cache=bad)


def test_classifying_does_not_import_numpy():
    # numpy is for training and evaluation; importing it costs every pipeline
    # process ~0.1-0.3 s and ~12 MB, so the classifying path must not.
    import subprocess
    import sys

    code = (
        "import sys, atlas_fast\n"
        "from atlas_fast.classify import Classifier\n"
        "from atlas_fast._parser import parse_message\n"
        "msg = parse_message(b'From: a@example.com\\nSubject: hi\\n\\nverify your account')\n"
        "Classifier(cache=False).classify_chunk([msg])\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_extras():
    from atlas_fast._features import model_extras_chunk
    from atlas_fast.rules import render_chunk

    msgs = _msgs()
    clf = Classifier(cache=False)
    enrich = clf.enricher.enrich_chunk(msgs)
    hits = clf.ruleset.scan_rendered(render_chunk(msgs))
    assert any(hits)
    idx = list(range(0, len(msgs), 2))
    got = model_extras_chunk(enrich, hits, clf.ruleset.rule_features, idx)
    for k, i in enumerate(idx):  # enrichment features first, then one per rule hit
        rules = ["rule:" + clf.ruleset.rules[j].id for j in hits[i]]
        assert got[k] == enrich[i].features() + rules
    # The order the model was trained with: enrichment, flags, then rules.
    from atlas_fast.enrich import Enrichment

    e = Enrichment("example.com", "192.0.2.1", "US", "pass", "fail", "none",
                   ("a.example", "b.example"), ("flag:no_to", "url_ndom:2"))
    assert model_extras_chunk([e], [[0]], ["rule:X"], [0]) == [[
        "from_dom:example.com", "country:US", "spf:pass", "dkim:fail", "dmarc:none",
        "url_dom:a.example", "url_dom:b.example", "flag:no_to", "url_ndom:2", "rule:X"]]


def test_packed_extras_are_the_string_extras():
    # The classifier and training hand the featurizer model_extras_packed;
    # it must hash exactly what model_extras_chunk spells out: same names,
    # buckets, values and order, on real mail and on odd values (a colon in
    # a value, upper case, non-ASCII, a domain past the 200-byte cap).
    from atlas_fast._features import model_extras_chunk, model_extras_packed
    from atlas_fast.enrich import Enrichment
    from atlas_fast.rules import render_chunk

    msgs = _msgs()
    clf = Classifier(cache=False)
    fz = clf.featurizer
    enrich = clf.enricher.enrich_chunk(msgs)
    hits = clf.ruleset.scan_rendered(render_chunk(msgs))
    odd = Enrichment("x" * 250 + ".example", "192.0.2.1", "DE", "Pass:x", None, "",
                     ("Üni.example", "a:b.example", "y" * 300),
                     ("flag:no_to", "url_tld:" + "z" * 300, "from_local:Ünï", "nocolon", ""))
    msgs.append(msgs[0])
    enrich.append(odd)
    hits.append([0, 1])
    idx = list(range(len(msgs)))
    strings = model_extras_chunk(enrich, hits, clf.ruleset.rule_features, idx)
    packed = model_extras_packed(enrich, hits, clf.ruleset.rule_features, idx)
    assert sum(len(x) for x in strings) > 5 * len(msgs)
    for msg, a, b in zip(msgs, strings, packed):
        assert fz.features(msg, b) == fz.features(msg, a)
    ca = fz.csr(msgs, strings)
    cb = fz.csr(msgs, packed)
    assert all((x == y).all() for x, y in zip(ca, cb))


def test_packed_flags_round_trip():
    # enrich_rows hands the flags over packed (4-byte length, UTF-8);
    # Enrichment.flags and Enrichment.features() spell them out again.
    from atlas_fast._features import pack_flags, unpack_flags
    from atlas_fast.enrich import Enrichment

    flags = ("flag:no_to", "", "url_tld:\u00fcn\u00ef", "x" * 70_000, "date_shape:a, 9 a")
    packed = pack_flags(flags)
    assert len(packed) == sum(4 + len(f.encode()) for f in flags)
    assert packed[:4] == (10).to_bytes(4, "little")
    assert unpack_flags(packed) == flags
    assert pack_flags(()) == b"" and unpack_flags(b"") == ()
    for bad in (packed[:-1], packed[:3], b"\x05\x00\x00\x00abc"):
        with pytest.raises(ValueError, match="truncated"):
            unpack_flags(bad)
    with pytest.raises(TypeError):
        pack_flags([b"flag:no_to"])
    e = Enrichment("example.com", None, None, None, None, None, (), flags)
    assert e.flags == flags
    assert e == Enrichment("example.com", None, None, None, None, None, (), packed)
    assert e.features() == ["from_dom:example.com", *flags]


def test_training_features_and_the_classifier_agree():
    # Train/serve skew: the model is fitted on evaluate.featurize's rows,
    # while the classifier renders, scans and scores in its own code path
    # (packed extras, bfloat16 weights, Cython scoring).  With the shipped
    # model's weights, both paths must give every message the same margin,
    # so the cross-validated figures speak for what the pipeline does.
    import numpy as np

    from atlas_fast.evaluate import _margins, featurize, read_messages

    msgs = []
    for name in ("spamassassin-train-ham.mbox.gz", "spamassassin-train-spam.mbox.gz",
                 "csdmc2010-train-ham.mbox.gz", "csdmc2010-train-spam.mbox.gz"):
        msgs += read_messages([corpus_file(name)])[:200]
    clf = Classifier(cache=False)
    model = clf.model
    verdicts = clf.classify_chunk(msgs)
    # The training path, on freshly parsed copies (the classifier must not
    # have changed what it read).
    csr = featurize(msgs, model.nbits, header_allow=model.header.header_allow,
                    url_domains=model.header.url_domain_features)
    weights = (np.asarray(model.weights, np.uint32) << 16).view(np.float32)
    margins = _margins(csr, np.append(weights.astype(np.float64), model.header.bias))
    scored = [i for i, v in enumerate(verdicts) if v.decided_by == "model"]
    assert len(scored) > 600  # most are the model's to decide
    threshold = model.threshold_margin
    expected = model.scores(margins[scored])
    for i, expect in zip(scored, expected):
        v = verdicts[i]
        assert (v.label == "spam") == (margins[i] >= threshold), i
        assert abs(v.score - expect) <= 1e-6, (i, v.score, expect)
    # Not trivially far from the threshold: some of these are close calls.
    assert min(abs(margins[i] - threshold) for i in scored) < 5
