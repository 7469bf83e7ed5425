import time

import pytest

from atlas_fast import CacheWarning
from atlas_fast.cache import TTLS, ClassifierCache, set_aside_damaged


def test_roundtrip_across_instances(tmp_path):
    a = ClassifierCache(tmp_path)
    a.set_many("domain", {"mail.example.com": "example.com", "x.invalid": None})
    a.close()
    b = ClassifierCache(tmp_path)
    got = b.get_many("domain", ["mail.example.com", "x.invalid", "absent"])
    assert got == {"mail.example.com": "example.com", "x.invalid": None}
    assert b.stats()["domain"] == {"hits": 2, "lru_hits": 0, "disk_hits": 2, "misses": 1}
    assert b.get_many("domain", ["mail.example.com"]) == {"mail.example.com": "example.com"}
    assert b.stats()["domain"]["lru_hits"] == 1


def test_batch_write_is_visible_to_diskcache_api(tmp_path):
    c = ClassifierCache(tmp_path)
    c.set_many("general", {"k": [1, "a"]})
    c.set_many("general", {"k": [2, "b"]})  # overwrite keeps one row
    disk = c._cache()
    assert len(disk) == 1
    import msgspec

    assert msgspec.msgpack.decode(disk.get("general:k")) == [2, "b"]


def test_batch_write_spanning_several_statements(tmp_path):
    # Rows go 32 to an INSERT: 100 keys (a partial last statement), then an
    # overlapping batch, keep diskcache's row count (its triggers) right.
    import msgspec

    c = ClassifierCache(tmp_path)
    c.set_many("general", {f"k{i}": i for i in range(100)})
    c.set_many("general", {f"k{i}": -i for i in range(90, 140)})
    disk = c._cache()
    assert len(disk) == 140
    assert disk._sql("SELECT value FROM Settings WHERE key = 'count'").fetchone()[0] == 140
    assert [msgspec.msgpack.decode(disk.get(f"general:k{i}")) for i in (0, 31, 32, 89, 90, 139)] \
        == [0, 31, 32, 89, -90, -139]


def test_expired_entries_miss(tmp_path):
    c = ClassifierCache(tmp_path, ttls={"auth": 0.01})
    c.set_many("auth", {"k": [1]})
    time.sleep(0.05)
    assert c.get_many("auth", ["k"]) == {}
    c.clear_memory()
    assert c.get_many("auth", ["k"]) == {}


def test_disabled_cache_never_hits_classification(tmp_path):
    c = ClassifierCache(tmp_path, enabled=False)
    c.set_many("classification", {"k": 1})
    assert c.get_many("classification", ["k"]) == {}
    assert not any(tmp_path.iterdir())


def test_unknown_namespace_rejected():
    with pytest.raises(ValueError, match="unknown cache namespace"):
        ClassifierCache(None, ttls={"bogus": 1})


def test_ttls_match_the_design():
    assert TTLS["classification"] == 7200 and TTLS["domain"] == 86400
    assert TTLS["geographic"] == 7 * 86400 and TTLS["auth"] == 3600


def test_write_after_read_replaces_expired_rows(tmp_path):
    """A key read as absent is inserted without a DELETE; an expired row the
    read saw is still replaced, so the table keeps one row per key."""
    c = ClassifierCache(tmp_path, ttls={"auth": 0.01})
    assert c.get_many("auth", ["fresh"]) == {}
    c.set_many("auth", {"fresh": [1]})
    time.sleep(0.05)
    c.clear_memory()
    assert c.get_many("auth", ["fresh", "other"]) == {}  # expired row seen
    c.set_many("auth", {"fresh": [2], "other": [3]})
    c.clear_memory()
    disk = c._cache()
    assert sorted(disk.iterkeys()) == ["auth:fresh", "auth:other"]
    assert len(c._cache()) == 2


def test_in_process_lru_is_bounded_per_namespace():
    from atlas_fast.cache import LRU_LIMITS

    c = ClassifierCache(None, lru_size=3_000)
    for ns in ("classification", "domain", "auth"):
        c.set_many(ns, {f"key-{i}": [i] for i in range(4_000)})
    held = {ns: len(lru.data) for ns, lru in c._lru.items()}
    assert held["classification"] == LRU_LIMITS["classification"] < 3_000
    assert held["auth"] == min(3_000, LRU_LIMITS["auth"])
    assert held["domain"] == 3_000
    # The newest entries are the ones kept.
    assert c.get_many("classification", ["key-3999", "key-0"]) == {"key-3999": [3999]}


def test_deferred_writes_are_made_by_another_instance(tmp_path):
    # A worker defers its disk writes; the writer process makes them.
    worker = ClassifierCache(tmp_path)
    worker.defer_disk_writes()
    assert worker.get_many("classification", ["new", "old"]) == {}
    other = ClassifierCache(tmp_path)
    other.set_many("classification", {"old": ["ham"]})  # a row the worker did not see
    worker.set_many("classification", {"new": ["spam"], "old": ["spam"]})
    worker.set_many("domain", {"mail.example.com": "example.com"})
    assert worker.get_many("classification", ["new"]) == {"new": ["spam"]}  # the LRU has it
    fresh = ClassifierCache(tmp_path)
    assert fresh.get_many("classification", ["new"]) == {}  # not on disk yet
    taken = worker.take_deferred()
    assert worker.take_deferred() is None
    assert {ns for ns, _ttl, _items in taken} == {"classification", "domain"}
    writer = ClassifierCache(tmp_path)
    assert writer.write_deferred([taken]) == 3
    fresh.clear_memory()
    # 'old' was written by another process after the worker saw it absent:
    # that row stays (a key's value is a function of the key), never doubled.
    assert fresh.get_many("classification", ["new", "old"]) == {"new": ["spam"], "old": ["ham"]}
    assert fresh.get_many("domain", ["mail.example.com"]) == {"mail.example.com": "example.com"}
    assert len(writer._cache()) == 3


def test_deferred_writes_of_a_disabled_cache_are_nothing(tmp_path):
    c = ClassifierCache(tmp_path, enabled=False)
    c.defer_disk_writes()
    c.set_many("classification", {"k": [1]})
    c.set_many("domain", {"h": "d"})
    assert c.take_deferred() is None
    with pytest.raises(ValueError, match="unknown cache namespace"):
        c.defer_disk_writes("nope")


def test_lru_evicts_the_least_recently_used():
    from atlas_fast.cache import _LRU

    lru = _LRU(3)
    lru.put_many([("a", 1), ("b", 2), ("c", 3)], expires=100.0)
    found = {}
    assert lru.get_many(["a", "x"], 50.0, found) == ["x"] and found == {"a": 1}
    lru.put_many([("d", 4)], expires=100.0)  # b is the least recently used
    assert list(lru.data) == ["c", "a", "d"]
    lru.put_many([("c", 30)], expires=100.0)  # a rewrite counts as a use
    lru.put_many([("e", 5)], expires=100.0)
    assert list(lru.data) == ["d", "c", "e"]
    found = {}
    assert lru.get_many(["c", "e"], 200.0, found) == ["c", "e"] and not found  # expired
    assert list(lru.data) == ["d"]


# -- a damaged cache: the run goes on without it -----------------------------


def _fill(directory, n):
    cache = ClassifierCache(directory)
    cache.set_many("classification", {f"k{i}": ["ham", None, 0.01 * (i % 100)] for i in range(n)})
    cache.close()


def _zero_pages(path, first_page, count, page=4096):
    with open(path, "r+b") as fh:
        fh.seek(first_page * page)
        fh.write(b"\0" * page * count)


def test_a_file_that_is_not_a_database_is_a_warning_not_a_failure(tmp_path):
    (tmp_path / "cache.db").write_bytes(b"not a database, just text " * 400)
    cache = ClassifierCache(tmp_path)
    with pytest.warns(CacheWarning, match=r"cache\.db: DatabaseError: file is not a database"):
        assert cache.get_many("classification", ["a", "b"]) == {}
    assert "file is not a database" in cache.disk_error
    # Once dropped, the disk level stays dropped: no second warning (the
    # suite turns warnings into errors), lookups miss, writes go to the LRU.
    cache.set_many("classification", {"a": ["spam", "phishing", 0.99]})
    assert cache.get_many("classification", ["a", "c"]) == {"a": ["spam", "phishing", 0.99]}
    assert cache.stats()["classification"] == {"hits": 1, "lru_hits": 1, "disk_hits": 0,
                                               "misses": 3}
    cache.close()


def test_damaged_pages_never_give_wrong_values(tmp_path):
    """Zeroed pages inside the database: each lookup either finds what was
    stored or misses; the first SQLite error drops the disk level."""
    _fill(tmp_path, 3000)
    _zero_pages(tmp_path / "cache.db", 20, 8)
    cache = ClassifierCache(tmp_path, warn=False)
    keys = [f"k{i}" for i in range(3000)]
    got = cache.get_many("classification", keys)
    assert all(got[k] == ["ham", None, 0.01 * (int(k[1:]) % 100)] for k in got)
    assert cache.disk_error is not None and "malformed" in cache.disk_error
    assert cache.get_many("classification", keys[:5]) == {k: got[k] for k in keys[:5] if k in got}
    cache.close()


def test_set_aside_damaged_moves_only_a_database_that_fails_its_check(tmp_path):
    assert set_aside_damaged(tmp_path) is None  # no database at all
    _fill(tmp_path, 200)
    assert set_aside_damaged(tmp_path) is None
    assert (tmp_path / "cache.db").exists() and not (tmp_path / "cache.db.damaged").exists()
    (tmp_path / "cache.db").write_bytes(b"\x13" * 8192)
    assert set_aside_damaged(tmp_path) == "file is not a database"
    assert not (tmp_path / "cache.db").exists()
    assert (tmp_path / "cache.db.damaged").read_bytes() == b"\x13" * 8192
    # A fresh cache takes its place.
    _fill(tmp_path, 10)
    assert ClassifierCache(tmp_path).get_many("classification", ["k3"]) == {"k3": ["ham", None, 0.03]}


def test_a_cache_directory_that_cannot_be_created_is_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    cache = ClassifierCache(blocker / "cache")
    with pytest.warns(CacheWarning, match="cache not used"):
        cache.set_many("domain", {"mail.example.com": "example.com"})
    assert cache.get_many("domain", ["mail.example.com"]) == {"mail.example.com": "example.com"}
