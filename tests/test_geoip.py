"""The compact country table answers as geoip2fast itself does."""
from __future__ import annotations

import os
import random

import pytest

from atlas_fast.enrich import country_of
from atlas_fast.geoip import CountryTable

# Importing geoip2fast sets PYTHONWARNINGS=ignore and PYTHONIOENCODING in
# os.environ, which every later subprocess of the session would inherit
# (the CLI tests' warnings vanished).  atlas_fast never imports it: it
# reads the database file only (atlas_fast/geoip.py).
_saved = {k: os.environ.get(k) for k in ("PYTHONWARNINGS", "PYTHONIOENCODING")}
geoip2fast = pytest.importorskip("geoip2fast")
for _key, _value in _saved.items():
    if _value is None:
        os.environ.pop(_key, None)
    else:
        os.environ[_key] = _value

SEED = 20261129


@pytest.fixture(scope="module")
def tables():
    return CountryTable(), geoip2fast.GeoIP2Fast(verbose=False)


def _reference(geo, ip):
    try:
        code = geo.lookup(ip).country_code
    except Exception:  # noqa: BLE001 - geoip2fast raises plain exceptions
        return None
    return code if code and code != "--" and len(code) == 2 else None


def test_random_addresses_agree_with_geoip2fast(tables):
    table, geo = tables
    print("seed", SEED)
    rng = random.Random(SEED)
    ips = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(20_000)]
    found = 0
    for ip in ips:
        want = _reference(geo, ip)
        assert table.country(ip) == want, ip
        found += want is not None
    assert found > 10_000  # most of the IPv4 space has a country


def test_network_edges_agree_with_geoip2fast(tables):
    table, geo = tables
    rng = random.Random(SEED + 1)
    for i in rng.sample(range(1, len(table)), 3_000):
        start = table._first[i]
        for value in (start - 1, start, start + 1):
            ip = ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))
            assert table.country(ip) == _reference(geo, ip), ip


@pytest.mark.parametrize("ip", [
    "10.1.2.3", "127.0.0.1", "192.168.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1",
    "2001:4860:4860::8888", "::1", "", "not an ip", "1.2.3.4.5", "300.1.1.1", "8.8.8.8",
])
def test_odd_and_reserved_addresses(tables, ip):
    table, geo = tables
    assert table.country(ip) == _reference(geo, ip)


def test_country_of_uses_the_table():
    assert country_of("8.8.8.8") == "US"
    assert country_of("10.0.0.1") is None
    assert country_of(None) is None
    assert country_of("bogus") is None


def test_table_is_compact(tables):
    table, _ = tables
    # Flat arrays, 7 bytes a network, not lists of Python ints.
    assert table._first.itemsize == 4 and table._netlen.itemsize == 1
    assert table._country.itemsize == 2
    assert len(table._first) == len(table._netlen) == len(table._country) > 100_000


def test_compact_file_round_trips_and_damage_means_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_RULES_CACHE_DIR", str(tmp_path))
    built = CountryTable()
    (saved,) = tmp_path.glob("geoip-*.bin")
    loaded = CountryTable()
    assert (loaded._first, loaded._netlen, loaded._country, loaded._codes) == (
        built._first, built._netlen, built._country, built._codes)
    data = saved.read_bytes()
    for junk in (data[:-1], data[:-7] + b"\x00" * 7, b"not a table"):
        saved.write_bytes(junk)
        again = CountryTable()
        assert again.country("8.8.8.8") == built.country("8.8.8.8") == "US"
        assert len(again) == len(built)
