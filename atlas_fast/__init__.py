"""atlas_fast: a fast mailbox spam engine, from mbox to SQLite.

>>> import atlas_fast
>>> summary = atlas_fast.process_mbox("Takeout.mbox", db="mail.sqlite")  # doctest: +SKIP
"""
__version__ = "0.1.0"

from .errors import AtlasError, ConfigError, InputError, NotAnMboxError, RuleError, SourceChangedError
from .pipeline import RunSummary, process_mbox

__all__ = [
    "__version__",
    "process_mbox",
    "RunSummary",
    "AtlasError",
    "InputError",
    "NotAnMboxError",
    "SourceChangedError",
    "ConfigError",
    "RuleError",
]
