from __future__ import annotations

from pathlib import Path

import pytest

from pratico_daemon.config import ConfigError, from_mapping, load


@pytest.mark.parametrize(
    ("data", "environ", "key", "reason"),
    [
        ({"postgres": {"dsn": "mysql://x"}}, {}, "postgres.dsn", "not a postgresql://"),
        ({"realtime": {"port": "abc"}}, {}, "realtime.port", "not an integer"),
        ({"realtime": {"port": 70000}}, {}, "realtime.port", "not a TCP port"),
        ({"realtime": {"bogus": 1}}, {}, "realtime.bogus", "unknown key"),
        ({"nosection": {}}, {}, "nosection", "unknown key"),
        ({"log": {"level": "loud"}}, {}, "log.level", "not one of"),
        ({"postgres": {"migrate_on_start": "maybe"}}, {}, "postgres.migrate_on_start", "boolean"),
        ({}, {"PRATICO_REDIS__URL": "http://x"}, "redis.url", "not a redis://"),
        ({}, {"PRATICO_NOPE__X": "1"}, "PRATICO_NOPE__X", "no section"),
        ({"daemon": {"shutdown_timeout_s": 0}}, {}, "daemon.shutdown_timeout_s", "greater than 0"),
    ],
)
def test_bad_values_name_the_key(data, environ, key, reason):
    with pytest.raises(ConfigError) as info:
        from_mapping(data, environ)
    assert info.value.key == key
    assert reason in info.value.reason


def test_environment_overrides_file_and_converts_types():
    config = from_mapping(
        {"realtime": {"port": 1}},
        {"PRATICO_REALTIME__PORT": "9000", "PRATICO_POSTGRES__MIGRATE_ON_START": "false",
         "PRATICO_CONVERSATION__ICE_SERVERS": '[{"urls": "stun:127.0.0.1"}]'},
    )
    assert config.realtime.port == 9000
    assert config.postgres.migrate_on_start is False
    assert config.conversation.ice_servers == [{"urls": "stun:127.0.0.1"}]


def test_defaults_are_embedded():
    config = from_mapping({}, {})
    assert config.embedded
    assert not from_mapping({"redis": {"url": "redis://127.0.0.1"}}, {}).embedded


def test_shipped_config_file_is_valid_and_matches_defaults():
    shipped = Path(__file__).parent.parent / "config.toml"
    assert load(shipped, environ={}) == from_mapping({}, {})
