"""atlas_fast: a fast mailbox spam engine, from mbox to SQLite.

>>> import atlas_fast
>>> summary = atlas_fast.process_mbox("Takeout.mbox", db="mail.sqlite")  # doctest: +SKIP
"""
__version__ = "0.1.0"

from .errors import (
    AtlasError, CacheWarning, ConfigError, InputError, NotAnMboxError, RuleError, SourceChangedError,
    StorageError,
)
from .pipeline import RunSummary, process_mbox


def evaluate(ham, spam, *, model=None, rules=()):
    """Classify labelled mboxes and measure the result.

    Parameters
    ----------
    ham, spam : sequence of paths
        Mbox files whose messages are known ham / known spam.
    model : path, optional
        Model file; default: the shipped model.
    rules : sequence of paths, optional
        Extra rule files.

    Returns
    -------
    EvalReport
        Accuracy, spam recall, ham false-positive rate, F1, ROC AUC, the
        confusion matrix, per-rule hits and time per message;
        ``.format_table()`` and ``.to_json()`` render it.
    """
    from .evaluate import evaluate as _evaluate

    return _evaluate(list(ham), list(spam), model=model, rules=rules)


def train(ham, spam, output, *, seed=1, jobs=None, url_domains=False, target_fpr=None):
    """Train a model on labelled mboxes and write it to ``output``.

    ``jobs``: processes for the independent fits (default: usable cores);
    the model file does not depend on it.  ``url_domains``: make the
    registered domains of URLs features (``TrainParams.url_domain_features``;
    off, as in the shipped model, because they name one era's campaigns).
    ``target_fpr``: the operating point, the fraction of the training ham
    that cross-validation may call spam (0 <= target_fpr < 1; default
    ``TrainParams.target_fpr``, 0.0013).  Lower: fewer false positives,
    less spam caught; the returned ``cv_ham_fpr`` and ``cv_spam_recall``
    say where it landed.

    Returns
    -------
    dict
        What was trained (message counts, threshold, cross-validation figures).
    """
    from .evaluate import train_model, user_params

    return train_model(list(ham), list(spam), output, seed=seed, jobs=jobs,
                       params=user_params(url_domains=url_domains, target_fpr=target_fpr))

__all__ = [
    "__version__",
    "process_mbox",
    "evaluate",
    "train",
    "RunSummary",
    "AtlasError",
    "InputError",
    "NotAnMboxError",
    "SourceChangedError",
    "ConfigError",
    "RuleError",
    "StorageError",
    "CacheWarning",
]
