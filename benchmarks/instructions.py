"""Instructions per message of classification or parsing, under callgrind.

    python benchmarks/instructions.py [--stage classify|parse] [-n 2100]
                                      [--every K] [--functions 15]

This host's wall-clock speed drifts by ±30 % from one process to the next,
which hides changes of a few per cent; an instruction count does not drift.
The stage runs over the first ``n`` messages of the 50,000-message
benchmark mbox, in chunks of 700 with the cache off, once as a warm-up and
then 1 and 3 more times, each under ``valgrind --tool=callgrind``; the
difference of the two totals over ``2 * n`` messages is the cost per
message, free of start-up and import costs.  With ``--every K`` it takes
every K-th message of the first ``K * n`` instead: the mbox holds the corpus
files one after another, so its opening 2,100 messages are all SpamAssassin
ham, while ``--every 10`` mixes ham, spam and HTML as the whole mbox does.
``--functions`` prints the functions with the most instructions of their
own (same difference).  Instruction counts miss cache misses (the model's
weight reads): confirm a saving found here with a timed A/B run.  Needs
valgrind (``apt-get install valgrind``).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_CHILD = r"""
import gc, sys
sys.path.insert(0, {repo!r})
from atlas_fast.splitter import split_mbox
from atlas_fast._parser import parse_message
n, passes, stage = {n}, int(sys.argv[1]), {stage!r}
raws = []
for i, (_offset, raw) in enumerate(split_mbox({mbox!r})):
    if i % {every} == 0:
        raws.append(raw)
    if len(raws) == n:
        break
if stage == "classify":
    from atlas_fast.classify import Classifier
    msgs = [parse_message(r) for r in raws]
    chunks = [msgs[i:i + 700] for i in range(0, len(msgs), 700)]
    clf = Classifier(cache=False)
    run = lambda: [clf.classify_chunk(c) for c in chunks]
else:
    run = lambda: [parse_message(r) for r in raws]
gc.disable()
run()  # warm-up: lazy loads, memo tables
for _ in range(passes):
    run()
"""


def _callgrind(script: str, passes: int, out: Path) -> None:
    env = dict(os.environ, ATLAS_CACHE_ENABLED="false")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, script, str(passes)],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _totals(out: Path) -> tuple[int, collections.Counter]:
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
                           "--auto=no", str(out)], capture_output=True, text=True,
                          check=True).stdout
    total = 0
    funcs: collections.Counter = collections.Counter()
    listing = False
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(", line)
        if "PROGRAM TOTALS" in line and m:
            total = int(m.group(1).replace(",", ""))
        if "file:function" in line:
            listing = True
            continue
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S+)", line)
        if listing and m:
            funcs[m.group(2).rsplit(":", 1)[-1]] += int(m.group(1).replace(",", ""))
    return total, funcs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("classify", "parse"), default="classify")
    ap.add_argument("-n", type=int, default=2100, help="messages (default 2100)")
    ap.add_argument("--every", type=int, default=1, metavar="K",
                    help="take every K-th message (default 1: the first n)")
    ap.add_argument("--functions", type=int, default=0, metavar="K",
                    help="also print the K functions with most instructions of their own")
    args = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    sys.path.insert(0, str(HERE))
    from conftest import bench_mbox, mbox_slice

    if args.every < 1 or args.n < 1:
        raise SystemExit("-n and --every must be at least 1")
    if args.n * args.every > 50_000:
        raise SystemExit("n * every is at most 50,000 (the benchmark mbox)")
    mbox = mbox_slice(bench_mbox(50_000), 5000) if args.n * args.every <= 5000 \
        else bench_mbox(50_000)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "run.py"
        script.write_text(_CHILD.format(repo=str(REPO), n=args.n, stage=args.stage,
                                        mbox=str(mbox), every=args.every))
        one, three = Path(tmp) / "cg.1", Path(tmp) / "cg.3"
        _callgrind(str(script), 1, one)
        _callgrind(str(script), 3, three)
        (t1, f1), (t3, f3) = _totals(one), _totals(three)
    per = (t3 - t1) / (2 * args.n)
    which = f"every {args.every}-th of the first {args.n * args.every:,}" if args.every > 1 \
        else "the first"
    print(f"{args.stage}: {per:,.0f} instructions per message "
          f"({args.n} messages, {which}, callgrind, 3 passes minus 1)")
    if args.functions:
        diff = {k: (f3[k] - f1[k]) / (2 * args.n) for k in set(f1) | set(f3)}
        for name, v in sorted(diff.items(), key=lambda kv: -kv[1])[: args.functions]:
            print(f"{v:10,.0f}  {name[:100]}")


if __name__ == "__main__":
    main()
