"""Exceptions raised by atlas_fast.

Every error the package raises on purpose derives from :class:`AtlasError`.
Errors caused by the input (a file that is not an mbox, a bad option value)
also derive from :class:`ValueError`, so callers that already catch
``ValueError`` keep working.  Messages name the file, and the byte offset
where there is one.
"""
from __future__ import annotations

__all__ = [
    "AtlasError",
    "InputError",
    "NotAnMboxError",
    "SourceChangedError",
    "ConfigError",
    "RuleError",
    "ModelError",
    "StorageError",
    "CacheWarning",
]


class AtlasError(Exception):
    """Root of every exception atlas_fast raises on purpose."""


class InputError(AtlasError, ValueError):
    """The input is at fault: unreadable, truncated or not a mailbox."""

    def __init__(self, path, reason: str, offset: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.offset = offset
        where = f" (byte {offset})" if offset is not None else ""
        super().__init__(f"{self.path}: {reason}{where}")


class NotAnMboxError(InputError):
    """The file does not look like an mbox."""


class SourceChangedError(InputError):
    """The file differs from the one an earlier run of the same database read."""


class ConfigError(AtlasError, ValueError):
    """An option or environment variable has an invalid value."""


class RuleError(AtlasError, ValueError):
    """A rule file or one of its patterns is invalid."""


class ModelError(AtlasError, ValueError):
    """A model file is missing, corrupt or of an unsupported version."""


class StorageError(AtlasError, RuntimeError):
    """The output database could not be written: a full disk, an I/O error,
    a lock held past the timeout.  What was committed stays, and a rerun
    resumes after it."""


class CacheWarning(UserWarning):
    """The persistent cache could not be used (a damaged or unreadable
    database): the run went on without its disk level.  Verdicts are the same
    with or without a cache, so nothing is lost but speed."""
