"""classify_chunk cost per message over pre-parsed chunks.

    pytest benchmarks/test_bench_classify.py --benchmark-only

Parsing is done once, outside the timed region; each round classifies every
chunk (~700 messages, as a pipeline worker does) with the cache off, with a
cold cache (a new directory each round, every lookup a miss; the new entries
are collected for the writer as in a pipeline worker, whose disk writes the
end-to-end benchmark counts), or with a warm cache (every verdict already
stored; the in-process LRU keeps 2,000 verdicts, so with the 6,469 train
messages they come from the disk level).  Two inputs: the
train files (real mail, each message once) and the whole 50,000-message
benchmark mbox (issue 3's figure: rules + features + model, cache off).
"""
from __future__ import annotations

import pytest

from conftest import CORPUS, TRAIN_FILES as TRAIN

CHUNK = 700


@pytest.fixture(scope="module")
def chunks():
    from atlas_fast.evaluate import read_messages

    paths = [CORPUS / n for n in TRAIN if (CORPUS / n).exists()]
    if not paths:
        pytest.skip(f"no train files in {CORPUS}")
    msgs = read_messages(paths)
    return [msgs[i : i + CHUNK] for i in range(0, len(msgs), CHUNK)]


@pytest.fixture(scope="module")
def bench_chunks(mbox_50k):
    from atlas_fast.evaluate import read_messages

    msgs = read_messages([mbox_50k])
    return [msgs[i : i + CHUNK] for i in range(0, len(msgs), CHUNK)]


def _run(benchmark, clf, chunks, rounds=5):
    n = sum(map(len, chunks))

    def classify_all():
        for c in chunks:
            clf.classify_chunk(c)

    benchmark.pedantic(classify_all, rounds=rounds, iterations=1, warmup_rounds=1)
    _note(benchmark, n)


def _note(benchmark, n):
    benchmark.extra_info["messages"] = n
    benchmark.extra_info["us_per_msg"] = round(benchmark.stats.stats.median / n * 1e6, 2)


@pytest.mark.benchmark(group="classify")
def test_classify_cache_off(benchmark, chunks):
    from atlas_fast.classify import Classifier

    _run(benchmark, Classifier(cache=False), chunks)


@pytest.mark.benchmark(group="classify")
def test_classify_cache_cold(benchmark, chunks, tmp_path):
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.classify import Classifier

    n = sum(map(len, chunks))
    rounds = iter(range(1000))

    def fresh():
        cache = ClassifierCache(tmp_path / f"cold-{next(rounds)}")
        cache.defer_disk_writes()  # as a pipeline worker: the writer writes
        cache.get_many("classification", ["open"])  # the database exists: not timed
        return (Classifier(cache=cache),), {}

    def classify_all(clf):
        for c in chunks:
            clf.classify_chunk(c)
            clf.cache.take_deferred()
        clf.close()

    benchmark.pedantic(classify_all, setup=fresh, rounds=5, iterations=1, warmup_rounds=1)
    _note(benchmark, n)


@pytest.mark.benchmark(group="classify")
def test_classify_cache_warm(benchmark, chunks, tmp_path):
    from atlas_fast.classify import Classifier

    clf = Classifier(cache=tmp_path)
    for c in chunks:  # fill: the warm-up round and every timed round hit the LRU
        clf.classify_chunk(c)
    _run(benchmark, clf, chunks)
    clf.close()


@pytest.mark.benchmark(group="classify")
def test_classify_50k_cache_off(benchmark, bench_chunks):
    from atlas_fast.classify import Classifier

    _run(benchmark, Classifier(cache=False), bench_chunks, rounds=3)
