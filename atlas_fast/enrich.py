"""Enrichment: registered domains, the origin IP and its country, SPF/DKIM/DMARC.

All offline: the Public Suffix List comes from ``publicsuffixlist``, countries
from ``geoip2fast``'s bundled database (loaded lazily, once per process), and
authentication results are read from the message's own
``Authentication-Results`` / ``Received-SPF`` headers; nothing is looked up
in DNS.  Every lookup goes through the cache's namespaces (domain,
geographic, auth) in chunk-sized batches.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re

__all__ = [
    "Enrichment",
    "Enricher",
    "registered_domain",
    "origin_ip",
    "parse_auth",
    "country_of",
    "url_host",
    "origin_flags",
]

# ---------------------------------------------------------------------------
# Registered domains
# ---------------------------------------------------------------------------

_psl = None


def _suffix_list():
    global _psl
    if _psl is None:
        _psl = _load_suffix_list()
    return _psl


def _load_suffix_list():
    """publicsuffixlist's bundled list, parsed in ~15 ms instead of ~250.

    Parsing spends nearly all its time IDNA-encoding each of the ~10,000
    rules.  The first parse writes the expanded rule set (the rules plus
    their punycode forms) beside the compiled rule databases; later runs
    hand that text back to ``PublicSuffixList`` with encoding off, which
    builds the same rule set.  The file is keyed by the library version and
    the list file's size and time, so an upgrade re-parses.
    """
    import publicsuffixlist
    from publicsuffixlist import PublicSuffixList

    from .rules import _compiled_dir, read_checked, write_checked

    where = _compiled_dir()
    path = None
    if where:
        try:
            st = os.stat(publicsuffixlist.PSLFILE)
            key = f"{publicsuffixlist.__version__}-{st.st_size}-{st.st_mtime_ns}"
            path = os.path.join(where, f"psl-{key}.txt")
        except (OSError, AttributeError):
            pass  # an unusual install: parse the list every time
    text = read_checked(path) if path else None  # None also when damaged
    if text is not None:
        return PublicSuffixList(source=text.decode(), accept_encoded_idn=False)
    psl = PublicSuffixList()
    rules = getattr(psl, "_publicsuffix", None)
    if path and isinstance(rules, frozenset):
        write_checked(path, "\n".join(sorted(rules)).encode())
    return psl


def registered_domain(domain: str | None) -> str | None:
    """The registrable domain (``mail.example.co.uk`` -> ``example.co.uk``).

    Returns None for a missing domain, an IP literal or a bare public suffix.
    """
    if not domain:
        return None
    domain = domain.strip().strip(".[]").lower()
    if not domain or domain[-1].isdigit() or ":" in domain:
        return None  # IP literal (v4 ends in a digit; no TLD does)
    try:
        return _suffix_list().privatesuffix(domain)
    except Exception:  # noqa: BLE001 - malformed labels: no registered domain
        return None


_URL_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?/*(?:[^@/?#]*@)?([^/?#:\\]+)", re.I)


def url_host(url: str) -> str | None:
    """Lower-cased host of a URL (``www.x.com`` without a scheme is accepted)."""
    m = _URL_HOST.match(url.strip())
    if not m:
        return None
    host = m.group(1).strip(".").lower()
    return host or None


# ---------------------------------------------------------------------------
# Received chain
# ---------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_IPV6 = re.compile(r"\[(?:IPv6:)?([0-9a-fA-F:]+:[0-9a-fA-F:.]+)\]")
_FROM_PART = re.compile(r"^\s*from\s+(.*?)(?:\s+by\s+|\s*;|$)", re.I | re.S)


@functools.lru_cache(maxsize=4096)
def _public(text: str) -> bool:
    # Cached: relays' addresses repeat across a mailbox, and ipaddress
    # takes microseconds per test.
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.is_global and not ip.is_multicast


@functools.lru_cache(maxsize=4096)
def ipv6_origin(cand: str) -> str | None:
    """An IPv6 literal of a ``from`` clause (a ``_IPV6`` match) as
    origin_ip returns it, canonical (``2a00:1450::1``), when public; else
    None.  Also used by the C Received reader (``_features.received_origin``)."""
    return str(ipaddress.ip_address(cand)) if _public(cand) else None


def ipv6_literals(clause: str) -> list:
    """The IPv6 candidates of a ``from`` clause, in order (``_IPV6``)."""
    return _IPV6.findall(clause)


def origin_ip(received: list | None) -> str | None:
    """The first external IP of the ``Received:`` chain, in delivery order.

    The chain is read from the bottom (the first hop) up; in each header only
    the ``from`` clause (the sending host, before ``by``) is read, so that
    relays' own addresses are not mistaken for the sender.  Private,
    loopback, link-local, reserved and documentation ranges are skipped.
    Folded headers (line breaks inside a value) are handled.
    """
    if not received:
        return None
    for value in reversed(received):
        if not value:
            continue
        value = " ".join(value.split())
        m = _FROM_PART.match(value)
        if not m:
            continue
        part = m.group(1)
        for cand in _IPV4.findall(part):
            if all(int(x) < 256 for x in cand.split(".")) and _public(cand):
                return cand
        for cand in _IPV6.findall(part):
            ip = ipv6_origin(cand)
            if ip:
                return ip
    return None


_ORIGIN_CLAUSE_END = re.compile(r"\s+by\s+|;", re.I)
_BRACKETED = re.compile(r"\[[^\]]*\]")
_DYNAMIC_NAME = re.compile(
    r"(?:dsl|dyn|dial|pool|ppp|cable|dhcp|client|host"
    r"|\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}[^\]])",
    re.I,
)
_RDNS_NAME = re.compile(r"\(\s*[a-z0-9-]+\.[a-z0-9.-]+", re.I)


def origin_flags(received: list | None, ip: str | None) -> tuple:
    """How the first external hop names itself, as SpamAssassin's RDNS/HELO
    tests read it: ``rcv:origin_dynamic`` (an access-network name such as
    ``adsl-1-2-3-4.pool.example``), ``rcv:origin_no_rdns`` (no reverse name,
    or ``unknown``), ``rcv:no_origin`` when the chain has no external IP."""
    if not ip:
        return ("rcv:no_origin",)
    for value in received or ():
        if value and ip in value:
            clause = _ORIGIN_CLAUSE_END.split(" ".join(value.split()), 1)[0]
            out = []
            if _DYNAMIC_NAME.search(_BRACKETED.sub(" ", clause)):
                out.append("rcv:origin_dynamic")
            if "unknown" in clause.lower() or not _RDNS_NAME.search(clause):
                out.append("rcv:origin_no_rdns")
            return tuple(out)
    return ()


# ---------------------------------------------------------------------------
# Countries
# ---------------------------------------------------------------------------

_geo = None


def country_of(ip: str | None) -> str | None:
    """ISO country code of a public IP from geoip2fast's offline data, or None."""
    global _geo
    if not ip:
        return None
    if _geo is None:
        from .geoip import CountryTable  # geoip2fast's data in compact arrays

        _geo = CountryTable()
    return _geo.country(ip)


# ---------------------------------------------------------------------------
# Authentication results
# ---------------------------------------------------------------------------

_RESULTS = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}
_AUTH_METHOD = re.compile(r"\b(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.I)
_SPF_FIRST = re.compile(r"^\s*([a-z]+)", re.I)


def parse_auth(auth_results: str | None, received_spf: str | None) -> tuple:
    """(spf, dkim, dmarc) results from the headers; None where not stated.

    The first ``Authentication-Results`` result for each method wins (the
    topmost header is the receiving server's own); ``Received-SPF``'s leading
    word fills SPF when Authentication-Results does not state it.  DKIM
    ``pass`` wins over other DKIM results in the same header (a message can
    carry several signatures).
    """
    spf = dkim = dmarc = None
    if auth_results:
        for method, result in _AUTH_METHOD.findall(auth_results):
            method = method.lower()
            result = result.lower()
            if result not in _RESULTS:
                continue
            if method == "spf" and spf is None:
                spf = result
            elif method == "dkim" and (dkim is None or result == "pass"):
                dkim = result
            elif method == "dmarc" and dmarc is None:
                dmarc = result
    if spf is None and received_spf:
        m = _SPF_FIRST.match(received_spf)
        if m and m.group(1).lower() in _RESULTS:
            spf = m.group(1).lower()
    return spf, dkim, dmarc


# ---------------------------------------------------------------------------
# Per-chunk enrichment
# ---------------------------------------------------------------------------


class Enrichment(tuple):
    """(registered_domain, origin_ip, origin_country, spf, dkim, dmarc, url_domains, flags).

    ``flags`` (strs) are held packed in one bytes object
    (``_features.pack_flags``), as the compiled ``enrich_rows`` builds them;
    the ``flags`` property gives them back as a tuple of strs.
    """

    __slots__ = ()

    def __new__(cls, registered_domain, origin_ip, origin_country, spf, dkim, dmarc, url_domains,
                flags=()):
        from ._features import pack_flags

        if not isinstance(flags, bytes):
            flags = pack_flags(flags)
        return tuple.__new__(
            cls, (registered_domain, origin_ip, origin_country, spf, dkim, dmarc, url_domains,
                  flags)
        )

    registered_domain = property(lambda self: self[0])
    origin_ip = property(lambda self: self[1])
    origin_country = property(lambda self: self[2])
    spf = property(lambda self: self[3])
    dkim = property(lambda self: self[4])
    dmarc = property(lambda self: self[5])
    url_domains = property(lambda self: self[6])

    @property
    def flags(self) -> tuple:
        from ._features import unpack_flags

        return unpack_flags(self[7])

    def features(self) -> list:
        """Whole-string model features derived from the enrichment
        (``from_dom:``, ``country:``, ``spf:``/``dkim:``/``dmarc:``,
        ``url_dom:``, then the flags)."""
        from ._features import enrichment_features

        return enrichment_features(self)


MAX_URL_DOMAINS = 16


class Enricher:
    """Enrich whole chunks through the cache's domain/geographic/auth namespaces.

    Host, IP and auth-header lookups are pure functions, so each process
    also memoises their answers in plain dicts in front of the cache (bounded
    by ``memo_size`` entries per namespace): domains and relays repeat
    heavily within a mailbox.  URL hosts and the Received chain are read by
    the C scanner (``_features.url_host`` / ``received_origin``), with the
    Python readers above as the fallback for IPv6 and non-ASCII clauses.

    Parameters
    ----------
    cache : atlas_fast.cache.ClassifierCache
        Any object with ``get_many(ns, keys) -> dict`` and
        ``set_many(ns, mapping)``.
    """

    def __init__(self, cache, memo_size: int = 20_000):
        self.cache = cache
        self.memo_size = memo_size
        self._memo = {"domain": {}, "geographic": {}, "auth": {}}

    def _resolve(self, ns: str, keys, compute) -> dict:
        """The memo of namespace ``ns``, holding (at least) every one of
        ``keys``: the missing ones are read from the cache or computed."""
        memo = self._memo[ns]
        missing = [k for k in keys if k not in memo]
        if missing:
            found = self.cache.get_many(ns, missing)
            new = {k: compute(k) for k in missing if k not in found}
            if new:
                self.cache.set_many(ns, new)
                found.update(new)
            if len(memo) + len(found) > self.memo_size:
                # Full: start again from this chunk's keys, the ones already
                # known included (the caller looks them all up in the memo).
                known = {k: memo[k] for k in keys if k in memo}
                memo.clear()
                memo.update(known)
            memo.update(found)
        return memo

    def enrich_chunk(self, msgs: list) -> list:
        """One :class:`Enrichment` per message."""
        from ._features import enrich_inputs, enrich_rows
        from ._parser import ParsedMessage

        if not all(type(m) is ParsedMessage for m in msgs):
            return self._enrich_chunk_py(msgs)
        url_hosts, ips, auth_keys, hosts = enrich_inputs(msgs, MAX_URL_DOMAINS)
        for i, ip in enumerate(ips):
            if ip is False:  # IPv6 or non-ASCII clause: the Python reader decides
                ips[i] = origin_ip(msgs[i].received)
        domains, countries, auths = self._resolve_all(hosts, ips, auth_keys)
        return enrich_rows(msgs, url_hosts, ips, auth_keys, domains, countries, auths,
                           Enrichment, origin_flags)

    def _resolve_all(self, hosts, ips, auth_keys) -> tuple:
        """Registered domains, countries and auth results of a chunk's
        distinct hosts, IPs and auth headers, through the cache namespaces."""
        domains = self._resolve("domain", hosts, registered_domain)
        countries = self._resolve("geographic", {ip for ip in ips if ip}, country_of)
        auths = self._resolve(
            "auth",
            {k for k in auth_keys if k},
            lambda k: list(parse_auth(*k.split("\x00", 1))),
        )
        return domains, countries, auths

    def _enrich_chunk_py(self, msgs: list) -> list:
        """:meth:`enrich_chunk` for ParsedMessage look-alikes (tests, tools)."""
        hosts = set()
        url_hosts = []
        ips = []
        auth_keys = []
        for msg in msgs:
            if msg.from_domain:
                hosts.add(msg.from_domain)
            seen = []
            for url in msg.urls or ():
                host = url_host(url)
                if host and host not in seen:
                    seen.append(host)
                    if len(seen) >= MAX_URL_DOMAINS:
                        break
            hosts.update(seen)
            url_hosts.append(seen)
            ips.append(origin_ip(msg.received))
            if msg.auth_results or msg.received_spf:
                auth_keys.append((msg.auth_results or "") + "\x00" + (msg.received_spf or ""))
            else:
                auth_keys.append(None)
        domains, countries, auths = self._resolve_all(hosts, ips, auth_keys)
        out = []
        for msg, seen, ip, akey in zip(msgs, url_hosts, ips, auth_keys):
            url_doms = []
            for host in seen:
                dom = domains.get(host) or ("ip-literal" if host[-1].isdigit() else host)
                if dom not in url_doms:
                    url_doms.append(dom)
            spf, dkim, dmarc = auths[akey] if akey else (None, None, None)
            from_dom = domains.get(msg.from_domain) if msg.from_domain else None
            out.append(
                Enrichment(from_dom, ip, countries.get(ip) if ip else None, spf, dkim, dmarc,
                           tuple(url_doms),
                           _flags(msg, from_dom, url_doms, seen) + origin_flags(msg.received, ip))
            )
        return out


_LOCAL_WORD = re.compile(r"[a-z]+", re.I)
_NDOM = ("url_ndom:0", "url_ndom:1", "url_ndom:2", "url_ndom:4", "url_ndom:8", "url_ndom:8+")


def _flags(msg, from_dom, url_doms, hosts=()) -> tuple:
    """Sender-consistency and structure features (the Python twin of
    ``_features.enrich_rows``): cheap, and not tied to one corpus's relays."""
    flags = []
    if not msg.to_addr:
        flags.append("flag:no_to")
    elif msg.to_addr == msg.from_addr:
        flags.append("flag:to_is_from")
    if not msg.date:
        flags.append("flag:no_date")
    if not msg.message_id:
        flags.append("flag:no_message_id")
    if msg.reply_to_addr and msg.from_addr and msg.reply_to_addr != msg.from_addr:
        rdom = msg.reply_to_addr.rpartition("@")[2]
        flags.append("flag:reply_to_other_domain" if from_dom and not rdom.endswith(from_dom)
                     else "flag:reply_to_differs")
    if msg.from_addr:
        local = msg.from_addr.partition("@")[0]
        if sum(c.isdigit() for c in local) >= 3:
            flags.append("flag:from_local_digits")
        for word in _LOCAL_WORD.findall(local)[:4]:
            if len(word) > 1:
                flags.append("from_local:" + word.lower())
    if from_dom and url_doms and from_dom not in url_doms:
        flags.append("flag:urls_elsewhere")
    if from_dom:
        fd = from_dom.encode()
        seen = any(r and fd in r.encode("utf-8", "surrogatepass").lower()
                   for r in msg.received or ())
        flags.append("rcv:from_dom_seen" if seen else "rcv:from_dom_absent")
        mdom = (msg.message_id or "").lower().strip("<>").partition("@")[2]
        flags.append("mid:from_dom" if mdom and (mdom == from_dom or mdom.endswith("." + from_dom))
                     else "mid:other_dom")
    url_flags = set()
    for host in hosts:
        if host[-1].isdigit():
            url_flags.add("url:ip_host")
        else:
            if host.count(".") >= 3:
                url_flags.add("url:deep_host")
            url_flags.add("url_tld:" + host.rpartition(".")[2])
    flags.extend(sorted(url_flags))
    n = len(hosts)
    flags.append(_NDOM[0 if n == 0 else 1 if n == 1 else 2 if n == 2 else 3 if n <= 4
                       else 4 if n <= 8 else 5])
    flags.extend(_date_flags(msg))
    flags.extend(_name_flags(msg))
    flags.extend(_mid_shape(msg.message_id))
    return tuple(flags)


_SKEW = ("date_skew:fut>1h", "date_skew:<1h", "date_skew:<1d", "date_skew:<7d", "date_skew:>7d")
_NAME_WORD = re.compile(r"[a-z]{3,}")


def _iso_seconds(iso: str):
    import datetime

    try:
        if len(iso) != 20 or not iso.endswith("Z"):
            return None
        return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def _date_flags(msg) -> list:
    """The Date header's shape, whether it parses, and its distance from the
    newest Received hop's time (the twin of ``_features._date_flags``)."""
    out = []
    raw = getattr(msg, "date_raw", None)
    if raw is not None:
        if msg.date is None:
            out.append("date:bad")
        shape = []
        for ch in raw:
            c = "9" if "0" <= ch <= "9" else "a" if ch.isascii() and ch.isalpha() or ord(ch) >= 128 else ch
            if c in "9a" and shape and shape[-1] == c:
                continue
            shape.append(c)
            if len(shape) >= 30:
                break
        out.append("date_shape:" + "".join(shape))
    rdate = getattr(msg, "received_date", None)
    if msg.date is not None and rdate is not None:
        a, b = _iso_seconds(msg.date), _iso_seconds(rdate)
        if a is not None and b is not None:
            hours = (b - a) / 3600.0
            out.append(_SKEW[0 if hours < -1 else 1 if hours < 1 else 2 if hours < 24
                             else 3 if hours < 168 else 4])
    return out


def _name_flags(msg) -> list:
    """The display name against the address (twin of ``_features._name_flags``)."""
    name = msg.from_name
    if not name:
        return []
    nm = name.lower()
    addr = msg.from_addr or ""
    if "@" in nm:
        return ["name:is_addr" if nm.strip("'\" ") == addr else "name:has_at"]
    words = _NAME_WORD.findall(nm)
    if words and not any(w in addr for w in words):
        return ["name:mismatch"]
    return []


def _mid_shape(mid) -> list:
    """The Message-ID's local part as the program that wrote it shapes it
    (the twin of ``_features._mid_shape``): each run of ASCII letters and
    digits becomes its kind (``d`` digits, ``x`` hex, ``w`` other) and
    length (``+`` from 17), other bytes stay (non-ASCII ones as ``?``), and
    ``!`` ends a shape without ``@``."""
    if not isinstance(mid, str):
        return []
    raw = mid.encode("utf-8", "surrogatepass")
    out = []
    k, n = (1 if raw[:1] == b"<" else 0), len(raw)
    size = 0  # characters, capped at 46 as the C buffer is
    while k < n and raw[k] != 64 and size < 46:
        c = raw[k]
        if 48 <= c <= 57 or 97 <= (c | 32) <= 122:
            t = k
            while k < n and (48 <= raw[k] <= 57 or 97 <= (raw[k] | 32) <= 122):
                k += 1
            run = raw[t:k].lower()
            kind = "d" if run.isdigit() else "x" if all(ch in b"0123456789abcdef" for ch in run) else "w"
            part = kind + ("+" if k - t >= 17 else str(k - t))
        else:
            part = chr(c) if c < 128 else "?"
            k += 1
        out.append(part)
        size += len(part)
    if k >= n or raw[k] != 64:
        out.append("!")
    return ["mid_shape:" + "".join(out)]
