"""Tests of atlas_fast.config.config_report (`atlas-fast config`)."""
from __future__ import annotations

import pytest

from atlas_fast.config import ENV_VARS, config_report, resolve_settings
from atlas_fast.errors import ConfigError


def _lines(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines()[1:]}


def test_report_names_every_setting_and_its_source():
    settings = resolve_settings(workers=3, environ={"ATLAS_BULK_BATCH_SIZE": "1000"})
    lines = _lines(config_report(settings))
    assert set(lines) == set(ENV_VARS)
    assert lines["workers"][:3] == ["workers", "3", "argument"]
    assert lines["batch_size"][:4] == ["batch_size", "1000", "env", "ATLAS_BULK_BATCH_SIZE"]
    assert lines["cache"][:3] == ["cache", "true", "default"]
    assert lines["memory_limit_mb"][:3] == ["memory_limit_mb", "none", "default"]
    for name, var in ENV_VARS.items():
        assert lines[name][-1] == var


def test_report_of_the_environment(monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE_ENABLED", "off")
    lines = _lines(config_report())
    assert lines["cache"][:4] == ["cache", "false", "env", "ATLAS_CACHE_ENABLED"]


def test_invalid_environment_is_an_error_not_a_default():
    with pytest.raises(ConfigError, match="ATLAS_WORKER_COUNT|workers"):
        config_report(resolve_settings(environ={"ATLAS_WORKER_COUNT": "many"}))
