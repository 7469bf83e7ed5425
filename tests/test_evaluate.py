import json

import numpy as np
import pytest

from atlas_fast.evaluate import roc_auc
from atlas_fast.splitter import split_mbox


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


@pytest.mark.parametrize("k, n", [(0, 774), (1, 774), (2, 774), (371, 385), (385, 385), (7, 10)])
def test_wilson_interval_solves_its_defining_equation(k, n):
    from atlas_fast.evaluate import wilson_interval

    z = 1.959963984540054
    lo, hi = wilson_interval(k, n)
    p = k / n
    assert 0.0 <= lo <= p <= hi <= 1.0 and lo < hi
    # Each end inside (0, 1) is a root of (p - x)^2 = z^2 x (1 - x) / n;
    # at k = 0 (k = n) the lower (upper) end is 0 (1) itself.
    for x in (lo, hi):
        if 0.0 < x < 1.0:
            assert (p - x) ** 2 == pytest.approx(z * z * x * (1 - x) / n, rel=1e-9)
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)


def test_wilson_interval_reference_values():
    from atlas_fast.evaluate import wilson_interval

    # Published 95 % Wilson intervals (Newcombe 1998, table I): 81/263 ->
    # 0.2553-0.3662, 15/148 -> 0.0624-0.1605, 0/20 -> 0-0.1611.
    for (k, n), (lo, hi) in (((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)),
                             ((0, 20), (0.0, 0.1611))):
        got = wilson_interval(k, n)
        assert got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.slow
def test_training_is_reproducible(tmp_path):
    from atlas_fast.evaluate import TrainParams, train_model

    from conftest import corpus_file

    # Train files only, as for the shipped model: the test split is for measuring.
    ham = [corpus_file("csdmc2010-train-ham.mbox.gz")]
    spam = [corpus_file("csdmc2010-train-spam.mbox.gz")]
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
    assert "spam recall" in r.format_table() and "95 % CI" in r.format_table()
    lo, hi = doc["spam_recall_ci"]
    assert lo <= doc["spam_recall"] <= hi
    lo, hi = doc["ham_fpr_ci"]
    assert lo <= doc["ham_fpr"] <= hi


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 3 bar not reached yet: shipped model gives 2 FP / 96.36 % recall "
                          "(371 of 385; at most 1 FP and 374 needed) on the SpamAssassin test split", strict=True)
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


# ---------------------------------------------------------------------------
# NB-weighted logistic regression
# ---------------------------------------------------------------------------


def _csr(rows):
    """CSR triple of a list of {bucket: value} rows."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([j for r in rows for j in r], dtype=np.int32)
    data = np.array([v for r in rows for v in r.values()], dtype=np.float32)
    return indptr, indices, data


def _random_csr(seed, n=60, nbits=6):
    print("seed", seed)
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(np.float64)
    rows = []
    for label in y:
        # Buckets 0-9 lean spam, 10-19 lean ham, the rest are noise.
        pool = np.r_[0:10] if label else np.r_[10:20]
        cols = set(rng.choice(pool, 3, replace=False)) | set(rng.integers(20, 1 << nbits, 4))
        rows.append({int(j): float(rng.choice([0.5, 1.0, 1.5])) for j in sorted(cols)})
    return _csr(rows), y


def test_nb_log_ratios_by_hand():
    from atlas_fast.evaluate import nb_log_ratios

    # nbits 2: buckets 0..3; bucket 3 is in no row.
    csr = _csr([{0: 1.0, 1: 0.5}, {0: 2.0}, {1: 1.0, 2: 0.5}])
    y = np.array([1, 1, 0])
    r = nb_log_ratios(csr, y, nbits=2, alpha=1.0)
    p = np.array([3.0, 0.5, 0.0, 0.0]) + 1  # spam sums + alpha
    q = np.array([0.0, 1.0, 0.5, 0.0]) + 1  # ham sums + alpha
    want = np.log(p / p.sum()) - np.log(q / q.sum())
    want[3] = 0.0
    np.testing.assert_allclose(r, want)
    assert r[0] > 0 > r[2] and r[3] == 0.0


def test_nb_scale_folded_into_weights_gives_the_scaled_margins():
    from atlas_fast.evaluate import (
        TrainParams, _fit_once, _margins, fit_logistic, nb_log_ratios, nb_scale, round_bf16,
    )

    (indptr, indices, data), y = _random_csr(3)
    p = TrainParams(nbits=6, epochs=5, averaged_runs=2, nb_mix=0.7, nb_alpha=0.5)
    w = fit_logistic((indptr, indices, data), y, p, seed=5)
    scale = nb_scale(nb_log_ratios((indptr, indices, data), y, 6, 0.5), 0.7)
    scaled = (indptr, indices, (data * scale[indices]).astype(np.float32))
    w_scaled = np.mean([_fit_once(scaled, y, p, 5), _fit_once(scaled, y, p, 1005)], axis=0)
    folded = np.append(w_scaled[:-1] * scale, w_scaled[-1])
    # fit_logistic returns the folded weights rounded to bfloat16, the bias as is.
    np.testing.assert_array_equal(w[:-1], round_bf16(folded[:-1]))
    assert w[-1] == w_scaled[-1]
    np.testing.assert_allclose(_margins((indptr, indices, data), folded),
                               _margins(scaled, w_scaled), rtol=1e-6, atol=1e-9)
    # The scale moves the weights towards the buckets that tell the classes apart.
    assert w[:10].sum() > 0 > w[10:20].sum()


def test_nb_training_is_deterministic_and_off_by_default():
    from atlas_fast.evaluate import TrainParams, _fit_once, fit_logistic, round_bf16

    csr, y = _random_csr(11)
    p = TrainParams(nbits=6, epochs=3, averaged_runs=1)
    assert p.nb_mix == 0.0
    once = _fit_once(csr, y, p, 2)
    once[:-1] = round_bf16(once[:-1])
    np.testing.assert_array_equal(fit_logistic(csr, y, p, seed=2), once)
    q = TrainParams(nbits=6, epochs=3, nb_mix=0.5)
    a, b = fit_logistic(csr, y, q, seed=2), fit_logistic(csr, y, q, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fit_logistic(csr, y, q, seed=3))


def test_subset_ham_factors_from_index_files(tmp_path):
    from atlas_fast.evaluate import subset_ham_factors

    (tmp_path / "c-index.tsv").write_text(
        "mbox_file\tposition\tlabel\tsubset\n"
        "a.mbox\t0\tham\teasy_ham\na.mbox\t1\tham\thard_ham\nb.mbox\t0\tham\thard_ham\n")
    (tmp_path / "notes-index.tsv").write_text("word\tcount\nhard_ham\t3\n")  # not an index
    (tmp_path / "bad-index.tsv").write_bytes(b"mbox_file\tposition\tsubset\n\xff\xfe\x00\n")
    a = tmp_path / "a.mbox"
    where = [(a, 0), (a, 1), (a, 2), (tmp_path / "other.mbox", 0)]
    np.testing.assert_array_equal(subset_ham_factors(where, "hard_ham=6"), [1, 6, 1, 1])
    np.testing.assert_array_equal(subset_ham_factors(where, "easy_ham=0.5, hard_ham=2"),
                                  [0.5, 2, 1, 1])
    # b.mbox's rows count only when b.mbox is trained on.
    assert subset_ham_factors([(tmp_path / "b.mbox", 0)], "hard_ham=3").tolist() == [3.0]
    for bad in ("hard_ham", "hard_ham=x", "=2", "hard_ham=0"):
        with pytest.raises(ValueError, match="ham_subset_weights"):
            subset_ham_factors(where, bad)


def test_ham_factor_of_ones_is_the_plain_fit():
    # Mail without corpus index files (a user's own) trains exactly as before.
    from atlas_fast.evaluate import TrainParams, fit_logistic

    csr, y = _random_csr(5)
    p = TrainParams(nbits=6, epochs=3)
    plain = fit_logistic(csr, y, p, seed=4)
    np.testing.assert_array_equal(fit_logistic(csr, y, p, seed=4, ham_factor=np.ones(len(y))),
                                  plain)
    heavy = np.where(np.arange(len(y)) % 3 == 1, 6.0, 1.0)  # some ham (spam: % 3 == 0)
    assert not np.array_equal(fit_logistic(csr, y, p, seed=4, ham_factor=heavy), plain)


def _sgd_reference(indptr, indices, data, y, sw, order, w, lr, l2):
    """AdaGrad SGD of sgd_train spelt out in Python: separate weight and
    AdaGrad arrays, the same operations in the same order."""
    import math

    dim = len(w) - 1
    G = [1e-6] * (dim + 1)
    w = [float(v) for v in w]
    loss = 0.0
    for i in order:
        z = w[dim]
        for p in range(indptr[i], indptr[i + 1]):
            z += w[indices[p]] * float(data[p])
        pr = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        if y[i] > 0.5:
            loss += -math.log(pr if pr > 1e-15 else 1e-15) * sw[i]
        else:
            loss += -math.log(1.0 - pr if 1.0 - pr > 1e-15 else 1e-15) * sw[i]
        g = (pr - y[i]) * sw[i]
        for p in range(indptr[i], indptr[i + 1]):
            j = int(indices[p])
            gj = g * float(data[p]) + l2 * w[j]
            G[j] += gj * gj
            w[j] -= lr * gj / math.sqrt(G[j])
        G[dim] += g * g
        w[dim] -= lr * g / math.sqrt(G[dim])
    return w, loss / len(order)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_train_matches_the_reference_bit_for_bit(seed):
    """The compiled trainer (weight and AdaGrad sum interleaved, next row
    prefetched) gives exactly the weights of the plain algorithm, repeated
    buckets in a row and empty rows included."""
    from atlas_fast._features import sgd_train

    rng = np.random.default_rng(seed)
    rows, dim = 60, 257
    lengths = rng.integers(0, 40, size=rows)
    lengths[3] = 0  # an empty row: only the bias moves
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = rng.integers(0, 24, size=int(indptr[-1])).astype(np.int32)  # many repeats
    indices[::5] = rng.integers(0, dim, size=len(indices[::5]))
    data = rng.uniform(0.05, 1.5, size=len(indices)).astype(np.float32)
    y = (rng.random(rows) < 0.4).astype(np.float64)
    sw = rng.uniform(0.5, 3.0, size=rows)
    order = np.concatenate([rng.permutation(rows) for _ in range(4)]).astype(np.int64)
    w0 = rng.normal(0.0, 0.1, size=dim + 1)
    w = w0.copy()
    loss = sgd_train(indptr, indices, data, y, sw, order, w, 0.3, 1e-3)
    ref_w, ref_loss = _sgd_reference(indptr, indices, data, y, sw, order, w0, 0.3, 1e-3)
    assert w.tolist() == ref_w
    assert loss == ref_loss
    assert not np.array_equal(w, w0)


def test_fits_in_parallel_give_the_sequential_result(tmp_path):
    """The cross-validation folds and the final fit run in forked processes
    (jobs); the margins, weights and model bytes do not depend on how many."""
    import msgspec

    from atlas_fast.evaluate import TrainParams, _run_fits, cross_validate, train_model

    from conftest import corpus_file

    rng = np.random.default_rng(5)
    rows, nbits = 300, 12
    lengths = rng.integers(1, 30, size=rows)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    y = (rng.random(rows) < 0.4).astype(np.float64)
    # Spam rows lean on the low buckets, so the fits learn something.
    indices = np.concatenate([
        rng.integers(0, 2000 if y[i] else 4096, size=int(n)) for i, n in enumerate(lengths)
    ]).astype(np.int32)
    data = np.ones(len(indices), dtype=np.float32)
    csr = (indptr, indices, data)
    p = TrainParams(nbits=nbits, epochs=3, folds=3, averaged_runs=2)
    one = _run_fits(csr, y, p, 9, None, final=True, jobs=1)
    two = _run_fits(csr, y, p, 9, None, final=True, jobs=2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    # cv_repeats=3 (the default): three rows of out-of-fold margins, each
    # repetition's own fold split; the first is cross_validate's one split.
    assert one[0].shape == (3, rows)
    assert np.array_equal(cross_validate(csr, y, p, 9, jobs=3), one[0][0])
    assert not np.array_equal(one[0][0], one[0][1])
    single = _run_fits(csr, y, msgspec.structs.replace(p, cv_repeats=1), 9, None, final=True,
                       jobs=2)
    assert np.array_equal(single[0], one[0][:1]) and np.array_equal(single[1], one[1])
    # With another thread alive the fits run in turn (no fork), same result.
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        busy = _run_fits(csr, y, p, 9, None, final=True, jobs=2)
    finally:
        stop.set()
        other.join()
    assert np.array_equal(busy[0], one[0]) and np.array_equal(busy[1], one[1])
    ham = [corpus_file("csdmc2010-train-ham.mbox.gz")]
    spam = [corpus_file("csdmc2010-train-spam.mbox.gz")]
    p = TrainParams(nbits=16, epochs=2, folds=2)
    a = train_model(ham, spam, tmp_path / "a.bin", seed=3, params=p, jobs=1)
    b = train_model(ham, spam, tmp_path / "b.bin", seed=3, params=p, jobs=3)
    assert a["sha256"] == b["sha256"]


def test_train_model_rejects_a_bad_jobs_count_before_reading(tmp_path):
    from atlas_fast.errors import ConfigError
    from atlas_fast.evaluate import train_model

    with pytest.raises(ConfigError, match="jobs must be a positive integer"):
        train_model([tmp_path / "missing.mbox"], [tmp_path / "missing.mbox"],
                    tmp_path / "m.bin", jobs=0)


def test_target_fpr_sets_the_operating_point(tmp_path):
    # A stricter target puts the threshold above more of the ham's
    # cross-validated margins: no more ham called spam, no more spam caught.
    import msgspec

    import atlas_fast
    from atlas_fast.evaluate import TrainParams, train_model
    from atlas_fast.model import load_model

    from conftest import corpus_file

    ham = [corpus_file("csdmc2010-train-ham.mbox.gz")]
    spam = [corpus_file("csdmc2010-train-spam.mbox.gz")]
    p = TrainParams(nbits=16, epochs=2, folds=2)
    got = {}
    for target in (0.0, 0.05):
        got[target] = train_model(ham, spam, tmp_path / f"{target}.bin", seed=3, jobs=1,
                                  params=msgspec.structs.replace(p, target_fpr=target))
    strict, loose = got[0.0], got[0.05]
    assert strict["cv_ham_fpr"] == 0.0 and 0.0 < loose["cv_ham_fpr"] <= 0.05
    assert strict["threshold"] > loose["threshold"]
    assert strict["cv_spam_recall"] <= loose["cv_spam_recall"]
    # The public API passes it through, and the model file records it.
    atlas_fast.train(ham, spam, tmp_path / "api.bin", jobs=1, target_fpr=0.01)
    assert load_model(tmp_path / "api.bin").header.training["params"]["target_fpr"] == 0.01


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.01"])
def test_a_bad_target_fpr_is_a_clear_error_before_reading(tmp_path, bad):
    import atlas_fast
    from atlas_fast.errors import ConfigError

    missing = [tmp_path / "missing.mbox"]
    with pytest.raises(ConfigError, match=r"target_fpr must be a fraction of the ham"):
        atlas_fast.train(missing, missing, tmp_path / "m.bin", target_fpr=bad)
    assert not (tmp_path / "m.bin").exists()


def test_public_train_records_url_domains(tmp_path):
    # atlas_fast.train: URL domains off by default, as in the shipped model;
    # on when asked, and the model file says which.
    import atlas_fast
    from atlas_fast.model import load_model

    from conftest import corpus_file

    paths = {}
    for kind in ("ham", "spam"):
        raws = [raw for _, (_off, raw) in zip(range(40), split_mbox(
            corpus_file(f"csdmc2010-train-{kind}.mbox.gz")))]
        paths[kind] = tmp_path / f"{kind}.mbox"
        paths[kind].write_bytes(b"".join(r if r.endswith(b"\n\n") else r + b"\n" for r in raws))
    atlas_fast.train([paths["ham"]], [paths["spam"]], tmp_path / "off.bin", jobs=1)
    atlas_fast.train([paths["ham"]], [paths["spam"]], tmp_path / "on.bin", jobs=1,
                     url_domains=True)
    assert load_model(tmp_path / "off.bin").header.url_domain_features is False
    on = load_model(tmp_path / "on.bin")
    assert on.header.url_domain_features is True and on.featurizer().url_domains is True


def test_training_on_mail_it_cannot_tell_apart_is_a_clear_error(tmp_path):
    # The same six messages as ham and as spam: each held-out copy is scored
    # as its twin's class, so cross-validation ranks ham above spam.  Platt
    # scaling once diverged there and training died of an OverflowError.
    import atlas_fast
    from atlas_fast.errors import AtlasError
    from atlas_fast.evaluate import _platt

    from conftest import SAMPLE

    with pytest.raises(AtlasError, match="ranks the ham above the spam"):
        atlas_fast.train([SAMPLE], [SAMPLE], tmp_path / "m.bin", jobs=1)
    assert not (tmp_path / "m.bin").exists()
    a, b = _platt(np.array([5.0, 6.0, 7.0, -5.0, -6.0, -7.0]), np.array([0, 0, 0, 1, 1, 1]))
    assert np.isfinite(a) and np.isfinite(b) and a < 0
    # Ordinary margins: a positive slope, 0.5 where the classes meet.
    a, b = _platt(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), np.array([0, 0, 0, 1, 1, 1]))
    assert a > 0 and abs(b) < 1e-9


def test_replace_params_reads_each_field_as_its_type():
    from atlas_fast.evaluate import TrainParams, replace_params

    base = TrainParams()
    got = replace_params(base, ["nbits=16", "l2=3e-5", "url_domain_features=1",
                                "ham_subset_weights=hard_ham=3"])
    assert (got.nbits, got.l2, got.url_domain_features) == (16, 3e-5, True)
    assert got.ham_subset_weights == "hard_ham=3"  # split at the first '=' only
    for word, want in (("0", False), ("false", False), ("No", False), ("off", False),
                       ("yes", True), ("TRUE", True), ("on", True)):
        assert replace_params(base, [f"url_domain_features={word}"]).url_domain_features is want
    for bad, match in (("nbits", "NAME=VALUE"), ("nope=1", "NAME=VALUE"),
                       ("nbits=x", "nbits must be of type int"), ("url_domain_features=2", "true or false")):
        with pytest.raises(ValueError, match=match):
            replace_params(base, [bad])
    assert replace_params(base, []) == base
