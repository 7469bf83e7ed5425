from array import array
from collections.abc import Sequence

import numpy as np

FEATURE_VERSION: int
MAX_TEXT: int

def feature_bucket(name: str, nbits: int) -> int: ...
def url_host(url: str) -> str | None: ...
def received_origin(received: list[str]) -> str | None | bool: ...
def render_chunk(msgs: list, body_cap: int) -> list[tuple[bytes, array]]: ...
def dense_weights(body: bytes, nnz: int, nbits: int) -> array: ...

class Featurizer:
    nbits: int
    url_paths: bool
    text_cap: int
    bigrams: bool
    extra_value: float
    def __init__(
        self, nbits: int = ..., header_allow: frozenset[str] = ..., *, url_paths: bool = ...,
        text_cap: int = ..., bigrams: bool = ..., extra_value: float = ...,
    ) -> None: ...
    def csr(
        self, msgs: list, extras: list[list[str] | None] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def score(
        self, msgs: list, extras: list[list[str] | None] | None, weights: np.ndarray | array,
        bias: float, top_k: int = ..., threshold: float = ...,
    ) -> tuple[array, list[tuple[str, ...]]]: ...

def text_digest(text: str | None, seed: int = ...) -> int: ...
def chunk_digests(msgs: list, contexts: Sequence[str] | None, seed: int = ...) -> list[str]: ...
def sgd_train(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, y: np.ndarray,
    sample_weight: np.ndarray, order: np.ndarray, w: np.ndarray, lr: float, l2: float,
) -> float: ...
def margins_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, w: np.ndarray, bias: float
) -> np.ndarray: ...
