"""Who may download artifacts over gRPC: a device by its certificate, anyone else by an API token.

A fleet's models are its owner's property, so a ``Stat`` or ``Fetch`` names its caller, in this order:

1. a client certificate (mTLS, EDGEFLEET_GRPC_TLS_CLIENT_CA): TLS already checked that the fleet CA
   issued it and that it has not expired; here its serial must be one this hub recorded and not
   revoked (the broker learns of a revocation from the CRL, the gRPC service from the database);
2. a metadata ``authorization: Bearer <token>`` with any role (cloud.services.tokens);
3. on a plaintext server only, a peer on the loopback interface: the single-machine demo, where the
   simulated fleet runs in the hub's own host. A plaintext server never serves a remote peer without
   a token, so a hub bound to a public address without TLS gives its models to no one anonymous.

TUF metadata (``FetchMetadata``) stays public: it is signed and holds no weights.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from cryptography import x509
from sqlmodel import Session

from cloud.clock import Clock, utcnow
from cloud.errors import HubError
from cloud.identity.ca import serial_hex
from cloud.identity.service import certificate_state
from cloud.services.tokens import authenticate

__all__ = ["ArtifactAccess", "CallRefusedError", "CallerInfo", "is_loopback_host", "is_loopback_peer"]

log = logging.getLogger(__name__)


class CallRefusedError(HubError):
    """The caller is not allowed to download; ``unauthenticated`` when it named no identity at all."""

    def __init__(self, message: str, *, unauthenticated: bool) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """What a gRPC call tells of its caller: TLS auth context, invocation metadata, peer address."""

    auth: Mapping[str, Iterable[bytes]]
    metadata: Sequence[tuple[str, str | bytes]]
    peer: str


def is_loopback_host(host: str) -> bool:
    """Whether a listening address is reachable from this machine only ("localhost" counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000") is on loopback."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return is_loopback_host(rest.rpartition(":")[0])
    if kind == "ipv6":
        return is_loopback_host(rest.rpartition(":")[0])
    return kind == "unix"


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class ArtifactAccess:
    """Decides, per call, whether the caller may download; returns who it is (for logs)."""

    def __init__(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        *,
        plaintext: bool,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._plaintext = plaintext
        self._clock = clock

    def __call__(self, caller: CallerInfo) -> str:
        """The caller's name; raises :class:`CallRefusedError` saying what was expected (blocking: DB)."""
        pem = next(iter(caller.auth.get("x509_pem_cert", ())), None)
        if pem is not None:
            return self._by_certificate(pem)
        token = _bearer(caller.metadata)
        if token is not None:
            with self._sessions() as session:
                # None for an unknown, expired or revoked token.
                row = authenticate(session, token, clock=self._clock)
            if row is None:
                raise CallRefusedError(
                    "invalid API token in the authorization metadata: expected a token issued by this hub",
                    unauthenticated=True,
                )
            return f"token:{row.name}"
        if self._plaintext and is_loopback_peer(caller.peer):
            return "loopback"
        raise CallRefusedError(
            "artifact downloads need a device certificate issued by the fleet CA (mTLS) or an "
            "'authorization: Bearer <token>' metadata entry; the call had neither",
            unauthenticated=True,
        )

    def _by_certificate(self, pem: bytes) -> str:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as e:  # TLS parsed it already; this would be a grpc defect
            raise CallRefusedError(f"the client certificate cannot be read: {e}", unauthenticated=True) from e
        serial = serial_hex(cert.serial_number)
        with self._sessions() as session:
            known = certificate_state(session, serial)
        if known is None:
            raise CallRefusedError(
                f"client certificate {serial} is not one this hub issued: expected a certificate from "
                "`fleet devices provision`",
                unauthenticated=False,
            )
        if known.revoked:
            log.warning(
                "refused a download by %s %s: certificate %s is revoked", known.kind, known.subject, serial
            )
            raise CallRefusedError(f"client certificate {serial} is revoked", unauthenticated=False)
        return f"{known.kind}:{known.subject}"
