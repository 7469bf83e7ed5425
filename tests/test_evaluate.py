import json

import numpy as np
import pytest

from atlas_fast.evaluate import roc_auc


@pytest.mark.parametrize(
    "scores, y, auc",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ],
)
def test_roc_auc(scores, y, auc):
    assert roc_auc(np.array(scores), np.array(y)) == pytest.approx(auc)


@pytest.mark.slow
def test_training_is_reproducible(tmp_path):
    from atlas_fast.evaluate import TrainParams, train_model

    from conftest import corpus_file

    ham = [corpus_file("spamassassin-test-ham.mbox.gz")]
    spam = [corpus_file("spamassassin-test-spam.mbox.gz")]
    p = TrainParams(nbits=16, epochs=2, folds=2)
    a = train_model(ham, spam, tmp_path / "a.bin", seed=7, params=p)
    b = train_model(ham, spam, tmp_path / "b.bin", seed=7, params=p)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert a["sha256"] == b["sha256"]


@pytest.mark.slow
def test_evaluate_report_json():
    from atlas_fast.evaluate import evaluate

    from conftest import corpus_file

    r = evaluate([corpus_file("spamassassin-test-ham.mbox.gz")],
                 [corpus_file("spamassassin-test-spam.mbox.gz")])
    doc = json.loads(r.to_json())
    assert doc["ham"] == 774 and doc["spam"] == 385
    assert doc["true_negatives"] + doc["false_positives"] == 774
    assert "spam recall" in r.format_table()


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 3 bar not reached yet: shipped model gives 1 FP / 96.88 % recall "
                          "(373 of 385; 374 needed) on the SpamAssassin test split", strict=True)
def test_shipped_model_meets_the_accuracy_bar():
    from atlas_fast.evaluate import evaluate

    from conftest import corpus_file

    r = evaluate([corpus_file("spamassassin-test-ham.mbox.gz")],
                 [corpus_file("spamassassin-test-spam.mbox.gz")])
    print(r.format_table())
    assert r.false_positives <= 1 and r.spam_recall >= 0.97


def test_filter_tags_are_stripped_for_training():
    from types import SimpleNamespace

    from atlas_fast.evaluate import strip_filter_tags

    msgs = [SimpleNamespace(subject=s) for s in
            ("[SPAM] cheap", " [spam]  [SPAM]  Info", "[ILUG] list mail", "Re: [spam] talk",
             None, "[SPAMX] no", "[Spam]")]
    assert strip_filter_tags(msgs) == 3
    assert [m.subject for m in msgs] == ["cheap", "Info", "[ILUG] list mail", "Re: [spam] talk",
                                        None, "[SPAMX] no", ""]
