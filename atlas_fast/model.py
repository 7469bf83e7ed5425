"""The linear spam model: its file format, loading and scoring.

A model file is::

    b"ATLASMDL"                  8 bytes, magic
    header length                4 bytes, little-endian uint32
    header                       msgpack (msgspec) of :class:`ModelHeader`
    bucket indices               uint32 little-endian, ``header.nnz`` of them
    weights                      float32 little-endian, ``header.nnz`` of them
    checksum                     32 bytes, sha256 of everything before it

The checksum (format version 2) covers the header too: a changed bit in the
threshold, the calibration, the bias or the header allow-list would
otherwise load and silently change verdicts.  Version 1 files (no checksum;
their weights' sha256 is in the header, as in every version) still load.

Only non-zero weights are stored; loading expands them to a dense array of
``2**nbits`` bfloat16 weights (see :class:`Model`), which the Cython scorer
indexes directly.  The
header records the feature-extraction version: a model made by another
version of the featuriser is refused with :class:`~atlas_fast.errors.ModelError`
rather than silently scored against the wrong buckets.  Nothing time- or
host-dependent is written, so training with the same data and seed gives a
byte-identical file.
"""
from __future__ import annotations

import hashlib
import math
import os
import struct
import sys
from importlib import resources

import msgspec

from .errors import ModelError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "HEADER_ALLOW",
    "ModelHeader",
    "Model",
    "load_model",
    "save_model",
    "default_model_path",
]

MAGIC = b"ATLASMDL"
FORMAT_VERSION = 2
# Versions decode_model reads: 1 had no whole-file checksum.
_READABLE_FORMATS = (1, 2)
_CHECKSUM_BYTES = 32

# Headers whose presence is a model feature.  An allow-list on purpose: the
# shared corpora carry filter stamps (X-Spam-*, X-Barracuda-*, X-RC-*),
# mailing-list delivery headers and mail-client export headers
# (X-Mozilla-*, X-Account-Key, X-UIDL, Status, X-Status) that separate the
# classes in the corpus and nowhere else.  These are headers an author's own
# mail program writes.
HEADER_ALLOW = frozenset(
    {
        "in-reply-to",
        "references",
        "reply-to",
        "user-agent",
        "x-mailer",
        "x-priority",
        "x-msmail-priority",
        "x-mimeole",
        "importance",
        "organization",
        "content-disposition",
        "mime-version",
        "content-transfer-encoding",
        "cc",
        "x-originating-ip",
        "thread-index",
        "content-class",
        "disposition-notification-to",
        "x-face",
        "openpgp",
    }
)


class ModelHeader(msgspec.Struct, forbid_unknown_fields=False):
    """Everything about a model except its weights."""

    format_version: int
    feature_version: int
    nbits: int
    nnz: int
    bias: float
    calib_a: float  # score = 1 / (1 + exp(-(calib_a * margin + calib_b)))
    calib_b: float
    threshold: float  # spam when score >= threshold
    header_allow: list[str]
    weights_sha256: str
    training: dict = {}
    # Whether URLs' registered domains (``url_dom:``) are features; files
    # written before the field existed were trained with them.
    url_domain_features: bool = True


class Model:
    """A loaded model: dense weights plus calibration.

    Attributes
    ----------
    header : ModelHeader
    weights : array.array
        bfloat16 bits (``'H'``: the top half of each float32 weight),
        ``2**nbits`` entries: 8 MB for 2**22 buckets where float32 takes 16,
        so more of the table stays in cache while scoring.  The trainer
        rounds weights to bfloat16 before setting the threshold, so scoring
        with them is exact.  The pipeline never imports numpy: it costs
        ~0.1-0.3 s and ~12 MB in every process.
    digest : str
        sha256 of the file; identifies the model in cache keys.
    """

    __slots__ = ("header", "weights", "digest", "path")

    def __init__(self, header: ModelHeader, weights, digest: str, path=None):
        self.header = header
        self.weights = weights
        self.digest = digest
        self.path = path

    @property
    def nbits(self) -> int:
        return self.header.nbits

    @property
    def threshold_margin(self) -> float:
        """The margin at which the calibrated score reaches the threshold."""
        t = min(max(self.header.threshold, 1e-12), 1 - 1e-12)
        return (math.log(t / (1 - t)) - self.header.calib_b) / self.header.calib_a

    def scores(self, margins) -> list:
        """Calibrated spam probabilities of raw margins (any float sequence)."""
        a, b, exp = self.header.calib_a, self.header.calib_b, math.exp
        return [1.0 / (1.0 + exp(-min(max(a * m + b, -50.0), 50.0))) for m in margins]

    def featurizer(self):
        """A :class:`~atlas_fast._features.Featurizer` configured for this model."""
        from ._features import Featurizer

        return Featurizer(self.header.nbits, frozenset(self.header.header_allow),
                          url_domains=self.header.url_domain_features)


def _encode(header: ModelHeader, weights) -> bytes:
    import numpy as np  # training only

    w = np.asarray(weights, dtype=np.float32)
    nz = np.flatnonzero(w).astype("<u4")
    body = nz.tobytes() + w[nz].astype("<f4").tobytes()
    header = msgspec.structs.replace(
        header, nnz=int(nz.size), weights_sha256=hashlib.sha256(body).hexdigest()
    )
    raw_header = msgspec.msgpack.encode(header)
    data = MAGIC + struct.pack("<I", len(raw_header)) + raw_header + body
    if header.format_version == 1:  # tests of the old format
        return data
    return data + hashlib.sha256(data).digest()


def save_model(path, header: ModelHeader, weights) -> str:
    """Write a model file atomically; return its sha256."""
    data = _encode(header, weights)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def decode_model(data: bytes, where: str = "<bytes>") -> Model:
    """Parse model file contents.

    Raises
    ------
    ModelError
        On a wrong magic, an unsupported format or feature version, a
        truncated file or a checksum mismatch.
    """
    from ._features import FEATURE_VERSION

    if len(data) < 12 or data[:8] != MAGIC:
        raise ModelError(f"{where}: not an atlas_fast model file (bad magic)")
    # Whether the file ends with the checksum of the rest (version 2): known
    # before its header, which it covers, is trusted.
    intact = (len(data) >= 12 + _CHECKSUM_BYTES and hashlib.sha256(
        memoryview(data)[:-_CHECKSUM_BYTES]).digest() == data[-_CHECKSUM_BYTES:])
    (hlen,) = struct.unpack_from("<I", data, 8)
    if 12 + hlen > len(data) - (_CHECKSUM_BYTES if intact else 0):
        raise ModelError(f"{where}: truncated model header")
    try:
        header = msgspec.msgpack.decode(data[12 : 12 + hlen], type=ModelHeader)
    except msgspec.DecodeError as exc:
        raise ModelError(f"{where}: corrupt model header: {exc}") from None
    if header.format_version not in _READABLE_FORMATS:
        raise ModelError(
            f"{where}: model format version {header.format_version} is not supported "
            f"(this atlas_fast reads versions {', '.join(map(str, _READABLE_FORMATS))}); "
            "retrain with atlas-fast train"
        )
    if header.format_version == 1:
        end = len(data)  # no checksum: every byte after the header is weights
    elif intact:
        end = len(data) - _CHECKSUM_BYTES
    elif len(data) - 12 - hlen < _CHECKSUM_BYTES + 8 * header.nnz:
        raise ModelError(f"{where}: truncated model file ({len(data)} bytes)")
    else:
        raise ModelError(f"{where}: model file checksum mismatch (corrupt file)")
    if header.feature_version != FEATURE_VERSION:
        raise ModelError(
            f"{where}: model was trained with feature version {header.feature_version}, "
            f"this atlas_fast extracts version {FEATURE_VERSION}; retrain with atlas-fast train"
        )
    if not 8 <= header.nbits <= 28 or header.calib_a <= 0:
        raise ModelError(f"{where}: corrupt model header (nbits={header.nbits})")
    body = data[12 + hlen : end]
    if len(body) != 8 * header.nnz:
        raise ModelError(
            f"{where}: truncated model weights ({len(body)} bytes, expected {8 * header.nnz})"
        )
    if hashlib.sha256(body).hexdigest() != header.weights_sha256:
        raise ModelError(f"{where}: model weights checksum mismatch (corrupt file)")
    try:
        weights = _dense(body, header.nnz, header.nbits)
    except ValueError:
        raise ModelError(f"{where}: weight index out of range (corrupt file)") from None
    return Model(header, weights, hashlib.sha256(data).hexdigest(), where)


def _dense(body: bytes, nnz: int, nbits: int):
    if sys.byteorder == "little":
        from ._features import dense_weights

        return dense_weights(body, nnz, nbits)
    import numpy as np  # pragma: no cover - big-endian hosts

    from array import array

    idx = np.frombuffer(body, dtype="<u4", count=nnz)
    val = np.frombuffer(body, dtype="<f4", count=nnz, offset=4 * nnz)
    if nnz and int(idx.max()) >= 1 << nbits:
        raise ValueError("weight index out of range")
    weights = np.zeros(1 << nbits, dtype=np.uint16)
    weights[idx] = bf16_bits(val)
    return array("H", weights.tobytes())


def bf16_bits(values):
    """numpy: ``values`` rounded to the nearest bfloat16 (ties to even) as
    uint16 bits, as ``_features.dense_weights`` rounds each weight (training
    rounds with this, see ``evaluate.round_bf16``)."""
    import numpy as np  # training and big-endian hosts only

    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def default_model_path() -> str:
    """Path of the model shipped in the package (``atlas_fast/data/model.bin``)."""
    return str(resources.files("atlas_fast").joinpath("data", "model.bin"))


def load_model(path=None) -> Model:
    """Load a model file (default: the shipped model).

    Raises
    ------
    ModelError
        If the file is missing, corrupt or of an unsupported version.
    """
    where = default_model_path() if path is None else os.fspath(path)
    try:
        with open(where, "rb") as fh:
            st = os.fstat(fh.fileno())
            key = (os.path.realpath(where), st.st_size, st.st_mtime_ns, st.st_ino)
            model = _LOADED.get(key)
            if model is not None:
                return model
            data = fh.read()
    except FileNotFoundError:
        raise ModelError(f"{where}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{where}: cannot read model file: {exc.strerror}") from None
    model = _LOADED[key] = decode_model(data, where)
    while len(_LOADED) > 4:
        del _LOADED[next(iter(_LOADED))]
    return model


# Decoded models by file identity: a pipeline run builds its classifier and a
# warm-up one, and evaluation loads the same file again; decoding and
# checking 4 MB of weights twice is wasted start-up.  Models are never
# modified after loading.
_LOADED: dict = {}
