"""Training cost: the AdaGrad fit behind ``atlas-fast train``.

    pytest benchmarks/test_bench_train.py --benchmark-only

The train files (6,469 messages) are parsed and featurized once, outside the
timed region.  ``test_train_fit`` times one ``fit_logistic`` with the
shipped parameters (3 averaged SGD runs of 20 epochs over 2**22 buckets), a
sixteenth of ``train_model`` (15 cross-validation fits: 3 repetitions of 5
folds, ``TrainParams.cv_repeats``; and the final one); the
plain-Python way is the same algorithm written in Python
(``tests/test_evaluate.py``'s reference), timed on 300 messages for one
epoch.  Both report nanoseconds per feature update, the unit that compares.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import CORPUS, REPO, TRAIN_FILES as TRAIN



@pytest.fixture(scope="module")
def train_csr():
    from atlas_fast.evaluate import TrainParams, featurize, read_messages

    paths = [CORPUS / n for n in TRAIN if (CORPUS / n).exists()]
    if len(paths) < len(TRAIN):
        pytest.skip(f"no train files in {CORPUS}")
    ham = read_messages(paths[0:1] + paths[2:3])
    spam = read_messages(paths[1:2] + paths[3:4])
    y = np.concatenate([np.zeros(len(ham)), np.ones(len(spam))])
    return featurize(ham + spam, TrainParams().nbits), y


@pytest.mark.benchmark(group="train")
def test_train_fit(benchmark, train_csr):
    from atlas_fast.evaluate import TrainParams, fit_logistic

    csr, y = train_csr
    params = TrainParams()
    benchmark.pedantic(fit_logistic, args=(csr, y, params, 1), rounds=3, iterations=1)
    updates = params.averaged_runs * params.epochs * len(csr[1])
    benchmark.extra_info["messages"] = len(y)
    benchmark.extra_info["ns_per_update"] = round(benchmark.stats.stats.median / updates * 1e9, 2)


@pytest.mark.benchmark(group="train")
def test_train_sgd_plain_python(benchmark, train_csr):
    sys.path.insert(0, str(REPO / "tests"))
    from test_evaluate import _sgd_reference

    (indptr, indices, data), y = train_csr
    rows = np.random.default_rng(1).permutation(len(y))[:300]
    w0 = [0.0] * ((1 << 22) + 1)
    sw = np.ones(len(y))
    benchmark.pedantic(_sgd_reference, args=(indptr, indices, data, y, sw, rows, w0, 0.2, 1e-5),
                       rounds=1, iterations=1)
    updates = int(sum(indptr[i + 1] - indptr[i] for i in rows))
    benchmark.extra_info["ns_per_update"] = round(benchmark.stats.stats.median / updates * 1e9, 2)
