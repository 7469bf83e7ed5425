"""tools/split_check.py: its models are tools/nested_cv.py's (same held-out
counts), and its test-split figures add up."""
from __future__ import annotations

import gzip
import json
import math

import pytest

from atlas_fast.splitter import split_mbox
from conftest import corpus_file, load_tool
from test_nested_cv import _small_corpus


def test_binom_tail():
    tool = load_tool("split_check")
    assert tool.binom_tail(0, 10, 0.3) == 1.0
    assert tool.binom_tail(1, 10, 0.1) == pytest.approx(1 - 0.9 ** 10)
    # P(X >= 9 | 10, 0.5) = (10 + 1) / 1024.
    assert tool.binom_tail(9, 10, 0.5) == pytest.approx(11 / 1024)
    assert tool.binom_tail(11, 10, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert tool.binom_tail(3, 385, 0.01) > tool.binom_tail(6, 385, 0.01)


def test_models_are_nested_cvs_and_figures_add_up(tmp_path, capsys):
    corpus, _raws = _small_corpus(tmp_path)
    for kind in ("ham", "spam"):
        name = f"spamassassin-test-{kind}.mbox.gz"
        raws = [raw if raw.endswith(b"\n\n") else raw.rstrip(b"\n") + b"\n\n"
                for _, (_offset, raw) in zip(range(30), split_mbox(corpus_file(name)))]
        (corpus / name).write_bytes(gzip.compress(b"".join(raws)))
    args = ["--corpus", str(corpus), "--reps", "2", "--param", "nbits=16"]
    load_tool("nested_cv").main(args)
    nested = json.loads(capsys.readouterr().out)["spamassassin"]
    tool = load_tool("split_check")
    tool.main(args)  # the test split found in --corpus
    out = json.loads(capsys.readouterr().out)

    models = out["models"]
    assert [(m["rep"], m["fold"]) for m in models] == [(r, k) for r in (0, 1) for k in range(5)]
    # Held out, each repetition's five models see every SpamAssassin train
    # message once: nested_cv's per-repetition counts.
    for r, (fp, recall) in enumerate(nested["per_rep"]):
        held = [m["heldout"] for m in models if m["rep"] == r]
        assert sum(h[0] for h in held) == fp
        spam, missed = sum(h[3] for h in held), sum(h[2] for h in held)
        assert round(100 * (spam - missed) / spam, 2) == recall
    total = out["heldout_spamassassin"]
    assert total["false_positives"] == nested["false_positives"]
    assert total["ham"] == nested["ham"]

    test = out["test"]
    assert (test["ham"], test["spam"]) == (30, 30)
    assert all(m["test"][1] == 30 and m["test"][3] == 30 for m in models)
    fps = sorted(m["test"][0] for m in models)
    missed = sorted(m["test"][2] for m in models)
    assert test["ham_wrong_every_model"] <= fps[0] <= fps[-1] <= test["ham_wrong_any_model"]
    assert test["spam_missed_every_model"] <= missed[0] <= missed[-1] <= test["spam_missed_any_model"]
    med = int((missed[4] + missed[5]) / 2)  # the median of ten
    assert test["median_missed"] == med
    rate = total["missed"] / total["spam"]
    assert test["tail_p_missed"] == round(tool.binom_tail(med, 30, rate), 4)
    assert math.isclose(test["expected_at_heldout_rates"][1], round(30 * rate, 2))
