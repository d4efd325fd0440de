"""The agent's client certificate keys in [mqtt] and [hub]: both or neither, and only with TLS on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import config_from_mapping
from edge_agent.errors import ConfigError

BASE: dict[str, Any] = {"device_id": "d1", "fleet": "f", "state_dir": "/var/lib/edgefleet"}


def _load(**tables: dict[str, Any]) -> Any:
    return config_from_mapping({**BASE, **tables}, base_dir=Path("/etc/edgefleet"))


def test_the_pair_resolves_beside_the_config() -> None:
    pair = {"cert_file": "client.crt", "key_file": "/keys/client.key"}
    config = _load(mqtt={"tls": True, **pair}, hub={"grpc_tls": True, **pair})
    assert config.mqtt.cert_file == Path("/etc/edgefleet/client.crt")
    assert config.mqtt.key_file == Path("/keys/client.key")
    assert (config.hub.cert_file, config.hub.key_file) == (config.mqtt.cert_file, config.mqtt.key_file)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"mqtt": {"tls": True, "cert_file": "c"}}, "mqtt.cert_file is set without mqtt.key_file"),
        ({"hub": {"grpc_tls": True, "key_file": "k"}}, "hub.key_file is set without hub.cert_file"),
        ({"mqtt": {"cert_file": "c", "key_file": "k"}}, "mqtt.cert_file needs mqtt.tls = true"),
        ({"hub": {"cert_file": "c", "key_file": "k"}}, "hub.cert_file needs hub.grpc_tls = true"),
    ],
)
def test_a_half_pair_or_a_certificate_without_tls_is_refused(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(**tables)
