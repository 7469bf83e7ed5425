"""The ``atlas-fast`` command line."""
from __future__ import annotations

import argparse
import sys
import time
import warnings

from .errors import AtlasError, CacheWarning

__all__ = ["main", "ProgressBar"]


class ProgressBar:
    """A one-line progress bar on stderr: bytes, MB/s and messages/s.

    Called as ``bar(done_bytes, total_bytes)``; the pipeline also reports
    committed messages through :meth:`set_messages`.
    """

    def __init__(self, stream=None, min_interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self.last = self.start
        self.messages = 0
        self.done = self.total = 0
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def set_messages(self, n: int) -> None:
        self.messages = n

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self._render(final=False)

    def close(self) -> None:
        """Draw the last state and end the line."""
        self._render(final=True)

    def _render(self, final: bool) -> None:
        done, total = self.done, self.total
        now = time.perf_counter()
        if not final and now - self.last < self.min_interval:
            return
        if not self.tty and not final and now - self.last < 2.0:
            return  # logs get a line every 2 s, terminals a live bar
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        frac = min(done / total, 1.0) if total else 0.0
        width = 30
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"[{bar}] {frac * 100:5.1f}%  {done / 1e6:8.1f}/{total / 1e6:.1f} MB  "
            f"{done / 1e6 / elapsed:6.1f} MB/s  {self.messages / elapsed:8.0f} msg/s"
        )
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def _cache_line(summary) -> str:
    """The run's cache lookups: verdicts, then the enrichment namespaces."""
    if summary.settings.get("cache") is False:
        return "off"
    counts = summary.cache
    verdicts = counts.get("classification", {"hits": 0, "misses": 0})
    hits = sum(c["hits"] for ns, c in counts.items() if ns != "classification")
    misses = sum(c["misses"] for ns, c in counts.items() if ns != "classification")
    return (f"verdicts {verdicts['hits']:,} hits, {verdicts['misses']:,} misses; "
            f"enrichment {hits:,} hits, {misses:,} misses")


def _summary_table(summary) -> str:
    rows = [
        ("source", summary.source),
        ("database", summary.db),
        ("run", str(summary.run_id)),
        ("status", summary.status),
        ("messages", f"{summary.messages:,}"),
        ("spam", f"{summary.spam:,}"),
        ("ham", f"{summary.ham:,}"),
        ("errors", f"{summary.errors:,}"),
        ("bytes", f"{summary.bytes:,}"),
        ("elapsed", f"{summary.elapsed_s:.2f} s"),
        ("throughput", f"{summary.msgs_per_sec:,.0f} msg/s"),
    ]
    rows.append(("cache", _cache_line(summary)))
    if summary.resumed_from:
        rows.insert(4, ("resumed at byte", f"{summary.resumed_from:,}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_process(args) -> int:
    from .pipeline import process_mbox

    for path in args.mbox:
        try:
            summary = process_mbox(
                path,
                db=args.db,
                workers=args.workers,
                batch_size=args.batch_size,
                cache=False if args.no_cache else args.cache_dir,
                memory_limit_mb=args.memory_limit_mb,
                model=args.model,
                rules=args.rules or (),
                progress=None if args.quiet else ProgressBar(),
            )
        except KeyboardInterrupt as exc:
            print(f"\natlas-fast: {exc}", file=sys.stderr)
            return 130
        if args.json:
            import json

            print(json.dumps(summary.as_dict(), sort_keys=True))
        else:
            print(_summary_table(summary))
    return 0


def _cmd_train(args) -> int:
    from .evaluate import train_model, user_params

    params = user_params(url_domains=args.url_domains, target_fpr=args.target_fpr)
    info = train_model(args.ham, args.spam, args.output, seed=args.seed, verbose=not args.quiet,
                       jobs=args.jobs, params=params)
    print(f"{args.output}: model trained on {info.get('ham', '?')} ham and "
          f"{info.get('spam', '?')} spam messages (seed {args.seed}); cross-validated: "
          f"{info['cv_ham_fpr']:.3%} of the ham called spam, {info['cv_spam_recall']:.2%} "
          f"of the spam caught")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import evaluate

    report = evaluate(args.ham, args.spam, model=args.model, rules=args.rules or ())
    print(report.to_json() if args.json else report.format_table())
    return 0


def _cmd_config(args) -> int:
    from .config import config_report

    sys.stdout.write(config_report())
    return 0


def _cmd_serve(args) -> int:
    from .dashboard import main_serve

    return main_serve(args)


def _cmd_stats(args) -> int:
    from .stats import format_stats

    sys.stdout.write(format_stats(args.db, args.run))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlas-fast", description="Fast mailbox spam engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="parse, classify and store an mbox in SQLite")
    p.add_argument("mbox", nargs="+", help="mbox file(s), plain or .gz")
    p.add_argument("--db", default="atlas.sqlite", help="SQLite database (default: %(default)s)")
    p.add_argument("--workers", type=int, help="worker processes (default: usable cores)")
    p.add_argument("--batch-size", type=int, help="rows per transaction (default 500)")
    p.add_argument("--cache-dir", help="persistent cache directory")
    p.add_argument("--no-cache", action="store_true", help="switch the cache off")
    p.add_argument("--memory-limit-mb", type=int, help="bound on in-flight input memory")
    p.add_argument("--model", help="model file from 'atlas-fast train' (default: shipped model)")
    p.add_argument("--rules", action="append", help="extra rule file (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print each run's summary as one line of JSON instead of a table")
    p.set_defaults(func=_cmd_process)

    p = sub.add_parser("train", help="train a model on labelled mboxes")
    p.add_argument("--ham", nargs="+", required=True, help="mbox file(s) of ham")
    p.add_argument("--spam", nargs="+", required=True, help="mbox file(s) of spam")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes for the cross-validation and final fits (default: usable "
                        "cores; the model does not depend on it)")
    p.add_argument("--url-domains", action="store_true",
                   help="make the registered domains of URLs features (off by default: they name "
                        "one era's campaigns; for a model of your own, recent mail)")
    p.add_argument("--target-fpr", type=float, default=None, metavar="F",
                   help="operating point: the fraction of the training ham that cross-validation "
                        "may call spam (default 0.0013, i.e. 0.13 %%; lower catches less spam)")
    p.add_argument("-q", "--quiet", action="store_true", help="no training log")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="score a labelled corpus: recall, false positives, AUC, ...")
    p.add_argument("--ham", nargs="+", required=True, help="mbox file(s) of ham")
    p.add_argument("--spam", nargs="+", required=True, help="mbox file(s) of spam")
    p.add_argument("--model", help="model file (default: shipped model)")
    p.add_argument("--rules", action="append", help="extra rule file (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("config", help="print the effective settings and where each comes from")
    p.set_defaults(func=_cmd_config)

    from .dashboard import add_serve_arguments

    p = sub.add_parser("serve", help="serve the /performance dashboard of a database")
    add_serve_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("stats", help="print a run's performance numbers as tables")
    p.add_argument("--db", required=True, help="SQLite database written by atlas-fast process")
    p.add_argument("--run", type=int, help="run id (default: the latest run)")
    p.set_defaults(func=_cmd_stats)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # atlas_fast's own warnings as one line, the way errors are shown.
        if issubclass(category, CacheWarning):
            print(f"atlas-fast: warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show_warning
    try:
        return args.func(args)
    except AtlasError as exc:
        print(f"atlas-fast: error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
