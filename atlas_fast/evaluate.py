"""Training the model and scoring labelled mail (``atlas-fast train`` / ``eval``).

Both read mboxes with :func:`atlas_fast.splitter.split_mbox` and the native
parser, exactly as the pipeline's workers see messages, so what is measured
is what runs.
"""
from __future__ import annotations

import json
import math
import os
import re
import time

import msgspec
import numpy as np

from .errors import AtlasError

__all__ = [
    "TrainParams",
    "EvalReport",
    "read_messages",
    "featurize",
    "fit_logistic",
    "cross_validate",
    "train_model",
    "evaluate",
    "roc_auc",
    "stratified_folds",
    "wilson_interval",
]


class TrainParams(msgspec.Struct, frozen=True):
    """Hyper-parameters of :func:`train_model` (chosen by cross-validation on train data).

    The nested-CV figures below were each compared within one run of
    tools/nested_cv.py; before commit e38370f that tool lost the exits of
    rules listed after the category hints, so absolute recall figures
    from before then read about 0.07 pp low (the comparisons stand).
    """

    # Hash buckets: 2**nbits.  Nested CV (tools/nested_cv.py, 4
    # repetitions, feature version 5), SpamAssassin ham FP / spam recall per
    # repetition: 20 -> [3, 96.62] [4, 96.56] [4, 96.89] [4, 96.62]
    # (0.111 % / 96.67 %); 21 -> 0.118 % / 96.81 % (FP 3, 5, 5, 3); 22 ->
    # [3, 96.62] [4, 97.02] [4, 96.96] [4, 96.76] (0.111 % / 96.84 %): the
    # same false positives in every repetition and recall never lower.
    # Fewer collisions between tokens; the dense weights take 8 MB (bfloat16).
    nbits: int = 22
    # Nested CV (feature version 7, 4 repetitions), SpamAssassin ham FP /
    # spam recall per repetition: 20 -> [2, 97.22] [7, 97.82] [3, 97.62]
    # [2, 98.01] (14 FP, 97.67 %, CSDMC2010 0 FP, 97.85 %); 10 -> [2, 97.02]
    # [7, 97.88] [4, 97.62] [3, 98.15] (16 FP, 97.67 %, CSDMC2010 97.73 %).
    # Session 13, with hard_ham=6 (20 -> [2, 97.82] [7, 98.28] [6, 98.28]
    # [1, 98.54], 16 FP, 98.23 %, bar_chance 0.73): 30 -> [2, 97.88] [6,
    # 98.28] [5, 98.28] [1, 98.61] (14 FP, 98.26 %, 0.78; CSDMC2010 0 FP,
    # 98.01 %), within the spread of repetitions: kept at 20.
    epochs: int = 20
    # Nested CV as for epochs: 0.2 -> 14 FP, 97.67 %; 0.1 -> [2, 96.89] [6,
    # 97.62] [5, 97.09] [4, 97.42] (17 FP, 97.26 %, CSDMC2010 97.53 %); 0.4
    # -> [4, 96.43] [8, 97.49] [4, 96.62] [2, 96.23] (18 FP, 96.69 %,
    # CSDMC2010 97.21 %).
    lr: float = 0.2
    # Nested CV with 2**22 buckets, 4 repetitions, SpamAssassin ham FP /
    # spam recall: 1e-5 -> 15 FP, 96.84 %; 3e-6 -> 17 FP, 96.64 %; 3e-5 ->
    # 15 FP, 96.56 %.  Session 13 (feature version 7, hard_ham=6, against 16
    # FP, 98.23 %, 0.73 as for epochs): 3e-6 -> 16 FP, 98.26 %, 0.74 but 1
    # CSDMC2010 FP; 3e-5 -> [2, 97.68] [8, 98.28] [5, 98.08] [3, 98.54]
    # (18 FP, 98.15 %, 0.68).
    l2: float = 1e-5
    folds: int = 5
    # The decision threshold is set on out-of-fold scores so that at most this
    # fraction of training ham would be called spam: 0.13 %, the false
    # positive rate issue 3 allows (bogofilter's).  Nested CV on the train
    # files, [SPAM] subject tags stripped, 5 folds x 2 repetitions,
    # SpamAssassin ham FPR / spam recall: target 0.001 -> about 0.06-0.10 % /
    # 96.6-96.7 % (1 and 2 repetitions), 0.0013 -> 0.118 % / 97.05 % (all
    # train mail 0.092 % / 97.22 %), 0.0015 -> 0.178 % / 97.55 %, over the
    # bar.
    target_fpr: float = 0.0013
    # Cross-validation repetitions (each with its own fold split and fit
    # seeds) whose out-of-fold margins are pooled for the threshold and the
    # calibration.  The threshold is an extreme order statistic of the ham
    # margins (the 6th highest of 4,330 at 0.13 %), so one fold split moves
    # it by chance; pooling three puts it at the 17th of 12,990.  The final
    # fit, and so the weights, do not depend on it.  Nested CV, 8
    # repetitions, SpamAssassin [FP, recall %] per repetition: 1 -> [2,
    # 98.28] [6, 98.54] [3, 98.41] [1, 98.48] [7, 98.61] [3, 97.95] [5,
    # 98.35] [1, 98.28] (28 FP, 98.36 %; variance of the FP counts 5.1, over
    # the Poisson 3.5: the fold split's share); 3 -> [2, 98.35] [4, 98.48]
    # [4, 98.35] [2, 98.68] [6, 98.54] [2, 97.75] [5, 98.21] [3, 98.15] (28
    # FP, 98.31 %, variance 2.3; CSDMC2010 1 FP either way).  The same
    # rates, with less of the procedure's own chance in them, for 2.5x the
    # training fits (a fit is about 1 s here).  On a smaller mailbox (800
    # ham and 400 spam of the SpamAssassin train files, seeds 1-8, scored on
    # the other 2,576 ham and 1,111 spam) the threshold's standard deviation
    # goes 0.371 -> 0.149 and recall's 1.11 -> 0.60 points (92.39 -> 92.18 %
    # mean), false positives 4.8 -> 4.6 (sd 2.19 -> 1.92).
    cv_repeats: int = 3
    # Weight of a ham message relative to a balanced class weighting: above 1
    # the fit works harder on the ham tail, where the threshold sits.  Nested
    # CV (4 repetitions, feature version 5, 2**22 buckets), SpamAssassin ham
    # FP / spam recall per repetition: 1.0 -> [3, 96.62] [4, 97.02] [4,
    # 96.96] [4, 96.76] (15 FP, 0.111 % / 96.84 %); 1.5 -> [2, 96.69] [5,
    # 97.29] [4, 97.02] [4, 97.09] (15 FP, 0.111 % / 97.02 %; all train mail
    # 0.087 % / 97.16 %); 2.0 -> [3, 96.69] [6, 97.29] [3, 97.15] [4, 97.35]
    # (16 FP, 0.118 % / 97.12 %).  1.5: recall up in every repetition with
    # no more false positives; 2.0 buys a little more recall with one.
    # Weighting the CSDMC2010 messages 0.5 in the fit (session 11, feature
    # version 7, 4 repetitions) gave SpamAssassin [3, 97.62] [8, 97.88] [3,
    # 97.49] [2, 98.28] (16 FP, 97.82 %) against 14 FP, 97.67 %, and cut
    # CSDMC2010 recall from 97.85 to 97.33 %: not kept.
    # Session 13: with hard_ham=6 the newsletter tail is weighted already,
    # and the extra weight on all ham no longer helps.  Nested CV, reps 0-3:
    # 1.5 -> [2, 97.82] [7, 98.28] [6, 98.28] [1, 98.54] (16 FP, 98.23 %,
    # bar_chance 0.73); 1.0 -> [2, 98.01] [5, 98.21] [3, 98.21] [1, 98.54]
    # (11 FP, 98.25 %, 0.83); 2.0 -> 16 FP, 98.28 %, 0.74.  Fresh reps 4-7,
    # run after: 1.5 -> [6, 98.35] [3, 97.55] [5, 98.15] [4, 98.21] (18 FP,
    # 98.06 %); 1.0 -> [6, 98.54] [3, 97.35] [5, 98.21] [3, 98.35] (17 FP,
    # 98.11 %).  Over the 8 paired repetitions 1.0 has fewer false positives
    # in 4 and as many in the others (34 -> 28 of 27,008 SpamAssassin ham),
    # the same recall (98.15 -> 98.18 %), and CSDMC2010 0 + 1 FP either way
    # (recall 98.23 -> 98.31 %): 1.0.
    ham_weight: float = 1.0
    # Number of SGD runs (visiting orders seeded ``seed + 1000*j``) whose
    # weights are averaged into the one linear model: less variance in the
    # ham tail, where the threshold sits.  Chosen by nested CV on the train
    # files (tools/nested_cv.py: the whole procedure, threshold included, on
    # held-out folds; 5 folds x 2 repetitions), SpamAssassin ham FPR / spam
    # recall: 1 run 0.163 % / 95.27 %, 3 runs 0.118 % / 96.13 %, 5 runs
    # 0.148 % / 96.29 %; 3 runs with target_fpr 0.0013: 0.163 % / 96.79 %.
    # With the header-value tokens of feature version 4 (charset, MIME
    # boundary shape, priority flags, Precedence, MIME-Version, transfer
    # encoding), 3 runs: 0.104 % / 96.72 % (all train mail: 0.081 % / 96.94 %).
    # Session 13 (version 7, hard_ham=6): 5 runs -> [3, 98.08] [6, 98.68]
    # [4, 98.08] [2, 98.74] (15 FP, 98.39 %, 0.77) but 2 CSDMC2010 FP
    # against 0: kept at 3.  Session 16, paired against 3 on the same folds
    # (cv_repeats 3, tools/nested_cv.py --compare, reps 0-3): 5 runs ->
    # [3, 98.35] [5, 98.74] [3, 98.41] [2, 98.74]; SpamAssassin false
    # positives only one of the two makes 3 (5 runs) / 2 (3 runs), missed
    # spam 5 / 11; all mail 4 / 2 and 8 / 15 (sign test p 0.69 and 0.21).
    # A little more recall for a little more ham called spam, as before:
    # kept at 3.
    averaged_runs: int = 3
    # NB-weighted logistic regression (NBSVM, Wang & Manning 2012): each
    # bucket's value is scaled by ``(1 - nb_mix) + nb_mix * |r|``, r the Naive
    # Bayes log-count ratio of the training data (:func:`nb_log_ratios`,
    # smoothing ``nb_alpha``), and the scale is folded back into the weights,
    # so the model file and the classifier are unchanged.  Under AdaGrad this
    # gives each bucket a step size in proportion to its scale: buckets that
    # tell the classes apart move fast, the rest stay near zero.  0 is plain
    # logistic regression.  Nested CV, SpamAssassin ham FP / spam recall per
    # repetition, feature version 5, 4 repetitions: 0 -> [3, 96.62] [4,
    # 96.56] [4, 96.89] [4, 96.62] (0.111 % / 96.67 %); 0.5 -> [2, 97.15]
    # [4, 96.82] [3, 96.36] [4, 96.56] (0.096 % / 96.72 %): recall moves
    # both ways by more than it gains, so it stays off (1.0 was worse:
    # 0.118 % / 96.29 % with version 4, 2 repetitions).
    nb_mix: float = 0.0
    nb_alpha: float = 1.0
    # Ham of chosen upstream subsets weighted in the fit ("hard_ham=6": the
    # corpus index file next to an mbox, ``*-index.tsv``, names each
    # message's subset; see :func:`subset_ham_factors`).  Training
    # metadata only, never a feature; classification is unchanged.  The
    # false positives under nested CV are all SpamAssassin hard_ham
    # (commercial newsletters, 214 of 4330 train ham); weighting them pushes
    # that tail down, so the threshold set at target_fpr sits lower and
    # catches more spam.  Nested CV (feature version 7, branch acc session),
    # SpamAssassin [FP, recall %] per repetition, reps 0-3: "" -> [2, 97.22]
    # [7, 97.82] [3, 97.62] [2, 98.01] (14 FP, 97.67 %, bar_chance 0.65,
    # CSDMC2010 0 FP, 97.85 %); hard_ham=3 -> [2, 98.01] [9, 98.28] [5,
    # 98.28] [1, 98.41] (17 FP, 98.25 %, 0.71; CSDMC2010 0 FP, 97.93 %);
    # hard_ham=6 -> [2, 97.82] [7, 98.28] [6, 98.28] [1, 98.54] (16 FP,
    # 98.23 %, 0.73; CSDMC2010 0 FP, 98.05 %); hard_ham=10 -> [2, 97.82]
    # [7, 98.28] [5, 98.15] [1, 98.48] (15 FP, 98.18 %, 0.75) but CSDMC2010
    # 2 FP (97.93 %), so 6.  Fresh reps 4-5: "" -> [5,
    # 97.68] [4, 97.42]; hard_ham=6 -> [6, 98.35] [3, 97.55].  Six reps:
    # 23 FP, 97.63 %, 0.62 -> 25 FP, 98.14 %, 0.71.  With target_fpr 0.001
    # (same fits): "" 13 FP, 97.32 % (reps 0-3); hard_ham=6 12 FP, 98.06 %
    # (0.78): hard_ham=6 lies above the baseline's whole FP/recall curve
    # (target 0.001-0.002).  Without subset labels, weighting the top 2 %
    # of ham by out-of-fold margin x3 and refitting gave [2, 97.82] [6,
    # 98.01] [4, 97.68] [3, 98.35] (15 FP, 97.97 %, 0.71; CSDMC2010 0 FP,
    # 97.73 %) for twice the fits: not kept.
    ham_subset_weights: str = "hard_ham=6"
    # Registered domains of a message's URLs as features (``url_dom:``).
    # They name campaigns and senders of one time: trained on the
    # SpamAssassin train files (2002) and scored on the CSDMC2010 ones
    # (2009-2010; ``python tools/cross_era.py [--param
    # url_domain_features=1]``, seeds 7, 8, 9), without them the ROC AUC
    # goes 0.9944 / 0.9945 / 0.9926 -> 0.9957 / 0.9967 / 0.9945 and recall
    # at 0.5 % CSDMC2010 false positives 87.1 / 87.6 / 84.2 -> 90.5 / 89.3
    # / 88.7 % (dropping the sender's registered domain as well, in a
    # prototype: AUC up by about 0.001 more, but 3 more SpamAssassin false
    # positives under nested CV).  On
    # mail of the same years, nested CV, 8 repetitions: with them [2, 98.01]
    # [5, 98.21] [3, 98.21] [1, 98.54] [6, 98.54] [3, 97.35] [5, 98.21]
    # [3, 98.35] (28 FP, 98.18 %); without [2, 98.28] [6, 98.54] [3, 98.41]
    # [1, 98.48] [7, 98.61] [3, 97.95] [5, 98.35] [1, 98.28] (28 FP,
    # 98.37 %; CSDMC2010 2 FP against 1, recall 98.23 against 98.31 %).  The default
    # model is for mail of other years than its train files: off.
    url_domain_features: bool = False
    # Session 14, tried against the shipped procedure (reps 0-3: [2, 98.01]
    # [5, 98.21] [3, 98.21] [1, 98.54], 11 FP, 98.25 %, CSDMC2010 0 FP) and
    # not kept:
    # - weighting both classes near the operating point (ham with an
    #   out-of-fold margin above threshold - d, spam below threshold + d,
    #   x3) and refitting: d = 1.5 -> [2, 97.88] [6, 98.28] [5, 98.01] [1,
    #   98.35] (14 FP, 98.13 %, CSDMC2010 1 FP); d = 3 -> 15 FP, 98.08 %;
    # - stacking per-view models (content: body, subject, display name, URL
    #   paths, rule hits; the rest: header and enrichment features), each
    #   fitted alone, by a logistic meta-model on their out-of-fold margins
    #   (it folds into one weight vector): 23 FP, 98.33 %; the joint model
    #   with the content model: 20 FP, 98.43 %; all three: 20 FP, 98.42 %.
    #   Recall up a little, false positives up by more;
    # - the same procedure with no rules at all (no exits, no ``rule:``
    #   features): [2, 97.62] [5, 97.75] [4, 97.95] [1, 98.21] (12 FP,
    #   97.88 %): the rules add about 0.4 points of recall under CV.
    # Session 15, against the shipped procedure rerun (reps 0-3: [2, 98.28]
    # [6, 98.54] [3, 98.41] [1, 98.48], 12 FP, 98.42 %, CSDMC2010 1 FP):
    # weighting each spam by 1/sqrt(size of its near-duplicate cluster)
    # (MinHash of word 4-shingles of subject and body, Jaccard >= 0.5; 82 %
    # of the spam missed under CV are singletons, against 48 % of SpamAssassin
    # train spam), so campaigns weigh less than one-off spam: [2, 98.35] [7,
    # 98.54] [3, 98.41] [1, 98.61] (13 FP, 98.47 %, CSDMC2010 1 FP), not kept.
    # Bagging the averaged runs (each fit on a Poisson(1) bootstrap of the
    # rows, as sample weights), 5 runs: [3, 97.88] [7, 98.61] [4, 97.95]
    # [2, 98.01] (16 FP, 98.12 %, CSDMC2010 0 FP), not kept.  Buckets seen in
    # fewer than 2 of a fit's training messages dropped from that fit: [2,
    # 98.08] [6, 98.48] [4, 98.08] [1, 98.35] (13 FP, 98.25 %), not kept.
    # Session 18, against the shipped procedure (reps 0-3: [2, 98.35] [4,
    # 98.48] [4, 98.35] [2, 98.68], 12 FP, 98.47 %, CSDMC2010 1 FP), not
    # kept: a margin offset for mail relayed by a mailing list (List-Id,
    # List-Post, Mailing-List, X-Mailman-Version, ... present), chosen on
    # the inner out-of-fold margins (0 to 4 by 0.25) for the most spam
    # caught at target_fpr.  On the shipped procedure's own out-of-fold
    # margins it looked good (offset 1.5: SpamAssassin missed spam 77 -> 59
    # of 4,533, false positives 14 -> 13), but chosen and applied under
    # nested CV (offsets 0 to 2.25 by fold): [2, 98.41] [6, 98.41] [5,
    # 98.54] [3, 98.61] (16 FP, 98.49 %, CSDMC2010 3 FP); paired,
    # SpamAssassin false positives only one of the two makes 5 (with it) /
    # 1, missed spam 4 / 6.  A Naive Bayes model blended in (the log-count
    # ratios of the same buckets times lambda, added to the weights: still
    # one linear model), 5-fold CV x 2 on the train files, SpamAssassin
    # false positives / missed spam of 3,022 at target_fpr: lambda 0 -> 9 /
    # 39; 0.02 -> 9 / 43; 0.05 -> 9 / 53; 0.2 -> 9 / 90; Naive Bayes alone
    # 11 / 188.  Its AUC is a little higher (0.99983 -> 0.99986 at 0.05),
    # its tail worse.  Gradient-boosted trees (LightGBM 4.7, 400 rounds of
    # 15 leaves, learning rate 0.05, 30 % of columns per tree) over the
    # same buckets (those in at least 5 training messages, about 51,000),
    # same class and hard_ham weights, same folds: alone 11 / 415; added to
    # the linear margin at 0.25 / 0.5 / 1 times its own -> 10 / 52, 11 /
    # 59, 11 / 88.  Trees over hashed tokens miss what the many small
    # weights of the linear model add up.


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def replace_params(params: TrainParams, items) -> TrainParams:
    """``params`` with ``NAME=VALUE`` overrides (the tools' ``--param``),
    each value read as its field's type: booleans as 1/0, true/false,
    yes/no or on/off (``bool("0")`` would be True).  ValueError names the
    item that is not one."""
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or name not in TrainParams.__struct_fields__:
            raise ValueError(f"--param {item}: expected NAME=VALUE, NAME a TrainParams field")
        kind = type(getattr(params, name))
        if kind is bool:
            word = value.strip().lower()
            if word not in _TRUE + _FALSE:
                raise ValueError(f"--param {item}: {name} is true or false (1/0, yes/no, on/off)")
            got = word in _TRUE
        else:
            try:
                got = kind(value)
            except ValueError:
                raise ValueError(f"--param {item}: {name} must be of type {kind.__name__}") from None
        params = msgspec.structs.replace(params, **{name: got})
    return params


def user_params(*, url_domains: bool = False, target_fpr: float | None = None) -> TrainParams:
    """TrainParams with the choices ``atlas-fast train`` and
    :func:`atlas_fast.train` offer (URL domains as features, the operating
    point); the defaults otherwise."""
    params = TrainParams(url_domain_features=url_domains)
    if target_fpr is not None:
        params = msgspec.structs.replace(params, target_fpr=target_fpr)
    return params


def subset_ham_factors(where, spec: str) -> np.ndarray:
    """Per-message fit factors from ``spec`` ("hard_ham=6,other=2"): the
    factor of the subset the corpus index file (``*-index.tsv`` beside the
    mbox, columns ``mbox_file``, ``position``, ``subset``) gives a message,
    1 for messages of other subsets or not listed.  ``where`` lists
    ``(mbox path, position)`` per message."""
    import csv
    import glob

    factors = {}
    for item in spec.split(","):
        name, eq, value = item.strip().partition("=")
        if not item.strip():
            continue
        try:
            factors[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"ham_subset_weights: expected 'subset=factor', got {item!r}") from None
        if not eq or not name.strip() or not factors[name.strip()] > 0:
            raise ValueError(f"ham_subset_weights: expected 'subset=factor' (factor > 0), got {item!r}")
    subset = {}
    paths = {os.path.abspath(os.fspath(p)) for p, _ in where}
    need = {"mbox_file", "position", "subset"}
    for d in sorted({os.path.dirname(p) for p in paths}):
        for index in sorted(glob.glob(os.path.join(d, "*-index.tsv"))):
            try:
                with open(index, newline="", encoding="utf-8") as fh:
                    rows = csv.DictReader(fh, delimiter="\t")
                    if not need <= set(rows.fieldnames or ()):
                        continue  # some other table: not a corpus index
                    for row in rows:
                        path = os.path.join(d, row["mbox_file"])
                        if path in paths:  # rows of the mboxes trained on only
                            subset[(path, int(row["position"]))] = row["subset"]
            except (OSError, UnicodeDecodeError, ValueError, csv.Error):
                continue  # unreadable or damaged: weights stay 1
    return np.array([factors.get(subset.get((os.path.abspath(os.fspath(p)), i)), 1.0)
                     for p, i in where])


def read_messages(paths) -> list:
    """Parse every message of the given mboxes (plain or .gz) with the native parser."""
    from ._parser import parse_message
    from .splitter import split_mbox

    out = []
    for path in paths:
        for _offset, raw in split_mbox(path):
            out.append(parse_message(raw))
    return out


# Tags an upstream filter wrote into the Subject of mail it judged spam
# ("[SPAM] cheap pills"): 313 of the 628 CSDMC2010 train spam carry one, no
# train ham does.  Learned as a token, the tag explains those messages away
# instead of their content, and it is the label, not evidence, so training
# removes it (classifying does not: a user's mail keeps what it says).
_FILTER_TAG = re.compile(r"^\s*(?:\[spam\]\s*)+", re.I)


def strip_filter_tags(msgs: list) -> int:
    """Remove a leading ``[SPAM]`` tag (any case) from the subjects of
    ``msgs``, in place; returns how many were removed."""
    n = 0
    for m in msgs:
        s = m.subject
        if s:
            t = _FILTER_TAG.sub("", s, count=1)
            if t != s:
                m.subject = t
                n += 1
    return n


def featurize(msgs: list, nbits: int, header_allow=None, url_domains: bool = True):
    """CSR features of messages, with enrichment and rule-hit features, as the
    classifier makes them."""
    from ._features import Featurizer, model_extras_packed
    from .cache import ClassifierCache
    from .enrich import Enricher
    from .model import HEADER_ALLOW
    from .rules import RuleSet, load_rules

    enricher = Enricher(ClassifierCache(None, enabled=False))
    ruleset = RuleSet(load_rules())
    extras = []
    for i in range(0, len(msgs), 1000):
        part = msgs[i : i + 1000]
        hits = ruleset.scan_chunk(part)
        extras.extend(model_extras_packed(enricher.enrich_chunk(part), hits,
                                          ruleset.rule_features, list(range(len(part)))))
    allow = HEADER_ALLOW if header_allow is None else header_allow
    return Featurizer(nbits, frozenset(allow), url_domains=url_domains).csr(msgs, extras)


def _rows(csr, rows):
    indptr, indices, data = csr
    rows = np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    new_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_ptr[1:])
    take = np.concatenate([np.arange(indptr[r], indptr[r + 1]) for r in rows]) \
        if len(rows) else np.zeros(0, np.int64)
    return new_ptr, np.ascontiguousarray(indices[take]), np.ascontiguousarray(data[take])


def fit_logistic(csr, y, params: TrainParams, seed: int, ham_factor=None) -> np.ndarray:
    """Weights (``2**nbits`` + bias) of L2 logistic regression, by AdaGrad SGD.

    AdaGrad's per-bucket steps matter in the ham tail, where the threshold
    sits: the exact minimiser of the same loss with a uniform L2 penalty
    (L-BFGS, penalty 1e-3 to 1e-6, tried in session 11) gave the same AUC
    (0.9996) but far lower recall at one false positive on three held-out
    splits of the train files (90-92 % against 99 %).

    Classes are weighted to balance; the visiting order comes from
    ``numpy.random.default_rng(seed)``, so the result is reproducible.  With
    ``params.averaged_runs`` > 1 the weights of that many runs, seeded
    ``seed``, ``seed + 1000``, ..., are averaged.  The weights (not the
    bias) come back rounded to bfloat16, the precision the classifier scores
    with (see ``Featurizer.score``), so that thresholds and calibration set
    on these margins hold for the classifier.

    ``ham_factor`` (optional, one value per row, used for ham rows only)
    multiplies each ham message's weight, the ham total kept: see
    :func:`subset_ham_factors`.
    """
    scale = None
    if params.nb_mix:
        scale = nb_scale(nb_log_ratios(csr, y, params.nbits, params.nb_alpha), params.nb_mix)
        indptr, indices, data = csr
        csr = (indptr, indices, (data * scale[indices]).astype(np.float32))
    runs = [_fit_once(csr, y, params, seed + 1000 * j, ham_factor)
            for j in range(max(1, params.averaged_runs))]
    w = runs[0] if len(runs) == 1 else np.mean(runs, axis=0)
    if scale is not None:
        w[:-1] *= scale
    w[:-1] = round_bf16(w[:-1])
    return w


def round_bf16(w: np.ndarray) -> np.ndarray:
    """``w`` rounded to the nearest bfloat16 (ties to even), as float64."""
    from .model import bf16_bits

    return (bf16_bits(w).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def nb_log_ratios(csr, y, nbits: int, alpha: float = 1.0) -> np.ndarray:
    """Naive Bayes log-count ratio of every bucket (Wang & Manning 2012).

    ``r = log((p + alpha) / |p + alpha|_1) - log((q + alpha) / |q + alpha|_1)``,
    p and q the sums of each bucket's values over the spam and the ham rows
    of ``csr``.  Buckets that no row uses get 0, not the ratio of the two
    norms, so that they stay out of the model.
    """
    indptr, indices, data = csr
    y = np.asarray(y)
    size = 1 << nbits
    row_is_spam = np.repeat(y > 0.5, np.diff(indptr))
    vals = data.astype(np.float64)
    p = np.bincount(indices, weights=np.where(row_is_spam, vals, 0.0), minlength=size) + alpha
    q = np.bincount(indices, weights=np.where(row_is_spam, 0.0, vals), minlength=size) + alpha
    r = np.log(p / p.sum()) - np.log(q / q.sum())
    r[np.bincount(indices, minlength=size) == 0] = 0.0
    return r


def nb_scale(r: np.ndarray, mix: float) -> np.ndarray:
    """Per-bucket feature scale ``(1 - mix) + mix * |r|``."""
    return (1.0 - mix) + mix * np.abs(r)


def _fit_once(csr, y, params: TrainParams, seed: int, ham_factor=None) -> np.ndarray:
    from ._features import sgd_train

    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    pos = max(1.0, float(y.sum()))
    # Factors of 1 (no ham_subset_weights) give exactly the plain class
    # balance: the ham count as the sum, and products by 1.0.
    f = np.ones(n) if ham_factor is None else np.asarray(ham_factor, dtype=np.float64)
    neg = max(1.0, float(f[y < 0.5].sum()))
    sw = np.where(y > 0.5, n / (2 * pos), f * params.ham_weight * n / (2 * neg))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(params.epochs)]).astype(np.int64)
    w = np.zeros((1 << params.nbits) + 1, dtype=np.float64)
    indptr, indices, data = csr
    sgd_train(indptr, indices, data, y, sw, order, w, params.lr, params.l2)
    return w


def _margins(csr, w):
    from ._features import margins_csr

    indptr, indices, data = csr
    return margins_csr(indptr, indices, data, w[:-1], float(w[-1]))


def stratified_folds(y, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every row: each class's rows in a random
    order from ``numpy.random.default_rng(seed)``, dealt round the folds."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        fold[idx] = rng.permutation(len(idx)) % k
    return fold


# The fits of one training run, for forked workers to read (inherited, not
# pickled: the CSR matrix is tens of megabytes).
_JOB = None


# Seed offset between cross-validation repetitions (TrainParams.cv_repeats).
_REPEAT_SEED = 7919


def _fit_task(task):
    """Out-of-fold margins of fold ``k`` of repetition ``r`` (``task`` is
    ``(r, k)``), or (``k == -1``) the fit on all rows."""
    r, k = task
    csr, y, params, seed, ham_factor, folds = _JOB
    if k < 0:
        return task, fit_logistic(csr, y, params, seed, ham_factor)
    fold = folds[r]
    train = np.flatnonzero(fold != k)
    test = np.flatnonzero(fold == k)
    w = fit_logistic(_rows(csr, train), y[train], params, seed + _REPEAT_SEED * r + 2 + k,
                     None if ham_factor is None else np.asarray(ham_factor)[train])
    return task, _margins(_rows(csr, test), w)


def pooled(oof, y):
    """``(margins, labels)`` of every repetition's out-of-fold margins
    (``oof``, one row per repetition, from :func:`_run_fits`), side by side:
    what the threshold and the calibration are set on."""
    oof = np.asarray(oof)
    return oof.ravel(), np.tile(np.asarray(y), oof.shape[0])


def _run_fits(csr, y, params: TrainParams, seed: int, ham_factor, final: bool, jobs=None):
    """Out-of-fold margins of ``params.cv_repeats`` k-fold splits (an array
    of one row per repetition; the first split is the one a single
    repetition uses) and, with ``final``, the weights fitted on every row.
    The fits are independent and seeded, so they run in ``jobs`` forked
    processes (default: the usable cores, at most one per fit) with the same
    result as one after another; in turn when the caller runs other
    threads."""
    global _JOB
    import multiprocessing
    import threading

    from .config import _positive_int, usable_cores

    y = np.asarray(y)
    repeats = _positive_int("cv_repeats", params.cv_repeats, "TrainParams")
    folds = [stratified_folds(y, params.folds, seed + _REPEAT_SEED * r + 1)
             for r in range(repeats)]
    tasks = ([(0, -1)] if final else []) + [
        (r, k) for r in range(repeats) for k in range(params.folds)]  # longest first
    jobs = usable_cores() if jobs is None else _positive_int("jobs", jobs, "argument")
    jobs = min(len(tasks), jobs)
    if jobs > 1 and ("fork" not in multiprocessing.get_all_start_methods()
                     or threading.active_count() > 1):
        # No fork, or other threads that a fork could catch holding a lock
        # (Python 3.12+ also warns then): the fits run in turn.
        jobs = 1
    _JOB = (csr, y, params, seed, ham_factor, folds)
    try:
        if jobs == 1:
            done = [_fit_task(k) for k in tasks]
        else:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                done = pool.map(_fit_task, tasks, chunksize=1)
    finally:
        _JOB = None
    oof = np.empty((repeats, len(y)), dtype=np.float64)
    w = None
    for (r, k), out in done:
        if k < 0:
            w = out
        else:
            oof[r, folds[r] == k] = out
    return oof, w


def cross_validate(csr, y, params: TrainParams, seed: int, ham_factor=None,
                   jobs=None) -> np.ndarray:
    """Out-of-fold margins of a stratified k-fold split (the folds fitted
    in ``jobs`` processes: see :func:`train_model`); the first of
    ``params.cv_repeats`` repetitions."""
    params = msgspec.structs.replace(params, cv_repeats=1)
    return _run_fits(csr, y, params, seed, ham_factor, final=False, jobs=jobs)[0][0]


def _platt(margins, y):
    """(a, b) minimising log loss of sigmoid(a*m + b), with Platt's target smoothing."""
    y = np.asarray(y, dtype=np.float64)
    margins = np.asarray(margins, dtype=np.float64)
    pos, neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (neg + 2))

    def loss(a, b):
        z = a * margins + b
        return float(np.sum(t * np.logaddexp(0.0, -z) + (1 - t) * np.logaddexp(0.0, z)))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(100):  # Newton's method on two parameters
        z = np.clip(a * margins + b, -50, 50)
        p = 1 / (1 + np.exp(-z))
        g = np.array([np.sum((p - t) * margins), np.sum(p - t)])
        s = p * (1 - p) + 1e-12
        h = np.array([[np.sum(s * margins * margins), np.sum(s * margins)],
                      [np.sum(s * margins), np.sum(s)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        # A full step unless it raises the loss (Newton can overshoot far
        # from the optimum, as on margins that rank ham above spam): then
        # halve it until it does not.
        for _halving in range(60):
            trial = loss(a - step[0], b - step[1])
            if trial <= current + 1e-12 * abs(current):
                break
            step = step / 2
        a, b, current = a - step[0], b - step[1], trial
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def _threshold_margin(margins, y, target_fpr):
    ham = np.sort(margins[np.asarray(y) < 0.5])[::-1]
    allowed = int(math.floor(target_fpr * len(ham)))
    # Just above the (allowed+1)-th highest ham margin.
    if len(ham) == 0:
        return 0.0
    edge = ham[min(allowed, len(ham) - 1)]
    return float(np.nextafter(edge, np.inf))


def _check_target_fpr(value) -> None:
    """ConfigError unless ``value`` is a fraction in [0, 1): the share of
    the training ham that cross-validation may call spam."""
    from .errors import ConfigError

    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0.0 <= value < 1.0):
        raise ConfigError(
            f"target_fpr must be a fraction of the ham, at least 0 and below 1 "
            f"(0.0013 is 0.13 %), got {value!r}")


def train_model(ham_paths, spam_paths, out_path, seed: int = 1, params: TrainParams | None = None,
                *, verbose: bool = False, jobs: int | None = None) -> dict:
    """Train a model on labelled mboxes and write it to ``out_path``.

    Parameters
    ----------
    ham_paths, spam_paths : list of paths
        mbox files (plain or .gz) of ham and of spam.
    out_path : path
        Where the model file is written.
    seed : int
        Seeds fold assignment and SGD order: same data and seed give a
        byte-identical file.
    params : TrainParams, optional
    jobs : int, optional
        Processes for the fits (the cross-validation folds and the final
        fit are independent): default the usable cores, at most
        ``params.folds + 1``; 1 fits them one after another.  The model
        file does not depend on it.

    Returns
    -------
    dict
        Summary: counts, cross-validated FPR/recall at the chosen threshold,
        timings, the file's sha256.
    """
    from ._features import FEATURE_VERSION
    from .model import FORMAT_VERSION, HEADER_ALLOW, ModelHeader, save_model

    from .config import _positive_int

    if jobs is not None:
        _positive_int("jobs", jobs, "argument")  # before any reading
    params = params or TrainParams()
    _check_target_fpr(params.target_fpr)
    t0 = time.perf_counter()
    # (mbox, position) of every message, ham then spam: the keys of the
    # corpus index files (ham_subset_weights).
    where = []

    def read(paths):
        out = []
        for p in paths:
            part = read_messages([p])
            out += part
            where.extend((p, i) for i in range(len(part)))
        return out

    ham = read(ham_paths)
    spam = read(spam_paths)
    if not ham or not spam:
        raise AtlasError("training needs at least one ham and one spam message")
    strip_filter_tags(ham)
    strip_filter_tags(spam)
    msgs = ham + spam
    y = np.concatenate([np.zeros(len(ham)), np.ones(len(spam))])
    t1 = time.perf_counter()
    csr = featurize(msgs, params.nbits, url_domains=params.url_domain_features)
    t2 = time.perf_counter()
    factor = (subset_ham_factors(where, params.ham_subset_weights)
              if params.ham_subset_weights else None)
    oof, w = _run_fits(csr, y, params, seed, factor, final=True, jobs=jobs)
    oof, y_oof = pooled(oof, y)
    a, b = _platt(oof, y_oof)
    if not a > 0:
        raise AtlasError(
            "training: cross-validation ranks the ham above the spam (calibration slope "
            f"{a:.3g}), so no threshold can separate them; train on more, and distinct, "
            "ham and spam messages")
    thr_margin = _threshold_margin(oof, y_oof, params.target_fpr)
    threshold = 1 / (1 + math.exp(-min(max(a * thr_margin + b, -50.0), 50.0)))
    t3 = time.perf_counter()
    cv_pred = oof >= thr_margin
    header = ModelHeader(
        format_version=FORMAT_VERSION,
        feature_version=FEATURE_VERSION,
        nbits=params.nbits,
        nnz=0,
        bias=float(np.float32(w[-1])),
        calib_a=a,
        calib_b=b,
        threshold=threshold,
        header_allow=sorted(HEADER_ALLOW),
        weights_sha256="",
        url_domain_features=params.url_domain_features,
        training={
            "seed": seed,
            "ham": len(ham),
            "spam": len(spam),
            "params": msgspec.structs.asdict(params),
            # Ham messages ham_subset_weights reweighted (0 without index files).
            "ham_subset_weighted": 0 if factor is None else int(np.count_nonzero(factor != 1.0)),
            "sources": sorted(os.path.basename(os.fspath(p)) for p in (*ham_paths, *spam_paths)),
        },
    )
    digest = save_model(out_path, header, w[:-1].astype(np.float32))
    summary = {
        "model": os.fspath(out_path),
        "sha256": digest,
        "ham": len(ham),
        "spam": len(spam),
        "cv_ham_fpr": float(cv_pred[y_oof < 0.5].mean()),
        "cv_spam_recall": float(cv_pred[y_oof > 0.5].mean()),
        "cv_auc": roc_auc(oof, y_oof),
        "threshold": threshold,
        "parse_s": round(t1 - t0, 3),
        "features_s": round(t2 - t1, 3),
        "fit_s": round(t3 - t2, 3),
    }
    if verbose:
        print(json.dumps(summary, indent=2))
    return summary


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def roc_auc(scores, y) -> float:
    """Area under the ROC curve (ties count half)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    pos = int((y > 0.5).sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y > 0.5].sum() - pos * (pos + 1) / 2) / (pos * neg))


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple:
    """Wilson score interval of a proportion ``k / n`` (95 % for the
    default ``z``): the ``p`` with ``(k/n - p)**2 == z**2 * p * (1 - p) / n``.
    Unlike the normal approximation it stays inside [0, 1] and is sound for
    counts near 0 or ``n``, such as a handful of false positives.  ``n == 0``
    gives (0.0, 1.0)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, center - half) if k > 0 else 0.0,
            min(1.0, center + half) if k < n else 1.0)


class EvalReport(msgspec.Struct):
    """Result of :func:`evaluate`."""

    ham: int
    spam: int
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    accuracy: float
    spam_recall: float
    ham_fpr: float
    precision: float
    f1: float
    roc_auc: float
    decided_by: dict
    categories: dict
    rule_hits: dict  # rule id -> {"ham": n, "spam": n}
    us_per_message: float  # classification only (rules + features + model), cache off
    parse_us_per_message: float
    model: str
    false_positive_subjects: list = []
    # 95 % Wilson intervals (lower, upper) of spam_recall and ham_fpr: with
    # a few hundred messages one message moves recall by a quarter point.
    spam_recall_ci: tuple = ()
    ham_fpr_ci: tuple = ()

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    def format_table(self) -> str:
        lines = [
            f"model: {self.model}",
            f"messages: {self.ham + self.spam} ({self.ham} ham, {self.spam} spam)",
            "",
            "                 predicted ham   predicted spam",
            f"  actual ham     {self.true_negatives:>13}   {self.false_positives:>14}",
            f"  actual spam    {self.false_negatives:>13}   {self.true_positives:>14}",
            "",
            f"  accuracy        {100 * self.accuracy:8.2f} %",
            f"  spam recall     {100 * self.spam_recall:8.2f} %" + _ci(self.spam_recall_ci),
            f"  ham FPR         {100 * self.ham_fpr:8.2f} %   ({self.false_positives} of {self.ham})"
            + _ci(self.ham_fpr_ci),
            f"  precision       {100 * self.precision:8.2f} %",
            f"  F1              {self.f1:8.4f}",
            f"  ROC AUC         {self.roc_auc:8.4f}",
            f"  classify        {self.us_per_message:8.1f} us/message (rules+features+model)",
            f"  parse           {self.parse_us_per_message:8.1f} us/message",
            "",
            "  decided by: " + ", ".join(f"{k} {v}" for k, v in sorted(self.decided_by.items())),
            "  spam categories: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.categories.items(), key=lambda kv: -kv[1])),
        ]
        if self.rule_hits:
            lines += ["", f"  {'rule':<28} {'ham':>5} {'spam':>5}"]
            for rid, c in sorted(self.rule_hits.items()):
                lines.append(f"  {rid:<28} {c['ham']:>5} {c['spam']:>5}")
        return "\n".join(lines)


def _ci(interval) -> str:
    return f"   (95 % CI {100 * interval[0]:.2f}-{100 * interval[1]:.2f} %)" if interval else ""


def evaluate(ham_paths, spam_paths, model=None, rules=(), *, engine: str = "auto",
             chunk_size: int = 500) -> EvalReport:
    """Classify labelled mboxes and measure the result.

    The cache is off, so every message goes through rules, features and
    model; ``us_per_message`` times exactly that (median of three passes).

    Returns
    -------
    EvalReport
    """
    from .classify import Classifier

    t0 = time.perf_counter()
    ham = read_messages(ham_paths)
    spam = read_messages(spam_paths)
    parse_us = (time.perf_counter() - t0) / max(1, len(ham) + len(spam)) * 1e6
    msgs = ham + spam
    y = np.concatenate([np.zeros(len(ham)), np.ones(len(spam))])
    clf = Classifier(model=model, rules=rules, cache=False, engine=engine)
    times = []
    verdicts = []
    for _ in range(3):
        verdicts = []
        t = time.perf_counter()
        for i in range(0, len(msgs), chunk_size):
            verdicts.extend(clf.classify_chunk(msgs[i : i + chunk_size]))
        times.append(time.perf_counter() - t)
    pred = np.array([v.label == "spam" for v in verdicts])
    scores = np.array([v.score for v in verdicts])
    tp = int((pred & (y > 0.5)).sum())
    fp = int((pred & (y < 0.5)).sum())
    tn = int((~pred & (y < 0.5)).sum())
    fn = int((~pred & (y > 0.5)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    decided, cats, rule_hits = {}, {}, {}
    for v, label in zip(verdicts, y):
        decided[v.decided_by] = decided.get(v.decided_by, 0) + 1
        if v.category:
            cats[v.category] = cats.get(v.category, 0) + 1
    rs = clf.ruleset
    for rule in rs.rules:
        rule_hits[rule.id] = {"ham": 0, "spam": 0}
    for hits, label in zip(rs.scan_chunk(msgs), y):
        for j in hits:
            rule_hits[rs.rules[j].id]["spam" if label > 0.5 else "ham"] += 1
    return EvalReport(
        ham=len(ham),
        spam=len(spam),
        true_positives=tp,
        false_positives=fp,
        true_negatives=tn,
        false_negatives=fn,
        accuracy=(tp + tn) / max(1, len(y)),
        spam_recall=recall,
        ham_fpr=fp / max(1, tn + fp),
        precision=precision,
        f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        roc_auc=roc_auc(scores, y),
        decided_by=decided,
        categories=cats,
        rule_hits=rule_hits,
        us_per_message=sorted(times)[1] / max(1, len(msgs)) * 1e6,
        parse_us_per_message=parse_us,
        model=clf.model.path or "",
        spam_recall_ci=wilson_interval(tp, tp + fn),
        ham_fpr_ci=wilson_interval(fp, tn + fp),
        false_positive_subjects=[
            (msgs[i].subject or "")[:80] for i in np.flatnonzero(pred & (y < 0.5))
        ],
    )
