"""The hub's TLS settings at start: the gRPC server's files, and a warning for plaintext off loopback.

Plaintext stays the default so that ``make demo`` runs on one machine with nothing to set up; on
loopback nothing leaves the host. Anywhere else the hub says so at start, every time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cloud.identity.grpc_auth import is_loopback_host
from cloud.settings import Settings
from cloud.startup import HubStartError
from cloud.transport.grpc_server import ServerTls

__all__ = ["plaintext_warnings", "server_tls", "warn_plaintext"]

log = logging.getLogger(__name__)


def _read(path: Path, env: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise HubStartError(f"cannot read {path}: {e.strerror} ({env})") from e


def server_tls(settings: Settings) -> ServerTls | None:
    """The gRPC server's TLS files, read now (a missing one stops the hub); None: plaintext."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    client_ca = settings.grpc_tls_client_ca
    return ServerTls(
        cert_pem=_read(settings.grpc_tls_cert, "EDGEFLEET_GRPC_TLS_CERT"),
        key_pem=_read(settings.grpc_tls_key, "EDGEFLEET_GRPC_TLS_KEY"),
        client_ca_pem=None if client_ca is None else _read(client_ca, "EDGEFLEET_GRPC_TLS_CLIENT_CA"),
    )


def plaintext_warnings(settings: Settings) -> list[str]:
    """What runs without TLS on an address other machines can reach (empty: nothing)."""
    found = []
    if not settings.mqtt_uses_tls() and not is_loopback_host(settings.mqtt_host):
        found.append(
            f"the hub talks to the MQTT broker at {settings.mqtt_host}:{settings.mqtt_port} in plaintext: "
            "set EDGEFLEET_MQTT_TLS_CA, EDGEFLEET_MQTT_TLS_CERT and EDGEFLEET_MQTT_TLS_KEY"
        )
    if settings.grpc_tls_cert is None and not is_loopback_host(settings.grpc_host):
        found.append(
            f"the gRPC artifact service listens on {settings.grpc_host}:{settings.grpc_port} in plaintext "
            "(downloads from other hosts then need an API token, and travel unencrypted): set "
            "EDGEFLEET_GRPC_TLS_CERT, EDGEFLEET_GRPC_TLS_KEY and EDGEFLEET_GRPC_TLS_CLIENT_CA"
        )
    return found


def warn_plaintext(settings: Settings) -> None:
    for warning in plaintext_warnings(settings):
        log.warning("%s (docs/runbooks/certificates.md)", warning)
