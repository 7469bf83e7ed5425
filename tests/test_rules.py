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


@pytest.mark.parametrize("engine", ["hyperscan", "re2"])
def test_user_rule_hits(tmp_path, engine):
    path = tmp_path / "mine.toml"
    path.write_text(
        "[[rule]]\nid='MY_WORD'\ncategory='marketing'\nconfidence=0.95\n"
        "fields=['subject']\npatterns=['zorblax\\s+deal']\n"
    )
    rs = RuleSet(load_rules([path], builtin=False), engine=engine)

    class M:
        subject = "Your ZORBLAX  deal"
        from_name = from_addr = to_addr = reply_to_addr = return_path = None
        x_mailer = content_type = None
        text = "zorblax deal in the body does not count"
        urls = attachments = ()

    assert [rs.rules[i].id for i in rs.scan_fields(render_fields(M))] == ["MY_WORD"]
    M.subject = "nothing"
    assert rs.scan_fields(render_fields(M)) == []


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
