"""tools/fuzz.py: a fixed-seed run of the mutation fuzzer finds nothing,
and its checks catch what they are there to catch."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import CORPUS, REPO, load_tool


def _fuzz():
    return load_tool("fuzz")


@pytest.mark.parametrize("seed", [1, 2])
def test_fixed_seed_fuzz_run_is_clean(tmp_path, seed):
    # About 3,000 mutated messages each (corpus messages when the corpus is
    # there, else the sample and the edge cases) through split_mbox,
    # parse_chunk, parse_message, the classifier and chunk_records; four
    # whole process_mbox runs.  In a process of its own: the junk header
    # names would fill this process's parser name table.
    crashes = tmp_path / "crashes"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "fuzz.py"), "--rounds", "1000", "--seed", str(seed),
         "--corpus", str(CORPUS), "--crash-dir", str(crashes), "--max-seeds", "400",
         "--pipeline-every", "250"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert out["failures"] == 0 and out["rounds"] == 1000 and out["messages"] >= 1000
    assert list(crashes.iterdir()) == []  # current.mbox and the database removed at the end


def test_mutations_are_reproducible():
    import random

    fuzz = _fuzz()
    seeds = list(fuzz.EDGE_CASES) + [b"Subject: hi\n\nhello world\n"]
    a = [fuzz.make_batch(random.Random(5), seeds) for _ in range(3)]
    b = [fuzz.make_batch(random.Random(5), seeds) for _ in range(3)]
    assert a == b


def test_mbox_of_frames_every_message():
    from atlas_fast._parser import parse_chunk

    fuzz = _fuzz()
    msgs = [b"Subject: one\n\nbody\n", b"", b"From a@b Thu Jan  1 00:00:00 1970\nSubject: two\n\nx",
            b"Subject: three\n\n\n"]
    buf, starts, ends = fuzz.mbox_of(msgs)
    assert starts[0] == 0 and ends[-1] == len(buf) and list(starts[1:]) == list(ends[:-1])
    parsed = parse_chunk(buf, starts, ends)
    assert [p.subject for p in parsed] == ["one", None, "two", "three"]


class _BadClassifier:
    """Gives every message the verdict the test sets."""

    def __init__(self, verdict):
        self.verdict = verdict

    def classify_chunk(self, parsed):
        return [self.verdict] * len(parsed)


@pytest.mark.parametrize("field, value", [("label", "maybe"), ("score", float("nan")),
                                          ("score", 1.5)])
def test_broken_verdicts_are_failures(field, value):
    import msgspec

    from atlas_fast._parser import parse_message
    from atlas_fast.classify import Classifier

    fuzz = _fuzz()
    good = Classifier(cache=False).classify_chunk([parse_message(b"Subject: x\n\ny\n")])[0]
    bad = msgspec.structs.replace(good, **{field: value})
    with pytest.raises(fuzz.Failure, match=field):
        fuzz.check_batch([b"Subject: x\n\ny\n"], _BadClassifier(bad))


def test_the_edge_cases_pass_every_check(tmp_path):
    from atlas_fast.classify import Classifier

    fuzz = _fuzz()
    batch = list(fuzz.EDGE_CASES)
    data, _starts, _ends = fuzz.mbox_of(batch)
    (tmp_path / "edge.mbox").write_bytes(data)
    fuzz.check_split(str(tmp_path / "edge.mbox"), data)
    fuzz.check_batch(batch, Classifier(cache=False))
