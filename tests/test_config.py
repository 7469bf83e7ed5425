"""Settings: argument over environment over default; bad values are errors."""
import pytest

from atlas_fast import ConfigError
from atlas_fast.config import resolve_settings, usable_cores


def test_defaults():
    s = resolve_settings(environ={})
    assert s.workers == usable_cores() and s.batch_size == 500 and s.cache is True
    assert set(s.sources.values()) == {"default"}


def test_environment_and_arguments():
    env = {"ATLAS_WORKER_COUNT": "3", "ATLAS_BULK_BATCH_SIZE": "50", "ATLAS_CACHE_ENABLED": "false",
           "ATLAS_MEMORY_LIMIT_MB": "256"}
    s = resolve_settings(environ=env)
    assert (s.workers, s.batch_size, s.cache, s.memory_limit_mb) == (3, 50, False, 256)
    assert s.sources["workers"] == "env ATLAS_WORKER_COUNT"
    s = resolve_settings(workers=1, cache="/tmp/c", environ=env)
    assert s.workers == 1 and s.sources["workers"] == "argument" and s.cache == "/tmp/c"


@pytest.mark.parametrize(
    "env, match",
    [
        ({"ATLAS_WORKER_COUNT": "0"}, "ATLAS_WORKER_COUNT"),
        ({"ATLAS_WORKER_COUNT": "-2"}, "ATLAS_WORKER_COUNT"),
        ({"ATLAS_BULK_BATCH_SIZE": "1e3"}, "ATLAS_BULK_BATCH_SIZE"),
        ({"ATLAS_CACHE_ENABLED": "maybe"}, "ATLAS_CACHE_ENABLED must be true or false"),
        ({"ATLAS_MEMORY_LIMIT_MB": "8"}, "memory_limit_mb must be at least 32"),
        ({"ATLAS_WORKER_COUNT": "1000"}, "at most 256"),
    ],
)
def test_invalid_environment(env, match):
    with pytest.raises(ConfigError, match=match):
        resolve_settings(environ=env)
