import pytest

from atlas_fast.enrich import origin_ip, parse_auth, registered_domain, url_host


@pytest.mark.parametrize(
    "domain, expected",
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("www.paypal.com-secure.ru", "com-secure.ru"),
        ("Example.COM", "example.com"),
        ("co.uk", None),
        ("192.168.1.1", None),
        (None, None),
        ("", None),
    ],
)
def test_registered_domain(domain, expected):
    assert registered_domain(domain) == expected


@pytest.mark.parametrize(
    "received, expected",
    [
        (["from mx.example.org (mx.example.org [203.0.113.9]) by a.b (Postfix)"], None),  # TEST-NET
        (
            [
                "from relay (relay [10.0.0.2]) by mx.local",
                "from client.example.net (client [81.2.69.160])\r\n\tby relay.example.net; Mon",
            ],
            "81.2.69.160",
        ),
        (["from localhost (localhost [127.0.0.1]) by phobos"], None),
        (["from x ([192.168.0.5] helo=x) by y", "from y (y [8.8.8.8]) by z"], "8.8.8.8"),
        (["by mx.example.org with SMTP id 1.2.3.4"], None),
        ([], None),
        (None, None),
    ],
)
def test_origin_ip(received, expected):
    assert origin_ip(received) == expected


@pytest.mark.parametrize(
    "auth, spf_header, expected",
    [
        ("mx.example.org; spf=pass smtp.mailfrom=a.org; dkim=fail; dkim=pass; dmarc=pass", None,
         ("pass", "pass", "pass")),
        (None, "softfail (domain of transitioning x does not designate)", ("softfail", None, None)),
        ("mx; dkim=neutral (no sig)", "pass (google.com: domain)", ("pass", "neutral", None)),
        (None, None, (None, None, None)),
        ("mx; spf=bogus", None, (None, None, None)),
    ],
)
def test_parse_auth(auth, spf_header, expected):
    assert parse_auth(auth, spf_header) == expected


@pytest.mark.parametrize(
    "url, host",
    [("http://user@Www.Example.com:8080/x", "www.example.com"), ("www.foo.biz/path", "www.foo.biz")],
)
def test_url_host(url, host):
    assert url_host(url) == host


def test_c_received_and_url_readers_match_python_on_corpus():
    """The C Received/URL readers agree with the Python ones on every message."""
    from atlas_fast._features import received_origin
    from atlas_fast._features import url_host as c_url_host
    from atlas_fast.evaluate import read_messages

    from conftest import MANIFEST_COUNTS, corpus_file

    msgs = read_messages([corpus_file(n) for n in MANIFEST_COUNTS])
    for m in msgs:
        got = received_origin(m.received)
        if got is not False:
            assert got == origin_ip(m.received), m.received
        for u in m.urls:
            assert c_url_host(u) == url_host(u), u


@pytest.mark.parametrize("seed", [20261129])
def test_c_ipv4_public_matches_ipaddress(seed):
    import ipaddress
    import random

    from atlas_fast._features import received_origin

    print("seed", seed)
    rnd = random.Random(seed)
    firsts = [0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255]
    for _ in range(20000):
        o = [rnd.choice(firsts) if rnd.random() < 0.5 else rnd.randrange(256)]
        o += [rnd.choice([0, 2, 18, 19, 51, 64, 100, 113, 168, 170, 254, 255])
              if rnd.random() < 0.3 else rnd.randrange(256) for _ in range(3)]
        ip = ".".join(map(str, o))
        a = ipaddress.ip_address(ip)
        want = ip if a.is_global and not a.is_multicast else None
        assert received_origin([f"from h (h [{ip}]) by mx"]) == want, ip


@pytest.mark.parametrize(
    "chain",
    [
        # A public IPv6 origin, written long and in upper case: canonical form.
        ["from mx (mx [IPv6:2A00:1450:4864:0020:0000:0000:0000:0001]) by relay"],
        # Loopback IPv6 in the first hop: the next hop up has the origin.
        ["from a (a [81.2.69.160]) by b; Mon, 1 Jan 2024", "from x (x [::1]) by a"],
        # A private IPv4 and a public IPv6 in one clause: IPv4 is read first,
        # then the IPv6 literals.
        ["from h (h [10.0.0.1] [2001:4860:4860::8888]) by mx"],
        # A public IPv4 after an IPv6 literal in the same clause wins.
        ["from h ([2001:4860:4860::8888] 81.2.69.160) by mx"],
        # Documentation, link-local, multicast and IPv4-mapped literals.
        ["from h ([2001:db8::1]) by mx", "from i ([fe80::1]) by h"],
        ["from h ([ff02::1]) by mx", "from i ([::ffff:81.2.69.160]) by h"],
        # A bracket with a colon that is no address, then nothing.
        ["from h (h [not:an address]) by mx"],
        # The IPv6 literal after "by" is not the sender's.
        ["from h (h [10.1.1.1]) by mx [2001:4860:4860::8888]; Tue"],
        # Whitespace runs and folding before "by".
        ["from h\r\n\t([2001:4860:4860::8844])\r\n  by mx"],
    ],
)
def test_c_received_reader_ipv6_matches_python(chain):
    """IPv6 literals are read by the C scanner (no whole-chain Python
    fallback) with the Python reader's answers."""
    from atlas_fast._features import received_origin

    got = received_origin(chain)
    assert got is not False
    assert got == origin_ip(chain)


def test_compiled_enrich_chunk_matches_python_path():
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.enrich import Enricher
    from atlas_fast.evaluate import read_messages

    from conftest import MANIFEST_COUNTS, corpus_file

    msgs = read_messages([corpus_file(n) for n in MANIFEST_COUNTS])
    fast = Enricher(ClassifierCache(None, enabled=False))
    slow = Enricher(ClassifierCache(None, enabled=False))
    for i in range(0, len(msgs), 700):
        chunk = msgs[i : i + 700]
        assert fast.enrich_chunk(chunk) == slow._enrich_chunk_py(chunk)


def test_suffix_list_reloads_from_its_expanded_rules(tmp_path, monkeypatch):
    # The first load parses the bundled list and writes its expanded rules;
    # the second builds from that file alone, and both answer alike.
    from publicsuffixlist import PublicSuffixList

    from atlas_fast.enrich import _load_suffix_list

    monkeypatch.setenv("ATLAS_RULES_CACHE_DIR", str(tmp_path))
    first = _load_suffix_list()
    (written,) = tmp_path.glob("psl-*.txt")
    again = _load_suffix_list()
    reference = PublicSuffixList()
    domains = ["www.example.co.uk", "a.b.city.kawasaki.jp", "x.y.kawasaki.jp", "foo.np",
               "a.b.foo.np", "xn--85x722f.xn--55qx5d.cn", "食狮.公司.cn", "s3.amazonaws.com",
               "bucket.s3.amazonaws.com", "user.github.io", "example.unknowntld", "com"]
    for d in domains:
        assert first.privatesuffix(d) == again.privatesuffix(d) == reference.privatesuffix(d), d
    # A damaged or foreign file means a re-parse, never a wrong answer.
    for junk in (b"\xff\xfe not utf-8", b"garbage", written.read_bytes()[:5000]):
        written.write_bytes(junk)
        assert _load_suffix_list().privatesuffix("www.example.co.uk") == "example.co.uk"


@pytest.mark.parametrize("seed", [11, 12])
def test_contains_ci_matches_python(seed):
    # Haystacks longer than the C search's 4 KiB blocks, with the needle
    # placed across block edges, in mixed case, next to non-ASCII text.
    import random

    from atlas_fast._features import contains_ci

    rng = random.Random(seed)
    for _ in range(400):
        needle = "".join(rng.choice("abcxyz.-0") for _ in range(rng.randint(1, 12)))
        hay = "".join(rng.choice("abcxyzABCXYZ.-0 \u00e9") for _ in range(rng.randint(0, 9000)))
        if rng.random() < 0.5 and len(hay) > len(needle):
            at = rng.choice([4096 - len(needle) // 2, 4095, 8191 - len(needle) + 1,
                             rng.randrange(len(hay) - len(needle))])
            at = max(0, min(at, len(hay) - len(needle)))
            hay = hay[:at] + needle.upper() + hay[at + len(needle):]
        expected = needle in "".join(c.lower() if c.isascii() else c for c in hay)
        assert contains_ci(hay, needle) == expected, (seed, needle, len(hay))
    # Short haystacks: the 16-offset loop's tail and edges.
    for _ in range(3000):
        needle = "".join(rng.choice("ab.") for _ in range(rng.randint(1, 5)))
        hay = "".join(rng.choice("abAB. \u00e9") for _ in range(rng.randint(0, 40)))
        expected = needle in "".join(c.lower() if c.isascii() else c for c in hay)
        assert contains_ci(hay, needle) == expected, (seed, needle, hay)


# Field values for the hostile-message test: non-ASCII letters whose lower()
# grows or turns ASCII (İ, K), non-ASCII digits, '@' in names, odd ids,
# dates and Received clauses, IPs inside longer numbers, IPv6, spaces.
# Left out: two known differences of the twins that parsed messages never
# show (the C date reader does not check the ISO separators; re's [a-z]
# with re.I takes the Kelvin sign in a local part as a letter).
_HOSTILE = {
    "addr": [None, "", "a@b.com", "news123@ex.com", "NEWS123@Ex.com", "\u00f1and\u00fa@x.es",
             "x\u0661\u0662\u0663@y.com", "info.news-letter@mail.example.co.uk", "@", "abc", "12345",
             "a.b@c@d", "r@sub.example.com", "R@EXAMPLE.COM", "\u00fc@ex\u00e4mple.com",
             "x@example.com", "x@y.c\u00f6m"],
    "name": [None, "", "PayPal Security", "paypal@evil.com", "'a@b.com'", "\u0130stanbul Bank",
             "\u212aelvin", "\u00dcnicode Name", "ab", "The Example Team", "x@y", "NEWS Team",
             "\uff21\uff22\uff23", "Ex Ample", "abc\u0130def", "Stra\u00dfe", " 'x@example.com' ",
             "a-b-c d_e_f", "x\x00yzz"],
    "domain": [None, "", "example.com", "b.com", "ex.com", "mail.example.co.uk", "ex\u00e4mple.com",
               "EXAMPLE.COM", "com", "1.2.3.4", "c@d"],
    "mid": [None, "", "<abc@Mail.EXAMPLE.com>", "<x@ex\u00e4mple.com>", "<<@>>", "no-at",
            "<a@b@example.com>", "<x@example.com.evil>", "<x@notexample.com>", "<x@>",
            "<\u0130@example.com>", "<x@sub.example.com>>"],
    "date": [None, "", "2002-08-22T14:00:00Z", "1969-12-31T23:59:59Z", "2002-08-22T14:00:00z",
             "2002-08-2aT14:00:00Z", "2002-08-15T00:00:00Z", "20020822T140000Z"],
    "date_raw": [None, "", "Thu, 22 Aug 2002 14:00:00 +0000", "Donnerstag, 22. \u00c4ug 2002", "  ",
                 "1234567890" * 5, "\u65e5\u672c 2002"],
    "received": ["from mail.example.com (mail.example.com [8.8.8.8]) by mx.example.org; Thu",
                 "from unknown (HELO x) ([1.2.3.4]) by mx", "from [IPv6:2001:db8::1] by x",
                 "from [IPv6:2607:F8B0::1] by x", "from host\u00f1 (1.1.1.1) by z", "by x; date",
                 "from adsl-1-2-3-4.pool.example (x [9.9.9.9]) by y", "from a (b [11.2.3.45]) by c",
                 "from a.b (HELO example.com) (9.9.9.9) by c", "", "from Example.COM (c [8.8.4.4]) by m",
                 "from  x\t(unknown\n [8.8.8.8])\n by y", "from x (8.8.8.8) by 1.1.1.1",
                 "from h (UNKNOWN [5.5.5.5]) by y", "from\u00a0x (8.8.8.8) by y", "via 8.8.8.8 from x"],
    "urls": ["http://Www.Example.COM/x", "http://1.2.3.4/", "http://a.b.c.d.example.org/",
             "http://\u00fcn\u00ef.com/", "www.foo.biz", "http://[::1]/", "http://host./",
             "https://user:pw@paypal.com.evil.ru/login", "http://x.co.uk/", "http://\u03a9.gr/",
             "http://a.b.\u0131o/", "http://1.2.3.4.5/", "http://aa/"],
}


@pytest.mark.parametrize("seed", [20261129])
def test_compiled_enrich_chunk_matches_python_path_on_hostile_messages(seed):
    """Non-ASCII, mixed-case and malformed fields: the compiled flags (with
    their ASCII-only C paths) agree with enrich._flags / origin_flags."""
    import random

    from atlas_fast._parser import ParsedMessage
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.enrich import Enricher

    print("seed", seed)
    rng = random.Random(seed)
    h = _HOSTILE
    msgs = []
    for _ in range(6000):
        m = ParsedMessage()
        m.from_addr = rng.choice(h["addr"])
        m.from_domain = (m.from_addr.rpartition("@")[2] or None
                         if m.from_addr and rng.random() < 0.7 else rng.choice(h["domain"]))
        m.from_name = rng.choice(h["name"])
        m.to_addr = rng.choice(h["addr"])
        m.reply_to_addr = rng.choice(h["addr"])
        m.message_id = rng.choice(h["mid"])
        m.date = rng.choice(h["date"])
        m.date_raw = rng.choice(h["date_raw"])
        m.received_date = rng.choice(h["date"])
        m.received = [rng.choice(h["received"]) for _ in range(rng.randrange(5))]
        m.urls = [rng.choice(h["urls"]) for _ in range(rng.choice([0, 1, 2, 5, 20]))]
        msgs.append(m)
    fast = Enricher(ClassifierCache(None, enabled=False))
    for i in range(0, len(msgs), 500):
        chunk = msgs[i : i + 500]
        assert fast.enrich_chunk(chunk) == fast._enrich_chunk_py(chunk)


def test_memo_is_bounded():
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.enrich import Enricher

    enricher = Enricher(ClassifierCache(None, enabled=False), memo_size=1_000)
    for start in range(0, 5_000, 400):
        keys = {f"host{i}.example{i % 7}.co.uk" for i in range(start, start + 400)}
        got = enricher._resolve("domain", keys, registered_domain)
        assert all(got[k] == registered_domain(k) for k in keys)
        assert len(enricher._memo["domain"]) <= 1_000
    assert Enricher(None).memo_size <= 20_000  # the default stays a few MB a worker


def test_full_memo_keeps_the_chunks_known_keys():
    # A chunk mixes hosts the memo already holds with new ones; when the new
    # ones overflow it, the known ones must still be answered (they once
    # came back as None: the URL host itself became its "registered domain").
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.enrich import Enricher

    enricher = Enricher(ClassifierCache(None, enabled=False), memo_size=1_000)
    seen: list = []
    for start in range(0, 5_000, 300):
        fresh = [f"mail.host{i}.example.co.uk" for i in range(start, start + 300)]
        keys = set(fresh) | set(seen[-200:])  # 200 known, 300 new
        got = enricher._resolve("domain", keys, registered_domain)
        assert all(got.get(k) == registered_domain(k) for k in keys)
        assert len(enricher._memo["domain"]) <= 1_000
        seen += fresh


@pytest.mark.parametrize("mid, shape", [
    ("<200208221727.SAA05985@webnote.net>", "d12.w8"),  # sendmail
    ("<9a63c01c249e0$e5a9d610$1106fea9@freeyankeedom.com>", "x13$x8$x8"),  # Outlook Express
    ("<000023b8700d$00003a16$00004696@missouri.co.jp>", "x12$x8$d8"),
    ("<413-220028422154219900@freesource>", "d3-d+"),  # runs of 17 or more: '+'
    ("<3D64E94E.8060301@ee.ed.ac.uk>", "x8.d7"),
    ("<E17hrT0-0004gj-00@rhenium.btinternet.com>", "w7-w6-d2"),  # Exim
    ("no-at", "w2-w2!"),
    ("<\u00e9t\u00e9@x>", "??w1??"),  # each non-ASCII byte is '?'
    ("<>", ">!"),
])
def test_message_id_shape(mid, shape):
    from atlas_fast.cache import ClassifierCache
    from atlas_fast.enrich import Enricher, _mid_shape
    from atlas_fast._parser import ParsedMessage

    assert _mid_shape(mid) == ["mid_shape:" + shape]
    m = ParsedMessage()
    m.message_id = mid
    m.received = []
    flags = Enricher(ClassifierCache(None, enabled=False)).enrich_chunk([m])[0].flags
    assert [f for f in flags if f.startswith("mid_shape:")] == ["mid_shape:" + shape]
    assert _mid_shape(None) == []
