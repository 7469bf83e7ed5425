"""Does the training procedure carry over to mail of other years?  Train files only.

    python tools/cross_era.py [--corpus ../shared/corpus] [--seeds 7 8 9] [--fpr 0.005]
                              [--param NAME=VALUE ...] [--jobs N]

Trains with :func:`atlas_fast.evaluate.train_model` (the shipped procedure,
threshold included) on the SpamAssassin train files, almost all 2002 mail,
and classifies the CSDMC2010 train files, mostly 2009-2010 mail, with the
classifier (rules, features, model, cache off, as ``atlas-fast eval``).
Seven years later spam has moved on, so the threshold set on 2002 mail
catches far less of it; what the procedure controls is the ranking, so
besides the counts at the trained threshold it reports ROC AUC and the
recall at ``--fpr`` of the later ham (scores above the ham score at that
quantile).  One model per seed (``train_model``'s seed: folds and SGD
order); their spread is the noise a change must beat.

A check on one later corpus, for settings that should outlast their era
(``TrainParams.url_domain_features``); choose with tools/nested_cv.py on
mail of the same years as well.  The test split is never read.
"""
import argparse
import os
import sys
import tempfile

import msgspec
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from atlas_fast.classify import Classifier  # noqa: E402
from atlas_fast.evaluate import (  # noqa: E402
    TrainParams, read_messages, replace_params, roc_auc, train_model,
)


def recall_at_fpr(scores, y, fpr: float) -> float:
    """Fraction of spam scored above the ham score at the ``fpr`` quantile
    (the ``floor(fpr * n_ham) + 1``-th highest ham score)."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y)
    ham = np.sort(scores[y < 0.5])[::-1]
    if len(ham) == 0:
        return 1.0
    edge = ham[min(int(np.floor(fpr * len(ham))), len(ham) - 1)]
    spam = scores[y > 0.5]
    return float((spam > edge).mean()) if len(spam) else 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "shared", "corpus"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--fpr", type=float, default=0.005,
                    help="false-positive rate on the later ham at which recall is read")
    ap.add_argument("--jobs", type=int, default=None, help="processes for each training's fits")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a TrainParams field, e.g. --param url_domain_features=1")
    args = ap.parse_args(argv)
    params = TrainParams()
    try:
        params = replace_params(params, args.param)
    except ValueError as exc:
        ap.error(str(exc))
    c = args.corpus
    train = [[os.path.join(c, f"spamassassin-train-{k}.mbox.gz")] for k in ("ham", "spam")]
    later = [[os.path.join(c, f"csdmc2010-train-{k}.mbox.gz")] for k in ("ham", "spam")]
    ham, spam = read_messages(later[0]), read_messages(later[1])
    msgs = ham + spam
    y = np.concatenate([np.zeros(len(ham)), np.ones(len(spam))])
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            path = os.path.join(tmp, f"model-{seed}.bin")
            train_model(train[0], train[1], path, seed=seed, params=params, jobs=args.jobs)
            clf = Classifier(model=path, cache=False)
            verdicts = [v for i in range(0, len(msgs), 500)
                        for v in clf.classify_chunk(msgs[i : i + 500])]
            clf.close()
            pred = np.array([v.label == "spam" for v in verdicts])
            scores = np.array([v.score for v in verdicts])
            per_seed.append({
                "seed": seed,
                "false_positives": int((pred & (y < 0.5)).sum()),
                "spam_recall_pct": round(100 * float(pred[y > 0.5].mean()), 2),
                "roc_auc": round(roc_auc(scores, y), 5),
                "recall_at_fpr_pct": round(100 * recall_at_fpr(scores, y, args.fpr), 2),
            })
    out = {
        "params": msgspec.structs.asdict(params),
        "train": "spamassassin-train (2002)",
        "scored": f"csdmc2010-train (2009-2010): {len(ham)} ham, {len(spam)} spam",
        "fpr": args.fpr,
        "per_seed": per_seed,
        "mean_roc_auc": round(float(np.mean([r["roc_auc"] for r in per_seed])), 5),
        "mean_recall_at_fpr_pct": round(float(np.mean([r["recall_at_fpr_pct"]
                                                       for r in per_seed])), 2),
    }
    print(msgspec.json.format(msgspec.json.encode(out)).decode())


if __name__ == "__main__":
    main()
