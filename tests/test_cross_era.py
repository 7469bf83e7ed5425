"""tools/cross_era.py: recall at a false-positive rate by hand, and a run on
a small corpus whose figures agree with the classifier."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from atlas_fast.splitter import split_mbox
from conftest import corpus_file, load_tool

FILES = ["spamassassin-train-ham.mbox.gz", "csdmc2010-train-ham.mbox.gz",
         "spamassassin-train-spam.mbox.gz", "csdmc2010-train-spam.mbox.gz"]


def _tool():
    return load_tool("cross_era")


def test_recall_at_fpr_by_hand():
    tool = _tool()
    ham = [0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    spam = [0.95, 0.85, 0.75, 0.5, 0.05]
    scores = np.array(ham + spam)
    y = np.array([0] * len(ham) + [1] * len(spam))
    # 0 % of 10 ham: above the highest ham score (0.9): 1 of 5 spam.
    assert tool.recall_at_fpr(scores, y, 0.0) == pytest.approx(0.2)
    # 10 %: above the 2nd highest (0.8); 20 %: above the 3rd (0.7).
    assert tool.recall_at_fpr(scores, y, 0.1) == pytest.approx(0.4)
    assert tool.recall_at_fpr(scores, y, 0.2) == pytest.approx(0.6)
    assert tool.recall_at_fpr(scores, y, 1.0) == pytest.approx(0.8)  # ties do not count


def test_small_corpus_run(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in FILES:
        raws = [raw if raw.endswith(b"\n\n") else raw.rstrip(b"\n") + b"\n\n"
                for _, (_offset, raw) in zip(range(60), split_mbox(corpus_file(name)))]
        (corpus / name).write_bytes(gzip.compress(b"".join(raws)))
    _tool().main(["--corpus", str(corpus), "--seeds", "3", "4", "--jobs", "1",
                  "--param", "nbits=16", "--param", "epochs=2", "--param", "folds=2",
                  "--param", "url_domain_features=yes"])
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["url_domain_features"] is True and out["params"]["nbits"] == 16
    assert out["scored"].endswith("60 ham, 60 spam")
    assert [r["seed"] for r in out["per_seed"]] == [3, 4]
    for r in out["per_seed"]:
        assert 0 <= r["false_positives"] <= 60
        assert 0 <= r["spam_recall_pct"] <= 100 and 0 <= r["recall_at_fpr_pct"] <= 100
        assert 0.5 < r["roc_auc"] <= 1.0  # better than chance even on 60 + 60 messages
    assert out["mean_roc_auc"] == pytest.approx(np.mean([r["roc_auc"] for r in out["per_seed"]]),
                                                abs=1e-5)
