import functools

import pytest

from atlas_fast.errors import RuleError
from atlas_fast.rules import CATEGORIES, RuleSet, builtin_rule_files, load_rules, render_fields

from conftest import corpus_file

CORPUS_FILES = [
    "spamassassin-train-ham.mbox.gz",
    "spamassassin-test-ham.mbox.gz",
    "csdmc2010-train-ham.mbox.gz",
    "spamassassin-train-spam.mbox.gz",
    "spamassassin-test-spam.mbox.gz",
    "csdmc2010-train-spam.mbox.gz",
]


def _message(**fields):
    """A ParsedMessage look-alike with the rule fields render_fields reads."""
    from types import SimpleNamespace

    base = dict(subject=None, from_name=None, from_addr=None, to_addr=None, reply_to_addr=None,
                return_path=None, x_mailer=None, content_type=None, text=None, urls=(),
                attachments=())
    base.update(fields)
    return SimpleNamespace(**base)


def _user_rule(tmp_path, engine, rule_id, fields, pattern):
    """A RuleSet of one user rule file holding one rule."""
    path = tmp_path / "mine.toml"
    path.write_text(f"[[rule]]\nid={rule_id!r}\ncategory='phishing'\nconfidence=0.95\n"
                    f"fields={fields!r}\npatterns=['{pattern}']\n")  # TOML literal string
    return RuleSet(load_rules([path], builtin=False), engine=engine)


@functools.lru_cache(maxsize=None)
def _fields(name):
    from atlas_fast.evaluate import read_messages

    return [render_fields(m) for m in read_messages([corpus_file(name)])]


def test_builtin_rules_cover_every_category():
    rules = load_rules()
    cats = {r.category for r in rules if not r.hint}
    assert cats == set(CATEGORIES)
    assert len(builtin_rule_files()) >= 10


@pytest.mark.parametrize(
    "body, error",
    [
        ("[[rule]]\nid='X1'\ncategory='phishing'\nconfidence=0.9\nfields=['body']\npatterns=['(a']\n",
         r"x\.toml: rule X1: pattern '\(a' does not compile"),
        ("[[rule]]\nid='X2'\ncategory='phishing'\nconfidence=0.9\nfields=['body']\npatterns=['(a)\\1']\n",
         "rule X2: .*backtracking"),
        ("[[rule]]\nid='X3'\ncategory='nope'\nconfidence=0.9\nfields=['body']\npatterns=['a']\n",
         "rule X3: category 'nope'"),
        ("[[rule]]\nid='X4'\ncategory='phishing'\nconfidence=2\nfields=['body']\npatterns=['a']\n",
         "rule X4: confidence"),
        ("[[rule]]\nid='X5'\ncategory='phishing'\nconfidence=0.9\nfields=['bodyx']\npatterns=['a']\n",
         "rule X5: fields"),
        ("[[rule]]\nid='X6'\ncategory='phishing'\nconfidence=0.9\nfields=['body']\npatterns=['a*']\n",
         "rule X6: .*matches empty"),
        ("[[rule]\n", "not a valid TOML"),
    ],
)
def test_bad_user_rules(tmp_path, body, error):
    path = tmp_path / "x.toml"
    path.write_text(body)
    with pytest.raises(RuleError, match=error):
        RuleSet(load_rules([path]), engine="re2")


# \Q quotes to \E or to the end: RE2 accepts 'a\Qb' alone, but the RE2
# engine joins patterns as '(?i:a\Qb)|...', where it swallows the ')': a raw
# re2.error once escaped (tools/fuzz.py found it).
@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
@pytest.mark.parametrize("pattern", ["free\\Q(", "\\Qfree.money\\E now"])
def test_quote_meta_is_a_rule_error_in_both_engines(tmp_path, engine, pattern):
    path = tmp_path / "q.toml"
    path.write_text("[[rule]]\nid='Q1'\ncategory='marketing'\nconfidence=0.9\n"
                    f"fields=['body', 'urls']\npatterns=['{pattern}']\n")
    with pytest.raises(RuleError, match=r"q\.toml: rule Q1: pattern .*\\Q\.\.\.\\E quoting is "
                                        r"not supported"):
        RuleSet(load_rules([path], builtin=False), engine=engine)
    # An escaped backslash before a Q is a literal, not a quote.
    path.write_text("[[rule]]\nid='Q2'\ncategory='marketing'\nconfidence=0.9\n"
                    "fields=['body']\npatterns=['back\\\\Qslash']\n")
    rs = RuleSet(load_rules([path], builtin=False), engine=engine)
    M = _message(subject="s", text="a back\\Qslash here")
    assert [rs.rules[i].id for i in rs.scan_fields(render_fields(M))] == ["Q2"]


@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
def test_user_rule_hits(tmp_path, engine):
    rs = _user_rule(tmp_path, engine, "MY_WORD", ["subject"], r"zorblax\s+deal")
    M = _message(subject="Your ZORBLAX  deal", text="zorblax deal in the body does not count")

    assert [rs.rules[i].id for i in rs.scan_fields(render_fields(M))] == ["MY_WORD"]
    M.subject = "nothing"
    assert rs.scan_fields(render_fields(M)) == []


def test_pattern_hyperscan_rejects_names_its_rule(tmp_path):
    # RE2 accepts it; Hyperscan (no UTF-8 mode) says it can never match.  The
    # databases compile side by side on threads; the error still names the
    # rule and its file, and "auto" falls back to RE2.
    path = tmp_path / "x.toml"
    path.write_text(
        "[[rule]]\nid='OK1'\ncategory='phishing'\nconfidence=0.9\nfields=['subject']\n"
        "patterns=['fine']\n"
        "[[rule]]\nid='X9'\ncategory='phishing'\nconfidence=0.9\nfields=['body']\n"
        "patterns=['\\p{Greek}x']\n")
    rules = load_rules([path], builtin=False)
    with pytest.raises(RuleError, match=r"x\.toml: rule X9: pattern .* not accepted by Hyperscan"):
        RuleSet(rules, engine="hyperscan")
    assert RuleSet(rules, engine="auto").engine == "re2"


def test_compiled_databases_are_stored_and_reloaded(tmp_path, monkeypatch):
    from atlas_fast import rules as R

    monkeypatch.setenv("ATLAS_RULES_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(R, "_HS_MEMO", {})
    first = RuleSet(load_rules(), engine="hyperscan")
    stored = sorted(p.name for p in tmp_path.glob("*.hsdb"))
    # Two databases (exact and chunk) per field that has rules, for the
    # rules and for the category hints.
    n_fields = len(first._main.fields) + len(first._hint.fields)
    assert len(stored) == 2 * n_fields
    monkeypatch.setattr(R, "_HS_MEMO", {})

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again instead of loaded")

    monkeypatch.setattr(R._hyperscan(), "Database", no_compiling)
    again = RuleSet(load_rules(), engine="hyperscan")
    assert sorted(p.name for p in tmp_path.glob("*.hsdb")) == stored
    msgs = [_message(subject="URGENT: verify your account now", text="Dear beneficiary, the next of kin"),
            _message(subject="lunch?", text="see you at noon")]
    assert [again.scan_fields(render_fields(m)) for m in msgs] == [
        first.scan_fields(render_fields(m)) for m in msgs]
    assert first.scan_fields(render_fields(msgs[0]))


@pytest.mark.slow
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_engines_identical_on_corpus(name):
    rules = load_rules()
    hs, r2 = RuleSet(rules, engine="hyperscan"), RuleSet(rules, engine="re2")
    fields = _fields(name)
    expected = [r2.scan_fields(f) for f in fields]
    assert [hs.scan_fields(f) for f in fields] == expected
    # The chunk path (one concatenated scan per field, candidates re-checked)
    # gives the same hits as per-message scans, in both engines.
    from atlas_fast.evaluate import read_messages

    msgs = read_messages([corpus_file(name)])
    for rs in (hs, r2):
        chunked = []
        for i in range(0, len(msgs), 700):
            chunked.extend(rs.scan_chunk(msgs[i : i + 700]))
        assert chunked == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CORPUS_FILES if "-ham" in n])
def test_builtin_rules_hit_no_ham(name):
    rs = RuleSet(load_rules(), engine="hyperscan")
    hits = {}
    for i, f in enumerate(_fields(name)):
        for j in rs.scan_fields(f):
            hits.setdefault(rs.rules[j].id, []).append(i)
    assert hits == {}, f"built-in rules hitting ham in {name} (rule -> message numbers): {hits}"


def test_render_chunk_matches_render_fields():
    from atlas_fast.evaluate import read_messages
    from atlas_fast.rules import fields_of, render_chunk

    msgs = read_messages([corpus_file("spamassassin-test-spam.mbox.gz")])
    rendered = render_chunk(msgs)
    assert [fields_of(rendered, i) for i in range(len(msgs))] == [render_fields(m) for m in msgs]


def test_render_chunk_grows_past_its_estimate():
    # The body field's room is reserved from the texts' lengths in code
    # points; multi-byte text takes more bytes than that and must grow the
    # buffer mid-chunk without losing or moving anything.
    from atlas_fast.rules import MAX_BODY_BYTES, fields_of, render_chunk

    msgs = []
    for i in range(40):
        m = _message()
        m.text = ("\u6f22\u5b57 " * 900 if i % 2 else "plain words " * 300) + str(i)
        msgs.append(m)
    rendered = render_chunk(msgs)
    assert len(rendered[2][0]) > sum(min(len(m.text), MAX_BODY_BYTES) + 1 for m in msgs) + 4096
    assert [fields_of(rendered, i) for i in range(len(msgs))] == [render_fields(m) for m in msgs]


@pytest.mark.parametrize(
    "pattern, squeezed",
    [
        (r"next\s+of\s+kin", "next of kin"),
        (r"us\s*\$", r"us ?\$"),
        (r"x\s?y", "x ?y"),
        (r"a\s+?b", "a b"),
        (r"a\s{1,3}b", "a b"),
        (r"a\s{0,2}b", "a ?b"),
        (r"a\s\d", r"a \d"),
        (r"[a-z\s]*million", r"[a-z\s]*million"),  # classes keep \s
        (r"[\]\s]+x\s+", r"[\]\s]+x "),
        (r"[^\s]+\s+y", r"[^\s]+ y"),
        (r"\\s+", r"\\s+"),  # an escaped backslash, then 's+'
        (r"\S+\s+", r"\S+ "),
    ],
)
def test_squeeze_pattern(pattern, squeezed):
    from atlas_fast.rules import squeeze_pattern

    assert squeeze_pattern(pattern) == squeezed


def test_squeezed_text_matches_native_render():
    # Random whitespace, multi-byte sequences and caps that fall inside them:
    # the C renderer and rules.squeeze_text give the same bytes.
    import random

    from atlas_fast._features import render_chunk
    from atlas_fast.rules import squeeze_text

    seed = 2026
    rng = random.Random(seed)
    alphabet = [" ", "\n", "\t", "\r", "\x0b", "\x0c", "a", "Z", "\u00e9", "\u20ac", "\U0001f600"]
    M = _message()
    for _ in range(3000):
        M.text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        cap = rng.randint(0, 30)
        buf, off = render_chunk([M], cap)[2]
        assert buf[off[0] : off[1] - 1] == squeeze_text(M.text.encode(), cap), (seed, M.text, cap)


def test_squeezed_prose_matches_native_render():
    # Long texts of words and single spaces take the 16-byte block path of
    # the C squeeze; runs, neighbours of the whitespace bytes (\x08, \x0e,
    # \x1f, '!') and caps anywhere in a block must give the same bytes.
    import random

    from atlas_fast._features import render_chunk
    from atlas_fast.rules import squeeze_text

    seed = 2027
    rng = random.Random(seed)
    words = ["a", "Zebra", "caf\u00e9", "\u20ac5", "x\x08y", "\x0e", "\x1f!", "\U0001f600"]
    spaces = [" "] * 12 + ["\n", "\t", "\r", "\x0b", "\x0c", "  ", " \n\n", "\r\n"]
    M = _message()
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(0, 60)):
            parts.append(rng.choice(words))
            parts.append(rng.choice(spaces))
        M.text = "".join(parts)[rng.randint(0, 3):]
        cap = rng.choice([None, rng.randint(0, 400)])
        buf, off = render_chunk([M], cap if cap is not None else 1 << 40)[2]
        assert buf[off[0] : off[1] - 1] == squeeze_text(M.text.encode(), cap), (seed, M.text, cap)


@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
def test_body_rules_see_squeezed_whitespace(tmp_path, engine):
    # A phrase broken over lines, tabs and runs of spaces still matches
    # '\s+' / '\s*' (rewritten to spaces), and '.{0,10}' counts squeezed text.
    rs = _user_rule(tmp_path, engine, "MY_PHRASE", ["body", "subject"],
                    r"verify\s+your\s*account.{0,10}now")
    M = _message(subject="hello", text="Please VERIFY\r\n\r\n   your\taccount\n\n\n\n\n\n\n"
                 "\n\n\n\n\n\n\n\n\n today   now.")

    assert render_fields(M)[2] == b"Please VERIFY your account today now."
    assert [rs.rules[i].id for i in rs.scan_fields(render_fields(M))] == ["MY_PHRASE"]
    M.text = "verify your account\n\n but only later, now"  # '.{0,10}' still bounds the gap
    assert rs.scan_fields(render_fields(M)) == []
    M.text = "verify-your account now"
    assert rs.scan_fields(render_fields(M)) == []


@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
def test_hint_category_at_matches_fields(engine):
    from atlas_fast.evaluate import read_messages
    from atlas_fast.rules import fields_of, render_chunk

    rs = RuleSet(load_rules(), engine=engine)
    msgs = read_messages([corpus_file("spamassassin-test-spam.mbox.gz")])[:200]
    rendered = render_chunk(msgs)
    got = [rs.hint_category_at(rendered, i) for i in range(len(msgs))]
    assert got == [rs.hint_category(fields_of(rendered, i)) for i in range(len(msgs))]
    assert len(set(got)) > 3  # several categories, not all None
    # Many messages at once (as the classifier asks), in any order.
    order = list(range(len(msgs) - 1, -1, -2))
    assert rs.hint_categories_at(rendered, order) == [got[i] for i in order]
    assert rs.hint_categories_at(rendered, []) == []


def test_exits_index_rules_not_hints():
    # Hits are RuleSet.rules positions; load_rules() also holds the category
    # hints, so its positions differ past the first hint (tools/nested_cv.py
    # once looked rules up there and lost most rule exits).
    from atlas_fast._parser import parse_message
    from atlas_fast.classify import Classifier

    loaded = load_rules()
    rs = RuleSet(loaded)
    assert rs.hints and [r.id for r in rs.rules] != [r.id for r in loaded]
    msgs = [parse_message(b"Subject: offer\n\nTo be removed from our mailing list, reply.\n"),
            parse_message(b"Subject: lunch\n\nSee you at noon.\n")]
    hits = rs.scan_chunk(msgs)
    exits = rs.exits(hits)
    assert rs.rules[exits[0]].id == "MKT_REMOVAL_OFFER"
    assert exits[1] == -1
    verdicts = Classifier(cache=False).classify_chunk(msgs)
    assert verdicts[0].decided_by == "rule" and verdicts[0].rule_id == "MKT_REMOVAL_OFFER"
    assert verdicts[1].decided_by == "model"


@pytest.mark.parametrize(
    "pattern, reach",
    [
        (r"next of kin", (False, False)),
        (r"a.{0,30}b", (False, False)),  # no DOTALL: '.' is no newline
        (r"[^\n]{0,80}x", (False, False)),
        (r"\bx\B\d\w\S[^\s]", (False, False)),
        (r"^ ?adv", (False, True)),
        (r"x$", (False, True)),
        (r"one[-\s]time", (True, False)),
        (r"a\sb", (True, False)),
        (r"\nhttp", (True, False)),
        (r"[^>@]*@", (True, False)),
        (r"\D|\W", (True, False)),
        (r"(?s)a.b", None),
        (r"(?s:a.b)", None),
        (r"(?m)^a", None),
        (r"a\vb", None),  # \v is a class with the newline in Hyperscan
        (r"[[:space:]]", None),
        (r"\Aa", None),
        (r"\012", None),
    ],
)
def test_pattern_reach(pattern, reach):
    from atlas_fast.rules import _pattern_reach

    assert _pattern_reach(pattern) == reach


def test_chunk_standins_are_builtin_patterns():
    # A stand-in whose pattern was edited is dead weight: keep the table
    # in step with the rule files.
    from atlas_fast.rules import SQUEEZED_FIELDS, _CHUNK_STANDINS, squeeze_pattern

    exprs = {(squeeze_pattern(p) if f in SQUEEZED_FIELDS else p).encode()
             for r in load_rules() for f in r.fields for p in r.patterns}
    assert set(_CHUNK_STANDINS) <= exprs


@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
def test_chunk_path_finds_standin_and_nonlocal_hits(engine):
    # Hits of patterns the chunk database replaces by a stand-in, or that
    # can match a newline, come from re-scans; local hits straight from the
    # chunk scan.  Every message in every position of a chunk.
    samples = [
        _message(attachments=[("invoice.exe", "application/octet-stream")]),
        _message(urls=["http://10.1.2.3/x/login.php", "http://example.com/"]),
        _message(urls=["http://example.com/", "http://10.1.2.3:8080/webscr?cmd=1"]),
        _message(urls=["https://www.secure-paypal-x.com/a"]),
        _message(urls=["https://a.b.login.paypal.evil.com/a"]),
        _message(text="Buy V-I-A-G-R-A now", subject="v.1.a.g.r.a"),
        _message(text="plain text", subject="hello"),
        _message(text="we are sending a one-time mailing to you"),
        _message(from_name="PayPal Security Team", from_addr="x@yahoo.com"),
        _message(subject="ADV: next of kin", text="i got your contact from a friend"),
    ]
    rs = RuleSet(load_rules(), engine=engine)
    assert rs.engine == engine
    for k in range(len(samples)):
        order = samples[k:] + samples[:k]
        expected = [rs.scan_fields(render_fields(m)) for m in order]
        assert all(expected[i] for i in range(len(order)) if order[i] is not samples[6])
        for m in (1, 2, len(order)):
            assert rs.scan_chunk(order[-m:]) == expected[-m:]
