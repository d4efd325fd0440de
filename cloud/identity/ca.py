"""The fleet's certificate authority: one EC P-256 key that signs every device's and server's certificate.

Files, in the hub's identity folder (``Settings.resolved_identity_dir()``):

- ``ca.key``  the CA's private key, PKCS#8 PEM, mode 0600 (written before anything else names it);
- ``ca.crt``  the CA's self-signed certificate: what brokers, the hub and devices trust;
- the CRL (``Settings.resolved_crl_file()``), PEM, rewritten on every revocation and at hub start.

Only pure certificate work happens here (no database): :mod:`cloud.identity.service` records what
was issued and decides what is revoked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.clock import Clock, utcnow
from cloud.errors import InvalidInputError
from model_tools.atomic import atomic_write

__all__ = [
    "HUB_CLIENT_CN",
    "CertificateAuthority",
    "IssuedCertificate",
    "device_uri",
    "parse_certificate",
]

# The common name of the hub's own client certificate; the broker's ACL names it (deploy/mosquitto/).
HUB_CLIENT_CN = "edgefleet-hub"
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
# Clocks drift: a certificate valid from "now" would be refused by a device a few seconds behind.
_BACKDATE = timedelta(minutes=5)
# A common name that is also one MQTT topic level (the broker uses it as the username in %u).
_CN_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def device_uri(fleet: str, device_id: str) -> str:
    """The SAN URI that names a device within its fleet."""
    return f"urn:edgefleet:{fleet}:device:{device_id}"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate just issued; ``key_pem`` is None when the requester holds its own key (a CSR)."""

    certificate: x509.Certificate
    key_pem: bytes | None

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


def serial_hex(serial: int) -> str:
    """How serials are stored and shown: lower-case hex, no prefix (they exceed 64-bit integers)."""
    return format(serial, "x")


def parse_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise InvalidInputError(f"expected a PEM X.509 certificate: {e}") from e


def _check_cn(what: str, value: str) -> str:
    if not _CN_RE.fullmatch(value):
        raise InvalidInputError(
            f"{what} {value!r} cannot name a certificate: expected 1-64 letters, digits, '_', '.' or '-'"
        )
    return value


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A fleet CA held in memory; :meth:`open` loads it from its folder or creates it there."""

    def __init__(
        self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate, *, clock: Clock = utcnow
    ) -> None:
        self._key = key
        self.certificate = certificate
        self._clock = clock

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def open(
        cls, folder: Path, fleet: str, *, validity_days: int = 3650, clock: Clock = utcnow
    ) -> CertificateAuthority:
        """The CA in ``folder``, created there (key first, mode 0600) when it holds none."""
        key_path, cert_path = folder / CA_KEY_FILE, folder / CA_CERT_FILE
        if key_path.exists():
            try:
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except (OSError, ValueError) as e:
                raise InvalidInputError(f"cannot read the fleet CA in {folder}: {e}") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise InvalidInputError(f"{key_path} holds a {type(key).__name__}; expected an EC key")
            return cls(key, cert, clock=clock)
        # The folder holds the CA's key: private from the start.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        key = _new_key()
        now = clock()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"edgefleet fleet CA {fleet}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        # The key before the certificate: a folder with a certificate but no key would look usable.
        atomic_write(key_path, _key_pem(key))  # mode 0600
        atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cls(key, cert, clock=clock)

    # --- issuing ------------------------------------------------------------------------

    def _issue(
        self,
        cn: str,
        *,
        public_key: ec.EllipticCurvePublicKey | None,
        validity_days: int,
        usage: x509.ObjectIdentifier,
        san: Sequence[x509.GeneralName],
    ) -> IssuedCertificate:
        if validity_days < 1:
            raise InvalidInputError(f"certificate validity must be at least 1 day, got {validity_days}")
        key = _new_key() if public_key is None else None
        subject_key = public_key if key is None else key.public_key()
        if subject_key is None:  # pragma: no cover - one of the two is always set
            raise RuntimeError("a certificate needs a public key")
        now = self._clock()
        not_after = min(now + timedelta(days=validity_days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject)
            .public_key(subject_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(cert, None if key is None else _key_pem(key))

    def issue_device(
        self,
        fleet: str,
        device_id: str,
        *,
        validity_days: int = 365,
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> IssuedCertificate:
        """A device's client certificate: CN = device id (the broker's username), SAN URI in the fleet."""
        _check_cn("device id", device_id)
        uri = x509.UniformResourceIdentifier(device_uri(fleet, device_id))
        return self._issue(
            device_id,
            public_key=public_key,
            validity_days=validity_days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=[uri],
        )

    def issue_hub_client(self, *, validity_days: int = 365) -> IssuedCertificate:
        """The hub's own client certificate (CN ``edgefleet-hub``), for the broker and its ACL."""
        return self._issue(
            HUB_CLIENT_CN,
            public_key=None,
            validity_days=validity_days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=[],
        )

    def issue_server(self, names: Sequence[str], *, validity_days: int = 365) -> IssuedCertificate:
        """A server certificate (the broker, the gRPC service) for DNS names and IP addresses."""
        if not names:
            raise InvalidInputError("a server certificate needs at least one DNS name or IP address")
        san: list[x509.GeneralName] = []
        for name in names:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                san.append(x509.DNSName(name))
        return self._issue(
            names[0][:64],
            public_key=None,
            validity_days=validity_days,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            san=san,
        )

    def sign_csr(
        self, fleet: str, device_id: str, csr_pem: bytes, *, validity_days: int
    ) -> IssuedCertificate:
        """A device certificate for a key the device made itself; the CSR's subject is not trusted."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise InvalidInputError(f"expected a PEM certificate signing request: {e}") from e
        if not csr.is_signature_valid:
            raise InvalidInputError("the certificate signing request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise InvalidInputError(
                f"the certificate signing request holds a {type(public_key).__name__}; expected EC P-256"
            )
        return self.issue_device(fleet, device_id, validity_days=validity_days, public_key=public_key)

    # --- revocation ---------------------------------------------------------------------

    def crl_pem(self, revoked: Iterable[tuple[str, datetime]], *, validity_days: int) -> bytes:
        """A CRL listing ``(serial hex, revoked at)``; brokers refuse every client once it expires."""
        now = self._clock()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + timedelta(days=validity_days))
        )
        for serial, at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(at).build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def verifies(self, certificate: x509.Certificate) -> bool:
        """Whether this CA signed ``certificate`` (TLS already checked it; this guards other paths)."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
