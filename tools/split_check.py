"""Is the SpamAssassin test split harder than held-out train mail, for the same models?

    python tools/split_check.py [--corpus ../shared/corpus] [--reps 1] [--first-rep 0]
                                [--jobs N] [--param NAME=VALUE ...]

A measurement, not a selection: nothing here feeds back into training.  It
builds the same models as ``tools/nested_cv.py`` (same outer folds and seeds:
for each outer fold, the whole training procedure on the other four folds of
the train files) and scores each twice, with rule exits as the classifier
applies them: on its held-out fold's SpamAssassin mail, and on the
SpamAssassin test split.  Every model meets both sets unseen, so a test
split drawn like the train files should give each about the held-out error
rates.  Per model it prints [false positives, ham, missed spam, spam] of
both; then the pooled rates, the test messages every model gets wrong and
any model does, and ``tail_p``: the chance that a binomial draw of the test
split's size at the held-out rate gives at least the test's median count
(rounded down).
"""
import argparse
import math
import os
import sys

import msgspec
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from atlas_fast.evaluate import (  # noqa: E402
    TrainParams, _margins, _rows, featurize, read_messages, replace_params,
)
from nested_cv import load_train, outer_models, rule_exits  # noqa: E402


def binom_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    below = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k))
    return max(0.0, 1.0 - below)


def _counts(pred, y):
    ham, spam = y < 0.5, y > 0.5
    return [int(pred[ham].sum()), int(ham.sum()), int((~pred[spam]).sum()), int(spam.sum())]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "shared", "corpus"))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--first-rep", type=int, default=0,
                    help="number of the first repetition, as tools/nested_cv.py numbers them")
    ap.add_argument("--jobs", type=int, default=1, help="processes for each model's fits")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a TrainParams field (repeatable)")
    ap.add_argument("--test-ham", default=None, help="default: the SpamAssassin test ham")
    ap.add_argument("--test-spam", default=None, help="default: the SpamAssassin test spam")
    args = ap.parse_args(argv)
    try:
        params = replace_params(TrainParams(), args.param)
    except ValueError as exc:
        ap.error(str(exc))
    msgs, y, is_sa, _where, factor = load_train(args.corpus, params)
    exits = rule_exits(msgs)
    csr = featurize(msgs, params.nbits, url_domains=params.url_domain_features)
    test_ham = read_messages([args.test_ham or os.path.join(
        args.corpus, "spamassassin-test-ham.mbox.gz")])
    test_spam = read_messages([args.test_spam or os.path.join(
        args.corpus, "spamassassin-test-spam.mbox.gz")])
    test = test_ham + test_spam
    ty = np.concatenate([np.zeros(len(test_ham)), np.ones(len(test_spam))])
    test_exits = rule_exits(test)
    test_csr = featurize(test, params.nbits, url_domains=params.url_domain_features)

    models, held, test_preds = [], np.zeros(4, np.int64), []
    for rep, k, te, w, thr, _ in outer_models(csr, y, params, factor, args.first_rep,
                                              args.reps, args.jobs):
        sa = te[is_sa[te]]
        h = _counts((_margins(_rows(csr, sa), w) >= thr) | exits[sa], y[sa])
        tp = (_margins(test_csr, w) >= thr) | test_exits
        test_preds.append(tp)
        held += h
        models.append({"rep": rep, "fold": k, "heldout": h, "test": _counts(tp, ty)})
    wrong = np.array(test_preds) != (ty > 0.5)
    n_ham, n_spam = int((ty < 0.5).sum()), int((ty > 0.5).sum())
    fp_rate, miss_rate = float(held[0] / held[1]), float(held[2] / held[3])
    med_fp = int(np.median([m["test"][0] for m in models]))
    med_miss = int(np.median([m["test"][2] for m in models]))
    out = {
        "params": msgspec.structs.asdict(params),
        "models": models,
        "heldout_spamassassin": {"false_positives": int(held[0]), "ham": int(held[1]),
                                 "missed": int(held[2]), "spam": int(held[3]),
                                 "ham_fpr_pct": round(100 * fp_rate, 3),
                                 "miss_pct": round(100 * miss_rate, 2)},
        "test": {
            "ham": n_ham, "spam": n_spam,
            "median_false_positives": med_fp, "median_missed": med_miss,
            "expected_at_heldout_rates": [round(n_ham * fp_rate, 2), round(n_spam * miss_rate, 2)],
            "ham_wrong_every_model": int(wrong[:, ty < 0.5].all(0).sum()),
            "ham_wrong_any_model": int(wrong[:, ty < 0.5].any(0).sum()),
            "spam_missed_every_model": int(wrong[:, ty > 0.5].all(0).sum()),
            "spam_missed_any_model": int(wrong[:, ty > 0.5].any(0).sum()),
            "tail_p_false_positives": round(binom_tail(med_fp, n_ham, fp_rate), 4),
            "tail_p_missed": round(binom_tail(med_miss, n_spam, miss_rate), 4),
        },
    }
    print(msgspec.json.format(msgspec.json.encode(out)).decode())


if __name__ == "__main__":
    main()
