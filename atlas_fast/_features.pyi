from collections.abc import Sequence

import numpy as np

FEATURE_VERSION: int

def feature_bucket(name: str, nbits: int) -> int: ...

class Featurizer:
    nbits: int
    def __init__(self, nbits: int = ..., header_allow: frozenset[str] = ...) -> None: ...
    def csr(
        self, msgs: list, extras: list[list[str] | None] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def score(
        self, msgs: list, extras: list[list[str] | None] | None, weights: np.ndarray, bias: float,
        top_k: int = ...,
    ) -> tuple[np.ndarray, list[tuple[tuple[str, ...], tuple[str, ...]]]]: ...

def text_digest(text: str | None, seed: int = ...) -> int: ...
def chunk_digests(msgs: list, contexts: Sequence[str], seed: int = ...) -> list[str]: ...
def sgd_train(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, y: np.ndarray,
    sample_weight: np.ndarray, order: np.ndarray, w: np.ndarray, lr: float, l2: float,
) -> float: ...
def margins_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, w: np.ndarray, bias: float
) -> np.ndarray: ...
