"""Pipeline: one run from an mbox to SQLite.

The parent process streams the input into a ring of shared-memory slots
(:mod:`atlas_fast.splitter`), worker processes parse and classify a whole
slot per task and send one msgspec batch per slot to the writer process
(:mod:`atlas_fast.writer`), which commits them.  Back-pressure is built in:
the writer's queue is bounded, a worker that cannot hand over its batch does
not take the next slot, and the splitter waits for a free slot.  Memory is
therefore bounded by the slot ring, whatever the size of the input.

Ctrl-C (SIGINT) or SIGTERM stops the splitter; what was read is finished and
committed, every child exits, every segment is unlinked, and the run is
recorded as ``interrupted``.  A rerun resumes where the committed rows end.
"""
from __future__ import annotations

import gc
import mmap
import multiprocessing as mp
import os
import queue as queue_module
import re
import signal
import sqlite3
import time
import traceback
import warnings
from array import array
from dataclasses import dataclass, field

import _posixshmem
import msgspec

from . import __version__
from ._features import chunk_records
from ._parser import parse_chunk, parse_message
from .config import Settings, resolve_settings
from .errors import AtlasError, CacheWarning, InputError, StorageError
from .migrations import connect, drop_indexes, ensure_indexes
from .monitor import PerformanceMetrics, ResourceSampler, monitor_operation, store_run_metrics
from .records import RecordBatch, encode_batch
from .splitter import MboxSplitter, Oversized
from .writer import run_writer, utc_now

__all__ = ["process_mbox", "RunSummary"]

# A slot of 2 MiB holds ~350 average messages: per-chunk costs stay small,
# and a worker's transient per-chunk objects stay a few MB (4 MiB slots
# measured 50 MB more summed RSS over the whole run).
SLOT_BYTES = 2 << 20
MIN_SLOT_BYTES = 1 << 20
_SHM_PREFIX = "atlas_"
_SHM_NAME = re.compile(r"^atlas_(\d+)_\w+$")


@dataclass
class RunSummary:
    """What one :func:`process_mbox` call did.

    ``messages``, ``spam``, ``ham`` and ``errors`` count the messages this run
    stored; a resumed run does not count again what an earlier run stored.
    ``cache`` holds this run's cache lookups per namespace, ``{namespace:
    {"hits": n, "misses": m}}``: ``classification`` for the verdicts, and
    the enrichment namespaces (``domain``, ``geographic``, ``auth``) for the
    lookups that each worker's own memo of them did not answer.
    """

    run_id: int
    source: str
    db: str
    status: str
    messages: int
    spam: int
    ham: int
    errors: int
    bytes: int
    elapsed_s: float
    resumed_from: int
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @property
    def msgs_per_sec(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["msgs_per_sec"] = self.msgs_per_sec
        return out


class _Interrupted(BaseException):
    """SIGTERM, turned into an exception in the parent like SIGINT is."""


# ---------------------------------------------------------------------------
# Worker process
# ---------------------------------------------------------------------------


def _ranges(starts: array, nbytes: int) -> array:
    ends = array("q", starts[1:])
    ends.append(nbytes)
    return ends


def _parse_slot(buf, starts: array, ends: array) -> list:
    """Parses a slot; never raises for bad mail.  Should the compiled parser
    itself fail on a chunk, each message is retried alone so that only the
    message at fault gets an error row."""
    try:
        return parse_chunk(buf, starts, ends)
    except Exception:
        out = []
        for start, end in zip(starts, ends):
            try:
                out.append(parse_message(bytes(buf[start:end])))
            except Exception as exc:
                out.append(exc)
        return out


def _worker_main(slots, task_queue, free_queue, out_queue, ack_queue, leading_junk,
                 classifier, parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        _work(slots, task_queue, free_queue, out_queue, ack_queue, leading_junk, classifier,
              parent_pid)
    except BaseException as exc:
        # Bad mail never gets here (it becomes an error row); this is a bug
        # or a resource failure, and the parent must fail the run loudly.
        ack_queue.put(("worker-error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise SystemExit(1)


def _work(slots, task_queue, free_queue, out_queue, ack_queue, leading_junk, classifier,
          parent_pid):
    metrics = PerformanceMetrics.get_instance()
    cache_counts: dict = {}
    # New cache entries go to the writer process, the cache's one writer.
    classifier.cache.defer_disk_writes()
    # A cache this worker cannot read is reported to the parent, which
    # warns once for the run (see _Run._cache_report).
    classifier.cache.warn = False
    cache_reported = False
    buffers = [memoryview(s) for s in slots]
    chunks = _pause_gc()
    while True:
        chunks = _collect_now_and_then(chunks)
        try:
            task = task_queue.get(timeout=1.0)
        except queue_module.Empty:
            if os.getppid() != parent_pid:
                return
            continue
        if task is None:
            # What was timed after the last batch travels on its own.
            out_queue.put(encode_batch(RecordBatch(-1, 0, 0, [], metrics.drain_delta())))
            classifier.close()
            return
        seq, slot_ref, base, nbytes, starts_raw, cut_short = task
        starts = array("q")
        starts.frombytes(starts_raw)
        ends = _ranges(starts, nbytes)
        extra = None
        if isinstance(slot_ref, str):  # an oversized message's own segment
            extra = _attach_segment(slot_ref)
            buf = memoryview(extra)[:nbytes]
        else:
            buf = buffers[slot_ref][:nbytes]
        try:
            with monitor_operation("parse", "chunk"):
                parsed = _parse_slot(buf, starts, ends)
            if base == 0 and leading_junk and starts[0] == 0:
                _flag(parsed[0], "no mbox envelope line before this text")
            if cut_short:  # the input broke inside the chunk's last message
                _flag(parsed[-1], cut_short)
        finally:
            buf.release()
            if extra is not None:
                extra.close()
            else:
                _unmap_pages(slots[slot_ref], nbytes)
            free_queue.put(slot_ref)  # the slot is free once parsed
        # The classifier times its own stages: cache, enrich, rules, model.
        verdicts = _classify(classifier, parsed)
        cache_counts = _record_cache_delta(metrics, classifier, cache_counts)
        with monitor_operation("encode", "chunk"):
            records = chunk_records(parsed, verdicts, starts, ends, base)
            del parsed, verdicts  # the records hold what is kept of them
            batch = RecordBatch(seq, base, base + nbytes, records, metrics.drain_delta())
            try:
                data = encode_batch(batch)
            except (msgspec.EncodeError, UnicodeEncodeError):  # a lone surrogate somewhere
                _scrub(records)
                data = encode_batch(batch)
        out_queue.put(data)
        deferred = classifier.cache.take_deferred()
        if deferred is not None:
            out_queue.put(("cache", deferred))
        if classifier.cache.disk_error is not None and not cache_reported:
            ack_queue.put(("cache-error", classifier.cache.disk_error))
            cache_reported = True
        # Nothing of this chunk stays alive while the next one is parsed.
        del records, batch, data


def _flag(message, reason: str) -> None:
    """Put ``reason`` first in a parsed message's ``error``."""
    if not isinstance(message, Exception):
        message.error = reason if message.error is None else f"{reason}; {message.error}"


def _pause_gc() -> int:
    """Stop the cyclic GC's automatic passes in a hot worker loop.

    A chunk makes thousands of container objects (lists of URLs, headers,
    records) that refcounting frees; the allocation-count trigger still ran
    full passes over them, 20 % of parse time when profiled.  What was alive
    at fork (model, rules) was frozen by the parent (see
    ``_Run._start_children``); a young-generation collection runs every few
    chunks for whatever cycle may form.
    """
    gc.disable()
    return 0


def _collect_now_and_then(chunks: int) -> int:
    if chunks and chunks % 32 == 0:
        gc.collect(1)
    return chunks + 1


def _classify(classifier, parsed: list):
    if len(parsed) and any(isinstance(m, Exception) for m in parsed):
        # Rare: a message the parser failed on has no fields to classify.
        ok = [m for m in parsed if not isinstance(m, Exception)]
        got = iter(classifier.classify_chunk(ok))
        return [None if isinstance(m, Exception) else next(got) for m in parsed]
    return classifier.classify_chunk(parsed)


def _record_cache_delta(metrics, classifier, previous: dict) -> dict:
    """Moves the classifier's cache counters into the monitor, as a delta."""
    now = classifier.stats()
    for ns, counts in now.items():
        before = previous.get(ns, {})
        hits = counts["hits"] - before.get("hits", 0)
        misses = counts["misses"] - before.get("misses", 0)
        if hits:
            metrics.record_cache_hit(ns, hits)
        if misses:
            metrics.record_cache_miss(ns, misses)
    return {ns: dict(c) for ns, c in now.items()}


def _scrub(records: list) -> None:
    """Replace what UTF-8 cannot carry (lone surrogates) with U+FFFD."""
    for i, rec in enumerate(records):
        records[i] = tuple(v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str)
                           else v for v in rec)


# ---------------------------------------------------------------------------
# Shared-memory slots
# ---------------------------------------------------------------------------


def _remove_stale_segments() -> None:
    """Unlink segments left by runs whose process was SIGKILLed."""
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for name in names:
        m = _SHM_NAME.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except OSError:
            pass


def _slot_plan(settings: Settings) -> tuple[int, int]:
    """(number of slots, bytes per slot) within the memory limit."""
    count = settings.workers * 2 + 2
    size = SLOT_BYTES
    if settings.memory_limit_mb is not None:
        # In-flight input may use a quarter of the limit; the rest is the
        # processes themselves and their per-chunk records.
        budget = settings.memory_limit_mb * (1 << 20) // 4
        while count * size > budget and count > settings.workers + 1:
            count -= 1
        while count * size > budget and size > MIN_SLOT_BYTES:
            size //= 2
    return count, size


def _create_segment(name: str, size: int) -> mmap.mmap:
    """A named POSIX shared-memory segment, for a message larger than a slot.

    Made with ``shm_open`` directly rather than ``SharedMemory``: that class
    starts multiprocessing's resource tracker, one more Python process
    (~15 MB RSS) for the whole run.  The ring unlinks its segments itself,
    and :func:`_remove_stale_segments` those of a run that was SIGKILLed.
    """
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        _posixshmem.shm_unlink("/" + name)
        raise
    finally:
        os.close(fd)


def _attach_segment(name: str) -> mmap.mmap:
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _unmap_pages(slot: mmap.mmap, nbytes: int) -> None:
    """Drop this process's page mappings of a slot it is done with.

    The data stays in the shared memory (a ``MAP_SHARED`` mapping), but the
    pages no longer count in this process's RSS: the parent and each worker
    then hold only the slot they are working on instead of every slot of the
    ring (6 x 2 MiB counted in three processes was 36 MB of summed RSS).
    """
    if nbytes > 0:
        slot.madvise(mmap.MADV_DONTNEED, 0, min(nbytes, len(slot)))


class _SlotRing:
    """The ring of chunk slots: anonymous shared memory made before the
    workers fork, so they inherit it.  Nothing has a name, nothing outlives
    the run's processes (not even after SIGKILL), and no resource tracker is
    needed; only oversized messages get named segments."""

    def __init__(self, count: int, size: int):
        self.size = size
        self.slots: list[mmap.mmap] = []
        self.extra: set[str] = set()  # oversized segments not yet unlinked
        self._serial = 0
        try:
            for _ in range(count):
                self.slots.append(mmap.mmap(-1, max(size, 1)))
        except BaseException:
            self.close()
            raise

    def oversized(self, data: bytearray) -> str:
        self._serial += 1
        name = f"{_SHM_PREFIX}{os.getpid()}_{self._serial}"
        seg = _create_segment(name, max(len(data), 1))
        self.extra.add(name)
        try:
            seg[: len(data)] = data
        finally:
            seg.close()  # the segment lives on until unlinked; the parent's pages go
        return name

    def release(self, ref) -> None:
        if isinstance(ref, str) and ref in self.extra:
            self.extra.discard(ref)
            _unlink_segment(ref)

    def close(self) -> None:
        for seg in self.slots:
            try:
                seg.close()
            except BufferError:  # a view is still exported
                pass
        for name in self.extra:
            _unlink_segment(name)
        self.slots.clear()
        self.extra.clear()


def _unlink_segment(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _check_path(value, name: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise InputError(text, f"{name} is empty")
    return text


def _begin_run(db: str, source: str):
    """Opens (and migrates) the database and reads the resume point."""
    conn = connect(db)
    try:
        row = conn.execute(
            "SELECT fingerprint, done_offset FROM progress WHERE source = ?", (source,)
        ).fetchone()
        return conn, row
    except BaseException:
        conn.close()
        raise


def process_mbox(
    path,
    db="atlas.sqlite",
    *,
    workers=None,
    batch_size=None,
    cache=None,
    memory_limit_mb=None,
    model=None,
    rules=(),
    progress=None,
) -> RunSummary:
    """Parse, classify and store every message of an mbox.

    Parameters
    ----------
    path : str or PathLike
        A plain or gzip-compressed mbox file.
    db : str or PathLike
        SQLite database; created if missing.  A rerun on the same database
        resumes after the last committed message of ``path``.
    workers : int, optional
        Worker processes (``ATLAS_WORKER_COUNT``; default: usable cores).
    batch_size : int, optional
        Rows per SQLite transaction (``ATLAS_BULK_BATCH_SIZE``; default 500).
    cache : str, bool, optional
        Cache directory, ``True`` for the default one, ``False`` for none
        (``ATLAS_CACHE_ENABLED``).
    memory_limit_mb : int, optional
        Bound on in-flight input memory (``ATLAS_MEMORY_LIMIT_MB``).
    model : str or PathLike, optional
        A model trained with ``atlas-fast train``; default: the shipped model.
    rules : sequence of paths, optional
        Extra rule files, added to the built-in rules.
    progress : callable or bool, optional
        ``progress(done_bytes, total_bytes)`` is called as input is read
        (bytes of the file on disk); ``True`` shows a progress bar on stderr.

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        Missing or unreadable file, not an mbox, corrupt compression.
    ConfigError
        An invalid option or environment variable.
    KeyboardInterrupt
        After Ctrl-C, once what was read is committed.
    """
    t_start = time.perf_counter()  # elapsed_s covers start-up too
    source_path = _check_path(path, "path")
    db_path = _check_path(db, "db")
    if progress is not None and progress is not True and progress is not False and not callable(progress):
        raise TypeError("progress must be a callable, True or False")
    if isinstance(rules, (str, os.PathLike)):
        rules = [rules]
    rules = [_check_path(r, "rules") for r in rules]
    model_path = None if model is None else _check_path(model, "model")
    settings = resolve_settings(workers, batch_size, cache, memory_limit_mb)
    # The writer is forked first, while this process is still small: a
    # forked child starts with the parent's resident heap in its own RSS,
    # and the writer needs none of the model, rules and country data.
    writer = _WriterProcess(settings.workers)
    try:
        return _process(source_path, db_path, model_path, rules, settings, progress,
                        writer, t_start)
    finally:
        writer.stop()


def _process(source_path, db_path, model_path, rules, settings, progress, writer, t_start):
    classifier = _build_classifier(model_path, rules, settings)
    source = os.path.abspath(source_path)
    if progress is True:
        from .cli import ProgressBar

        progress = ProgressBar()
    elif progress is False:
        progress = None

    conn, row = _begin_run(db_path, source)
    try:
        fingerprint, start_offset = (row if row else (None, 0))
        splitter = MboxSplitter(source_path, start_offset, fingerprint)
    except BaseException:
        conn.close()
        raise
    try:
        now = utc_now()
        conn.execute("BEGIN")
        if row is None:
            conn.execute(
                "INSERT INTO progress (source, size, fingerprint, done_offset, updated_at)"
                " VALUES (?, ?, ?, 0, ?)",
                (source, splitter.input_size, splitter.fingerprint, now),
            )
        run_id = conn.execute(
            "INSERT INTO runs (source, started_at, resumed_from, settings, version)"
            " VALUES (?, ?, ?, ?, ?)",
            (source, now, start_offset, msgspec.json.encode(settings.as_dict()).decode(), __version__),
        ).lastrowid
        # A load into an empty table builds its indexes once, at the end.
        bulk_load = conn.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is None
        if bulk_load:
            drop_indexes(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        splitter.close()
        raise
    conn.close()

    run = _Run(settings, db_path, source, run_id, start_offset, splitter, classifier, progress,
               writer)
    del classifier  # the run drops it once the workers have it
    run.rebuild_indexes = bulk_load
    run.t_start = t_start
    return run.execute()


def _build_classifier(model_path, rules, settings):
    """The run's Classifier, built once in the parent.

    A bad model or rule file is then the caller's exception, not a worker's
    crash, and the workers share the loaded model and compiled rules through
    fork instead of each building them again.  Building it opens nothing
    that must not cross a fork: the verdict cache opens its database on
    first use, in each worker.
    """
    from .classify import Classifier

    classifier = Classifier(model=model_path, rules=tuple(rules), cache=settings.cache)
    # Load what the classifier loads lazily on its first message (Public
    # Suffix List, country database, ...) here, once, so the workers share
    # it instead of each paying ~0.3 s for it; a throw-away instance without
    # a cache keeps the user's cache untouched.
    warm = Classifier(model=model_path, rules=tuple(rules), cache=False)
    warm.classify_chunk([parse_message(_WARM_UP_MESSAGE)])
    warm.close()
    return classifier


_WARM_UP_MESSAGE = (
    b"Received: from mail.example.com (mail.example.com [93.184.216.34])\n"
    b"\tby mx.example.org; Mon, 3 Mar 2025 09:14:52 +0000\n"
    b"Authentication-Results: mx.example.org; spf=pass; dkim=pass; dmarc=pass\n"
    b"From: Warm Up <warm.up@example.com>\nTo: someone@example.org\n"
    b"Subject: warm-up\nDate: Mon, 3 Mar 2025 09:14:52 +0000\n"
    b"Message-ID: <warm-up@example.com>\nContent-Type: text/html\n\n"
    b"<p>Hello, see <a href=\"https://www.example.co.uk/a\">this</a></p>\n"
)


class _Run:
    def __init__(self, settings, db, source, run_id, start_offset, splitter, classifier, progress,
                 writer):
        self.settings = settings
        self.writer = writer.process
        self._writer_setup = writer
        self.out_queue = writer.out_queue
        self.ack_queue = writer.ack_queue
        self.db = db
        self.source = source
        self.run_id = run_id
        self.start_offset = start_offset
        self.splitter = splitter
        self.classifier = classifier
        self.progress = progress
        self.children: list[mp.Process] = [self.writer]
        self.workers: list[mp.Process] = []
        self.committed = 0
        self.done_offset = start_offset
        self.writer_stats: dict = {}
        self.cache_errors: list[str] = []  # from workers and writer, once each
        self.cache_dir: str | None = None
        self.rebuild_indexes = False
        self.t_start = time.perf_counter()
        self.metrics = PerformanceMetrics.get_instance()
        self.sampler: ResourceSampler | None = None

    # -- lifecycle ---------------------------------------------------------

    def execute(self) -> RunSummary:
        t_start = self.t_start
        status, error = "done", None
        ctx = mp.get_context("fork")
        _remove_stale_segments()
        count, size = _slot_plan(self.settings)
        ring = None
        old_term = signal.getsignal(signal.SIGTERM)
        in_main = _in_main_thread()
        try:
            if in_main:
                signal.signal(signal.SIGTERM, _raise_interrupted)
            ring = _SlotRing(count, size)
            self.ring = ring
            self.metrics.reset()  # this run's numbers only
            self._start_children(ctx, ring)
            self._start_sampler()
            self._feed(ring)
            self._finish_children()
            damage = self.splitter.damage
            if damage is not None:
                # Every message before the damage is stored; the run fails.
                stored = ("; the messages before it are stored, the last one cut short"
                          if damage.offset > self.start_offset else "")
                raise InputError(damage.path, damage.reason + stored, damage.offset)
        except (KeyboardInterrupt, _Interrupted) as exc:
            status, error = "interrupted", exc
            self._drain_after_interrupt()
        except BaseException as exc:
            status, error = "failed", exc
            self._kill_children()
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, old_term)
            if self.sampler is not None:
                self.sampler.stop()
            if self.classifier is not None:
                self.classifier.close()
            self.splitter.close()
            if ring is not None:
                ring.close()
        self._cache_report()
        elapsed = time.perf_counter() - t_start
        try:
            summary = self._record_run(status, elapsed)
        except (sqlite3.Error, StorageError) as exc:
            # The disk that failed the run can fail its record too: the
            # first error is the one to report.
            if status == "failed":
                raise error from None
            raise StorageError(f"{self.db}: cannot record the run: {exc}") from None
        close_bar = getattr(self.progress, "close", None)
        if close_bar is not None:
            set_messages = getattr(self.progress, "set_messages")
            set_messages(self.committed)
            close_bar()
        if status == "interrupted":
            raise KeyboardInterrupt(
                f"{self.source}: interrupted; {summary.messages} messages committed, "
                f"rerun to resume at byte {self.done_offset}"
            ) from None
        if status == "failed":
            raise error
        return summary

    def _start_children(self, ctx, ring: _SlotRing) -> None:
        workers = self.settings.workers
        self.task_queue = ctx.Queue()
        self.free_queue = ctx.Queue()
        parent = os.getpid()
        cache = self.classifier.cache
        self.cache_dir = cache.directory if cache.enabled else None
        self._writer_setup.begin(
            self.db, self.run_id, self.source, self.start_offset, self.settings.batch_size,
            self.rebuild_indexes, self.cache_dir)
        # Children must not see SIGINT before they have set it to ignored:
        # block it across fork, the child unblocks after installing SIG_IGN.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        # Children inherit what is alive now (model, rules) frozen out of
        # every GC pass: no collection walks or copies those pages.
        gc.collect()
        _trim_heap()
        gc.freeze()
        try:
            self.workers = []
            for i in range(workers):
                p = ctx.Process(
                    target=_worker_main,
                    args=(ring.slots, self.task_queue, self.free_queue, self.out_queue,
                          self.ack_queue, self.splitter.leading_junk, self.classifier, parent),
                    name=f"atlas-worker-{i}",
                    daemon=True,
                )
                p.start()
                self.workers.append(p)
        finally:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.children = [self.writer, *self.workers]
        # The parent does not classify: the model and the compiled rules go,
        # and their pages with them (each worker keeps its own mapping).
        self.classifier.close()
        self.classifier = None
        gc.collect()
        _trim_heap()
        for i in range(len(ring.slots)):
            self.free_queue.put(i)

    def _start_sampler(self) -> None:
        # Started after fork: a thread running across fork() is unsafe.
        sampler = ResourceSampler(interval=1.0)
        sampler.register(self.writer.pid, "writer")
        for p in self.workers:
            sampler.register(p.pid, "worker")
        sampler.attach(self.db, self.run_id)
        self.sampler = sampler.start()

    def _feed(self, ring: _SlotRing) -> None:
        seq = 0
        views = [memoryview(s) for s in ring.slots]
        try:
            while True:
                slot = self._next_free_slot()
                with monitor_operation("split", "fill"):
                    got = self.splitter.fill(views[slot])
                if got is None:
                    self.free_queue.put(slot)
                    break
                # The chunk a damaged stream ends in: its last message is
                # cut short there (the run fails once all are stored).
                damage = self.splitter.damage
                cut_short = (f"cut short: the input breaks off at byte {damage.offset}"
                             if damage is not None and self.splitter.done else None)
                if isinstance(got, Oversized):
                    self.free_queue.put(slot)
                    name = ring.oversized(got.data)
                    starts = array("q", [0])
                    task = (seq, name, got.base, len(got.data), starts.tobytes(), cut_short)
                else:
                    task = (seq, slot, got.base, got.nbytes, got.starts.tobytes(), cut_short)
                    # The splitter keeps what it read past the last whole
                    # message in its own buffer: the parent is done with
                    # the slot's pages.
                    _unmap_pages(ring.slots[slot], len(views[slot]))
                self.task_queue.put(task)
                seq += 1
                if self.progress is not None:
                    self.progress(self.splitter.input_pos, self.splitter.input_size)
        finally:
            for v in views:
                v.release()

    def _next_free_slot(self) -> int:
        while True:
            self._drain_acks()
            try:
                ref = self.free_queue.get(timeout=0.2)
            except queue_module.Empty:
                self._check_children()
                continue
            if isinstance(ref, str):
                self.ring.release(ref)
                continue
            return ref

    def _drain_acks(self, block: bool = False, timeout: float = 0.2):
        while True:
            try:
                kind, *rest = self.ack_queue.get(block, timeout)
            except queue_module.Empty:
                return None
            if kind == "commit":
                self.committed, self.done_offset, delta = rest
                self.metrics.merge_delta(delta)
                if self.sampler is not None:
                    self.sampler.set_progress(self.committed, self.done_offset - self.start_offset)
                set_messages = getattr(self.progress, "set_messages", None)
                if set_messages is not None:
                    set_messages(self.committed)
            elif kind == "done":
                self.writer_stats, delta = rest
                self.metrics.merge_delta(delta)
                self.done_offset = self.writer_stats["done_offset"]
                return "done"
            elif kind == "error":
                message, trace = rest
                if trace is None:  # the database or its disk: say what stays
                    where = "" if message.startswith(self.db) else f"{self.db}: "
                    raise StorageError(
                        f"{where}{message}; {self.committed} messages of this run are "
                        f"committed, rerun to resume at byte {self.done_offset}")
                raise AtlasError(f"{self.db}: writer failed: {message}\n{trace}")
            elif kind == "cache-error":
                if rest[0] not in self.cache_errors:
                    self.cache_errors.append(rest[0])
            elif kind == "worker-error":
                raise AtlasError(f"{self.source}: a worker failed: {rest[0]}\n{rest[1]}")
            block = False

    def _cache_report(self) -> None:
        """One CacheWarning for the run when a worker or the writer could
        not use the cache; a database that fails SQLite's quick_check is
        set aside so that the next run starts a fresh one."""
        if not self.cache_errors or self.cache_dir is None:
            return
        from .cache import _DB_NAME, set_aside_damaged

        db = os.path.join(self.cache_dir, _DB_NAME)
        try:
            damaged = set_aside_damaged(self.cache_dir)
        except OSError as exc:
            damaged = None
            self.cache_errors.append(f"{db} could not be set aside: {exc}")
        if damaged:
            message = (f"cache {db} is damaged ({damaged}): moved to cache.db.damaged, "
                       "the next run starts a fresh one")
        else:
            message = "cache not used: " + "; ".join(self.cache_errors)
        warnings.warn(f"{self.source}: {message}; this run went on without it "
                      "(verdicts are the same)", CacheWarning, stacklevel=4)

    def _check_children(self) -> None:
        for p in self.children:
            if p.exitcode is not None:
                raise AtlasError(
                    f"{self.source}: {p.name} exited unexpectedly (exit code {p.exitcode}) "
                    f"near byte {self.done_offset}"
                )

    def _finish_children(self) -> None:
        for _ in self.workers:
            self.task_queue.put(None)
        while any(p.is_alive() for p in self.workers):
            self._drain_acks()
            self._release_oversized()
            for p in self.workers:
                if p.exitcode not in (None, 0):
                    raise AtlasError(f"{self.source}: {p.name} failed (exit code {p.exitcode})")
            for p in self.workers:
                p.join(timeout=0.05)
        self._drain_acks()
        for p in self.workers:
            if p.exitcode != 0:
                raise AtlasError(f"{self.source}: {p.name} failed (exit code {p.exitcode})")
        self._release_oversized()
        self.out_queue.put(None)
        while self._drain_acks(block=True, timeout=0.5) != "done":
            if self.writer.exitcode is not None:
                self._drain_acks()
                if self.writer_stats:
                    break
                raise AtlasError(f"{self.db}: writer exited (code {self.writer.exitcode}) before finishing")
        self.writer.join()
        for q in (self.task_queue, self.free_queue, self.out_queue, self.ack_queue):
            q.close()
            q.join_thread()

    def _release_oversized(self) -> None:
        while True:
            try:
                ref = self.free_queue.get_nowait()
            except queue_module.Empty:
                return
            self.ring.release(ref)

    def _drain_after_interrupt(self) -> None:
        """Stop reading; let workers finish the slots they hold; commit."""
        try:
            if not self._writer_setup.began:
                return  # nothing started; the caller stops the waiting writer
            # Drop tasks nobody started yet: they will be read again on resume.
            while True:
                try:
                    self.task_queue.get_nowait()
                except queue_module.Empty:
                    break
            self._finish_children()
        except BaseException:
            self._kill_children()

    def _kill_children(self) -> None:
        for p in self.children:
            if p.is_alive():
                p.kill()
        for p in self.children:
            p.join(timeout=5)
        for q in ("task_queue", "free_queue", "out_queue", "ack_queue"):
            qq = getattr(self, q, None)
            if qq is not None:
                qq.close()
                qq.cancel_join_thread()

    # -- bookkeeping -------------------------------------------------------

    def _record_run(self, status: str, elapsed: float) -> RunSummary:
        conn = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        try:
            counts = dict.fromkeys(("messages", "spam", "ham", "errors"), 0)
            row = conn.execute(
                "SELECT count(*), sum(label = 'spam'), sum(label = 'ham'), count(error)"
                " FROM messages WHERE run_id = ?",
                (self.run_id,),
            ).fetchone()
            counts = dict(zip(("messages", "spam", "ham", "errors"), (v or 0 for v in row)))
            stats = self.metrics.get_stats()
            timings = {"elapsed_s": elapsed, "writer": self.writer_stats,
                       "stages": {k: {"count": v["count"], "total_ms": v["total_ms"]}
                                  for k, v in stats.get("operations", {}).items()}}
            rate = counts["messages"] / elapsed if elapsed > 0 else 0.0
            conn.execute("BEGIN")
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, messages = ?, spam = ?, ham = ?,"
                " errors = ?, elapsed_s = ?, msgs_per_sec = ?, timings = ?, bytes = ?"
                " WHERE run_id = ?",
                (status, utc_now(), counts["messages"], counts["spam"], counts["ham"],
                 counts["errors"], elapsed, rate, msgspec.json.encode(timings).decode(),
                 self.done_offset, self.run_id),
            )
            if status == "done":
                conn.execute("UPDATE progress SET complete = 1 WHERE source = ?", (self.source,))
            conn.execute("COMMIT")
            store_run_metrics(conn, self.run_id, stats, self.sampler)
            ensure_indexes(conn)  # the writer's job, unless it could not finish
        finally:
            conn.close()
        return RunSummary(
            run_id=self.run_id, source=self.source, db=self.db, status=status,
            bytes=self.done_offset - self.start_offset, elapsed_s=elapsed,
            resumed_from=self.start_offset, settings=self.settings.as_dict(),
            timings=timings, **counts,
            cache={ns: {"hits": c["hits"], "misses": c["misses"]}
                   for ns, c in stats.get("cache", {}).items()},
        )


class _WriterProcess:
    """The writer process, forked before the run knows its arguments.

    It waits for them on a pipe (:meth:`begin`); :meth:`stop` ends it if the
    run fails before it began, and reaps it in any case.
    """

    def __init__(self, workers: int):
        ctx = mp.get_context("fork")
        self.out_queue = ctx.Queue(maxsize=workers * 2)
        self.ack_queue = ctx.Queue()
        self._setup_recv, self._setup_send = ctx.Pipe(duplex=False)
        self.began = False
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.process = ctx.Process(
                target=_writer_entry,
                args=(self._setup_recv, self.out_queue, self.ack_queue, os.getpid()),
                name="atlas-writer",
                daemon=True,
            )
            self.process.start()
        except BaseException:
            self._setup_send.close()
            self._setup_recv.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._setup_recv.close()

    def begin(self, db, run_id, source, start_offset, batch_size, rebuild_indexes,
              cache_dir=None) -> None:
        self._setup_send.send(
            (db, run_id, source, start_offset, batch_size, rebuild_indexes, cache_dir))
        self._setup_send.close()
        self.began = True

    def stop(self) -> None:
        if not self.began:
            try:
                self._setup_send.send(None)
            except OSError:
                pass
            self._setup_send.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for q in (self.out_queue, self.ack_queue):
            q.close()
            q.cancel_join_thread()


def _writer_entry(setup, in_queue, ack_queue, parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    while not setup.poll(1.0):
        if os.getppid() != parent_pid:
            return  # the parent is gone before the run began
    try:
        args = setup.recv()
    except EOFError:
        return
    setup.close()
    if args is None:
        return  # the run failed before it began
    db, run_id, source, start_offset, batch_size, rebuild_indexes, cache_dir = args
    run_writer(db, run_id, source, start_offset, batch_size, in_queue, ack_queue, parent_pid,
               rebuild_indexes, cache_dir)


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system before forking.

    Loading the country data leaves ~10 MB of freed blocks in the heap; a
    forked child starts with every resident page of its parent in its RSS,
    so each such page would count once per process."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _raise_interrupted(signum, frame):
    raise _Interrupted()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
