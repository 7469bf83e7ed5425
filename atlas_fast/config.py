"""Run settings: defaults, environment variables and arguments, in one place.

Precedence, highest first: an explicit argument, the environment variable,
the built-in default.  :func:`resolve_settings` records where each value came
from so that ``atlas-fast config`` can show it.  An invalid value raises
:class:`~atlas_fast.errors.ConfigError`; it never silently falls back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["Settings", "resolve_settings", "config_report", "usable_cores", "ENV_VARS"]

ENV_VARS = {
    "workers": "ATLAS_WORKER_COUNT",
    "batch_size": "ATLAS_BULK_BATCH_SIZE",
    "cache": "ATLAS_CACHE_ENABLED",
    "memory_limit_mb": "ATLAS_MEMORY_LIMIT_MB",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Settings:
    """Effective settings of one run."""

    workers: int
    batch_size: int
    cache: bool | str
    memory_limit_mb: int | None
    sources: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "workers": self.workers,
            "batch_size": self.batch_size,
            "cache": self.cache,
            "memory_limit_mb": self.memory_limit_mb,
        }


def _positive_int(name: str, value, origin: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive integer, got {value!r} ({origin})")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ConfigError(f"{name} must be a positive integer, got {value!r} ({origin})")
        value = int(text)
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r} ({origin})")
    return value


def _cache_value(value, origin: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if origin.startswith("env"):
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ConfigError(
                f"ATLAS_CACHE_ENABLED must be true or false, got {value!r} ({origin})"
            )
        if not value:
            raise ConfigError("cache must be a directory, True or False, got ''")
        return value
    raise TypeError(f"cache must be a path, True or False, got {type(value).__name__}")


def resolve_settings(
    workers=None, batch_size=None, cache=None, memory_limit_mb=None, environ=None
) -> Settings:
    """Merge arguments, environment and defaults into :class:`Settings`.

    Parameters
    ----------
    workers, batch_size, cache, memory_limit_mb
        Explicit values; ``None`` means "not given".
    environ
        Mapping to read variables from (default ``os.environ``).

    Returns
    -------
    Settings
        With ``sources[name]`` one of ``"argument"``, ``"env ATLAS_..."``
        or ``"default"``.

    Raises
    ------
    ConfigError
        If a value is out of range or unparseable.
    """
    env = os.environ if environ is None else environ
    given = {
        "workers": workers,
        "batch_size": batch_size,
        "cache": cache,
        "memory_limit_mb": memory_limit_mb,
    }
    defaults = {"workers": usable_cores(), "batch_size": 500, "cache": True, "memory_limit_mb": None}
    values, sources = {}, {}
    for name, value in given.items():
        var = ENV_VARS[name]
        if value is not None:
            origin = "argument"
        elif env.get(var, "").strip() != "":
            value, origin = env[var], f"env {var}"
        else:
            values[name], sources[name] = defaults[name], "default"
            continue
        if name == "cache":
            values[name] = _cache_value(value, origin)
        else:
            values[name] = _positive_int(name, value, origin)
        sources[name] = origin
    if values["workers"] > 256:
        raise ConfigError(f"workers must be at most 256, got {values['workers']}")
    if values["memory_limit_mb"] is not None and values["memory_limit_mb"] < 32:
        raise ConfigError(
            f"memory_limit_mb must be at least 32, got {values['memory_limit_mb']}"
        )
    return Settings(sources=sources, **values)


def config_report(settings: Settings | None = None) -> str:
    """The effective settings and where each came from, for ``atlas-fast config``.

    Parameters
    ----------
    settings
        From :func:`resolve_settings` (default: resolved from the environment).

    Returns
    -------
    str
        One line per setting: name, value, source and its environment variable.
    """
    if settings is None:
        settings = resolve_settings()
    rows = [("setting", "value", "source", "variable")]
    for name, value in settings.as_dict().items():
        shown = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        rows.append((name, shown, settings.sources.get(name, "default"), ENV_VARS[name]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
    ) + "\n"
