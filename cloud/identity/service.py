"""Device identity: issue, record and revoke certificates of the fleet CA, and write its CRL.

Every certificate the CA issues is recorded (:class:`~cloud.identity.tables.IssuedCert`) in the
same transaction that hands it out, so the CRL can list any of them and the gRPC service can refuse
a revoked one. The CRL file is rewritten after each revocation commits; the broker reads it at its
start and on SIGHUP (docs/runbooks/certificates.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select

from cloud.clock import Clock, utcnow
from cloud.errors import InvalidInputError, NotFoundError
from cloud.identity.ca import CertificateAuthority, IssuedCertificate
from cloud.identity.tables import IssuedCert
from cloud.settings import Settings
from edgefleet_proto.topics import TopicError, validate_id
from model_tools.atomic import atomic_write

__all__ = [
    "DeviceBundle",
    "Identity",
    "agent_config_toml",
    "certificate_state",
    "open_ca",
    "provision_device",
    "record",
    "revoke_device",
    "write_crl",
]

log = logging.getLogger(__name__)

# File names inside a provisioned bundle; the agent config names them relative to itself.
CERT_NAME = "client.crt"
KEY_NAME = "client.key"
CA_NAME = "ca.crt"
ROOT_NAME = "root.json"
CONFIG_NAME = "agent.toml"


def open_ca(settings: Settings, *, clock: Clock = utcnow) -> CertificateAuthority:
    """The fleet CA in the hub's identity folder (created on first use)."""
    return CertificateAuthority.open(settings.resolved_identity_dir(), settings.fleet, clock=clock)


def _device_id(device_id: str) -> str:
    try:
        return validate_id("device", device_id)
    except TopicError as e:
        raise InvalidInputError(str(e)) from e


def record(session: Session, fleet: str, kind: str, issued: IssuedCertificate, *, clock: Clock) -> None:
    """Record an issued certificate (committed by the caller's transaction)."""
    subject = issued.certificate.subject.rfc4514_string().removeprefix("CN=")
    session.add(
        IssuedCert(
            serial=issued.serial_hex,
            fleet=fleet,
            kind=kind,
            subject=subject,
            issued_at=clock(),
            not_after=issued.not_after,
        )
    )


@dataclass(frozen=True, slots=True)
class DeviceBundle:
    """What one device needs; ``key_pem`` is None when the device sent a CSR (it holds its key)."""

    device_id: str
    serial: str
    not_after: datetime
    cert_pem: bytes
    key_pem: bytes | None
    ca_pem: bytes
    root_json: bytes | None
    agent_config: str


def provision_device(
    session: Session,
    ca: CertificateAuthority,
    settings: Settings,
    device_id: str,
    *,
    artifact_endpoint: str,
    root_json: bytes | None,
    csr_pem: bytes | None = None,
    clock: Clock = utcnow,
) -> DeviceBundle:
    """Issue a device certificate (a new key, or for the CSR's key) and the config that uses it."""
    device_id = _device_id(device_id)
    if csr_pem is None:
        issued = ca.issue_device(settings.fleet, device_id, validity_days=settings.device_cert_days)
    else:
        issued = ca.sign_csr(settings.fleet, device_id, csr_pem, validity_days=settings.device_cert_days)
    record(session, settings.fleet, "device", issued, clock=clock)
    session.commit()
    log.info(
        "issued certificate %s to device %s (valid until %s)", issued.serial_hex, device_id, issued.not_after
    )
    config = agent_config_toml(
        settings, device_id, artifact_endpoint=artifact_endpoint, with_root=root_json is not None
    )
    return DeviceBundle(
        device_id=device_id,
        serial=issued.serial_hex,
        not_after=issued.not_after,
        cert_pem=issued.cert_pem,
        key_pem=issued.key_pem,
        ca_pem=ca.cert_pem,
        root_json=root_json,
        agent_config=config,
    )


def revoke_device(
    session: Session, ca: CertificateAuthority, settings: Settings, device_id: str, *, clock: Clock = utcnow
) -> list[str]:
    """Revoke every certificate a device holds and rewrite the CRL; returns the serials revoked now.

    NotFoundError when the CA never issued the device a certificate. Revoking twice is harmless.
    """
    device_id = _device_id(device_id)
    rows = session.exec(
        select(IssuedCert).where(
            IssuedCert.fleet == settings.fleet, IssuedCert.kind == "device", IssuedCert.subject == device_id
        )
    ).all()
    if not rows:
        raise NotFoundError(f"device {device_id!r} holds no certificate of this fleet's CA")
    now = clock()
    revoked = []
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = now
            session.add(row)
            revoked.append(row.serial)
    session.commit()
    write_crl(session, ca, settings)
    log.warning("revoked the certificates of device %s: %s", device_id, ", ".join(revoked) or "none left")
    return revoked


def write_crl(session: Session, ca: CertificateAuthority, settings: Settings) -> Path:
    """Write the CRL of every revoked certificate of the fleet (mode 0644: the broker reads it)."""
    rows = session.exec(
        select(IssuedCert.serial, IssuedCert.revoked_at).where(
            IssuedCert.fleet == settings.fleet,
            IssuedCert.revoked_at.is_not(None),  # type: ignore[union-attr]
        )
    ).all()
    revoked = [(serial, at) for serial, at in rows if at is not None]
    path = settings.resolved_crl_file()
    atomic_write(path, ca.crl_pem(revoked, validity_days=settings.crl_days), mode=0o644)
    return path


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate names, and whether it still counts."""

    subject: str
    kind: str
    revoked: bool


def certificate_state(session: Session, serial: str) -> Identity | None:
    """The recorded certificate with this serial (hex), or None when this hub never issued it."""
    row = session.get(IssuedCert, serial)
    if row is None:
        return None
    return Identity(subject=row.subject, kind=row.kind, revoked=row.revoked_at is not None)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_config_toml(settings: Settings, device_id: str, *, artifact_endpoint: str, with_root: bool) -> str:
    """An agent config (deploy/agent.example.toml) with TLS on, naming the bundle's files beside it."""
    host, _, port = settings.resolved_device_mqtt_endpoint().rpartition(":")
    lines = [
        f"# edgefleet agent configuration for device {device_id}, issued by the hub.",
        "# The files it names are relative to this file; keep client.key readable by the agent only.",
        f"device_id = {_toml_str(device_id)}",
        f"fleet = {_toml_str(settings.fleet)}",
        'state_dir = "/var/lib/edgefleet"',
        "",
        "[mqtt]",
        f"host = {_toml_str(host.strip('[]'))}",
        f"port = {int(port)}",
        f"protocol = {_toml_str(settings.mqtt_protocol)}",
        "tls = true",
        f"ca_file = {_toml_str(CA_NAME)}",
        f"cert_file = {_toml_str(CERT_NAME)}",
        f"key_file = {_toml_str(KEY_NAME)}",
        f"topic_prefix = {_toml_str(settings.topic_prefix)}",
        "",
        "[hub]",
        f"grpc_endpoint = {_toml_str(artifact_endpoint)}",
        "grpc_tls = true",
        f"ca_file = {_toml_str(CA_NAME)}",
        f"cert_file = {_toml_str(CERT_NAME)}",
        f"key_file = {_toml_str(KEY_NAME)}",
    ]
    if with_root:
        lines += ["", "[trust]", f"root_file = {_toml_str(ROOT_NAME)}"]
    return "\n".join(lines) + "\n"
