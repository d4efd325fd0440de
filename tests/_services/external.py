"""Servers the user names for the tests: used only when named explicitly, in place of the private ones."""

from __future__ import annotations

from collections.abc import Mapping

MQTT_HOST_ENV = "EDGEFLEET_TEST_MQTT_HOST"
MQTT_PORT_ENV = "EDGEFLEET_TEST_MQTT_PORT"
PG_URL_ENV = "EDGEFLEET_TEST_PG_URL"


def external_broker(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(host, port) of the broker named in ``env``, or None: the test run then starts its own.

    An empty variable counts as unset, so that a CI template that leaves it blank gets the private broker.
    """
    host, port = env.get(MQTT_HOST_ENV) or None, env.get(MQTT_PORT_ENV) or None
    if host is None and port is None:
        return None
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{MQTT_PORT_ENV}: expected a TCP port number (1-65535), got {port!r}")
    return host or "127.0.0.1", int(port or 1883)


def external_postgres_url(env: Mapping[str, str]) -> str | None:
    """SQLAlchemy URL of the database named in ``env``, or None: the test run then starts its own."""
    return env.get(PG_URL_ENV) or None
