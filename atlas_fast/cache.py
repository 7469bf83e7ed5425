"""The classifier's cache: diskcache on disk, an LRU in each process in front.

Namespaces and their time to live:

=============== ======= ==============================================
namespace       TTL     key -> value
=============== ======= ==============================================
classification  2 h     digest of sender, subject, body, ... -> verdict
domain          24 h    host -> registered domain
geographic      7 d     IP -> country code
auth            1 h     Authentication-Results + Received-SPF -> results
general         1 d     anything else (serialised Hyperscan databases)
=============== ======= ==============================================

One directory is shared by every worker process and persists across runs.
During a pipeline run the workers only read it: their new entries travel to
the writer process, which writes them in a few large transactions
(:meth:`ClassifierCache.defer_disk_writes`), so no worker ever sleeps in
SQLite's busy handler waiting for the other's write lock.
Lookups are made per chunk: the LRU answers what it can, and everything it
misses is fetched with a single SQL query; new values are written in one
transaction per chunk.  A diskcache ``get`` costs 20-50 us and a ``set`` far
more, so per-message calls would cost more than the work they save.

Values are msgpack-encoded bytes, which diskcache stores inline in its
SQLite table (``MODE_RAW``); the batch read relies on that layout and falls
back to ``Cache.get`` for anything else.

A cache is never worth failing a run: when its database cannot be opened or
read (damaged by a full disk or a power cut, not a database at all, not
writable), the process drops the disk level, says so once
(:class:`~atlas_fast.errors.CacheWarning`, or ``disk_error`` for the
pipeline to report) and goes on with its LRU; verdicts are the same without
a cache.  :func:`set_aside_damaged` renames a database that fails SQLite's
``quick_check`` to ``cache.db.damaged``, so the next run starts a fresh one.
"""
from __future__ import annotations

import functools
import os
import sqlite3
import time
import warnings
from collections import OrderedDict

import msgspec

from .errors import CacheWarning

__all__ = ["TTLS", "ClassifierCache", "default_cache_dir", "set_aside_damaged"]

TTLS = {
    "classification": 2 * 3600,
    "domain": 24 * 3600,
    "geographic": 7 * 24 * 3600,
    "auth": 3600,
    "general": 24 * 3600,
}
# In-process LRU entries of the namespaces whose values are large or rarely
# asked for twice in a run: every message of a mailbox has its own digest, so
# a verdict is read back from the LRU only for a duplicate message (the disk
# level answers reruns), and Authentication-Results headers are mostly unique
# per message.  A full 20,000-entry classification LRU was ~11 MB a worker.
LRU_LIMITS = {"classification": 2_000, "auth": 5_000}
_SQL_BATCH = 400  # SQLite's default limit on host parameters is 999+
_CULL_EVERY = 50_000  # rows written between size checks

_INSERT_ROWS = 32  # rows per INSERT statement (5 parameters each)
_INSERT_ROW = "(?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"


@functools.lru_cache(maxsize=_INSERT_ROWS)
def _insert_sql(rows: int) -> str:
    """An INSERT of ``rows`` cache rows laid out as diskcache's own set()
    writes them (inline raw bytes), so its triggers keep count and size."""
    return ("INSERT OR IGNORE INTO Cache (key, raw, store_time, expire_time, access_time,"
            " access_count, tag, size, mode, filename, value) VALUES "
            + ",".join([_INSERT_ROW] * rows))


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


_DB_NAME = "cache.db"  # diskcache's database file in the cache directory


def set_aside_damaged(directory) -> str | None:
    """Rename the cache database of ``directory`` to ``cache.db.damaged``
    (replacing an older one; its WAL and shared-memory files are removed)
    when SQLite cannot read it or its ``quick_check`` fails, so that the
    next run starts a fresh cache.  Returns what was wrong, or None when the
    database is sound or absent (then nothing is moved).  ``quick_check``
    reads the whole file:
    call this after an error, not on every run."""
    path = os.path.join(os.fspath(directory), _DB_NAME)
    if not os.path.exists(path):
        return None
    problem = None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
        if rows != [("ok",)]:
            problem = "; ".join(str(r[0]) for r in rows[:3])
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # in use by another process: not evidence of damage
        problem = str(exc)
    if problem is None:
        return None
    os.replace(path, path + ".damaged")
    for suffix in ("-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    return problem


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/atlas_fast`` (default ``~/.cache/atlas_fast``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "atlas_fast")


class _LRU:
    __slots__ = ("data", "size")

    def __init__(self, size: int):
        self.data: OrderedDict = OrderedDict()
        self.size = size

    def get_many(self, keys, now: float, found: dict) -> list:
        """Put the live values of ``keys`` into ``found``; return the rest."""
        data = self.data
        get = data.get
        missing = []
        for key in keys:
            item = get(key)
            if item is None:
                missing.append(key)
            elif item[1] < now:
                del data[key]
                missing.append(key)
            else:
                data.move_to_end(key)
                found[key] = item[0]
        return missing

    def put_many(self, items, expires: float) -> None:
        """Store ``(key, value)`` pairs as the most recently used."""
        data = self.data
        for key, value in items:
            if key in data:
                data.move_to_end(key)
            data[key] = (value, expires)
        for _ in range(len(data) - self.size):
            data.popitem(last=False)


class ClassifierCache:
    """Namespaced cache with TTLs, batched diskcache access and an LRU.

    Parameters
    ----------
    directory : str or None
        diskcache directory (created if missing); None: no disk level.
    enabled : bool
        False switches the cache off: the ``classification`` namespace
        always misses and nothing touches the disk.  The enrichment
        namespaces keep their in-process LRU, which memoises pure functions
        and cannot change a result.
    ttls : dict, optional
        Overrides of :data:`TTLS` (seconds), e.g. ``{"general": 600}``.
    lru_size : int
        Entries per namespace in the in-process LRU, at most
        :data:`LRU_LIMITS` for the namespaces named there.  Each worker
        holds its own; the bound keeps a worker's caches to a few MB
        however large the mailbox.
    warn : bool
        Issue a :class:`~atlas_fast.errors.CacheWarning` when the disk level
        fails and is dropped (its reason stays in ``disk_error``).  The
        pipeline's workers and writer pass False and report it to the
        parent, which warns once per run.
    """

    def __init__(self, directory=None, *, enabled: bool = True, ttls=None,
                 lru_size: int = 20_000, size_limit: int = 1 << 30, warn: bool = True):
        self.enabled = enabled
        # Why the disk level was dropped (None while it works); with
        # ``warn`` a CacheWarning says so once, else the owner reports it
        # (pipeline workers and writer: the parent warns once per run).
        self.disk_error: str | None = None
        self.warn = warn
        self.ttls = dict(TTLS)
        if ttls:
            unknown = set(ttls) - set(TTLS)
            if unknown:
                raise ValueError(f"unknown cache namespace(s): {', '.join(sorted(unknown))}")
            self.ttls.update(ttls)
        self.directory = os.fspath(directory) if directory is not None and enabled else None
        self._disk = None
        self._size_limit = size_limit
        self._lru = {ns: _LRU(min(lru_size, LRU_LIMITS.get(ns, lru_size))) for ns in self.ttls}
        self._counts = {ns: [0, 0, 0] for ns in self.ttls}  # lru hits, disk hits, misses
        self._written = 0
        # Disk keys (namespace-prefixed) that batch reads found no row for,
        # not even an expired one, until written: writing them needs no
        # DELETE first.  Kept across namespaces: a chunk's verdicts are
        # written after its enrichment lookups.
        self._absent: set = set()
        # Disk writes of one namespace collected for another process.
        self._deferred_ns: frozenset = frozenset()
        self._deferred: dict = {}

    # -- disk ---------------------------------------------------------------

    def _cache(self):
        if self._disk is None and self.directory is not None and self.disk_error is None:
            import diskcache

            try:
                os.makedirs(self.directory, exist_ok=True)
                # diskcache's defaults give each connection a 32 MB page
                # cache and a 64 MB mmap; with one connection per worker that
                # was most of a worker's memory.  The LRU in front absorbs
                # the hot keys.
                self._disk = diskcache.Cache(self.directory, size_limit=self._size_limit,
                                             sqlite_cache_size=1024, sqlite_mmap_size=1 << 23)
            except (sqlite3.Error, OSError) as exc:
                self._drop_disk(exc)
        return self._disk

    def _drop_disk(self, exc: BaseException) -> None:
        """Go on without the disk level after ``exc`` (SQLite or the file
        system failed): a damaged cache must not fail a run."""
        where = os.path.join(self.directory or "", _DB_NAME)
        self.disk_error = f"{where}: {type(exc).__name__}: {exc}"
        disk, self._disk = self._disk, None
        if disk is not None:
            try:
                disk.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._absent = set()
        self._deferred = {}
        if self.warn:
            warnings.warn(f"cache not used: {self.disk_error}; classifying without it "
                          "(verdicts are the same)", CacheWarning, stacklevel=3)

    def _disk_get_many(self, disk, keys: list, now: float) -> dict:
        found = {}
        present = set()
        try:
            for i in range(0, len(keys), _SQL_BATCH):
                part = keys[i : i + _SQL_BATCH]
                rows = disk._sql(
                    "SELECT key, value, mode, expire_time FROM Cache"
                    f" WHERE raw = 1 AND key IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                for key, value, mode, expire in rows:
                    present.add(key)
                    if expire is not None and expire < now:
                        continue
                    if mode == 1 and isinstance(value, bytes):  # diskcache MODE_RAW
                        found[key] = value
                    else:
                        got = disk.get(key)
                        if isinstance(got, bytes):
                            found[key] = got
            if len(self._absent) > 100_000:  # keys read but never written
                self._absent.clear()
            self._absent.update(keys if not present else
                                (k for k in keys if k not in present))
        except sqlite3.Error:
            raise  # the database failed: the caller drops the disk level
        except Exception:  # noqa: BLE001 - a schema we do not know: per-key API
            self._absent = set()
            for key in keys:
                got = disk.get(key)
                if isinstance(got, bytes):
                    found[key] = got
        return found

    def _disk_set_many(self, disk, items: list, ttl: float, now: float, absent=None) -> None:
        # One transaction; rows laid out as diskcache's own set() writes them
        # (inline raw bytes), so its triggers keep count and size right.
        # ``absent``: keys known to have no row, which need no DELETE first.
        try:
            with disk.transact():
                if absent is None:
                    absent = self._absent
                keys = [k for k, _ in items if k not in absent]
                for i in range(0, len(keys), _SQL_BATCH):
                    part = keys[i : i + _SQL_BATCH]
                    disk._sql(
                        "DELETE FROM Cache WHERE raw = 1 AND filename IS NULL"
                        f" AND key IN ({','.join('?' * len(part))})",
                        part,
                    )
                # _INSERT_ROWS rows per statement: one call, bind and step
                # for 32 rows (callgrind, 11,121 rows into a fresh cache:
                # 46.7k -> 34.2k instructions per row against executemany).
                con = disk._con
                expire = now + ttl
                for i in range(0, len(items), _INSERT_ROWS):
                    part = items[i : i + _INSERT_ROWS]
                    args = []
                    for k, v in part:
                        args += (k, now, expire, now, v)
                    con.execute(_insert_sql(len(part)), args)
        except sqlite3.Error:
            raise  # the database failed: the caller drops the disk level
        except Exception:  # noqa: BLE001 - fall back to the public API
            with disk.transact():
                for key, value in items:
                    disk.set(key, value, expire=ttl)
        self._absent.difference_update(k for k, _ in items)
        self._written += len(items)
        if self._written >= _CULL_EVERY:
            self._written = 0
            disk.expire()
            disk.cull()

    # -- public -------------------------------------------------------------

    def get_many(self, ns: str, keys) -> dict:
        """Values of those ``keys`` that are cached and not expired."""
        counts = self._counts[ns]
        if ns == "classification" and not self.enabled:
            counts[2] += len(keys)
            return {}
        now = time.time()
        lru = self._lru[ns]
        found = {}
        missing = lru.get_many(keys, now, found)
        counts[0] += len(found)
        disk = self._cache() if self.enabled else None
        if missing and disk is not None:
            prefix = ns + ":"
            try:
                raw = self._disk_get_many(disk, [prefix + k for k in missing], now)
            except sqlite3.Error as exc:
                self._drop_disk(exc)
                raw = {}
            cut = len(prefix)
            fresh = [(dkey[cut:], _decode(blob)) for dkey, blob in raw.items()]
            found.update(fresh)
            lru.put_many(fresh, now + self.ttls[ns])
            counts[1] += len(raw)
            counts[2] += len(missing) - len(raw)
        else:
            counts[2] += len(missing)
        return found

    def set_many(self, ns: str, mapping: dict) -> None:
        """Store values (msgpack-serialisable) for their namespace's TTL."""
        if not mapping or (ns == "classification" and not self.enabled):
            return
        now = time.time()
        ttl = self.ttls[ns]
        self._lru[ns].put_many(mapping.items(), now + ttl)
        if ns in self._deferred_ns and self.directory is not None and self.disk_error is None:
            prefix = ns + ":"
            absent = self._absent
            dkeys = [prefix + k for k in mapping]
            self._deferred.setdefault(ns, []).extend(
                zip(dkeys, map(_encode, mapping.values()), map(absent.__contains__, dkeys)))
            absent.difference_update(dkeys)
            return
        disk = self._cache() if self.enabled else None
        if disk is not None:
            prefix = ns + ":"
            try:
                self._disk_set_many(
                    disk, [(prefix + k, _encode(v)) for k, v in mapping.items()], ttl, now
                )
            except sqlite3.Error as exc:
                self._drop_disk(exc)

    # -- one writing process ------------------------------------------------

    def defer_disk_writes(self, *namespaces: str) -> None:
        """Collect the disk writes of ``namespaces`` (default: all) for
        :meth:`take_deferred` instead of making them (the LRU is still
        updated).

        A pipeline worker hands them to the writer process, which makes them
        with :meth:`write_deferred`: with one process writing the cache,
        workers never wait on each other's write transactions (SQLite has
        one writer at a time; its busy handler sleeps in 1-100 ms steps).
        """
        unknown = set(namespaces) - set(self.ttls)
        if unknown:
            raise ValueError(f"unknown cache namespace(s): {', '.join(sorted(unknown))}")
        self._deferred_ns = frozenset(namespaces or self.ttls)
        self._deferred = {}

    def take_deferred(self):
        """``[(namespace, ttl, [(disk_key, value_bytes, absent), ...]), ...]``
        of the writes collected since the last call, or None."""
        if not self._deferred:
            return None
        taken = [(ns, self.ttls[ns], items) for ns, items in self._deferred.items()]
        self._deferred = {}
        return taken

    def write_deferred(self, taken: list) -> int:
        """Write a list of what :meth:`take_deferred` returned (in any
        process): one transaction per TTL.  Returns the rows written."""
        disk = self._cache() if self.enabled else None
        if disk is None or not taken:
            return 0
        now = time.time()
        by_ttl: dict = {}
        for part in taken:
            for _ns, ttl, items in part:
                by_ttl.setdefault(ttl, []).extend(items)
        n = 0
        try:
            for ttl, items in by_ttl.items():
                absent = {k for k, _, gone in items if gone}
                self._disk_set_many(disk, [(k, v) for k, v, _ in items], ttl, now, absent)
                n += len(items)
        except sqlite3.Error as exc:
            self._drop_disk(exc)
        return n

    def stats(self) -> dict:
        """Per namespace: ``hits`` (LRU + disk), ``lru_hits``, ``disk_hits``, ``misses``."""
        return {
            ns: {"hits": c[0] + c[1], "lru_hits": c[0], "disk_hits": c[1], "misses": c[2]}
            for ns, c in self._counts.items()
        }

    def clear_memory(self) -> None:
        """Empty the in-process LRU (the disk level stays)."""
        for lru in self._lru.values():
            lru.data.clear()

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None
