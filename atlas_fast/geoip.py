"""Country of an IPv4/IPv6 address from geoip2fast's bundled database, kept compact.

``geoip2fast.GeoIP2Fast`` unpickles its ~494,000 networks into nested lists
of Python ints: ~29 MB in every process that looks an address up, and the
pipeline's workers each loaded their own copy.  :class:`CountryTable` reads
the same file once and keeps three flat arrays (first address, prefix
length, country index: ~3.5 MB), which the workers share with the parent
through fork.  Answers are those of ``GeoIP2Fast().lookup(ip).country_code``
(see ``tests/test_geoip.py``).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import socket
import struct
import sys
from array import array
from bisect import bisect_right
from itertools import chain

__all__ = ["CountryTable", "bundled_database"]

_MAX_IPV4 = 2**32 - 1
_PRIVATE = 16  # geoip2fast: country indexes below this are reserved ranges
_unpack_ipv4 = struct.Struct(">L").unpack


def _cache_path(path: str) -> str | None:
    """Where the compact form of the database at ``path`` is kept, keyed by
    the file's identity and this machine's byte order and array sizes."""
    from .rules import _compiled_dir

    where = _compiled_dir()
    if not where or array("I").itemsize != 4 or array("H").itemsize != 2:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{sys.byteorder}"
    return os.path.join(where, f"geoip-{hashlib.sha256(ident.encode()).hexdigest()[:32]}.bin")


def bundled_database() -> str:
    """Path of geoip2fast's country database (``geoip2fast.dat.gz``)."""
    spec = importlib.util.find_spec("geoip2fast")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("geoip2fast is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "geoip2fast.dat.gz")


class CountryTable:
    """Sorted networks of a geoip2fast country database, as flat arrays.

    Parameters
    ----------
    path : str, optional
        A geoip2fast ``.dat.gz`` country file (format 120 or 121); default:
        the one bundled with geoip2fast.

    Raises
    ------
    ValueError
        If the file is not a geoip2fast country database.
    """

    __slots__ = ("_first", "_netlen", "_country", "_codes")

    def __init__(self, path: str | None = None):
        path = path or bundled_database()
        cached = _cache_path(path)
        if cached and self._load_compact(cached):
            return
        self._build(path)
        if cached and isinstance(self._first, array):
            self._save_compact(cached)

    # A built table is saved beside the compiled rule databases: unpickling
    # and flattening the 494,000 networks takes ~0.13 s of every run's
    # start-up, reading the arrays back ~2 ms.  The file carries the sha256
    # of its arrays; a damaged one is rebuilt, never used.

    def _save_compact(self, where: str) -> None:
        from .rules import write_checked

        head = json.dumps({"n": len(self._first), "codes": self._codes}).encode()
        write_checked(where, head + b"\n" + self._first.tobytes() + self._netlen.tobytes()
                      + self._country.tobytes())

    def _load_compact(self, where: str) -> bool:
        from .rules import read_checked

        payload = read_checked(where)  # None when missing or damaged
        if payload is None:
            return False
        head, _, body = payload.partition(b"\n")
        try:
            meta = json.loads(head)
            n = meta["n"]
            codes = tuple(meta["codes"])
        except (ValueError, KeyError, TypeError):
            return False
        if len(body) != 7 * n:
            return False
        first, netlen, country = array("I"), array("B"), array("H")
        first.frombytes(body[: 4 * n])
        netlen.frombytes(body[4 * n : 5 * n])
        country.frombytes(body[5 * n :])
        self._first, self._netlen, self._country, self._codes = first, netlen, country, codes
        return True

    def _build(self, path: str) -> None:
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            version, info, _total, database = pickle.load(f)
        if version not in (120, 121) or not info.get("country") or info.get("asn"):
            raise ValueError(f"{path}: not a geoip2fast country-only database")
        _index, names, first, ids, netlen = database
        del database, _index
        # 4 bytes an address; a file with IPv6 networks keeps Python ints.
        ipv4 = first[-1][-1] <= _MAX_IPV4
        self._first = array("I", chain.from_iterable(first)) if ipv4 \
            else list(chain.from_iterable(first))
        del first
        self._netlen = array("B", chain.from_iterable(netlen))
        del netlen
        self._country = array("H", chain.from_iterable(ids))
        del ids
        codes = []
        for i, item in enumerate(names):
            code = item.split(":", 1)[0]
            codes.append(None if i < _PRIVATE or len(code) != 2 or code == "--" else code)
        self._codes = tuple(codes)

    def __len__(self) -> int:
        return len(self._first)

    def country(self, ip: str) -> str | None:
        """ISO country code of ``ip``; None for a private, reserved, unknown
        or malformed address."""
        try:
            try:
                value = _unpack_ipv4(socket.inet_aton(ip))[0]
            except OSError:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        except (OSError, TypeError, ValueError):
            return None
        i = bisect_right(self._first, value) - 1
        if i < 0:
            return None
        bits = 32 if value <= _MAX_IPV4 else 128  # as geoip2fast sizes the network
        if value > self._first[i] + (1 << (bits - self._netlen[i])) - 1:
            return None
        return self._codes[self._country[i]]
