"""The classifier a pipeline worker runs over each parsed chunk.

Per chunk: enrichment (cached per namespace), then the classification cache
(keyed by a digest of everything a verdict depends on), then for the
messages it misses the early-exit rules, and the linear model for those no
rule decides.  Construct one :class:`Classifier` per worker process.
"""
from __future__ import annotations

import gc
import os
import time
from array import array

import msgspec
from msgspec.structs import astuple

from ._features import chunk_verdicts, model_extras_packed, rule_exits
from .cache import ClassifierCache, default_cache_dir
from .enrich import Enricher
from .model import load_model
from .monitor import PerformanceMetrics, monitor_operation
from .monitor import is_enabled as monitor_enabled
from .rules import DEFAULT_EXIT_CONFIDENCE, RuleSet, load_rules, render_chunk

__all__ = ["Verdict", "Classifier", "TOP_FEATURES"]

TOP_FEATURES = 3
_NO_MARGINS = array("d")


class Verdict(msgspec.Struct, array_like=True, gc=False):
    """The classification columns of one message."""

    label: str
    category: str | None
    score: float
    decided_by: str
    rule_id: str | None
    reasons: str
    registered_domain: str | None = None
    origin_ip: str | None = None
    origin_country: str | None = None
    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None


def _open_cache(cache) -> ClassifierCache:
    if isinstance(cache, ClassifierCache):
        return cache
    if cache is False:
        return ClassifierCache(None, enabled=False)
    if cache is None or cache is True:
        return ClassifierCache(default_cache_dir())
    if isinstance(cache, (str, os.PathLike)):
        return ClassifierCache(cache)
    raise TypeError(f"cache must be a directory, True, False or None, got {type(cache).__name__}")


class Classifier:
    """Rules + model + cache + enrichment, applied per chunk.

    Parameters
    ----------
    model : str or PathLike or None
        Model file; None loads the shipped default.
    rules : iterable of paths
        Extra rule files, added to the built-in ones.
    cache : str, PathLike, bool, None or ClassifierCache
        Cache directory; True or None for the default directory
        (``~/.cache/atlas_fast``); False to switch the cache off.
    engine : {"auto", "hyperscan", "re2"}
        Rule engine.
    exit_confidence : float
        Rule hits at or above it decide a message without the model.

    Raises
    ------
    ModelError
        If the model file is missing or invalid.
    RuleError
        If a rule file or pattern is invalid.
    """

    def __init__(self, model=None, rules=(), cache=None, *, engine: str = "auto",
                 exit_confidence: float = DEFAULT_EXIT_CONFIDENCE):
        if isinstance(rules, (str, os.PathLike)):
            rules = (rules,)
        self.cache = _open_cache(cache)
        self.model = load_model(model)
        self.ruleset = RuleSet(load_rules(rules), engine=engine,
                               exit_confidence=exit_confidence)
        self.featurizer = self.model.featurizer()
        self.enricher = Enricher(self.cache)
        self._weights = self.model.weights
        self._bias = float(self.model.header.bias)
        self._threshold_margin = self.model.threshold_margin
        rules = self.ruleset.rules
        self._rule_ids = [r.id for r in rules]
        self._categories = [r.category for r in rules]
        self._confidence = self.ruleset.confidence
        ident = (self.model.digest + self.ruleset.digest).encode()
        self._seed = int.from_bytes(__import__("hashlib").sha256(ident).digest()[:8], "little")

    # ------------------------------------------------------------------

    def classify_chunk(self, parsed: list) -> list:
        """One :class:`Verdict` per ParsedMessage, in order."""
        if not parsed:
            return []
        # A chunk allocates tens of thousands of small lists and tuples but no
        # reference cycles; the cyclic collector would otherwise run dozens of
        # times per chunk and walk every parsed message each time.
        if not gc.isenabled():
            return self._classify_chunk(parsed)
        gc.disable()
        try:
            return self._classify_chunk(parsed)
        finally:
            gc.enable()

    def _enrich(self, msgs: list) -> list:
        with monitor_operation("enrich", "chunk"):
            return self.enricher.enrich_chunk(msgs)

    def _classify_chunk(self, parsed: list) -> list:
        if not self.cache.enabled:
            return self._classify(parsed, self._enrich(parsed))
        from ._features import chunk_digests

        # The key covers every message field that rules, model and enrichment
        # read, and a cached verdict carries its enrichment columns, so a hit
        # needs neither enrichment nor classification.
        with monitor_operation("cache", "lookup"):
            keys = chunk_digests(parsed, None, self._seed)
            cached = self.cache.get_many("classification", keys)
        out = [None] * len(parsed)
        if cached:
            todo = []
            for i, key in enumerate(keys):
                hit = cached.get(key)
                if hit is not None:
                    out[i] = Verdict(hit[0], hit[1], hit[2], "cache", *hit[3:])
                else:
                    todo.append(i)
        else:  # a cold cache: nothing to look at
            todo = range(len(parsed))
        if todo:
            msgs = [parsed[i] for i in todo] if len(todo) < len(parsed) else parsed
            fresh = self._classify(msgs, self._enrich(msgs))
            new = {}
            with monitor_operation("cache", "store"):
                for i, v in zip(todo, fresh):
                    out[i] = v
                    t = astuple(v)  # the verdict without decided_by
                    new[keys[i]] = t[:3] + t[4:]
                self.cache.set_many("classification", new)
        return out

    def _classify(self, msgs: list, enrich: list) -> list:
        ruleset = self.ruleset
        with monitor_operation("rules", "scan"):
            rendered = render_chunk(msgs)
            hits = ruleset.scan_rendered(rendered)
        glue_start = time.perf_counter()
        exits, model_idx = rule_exits(hits, self._confidence, ruleset.exit_confidence)
        glue = time.perf_counter() - glue_start
        margins = _NO_MARGINS
        tops = []
        if model_idx:
            with monitor_operation("model", "score"):
                sub = [msgs[i] for i in model_idx] if len(model_idx) < len(msgs) else msgs
                extras = model_extras_packed(enrich, hits, ruleset.rule_features, model_idx)
                margins, tops = self.featurizer.score(sub, extras, self._weights, self._bias,
                                                      TOP_FEATURES, self._threshold_margin)
        # Deciding and building verdicts, around the model call: one sample.
        glue_start = time.perf_counter() - glue
        header = self.model.header
        # The category hints of the model's spam that no rule hit (what
        # chunk_verdicts asks for), scanned together.
        threshold = self._threshold_margin
        need = [i for i, z in zip(model_idx, margins) if z >= threshold and not hits[i]]
        hinted = dict(zip(need, ruleset.hint_categories_at(rendered, need))) if need else {}
        out = chunk_verdicts(hits, enrich, exits, model_idx, margins, tops,
                             threshold, header.calib_a, header.calib_b,
                             self._rule_ids, self._confidence, self._categories,
                             hinted.get, Verdict)
        if monitor_enabled():
            PerformanceMetrics.get_instance().record(
                "classify", "verdicts", (time.perf_counter() - glue_start) * 1e3)
        return out

    def stats(self) -> dict:
        """Cache hit/miss counts per namespace (see ClassifierCache.stats)."""
        return self.cache.stats()

    def close(self) -> None:
        self.cache.close()
