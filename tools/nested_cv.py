"""Estimate what the training procedure gives on unseen mail, from the train files only.

    python tools/nested_cv.py [--corpus ../shared/corpus] [--reps 2] [--jobs N] [--averaged-runs N]
                              [--target-fpr F] [--sweep-fpr F ...] [--param NAME=VALUE ...]
                              [--misses PATH]

Nested cross-validation: the train files (SpamAssassin and CSDMC2010, ham and
spam) are split into 5 stratified outer folds.  For each outer fold the whole
procedure of :func:`atlas_fast.evaluate.train_model` runs on the other four:
inner 5-fold CV for out-of-fold margins, the threshold at ``target_fpr`` of
those margins, the final fit on all four folds.  That model and threshold
then classify the held-out fold, with rule exits (a built-in rule at or above
the exit confidence decides spam) as the classifier applies them.  Counts are
pooled over folds and repetitions: for all messages, for the
SpamAssassin messages alone (the test split of issue 3 is SpamAssassin
mail) and for the CSDMC2010 messages alone (2009-2010 mail, whose
held-back test split checks that the model carries over to other years);
and per repetition as ``per_rep``: [false positives, spam recall %] (their
spread is the noise a change must beat).

``bar_chance`` (SpamAssassin) is the chance that a split the size of the
test split meets issue 3's bar (at most 1 false positive of 774 ham, at
least 374 of 385 spam), taking the pooled rates as Poisson means: one figure
for trading false positives against recall.  ``--sweep-fpr`` reports other
``target_fpr`` values from the same fits (only the threshold depends on it).

``--save-preds F`` keeps every message's verdict per repetition (an
``.npz``); ``--compare F`` pairs this run with a saved one of the same
repetitions, message by message, under ``paired``: the errors only one of
the two makes (``false_positives`` and ``missed_spam``, SpamAssassin and
all mail) and the exact two-sided sign-test p-value of that split.  Both
runs see the same outer folds, so most messages get the same verdict, and
the discordant ones say more than two totals whose spread is the noise.

``rule_exits`` counts the messages a built-in rule decides.  ``--misses``
writes the messages misclassified in some repetition (file and position,
as in the corpus index files) for reading.

The test split is never read.
"""
import argparse
import math
import os
import sys

import msgspec
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from atlas_fast.evaluate import (  # noqa: E402
    TrainParams, _margins, _rows, _run_fits, _threshold_margin, featurize, pooled,
    read_messages, replace_params, stratified_folds, strip_filter_tags, subset_ham_factors,
)
from atlas_fast.rules import RuleSet, load_rules  # noqa: E402


def _procedure(csr, y, params, seed, targets=(), factor=None, jobs=1):
    """Weights and threshold margin, as train_model makes them from (csr, y),
    and the threshold margins ``targets`` (other target_fpr values) would
    set on the same out-of-fold margins: the weights do not depend on it.
    ``factor``: per-row ham factors (TrainParams.ham_subset_weights);
    ``jobs``: processes for the fits, as train_model's."""
    oof, w = _run_fits(csr, y, params, seed, factor, final=True, jobs=jobs)
    oof, y = pooled(oof, y)
    return (w, _threshold_margin(oof, y, params.target_fpr),
            [_threshold_margin(oof, y, t) for t in targets])


# Issue 3's bar on the SpamAssassin test split: at most 1 false positive of
# 774 ham and at least 97 % of 385 spam caught (at most 11 missed).
BAR_HAM, BAR_FP, BAR_SPAM, BAR_MISSED = 774, 1, 385, 11


def _poisson_cdf(k: int, mean: float) -> float:
    term = total = math.exp(-mean)
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return total


def bar_chance(ham_fpr: float, spam_recall: float) -> float:
    """Chance that a split of the test split's size meets issue 3's bar
    when false positives and missed spam are Poisson counts at these rates
    (fractions): the objective the bar sets, for comparing settings."""
    return (_poisson_cdf(BAR_FP, BAR_HAM * ham_fpr)
            * _poisson_cdf(BAR_MISSED, BAR_SPAM * (1.0 - spam_recall)))


def _summary(pred, y, is_sa, exits, reps):
    out = {}
    for name, sel in (("all", np.ones(len(y), dtype=bool)), ("spamassassin", is_sa),
                      ("csdmc2010", ~is_sa)):
        ham, spam = sel & (y < 0.5), sel & (y > 0.5)
        fp, tp = int(pred[:, ham].sum()), int(pred[:, spam].sum())
        n_ham, n_spam = int(ham.sum()) * reps, int(spam.sum()) * reps
        out[name] = {
            "per_rep": [[int(pred[r, ham].sum()), round(float(100 * pred[r, spam].mean()), 2)]
                        for r in range(reps)],
            "false_positives": fp,
            "ham": n_ham,
            "ham_fpr_pct": round(100 * fp / n_ham, 3),
            "spam_recall_pct": round(100 * tp / n_spam, 2),
            "rule_exits": int(exits[sel].sum()),
        }
        if name == "spamassassin":
            out[name]["bar_chance"] = round(bar_chance(fp / n_ham, tp / n_spam), 3)
    return out


def sign_test_p(a: int, b: int) -> float:
    """Exact two-sided p-value of ``a`` against ``b`` discordant pairs
    under a fair coin (McNemar's exact test)."""
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def _paired(pred, base, y, is_sa):
    """Errors of this run (``pred``) and of a saved one (``base``) that the
    other does not make, per group; same shape, same messages."""
    out = {}
    wrong, wrong_base = pred != (y > 0.5), base != (y > 0.5)
    for name, sel in (("all", np.ones(len(y), dtype=bool)), ("spamassassin", is_sa)):
        group = {}
        for kind, cls in (("false_positives", sel & (y < 0.5)), ("missed_spam", sel & (y > 0.5))):
            only_this = int((wrong[:, cls] & ~wrong_base[:, cls]).sum())
            only_base = int((wrong_base[:, cls] & ~wrong[:, cls]).sum())
            group[kind] = {"only_this": only_this, "only_saved": only_base,
                           "p": round(sign_test_p(only_this, only_base), 4)}
        out[name] = group
    return out


def load_train(corpus, params, keep_filter_tags: bool = False):
    """The train files as :func:`train_model` reads them: ``(msgs, y, is_sa,
    where, factor)``, ham then spam, SpamAssassin before CSDMC2010 in each;
    ``where`` is (file name, position) and ``factor`` the per-row ham
    factors of ``params.ham_subset_weights`` (None without)."""
    msgs, labels, is_sa, where = [], [], [], []
    for label, kind in ((0, "ham"), (1, "spam")):
        for name in ("spamassassin", "csdmc2010"):
            fname = f"{name}-train-{kind}.mbox.gz"
            part = read_messages([os.path.join(corpus, fname)])
            msgs += part
            labels += [label] * len(part)
            is_sa += [name == "spamassassin"] * len(part)
            where += [(fname, i) for i in range(len(part))]
    factor = (subset_ham_factors([(os.path.join(corpus, f), i) for f, i in where],
                                 params.ham_subset_weights)
              if params.ham_subset_weights else None)
    if not keep_filter_tags:
        strip_filter_tags(msgs)
    return msgs, np.array(labels, dtype=np.float64), np.array(is_sa), where, factor


def rule_exits(msgs) -> np.ndarray:
    """Whether a built-in rule decides each message, as the classifier does."""
    ruleset = RuleSet(load_rules())
    hits = [h for i in range(0, len(msgs), 1000) for h in ruleset.scan_chunk(msgs[i : i + 1000])]
    # Rule indices are RuleSet.rules positions, not load_rules() ones (the
    # category hints are not rules): RuleSet.exits, as the classifier decides.
    return np.array(ruleset.exits(hits)) >= 0


def outer_models(csr, y, params, factor, first_rep: int, reps: int, jobs: int = 1, targets=()):
    """The outer folds' models, in order: ``(rep, fold, held_out_rows, w,
    threshold_margin, other_thresholds)`` for repetitions ``first_rep`` ..
    ``first_rep + reps - 1`` (repetition r's folds seeded ``11 + r``), each
    made by :func:`_procedure` from the other four folds."""
    for rep in range(first_rep, first_rep + reps):
        seed = 11 + rep
        outer = stratified_folds(y, 5, seed)
        for k in range(5):
            tr, te = np.flatnonzero(outer != k), np.flatnonzero(outer == k)
            w, thr, others = _procedure(_rows(csr, tr), y[tr], params, seed * 100 + k, targets,
                                        None if factor is None else factor[tr], jobs)
            yield rep, k, te, w, thr, others


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "shared", "corpus"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--first-rep", type=int, default=0,
                    help="number of the first repetition (its folds are seeded 11 + number), "
                         "to add repetitions to an earlier run")
    ap.add_argument("--averaged-runs", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1,
                    help="processes for each outer fold's six fits (default 1: on 2 cores, run "
                         "two --first-rep ranges side by side instead)")
    ap.add_argument("--target-fpr", type=float, default=None)
    ap.add_argument("--sweep-fpr", type=float, nargs="+", default=[], metavar="F",
                    help="also report these target_fpr values, from the same fits (only "
                         "the threshold depends on it), under 'sweep'")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a TrainParams field, e.g. --param l2=3e-5 (repeatable)")
    ap.add_argument("--keep-filter-tags", action="store_true",
                    help="do not strip [SPAM] subject tags (train_model strips them)")
    ap.add_argument("--misses", metavar="PATH",
                    help="write every message misclassified in at least one repetition, "
                         "one JSON object per line (file, position in it, label, wrong "
                         "repetitions, mean margin minus threshold, decided by rule, subject)")
    ap.add_argument("--save-preds", metavar="PATH",
                    help="save every message's verdict per repetition (.npz), for --compare")
    ap.add_argument("--compare", metavar="PATH",
                    help="pair this run's verdicts with those --save-preds saved from a run of "
                         "the same repetitions (under 'paired')")
    args = ap.parse_args(argv)
    saved = None
    if args.compare:
        saved = np.load(args.compare)
        if (int(saved["first_rep"]), int(saved["reps"])) != (args.first_rep, args.reps):
            ap.error(f"--compare {args.compare}: saved from repetitions "
                     f"{int(saved['first_rep'])}..{int(saved['first_rep']) + int(saved['reps']) - 1}"
                     f", this run is {args.first_rep}..{args.first_rep + args.reps - 1}")
    params = TrainParams()
    if args.averaged_runs is not None:
        params = msgspec.structs.replace(params, averaged_runs=args.averaged_runs)
    if args.target_fpr is not None:
        params = msgspec.structs.replace(params, target_fpr=args.target_fpr)
    try:
        params = replace_params(params, args.param)
    except ValueError as exc:
        ap.error(str(exc))
    msgs, y, is_sa, where, factor = load_train(args.corpus, params, args.keep_filter_tags)
    exits = rule_exits(msgs)
    csr = featurize(msgs, params.nbits, url_domains=params.url_domain_features)
    pred = np.zeros((args.reps, len(y)), dtype=bool)
    gap = np.zeros((args.reps, len(y)))  # margin minus the fold's threshold
    sweep = np.zeros((len(args.sweep_fpr), args.reps, len(y)), dtype=bool)
    for rep, _k, te, w, thr, others in outer_models(csr, y, params, factor, args.first_rep,
                                                     args.reps, args.jobs, args.sweep_fpr):
        rep -= args.first_rep
        margins = _margins(_rows(csr, te), w)
        gap[rep, te] = margins - thr
        pred[rep, te] = (gap[rep, te] >= 0) | exits[te]
        for j, t in enumerate(others):
            sweep[j, rep, te] = (margins >= t) | exits[te]
    if args.misses:
        wrong = (pred != (y > 0.5)).sum(axis=0)
        with open(args.misses, "w", encoding="utf-8") as fh:
            for i in np.flatnonzero(wrong):
                fname, pos = where[i]
                fh.write(msgspec.json.encode({
                    "file": fname, "position": pos, "label": "spam" if y[i] > 0.5 else "ham",
                    "wrong_reps": int(wrong[i]), "gap": round(float(gap[:, i].mean()), 3),
                    "rule_exit": bool(exits[i]), "subject": msgs[i].subject,
                }).decode() + "\n")
    if args.save_preds:
        with open(args.save_preds, "wb") as fh:
            np.savez_compressed(fh, pred=pred, y=y, first_rep=args.first_rep, reps=args.reps)
    out = {"params": msgspec.structs.asdict(params), "reps": args.reps, "first_rep": args.first_rep}
    out.update(_summary(pred, y, is_sa, exits, args.reps))
    if saved is not None:
        if saved["pred"].shape != pred.shape or not np.array_equal(saved["y"], y):
            sys.exit(f"nested_cv.py: --compare {args.compare}: saved from other mail")
        out["paired"] = _paired(pred, saved["pred"], y, is_sa)
    if args.sweep_fpr:
        out["sweep"] = {str(t): _summary(sweep[j], y, is_sa, exits, args.reps)
                        for j, t in enumerate(args.sweep_fpr)}
    print(msgspec.json.format(msgspec.json.encode(out)).decode())


if __name__ == "__main__":
    main()
