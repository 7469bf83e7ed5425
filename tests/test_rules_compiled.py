"""Compiled Hyperscan databases persist on disk and are reused."""
import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import hyperscan, time
calls = []
orig = hyperscan.Database.compile
class Counting(hyperscan.Database):
    def compile(self, *a, **k):
        calls.append(1)
        return super().compile(*a, **k)
hyperscan.Database = Counting
from atlas_fast.rules import load_rules, RuleSet
from atlas_fast.classify import Classifier
c = Classifier(cache=False, engine="hyperscan")
from atlas_fast._parser import parse_message
v = c.classify_chunk([parse_message(b"From: a@b.c\\nSubject: extended auto warranty final notice\\n\\nyour vehicle warranty is about to expire, call now to activate extended auto warranty coverage\\n")])[0]
print(len(calls), v.label, v.rule_id)
"""


def _run(tmp_path):
    env = dict(os.environ, ATLAS_RULES_CACHE_DIR=str(tmp_path / "compiled"))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1:]


def test_second_process_loads_instead_of_compiling(tmp_path):
    first, verdict1 = _run(tmp_path)
    assert first > 0
    files = list((tmp_path / "compiled").glob("*.hsdb"))
    assert files
    second, verdict2 = _run(tmp_path)
    assert second == 0
    assert verdict1 == verdict2


def test_corrupt_compiled_file_is_recompiled(tmp_path):
    _run(tmp_path)
    for f in (tmp_path / "compiled").iterdir():
        f.write_bytes(b"garbage")
    again, _ = _run(tmp_path)
    assert again > 0
