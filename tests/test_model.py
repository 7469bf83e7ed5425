import numpy as np
import pytest

from atlas_fast._features import FEATURE_VERSION, Featurizer, feature_bucket
from atlas_fast.errors import ModelError
from atlas_fast.evaluate import round_bf16
from atlas_fast.model import (
    FORMAT_VERSION, ModelHeader, bf16_bits, decode_model, load_model, save_model,
)


def _header(**kw):
    base = dict(format_version=FORMAT_VERSION, feature_version=FEATURE_VERSION, nbits=10, nnz=0,
                bias=-0.5, calib_a=1.0, calib_b=0.0, threshold=0.5, header_allow=["x-mailer"],
                weights_sha256="")
    base.update(kw)
    return ModelHeader(**base)


def _as_float(bits) -> np.ndarray:
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


def test_roundtrip(tmp_path):
    w = np.zeros(1 << 10, np.float32)
    w[[3, 700]] = [0.25, -1.5]
    save_model(tmp_path / "m.bin", _header(), w)
    m = load_model(tmp_path / "m.bin")
    assert m.header.nnz == 2 and m.header.bias == -0.5
    assert m.weights.typecode == "H" and np.array_equal(_as_float(m.weights), w)


def test_weights_load_as_rounded_bfloat16(tmp_path):
    # 1 + 2**-8 is halfway between two bfloat16 values: ties go to even (1.0);
    # 1 + 3 * 2**-8 rounds up, to 1 + 2**-6.
    w = np.zeros(1 << 8, np.float32)
    w[:4] = [1 + 2**-8, 1 + 3 * 2**-8, -3.14159, 1e-3]
    save_model(tmp_path / "m.bin", _header(nbits=8), w)
    got = _as_float(load_model(tmp_path / "m.bin").weights)[:4]
    assert got[0] == 1.0 and got[1] == 1 + 2**-6
    assert np.allclose(got, w[:4], rtol=2**-8) and not np.array_equal(got, w[:4])
    # The trainer's rounding is the same, so its weights load exactly.
    assert np.array_equal(round_bf16(w[:4]).astype(np.float32), got)


def test_numpy_loader_rounds_as_the_compiled_one(monkeypatch):
    # Big-endian hosts expand the weights with numpy (model._dense): the
    # same bfloat16 bits as dense_weights, ties included.
    import sys

    from atlas_fast import model
    from atlas_fast._features import dense_weights

    rng = np.random.default_rng(3)
    val = np.concatenate([[1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)],
                          rng.normal(size=500)]).astype("<f4")
    idx = np.arange(val.size, dtype="<u4") * 7
    body = idx.tobytes() + val.tobytes()
    compiled = dense_weights(body, val.size, 12)
    monkeypatch.setattr(sys, "byteorder", "big")
    assert model._dense(body, val.size, 12) == compiled


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b"NOTMODEL" + b[8:], "bad magic"),
        (lambda b: b[:-3], "truncated model file"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum mismatch"),
        (lambda b: b[:20], "truncated model header"),
    ],
)
def test_corrupt_files(tmp_path, mutate, match):
    w = np.ones(1 << 10, np.float32)
    save_model(tmp_path / "m.bin", _header(), w)
    data = mutate((tmp_path / "m.bin").read_bytes())
    with pytest.raises(ModelError, match=match):
        decode_model(data, "m.bin")


@pytest.mark.parametrize("field, value", [("bias", -0.75), ("calib_a", 1.5), ("calib_b", 0.25),
                                          ("threshold", 0.25), ("header_allow", ["x-mailes"]),
                                          ("url_domain_features", False)])
def test_a_changed_header_is_a_corrupt_file(tmp_path, field, value):
    # Each of these changes verdicts, and the weights' checksum does not
    # cover them: the file's checksum (format 2) does.  The value is
    # patched in place, as a flipped bit on disk would.
    import msgspec

    save_model(tmp_path / "m.bin", _header(), np.ones(1 << 10, np.float32))
    data = (tmp_path / "m.bin").read_bytes()
    hlen = int.from_bytes(data[8:12], "little")
    header = msgspec.msgpack.decode(data[12:12 + hlen], type=ModelHeader)
    patched = msgspec.msgpack.encode(msgspec.structs.replace(header, **{field: value}))
    assert len(patched) == hlen  # same length: a change in place
    bad = data[:12] + patched + data[12 + hlen:]
    with pytest.raises(ModelError, match="m.bin: model file checksum mismatch"):
        decode_model(bad, "m.bin")
    assert decode_model(data, "m.bin").header == header


def test_format_1_files_still_load(tmp_path):
    # No checksum after the weights; their sha256 in the header, as before.
    w = np.zeros(1 << 10, np.float32)
    w[[5, 9]] = [0.5, -2.0]
    save_model(tmp_path / "v1.bin", _header(format_version=1), w)
    save_model(tmp_path / "v2.bin", _header(), w)
    v1, v2 = (tmp_path / "v1.bin").read_bytes(), (tmp_path / "v2.bin").read_bytes()
    assert len(v2) == len(v1) + 32
    m = load_model(tmp_path / "v1.bin")
    assert m.header.format_version == 1 and m.weights == load_model(tmp_path / "v2.bin").weights
    with pytest.raises(ModelError, match="checksum mismatch"):
        decode_model(v1[:-1] + bytes([v1[-1] ^ 1]), "v1.bin")
    # A version 2 file cut to its old length is not taken for version 1.
    with pytest.raises(ModelError, match="truncated model file"):
        decode_model(v2[:-32], "v2.bin")


def test_shipped_model_is_format_2():
    import hashlib

    from atlas_fast.model import default_model_path

    with open(default_model_path(), "rb") as fh:
        data = fh.read()
    assert load_model().header.format_version == 2 == FORMAT_VERSION
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]


@pytest.mark.parametrize("field", ["format_version", "feature_version"])
def test_wrong_version(tmp_path, field):
    save_model(tmp_path / "m.bin", _header(**{field: 99}), np.ones(1 << 10, np.float32))
    with pytest.raises(ModelError, match="version 99"):
        load_model(tmp_path / "m.bin")


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.bin")


def test_shipped_model_loads():
    m = load_model()
    assert len(m.weights) == 1 << m.nbits and m.weights.typecode == "H"
    assert 0 < m.header.threshold < 1
    # Trained without URL domains (TrainParams.url_domain_features), and
    # scored the same way.
    assert m.header.url_domain_features is False
    assert m.featurizer().url_domains is False


def test_url_domain_features_switch(tmp_path):
    import msgspec

    # Files written before the field existed were trained with URL domains.
    old = msgspec.structs.asdict(_header())
    del old["url_domain_features"]
    assert msgspec.json.decode(msgspec.json.encode(old), type=ModelHeader).url_domain_features
    save_model(tmp_path / "m.bin", _header(url_domain_features=False), np.zeros(1 << 10, np.float32))
    assert load_model(tmp_path / "m.bin").featurizer().url_domains is False
    # Off, no url_dom: feature from either form of the extras; the rest unchanged.
    from atlas_fast.enrich import Enrichment
    from atlas_fast._features import model_extras_chunk, model_extras_packed

    e = [Enrichment("example.com", None, "US", None, None, None, ("a.example", "b.example"),
                    ("flag:no_to",))]
    packed = model_extras_packed(e, [[]], [], [0])[0]
    strings = model_extras_chunk(e, [[]], [], [0])[0]
    on, off = Featurizer(12), Featurizer(12, url_domains=False)
    names = lambda fz, x: [n for n, _, _ in fz.features(Msg(), x)]  # noqa: E731
    assert names(on, packed) == names(on, strings)
    assert names(off, packed) == names(off, strings)
    assert [n for n in names(on, packed) if not n.startswith("url_dom:")] == names(off, packed)
    assert {"url_dom:a.example", "url_dom:b.example"} <= set(names(on, packed))


class Msg:
    subject = "FREE money!!"
    from_name = "Bob"
    text = "Click here for FREE money now, call 5551234567"
    html_only = False
    has_html = False
    n_urls = 0
    attachments = [("a.exe", "application/octet-stream")]
    content_type = "text/plain"
    x_mailer = "Mutt/1.4"
    header_names = ["x-mailer", "x-mozilla-status", "status"]


def test_features_names_and_scores():
    f = Featurizer(12, frozenset({"x-mailer"}))
    w = np.zeros(1 << 12, np.float32)
    w[feature_bucket("subj:free", 12)] = 2.0
    w[feature_bucket("w:#n10", 12)] = 1.0
    w[feature_bucket("hdr:x-mozilla-status", 12)] = 100.0  # never extracted
    margins, reasons = f.score([Msg()], [["url_dom:example.biz"]], bf16_bits(w), 0.0, 3)
    # Reasons are the features pushing towards the side the margin falls on.
    assert margins[0] > 0 and reasons[0][:2] == ("subj:free", "w:#n10")
    indptr, idx, _ = f.csr([Msg()], [None])
    assert feature_bucket("hdr:x-mailer", 12) in idx
    assert feature_bucket("att_ext:exe", 12) in idx
    assert feature_bucket("mailer:mutt/1.4", 12) in idx


def test_reason_names_of_features_from_temporary_strings():
    # The mailer's first word and an attachment's extension are strings made
    # while featurising; their names are read after the whole chunk is
    # scored, so they must outlive it (they once pointed into freed memory).
    class M(Msg):
        x_mailer = "Pegasus Mail for Windows (4.02)"
        attachments = [("report.final.docm", None)]

    f = Featurizer(12, frozenset())
    w = np.zeros(1 << 12, np.float32)
    w[feature_bucket("mailer:pegasus", 12)] = 9.0
    w[feature_bucket("att_ext:docm", 12)] = 8.0
    msgs = [M() for _ in range(200)]
    _, reasons = f.score(msgs, [[f"pad:{'x' * k}"] for k in range(200)], bf16_bits(w), 0.0, 2)
    assert set(reasons) == {("mailer:pegasus", "att_ext:docm")}


def test_score_rounding_matches_round():
    import random

    from atlas_fast._features import round6

    rng = random.Random(7)
    xs = [rng.random() for _ in range(200_000)]
    xs += [k / 1e6 + 5e-7 for k in range(0, 1_000_000, 997)]  # half-way points
    xs += [(k + 0.5) / 1e6 for k in range(0, 1_000_000, 991)]
    xs += [0.0, 1.0, 5e-7, 1 - 5e-7, 0.9999995, 1e-300, -0.25, 1.5, float("inf")]
    for x in xs:
        assert round6(x) == round(x, 6), x


def test_url_path_tokens_and_text_cap():
    class U(Msg):
        urls = ["http://Example.com/Buy/Cheap-Pills?id=12345678"]
        text = "a " * 10000 + "zzyzx"

    f = Featurizer(16, frozenset())
    _, idx, _ = f.csr([U()], [None])
    for name in ("url_path:buy", "url_path:cheap", "url_path:pills", "url_path:#id"):
        assert feature_bucket(name, 16) in idx
    assert feature_bucket("w:zzyzx", 16) not in idx  # beyond the 8 KiB text cap


@pytest.mark.slow
def test_shipped_model_is_reproducible(tmp_path):
    """Retraining with the repo's command and seed gives the shipped bytes."""
    import subprocess
    import sys
    from pathlib import Path

    from atlas_fast.model import default_model_path

    from conftest import CORPUS, corpus_file

    corpus_file("spamassassin-train-ham.mbox.gz")
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "model.bin"
    subprocess.run([sys.executable, str(repo / "tools" / "train_default_model.py"),
                    "--corpus", str(CORPUS), "-o", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == Path(default_model_path()).read_bytes()


def _reference_score(feats, w16, bias, K, threshold):
    """The margin and top-K reasons of Featurizer.score, spelt out: float
    products summed in double in feature order; the K largest contributions
    (double products) on the margin's side, one slot per bucket (a repeated
    bucket keeps its first slot), strictly larger to enter, ties keeping the
    earlier feature first."""
    wf = _as_float(w16)
    z = bias
    for _, b, v in feats:
        z += float(np.float32(wf[b]) * np.float32(v))
    sign = 1.0 if z >= threshold else -1.0
    best, where = [0.0] * K, [-1] * K
    for j, (_, b, v) in enumerate(feats):
        c = sign * float(np.float64(np.float32(wf[b])) * np.float64(np.float32(v)))
        if c <= best[-1] or any(k >= 0 and feats[k][1] == b for k in where):
            continue
        best[-1], where[-1] = c, j
        k = K - 1
        while k > 0 and best[k] > best[k - 1]:
            best[k], best[k - 1] = best[k - 1], best[k]
            where[k], where[k - 1] = where[k - 1], where[k]
            k -= 1
    return z, tuple(feats[j][0] for j in where if j >= 0)


@pytest.mark.parametrize("seed", range(6))
def test_score_matches_the_reference_ranking(seed):
    # Small tables (many shared buckets), weights of both signs and many
    # zeros, thresholds on both sides: margins bit for bit, reasons in order.
    from atlas_fast._parser import parse_message
    from atlas_fast.splitter import split_mbox

    from conftest import REPO

    rng = np.random.default_rng(seed)
    nbits = int(rng.choice([8, 10, 12]))
    f = Featurizer(nbits, frozenset({"x-mailer", "subject"}))
    msgs = [parse_message(raw) for _, raw in split_mbox(REPO / "samples" / "sample.mbox")]
    msgs += [Msg()]
    w = rng.normal(0, 1, 1 << nbits).astype(np.float32)
    w[rng.random(1 << nbits) < 0.3] = 0.0
    w16 = bf16_bits(w)
    extras = [[f"from_dom:d{k}.example", "flag:no_to"] for k in range(len(msgs))]
    for threshold in (-1.0, 0.0, 1.5):
        for K in (1, 3, 8):
            margins, reasons = f.score(msgs, extras, w16, 0.25, K, threshold)
            for i, m in enumerate(msgs):
                z, top = _reference_score(f.features(m, extras[i]), w16, 0.25, K, threshold)
                assert margins[i] == z
                assert reasons[i] == top, (i, threshold, K)
