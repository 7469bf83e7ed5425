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
