"""tools/nested_cv.py on a small corpus: its counts, its misses file and its
rule exits agree with each other and with the mboxes they name."""
from __future__ import annotations

import gzip
import json

from atlas_fast.splitter import split_mbox
from conftest import corpus_file, load_tool, mbox_bytes

FILES = ["spamassassin-train-ham.mbox.gz", "csdmc2010-train-ham.mbox.gz",
         "spamassassin-train-spam.mbox.gz", "csdmc2010-train-spam.mbox.gz"]
# Decided by MKT_REMOVAL_OFFER, a rule listed after the category hints: the
# tool once read those hits as hints and lost the exits.
REMOVAL = (b"From: offers@bulk.example\nSubject: Offer %d\n\n"
           b"Great prices.  To be removed from our mailing list, reply.\n")


def _nested_cv():
    return load_tool("nested_cv")


def _small_corpus(tmp_path):
    raws = {}  # whole mbox entries, envelope line included
    for name in FILES:
        raws[name] = [raw if raw.endswith(b"\n\n") else raw.rstrip(b"\n") + b"\n\n"
                      for _, (_offset, raw) in zip(range(40), split_mbox(corpus_file(name)))]
    raws["spamassassin-train-spam.mbox.gz"] += [mbox_bytes(REMOVAL % k) for k in range(3)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, msgs in raws.items():
        (corpus / name).write_bytes(gzip.compress(b"".join(msgs)))
    return corpus, raws


def test_counts_misses_and_exits_agree(tmp_path, capsys):
    corpus, raws = _small_corpus(tmp_path)
    misses = tmp_path / "misses.jsonl"

    tool = _nested_cv()
    tool.main(["--corpus", str(corpus), "--reps", "2", "--param", "nbits=16",
               "--misses", str(misses), "--sweep-fpr", "0.0013", "0.5"])
    out = json.loads(capsys.readouterr().out)

    # The sweep's entry for the target in use repeats the main figures; a
    # target letting half the ham through calls more ham spam.
    same, loose = out["sweep"]["0.0013"], out["sweep"]["0.5"]
    for group in ("all", "spamassassin", "csdmc2010"):
        assert same[group] == out[group]
        assert loose[group]["false_positives"] > out[group]["false_positives"]
        assert loose[group]["spam_recall_pct"] >= out[group]["spam_recall_pct"]
    got = out["spamassassin"]
    assert got["bar_chance"] == round(tool.bar_chance(got["ham_fpr_pct"] / 100,
                                                      got["spam_recall_pct"] / 100), 3)

    rows = [json.loads(line) for line in misses.read_text().splitlines()]
    for group, files in (("all", FILES), ("spamassassin", FILES[0::2]), ("csdmc2010", FILES[1::2])):
        got = out[group]
        n_spam = sum(len(raws[f]) for f in files if f.endswith("-spam.mbox.gz"))
        fp = sum(r["wrong_reps"] for r in rows if r["file"] in files and r["label"] == "ham")
        fn = sum(r["wrong_reps"] for r in rows if r["file"] in files and r["label"] == "spam")
        assert got["false_positives"] == fp == sum(rep[0] for rep in got["per_rep"])
        assert round(100 * (2 * n_spam - fn) / (2 * n_spam), 2) == got["spam_recall_pct"]
    # The tool's exits are the classifier's rule decisions on the same mail.
    from atlas_fast.classify import Classifier
    from atlas_fast.evaluate import read_messages, strip_filter_tags

    clf = Classifier(cache=False)
    for group, files in (("spamassassin", FILES[0::2]), ("csdmc2010", FILES[1::2])):
        msgs = read_messages([corpus / f for f in files])
        strip_filter_tags(msgs)
        by_rule = sum(v.decided_by == "rule" for v in clf.classify_chunk(msgs))
        assert out[group]["rule_exits"] == by_rule
    assert out["spamassassin"]["rule_exits"] >= 3
    for r in rows:
        assert 1 <= r["wrong_reps"] <= 2
        assert not (r["rule_exit"] and r["label"] == "spam")  # an exit is always spam
        assert r["subject"] is None or raws[r["file"]][r["position"]].count(b"Subject:") >= 1
    # The three removal offers are decided by the rule in every repetition.
    assert not [r for r in rows if (r["subject"] or "").startswith("Offer ")]


def test_bar_chance():
    tool = _nested_cv()
    assert tool.bar_chance(0.0, 1.0) == 1.0
    # Poisson: P(FP <= 1 | 774 * 0.00111) * P(missed <= 11 | 385 * 0.0271).
    assert abs(tool.bar_chance(0.00111, 0.9729) - 0.7874 * 0.6466) < 1e-3
    assert tool.bar_chance(0.01, 0.9729) < tool.bar_chance(0.001, 0.9729)
    assert tool.bar_chance(0.001, 0.95) < tool.bar_chance(0.001, 0.98)


def test_sign_test_p():
    tool = _nested_cv()
    assert tool.sign_test_p(0, 0) == 1.0
    assert tool.sign_test_p(3, 3) == 1.0
    assert tool.sign_test_p(5, 0) == tool.sign_test_p(0, 5) == 2 / 32
    # 2 of 10: P(X <= 2) = (1 + 10 + 45) / 1024, doubled.
    assert abs(tool.sign_test_p(2, 8) - 2 * 56 / 1024) < 1e-12


def test_paired_comparison_with_a_saved_run(tmp_path, capsys):
    import pytest

    corpus, _raws = _small_corpus(tmp_path)
    tool = _nested_cv()
    base = ["--corpus", str(corpus), "--reps", "2", "--param", "nbits=16"]
    saved = tmp_path / "base.npz"
    tool.main(base + ["--save-preds", str(saved)])
    first = json.loads(capsys.readouterr().out)
    # The same procedure again: the same verdicts, nothing discordant.
    tool.main(base + ["--compare", str(saved)])
    again = json.loads(capsys.readouterr().out)
    assert again["spamassassin"] == first["spamassassin"]
    for group in ("all", "spamassassin"):
        for kind in ("false_positives", "missed_spam"):
            assert again["paired"][group][kind] == {"only_this": 0, "only_saved": 0, "p": 1.0}
    # A threshold that lets half the ham through: false positives only this
    # run makes, and the pairing counts them against the saved run's.
    tool.main(base + ["--compare", str(saved), "--target-fpr", "0.5"])
    loose = json.loads(capsys.readouterr().out)
    fp = loose["paired"]["all"]["false_positives"]
    assert fp["only_this"] - fp["only_saved"] == (loose["all"]["false_positives"]
                                                    - first["all"]["false_positives"])
    assert fp["only_this"] > 0 and fp["p"] == round(tool.sign_test_p(fp["only_this"],
                                                                       fp["only_saved"]), 4)
    missed = loose["paired"]["all"]["missed_spam"]
    assert missed["only_this"] == 0  # a lower threshold misses nothing the other caught
    # Other repetitions than the saved ones: refused.
    with pytest.raises(SystemExit):
        tool.main(base + ["--compare", str(saved), "--first-rep", "1"])
    assert "saved from repetitions 0..1, this run is 1..2" in capsys.readouterr().err
