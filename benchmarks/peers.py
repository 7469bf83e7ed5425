"""atlas_fast against its peers, in one run, on the same mbox.

    python benchmarks/peers.py [-n 50000] [--slice 5000]

Times, on the generated benchmark mbox (benchmarks/make_corpus.py):

- atlas_fast end to end (parse, classify, SQLite), 2 workers, cold cache;
- the plain-Python way (mailbox + email.policy.default + sqlite3) on the
  first ``--slice`` messages;
- parse only, one process, on the same pre-split ``--slice`` messages:
  atlas_fast's ``parse_chunk`` against ``fast-mail-parser`` (when installed);
- bogofilter 1.2 in bulk mailbox mode (``-M``), trained on the shared train
  files, classifying the same ``--slice`` messages (when installed).

Prints messages per second and each peer's ratio to atlas_fast.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from conftest import bench_mbox, mbox_slice  # noqa: E402
from make_corpus import CORPUS  # noqa: E402
from plain_python import process_plain_python  # noqa: E402


def timed(fn, repeat=1):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--slice", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import atlas_fast
    from atlas_fast._parser import parse_chunk
    from atlas_fast._splitter import scan_starts

    big = bench_mbox(args.n)
    small = mbox_slice(big, args.slice)
    results = []  # (name, messages/s)
    tmp = Path(tempfile.mkdtemp(prefix="atlas-peers-"))
    try:
        runs = iter(range(1000))
        summary, t = timed(lambda: atlas_fast.process_mbox(
            big, tmp / f"a{next(runs)}.sqlite", workers=2, cache=False), args.repeat)
        results.append(("atlas_fast end to end (2 workers)", summary.messages / t))
        n, t = timed(lambda: process_plain_python(small, tmp / f"p{next(runs)}.sqlite"))
        results.append(("plain Python end to end", n / t))

        data = small.read_bytes()
        starts, _ = scan_starts(data, 0, len(data), True)
        ends = array("q", starts[1:])
        ends.append(len(data))
        parsed, t = timed(lambda: parse_chunk(data, starts, ends), args.repeat)
        results.append(("atlas_fast parse only (1 process)", len(parsed) / t))
        try:
            import fast_mail_parser
        except ImportError:
            print("fast-mail-parser not installed: skipped (pip install fast-mail-parser)")
        else:
            raws = [data[data.index(b"\n", s) + 1 : e] for s, e in zip(starts, ends)]

            def fmp():
                ok = 0
                for raw in raws:
                    try:
                        fast_mail_parser.parse_email(raw)
                        ok += 1
                    except Exception:
                        pass
                return ok

            ok, t = timed(fmp, args.repeat)
            results.append((f"fast-mail-parser parse only ({ok}/{len(raws)} parsed)", len(raws) / t))

        bogo = shutil.which("bogofilter")
        if bogo is None:
            print("bogofilter not installed: skipped (apt-get install bogofilter)")
        else:
            home = tmp / "bogo"
            home.mkdir()
            for name, flag in (("spamassassin-train-spam", "-s"), ("spamassassin-train-ham", "-n"),
                               ("csdmc2010-train-spam", "-s"), ("csdmc2010-train-ham", "-n")):
                raw = subprocess.run(["gzip", "-dc", str(CORPUS / f"{name}.mbox.gz")],
                                     capture_output=True, check=True).stdout
                subprocess.run([bogo, "-d", str(home), "-M", flag], input=raw, check=True)
            out, t = timed(lambda: subprocess.run(
                [bogo, "-d", str(home), "-M", "-t", "-I", str(small)],
                capture_output=True, check=False).stdout, args.repeat)
            classified = len(out.splitlines())
            results.append((f"bogofilter -M classify ({classified} verdicts)", args.slice / t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ref = results[0][1]
    parse_ref = next(r for name, r in results if name.startswith("atlas_fast parse"))
    print(f"\n{'':<48} {'msg/s':>12}  ratio")
    for name, rate in results:
        base = parse_ref if "parse only" in name else ref
        print(f"{name:<48} {rate:>12,.0f}  {rate / base:8.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
