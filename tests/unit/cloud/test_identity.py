"""The fleet CA, the record of what it issued, revocation, and who may download over gRPC.

The database is SQLite in a temp folder (the unit fixtures); no broker or TLS here: the real ones are
in tests/integration/identity/.
"""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.db import SessionFactory
from cloud.errors import InvalidInputError, NotFoundError
from cloud.identity import service
from cloud.identity.ca import HUB_CLIENT_CN, CertificateAuthority, device_uri, serial_hex
from cloud.identity.grpc_auth import ArtifactAccess, CallerInfo, CallRefusedError, is_loopback_peer
from cloud.identity.tables import IssuedCert
from cloud.identity.tls import plaintext_warnings
from cloud.models import Role
from cloud.services import tokens
from cloud.settings import Settings
from edge_agent.config import config_from_mapping
from tests.unit.cloud.helpers import FrozenClock

FLEET = "unit"


@pytest.fixture
def ca(settings: Settings, clock: FrozenClock) -> CertificateAuthority:
    return service.open_ca(settings, clock=clock)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class TestCertificateAuthority:
    def test_the_key_is_private_and_the_ca_reopens_as_the_same(
        self, settings: Settings, ca: CertificateAuthority
    ) -> None:
        folder = settings.resolved_identity_dir()
        assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        again = service.open_ca(settings)
        assert again.certificate == ca.certificate
        assert again.verifies(ca.issue_device(FLEET, "d1").certificate)

    def test_a_device_certificate_names_the_device(
        self, ca: CertificateAuthority, clock: FrozenClock
    ) -> None:
        issued = ca.issue_device(FLEET, "cam-7", validity_days=30)
        cert = issued.certificate
        assert _cn(cert) == "cam-7"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [device_uri(FLEET, "cam-7")]
        assert device_uri(FLEET, "cam-7") == "urn:edgefleet:unit:device:cam-7"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.not_valid_after_utc == clock.now + timedelta(days=30)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert issued.key_pem is not None and b"PRIVATE KEY" in issued.key_pem
        assert ca.verifies(cert)

    def test_hub_and_server_certificates(self, ca: CertificateAuthority) -> None:
        hub = ca.issue_hub_client().certificate
        assert _cn(hub) == HUB_CLIENT_CN
        server = ca.issue_server(["broker.example", "10.0.0.5"]).certificate
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
        eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    @pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "x" * 65])
    def test_a_device_id_that_cannot_be_a_username_is_refused(
        self, ca: CertificateAuthority, bad: str
    ) -> None:
        with pytest.raises(InvalidInputError, match="cannot name a certificate"):
            ca.issue_device(FLEET, bad)

    def test_a_csr_is_signed_for_its_key_but_not_its_subject(self, ca: CertificateAuthority) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet-hub")]))
            .sign(key, hashes.SHA256())
        )
        from cryptography.hazmat.primitives.serialization import Encoding

        issued = ca.sign_csr(FLEET, "cam-8", csr.public_bytes(Encoding.PEM), validity_days=1)
        assert issued.key_pem is None
        assert _cn(issued.certificate) == "cam-8"  # never the CN the request asked for
        assert issued.certificate.public_key() == key.public_key()

    def test_a_csr_of_another_kind_of_key_or_no_csr_is_refused(self, ca: CertificateAuthority) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(rsa_key, hashes.SHA256())
        )
        with pytest.raises(InvalidInputError, match="expected EC P-256"):
            ca.sign_csr(FLEET, "cam-8", csr.public_bytes(Encoding.PEM), validity_days=1)
        with pytest.raises(InvalidInputError, match="expected a PEM certificate signing request"):
            ca.sign_csr(FLEET, "cam-8", b"not a csr", validity_days=1)

    def test_the_crl_lists_the_revoked_serials_signed_by_the_ca(
        self, ca: CertificateAuthority, clock: FrozenClock
    ) -> None:
        a, b = ca.issue_device(FLEET, "a"), ca.issue_device(FLEET, "b")
        crl = x509.load_pem_x509_crl(ca.crl_pem([(a.serial_hex, clock.now)], validity_days=7))
        assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(a.certificate.serial_number) is not None
        assert crl.get_revoked_certificate_by_serial_number(b.certificate.serial_number) is None
        assert crl.next_update_utc == clock.now + timedelta(days=7)


class TestService:
    def test_provision_records_the_certificate_and_writes_a_config_the_agent_reads(
        self, sessions: SessionFactory, ca: CertificateAuthority, settings: Settings, clock: FrozenClock
    ) -> None:
        with sessions() as s:
            bundle = service.provision_device(
                s, ca, settings, "cam-1", artifact_endpoint="hub.example:50051", root_json=b"{}", clock=clock
            )
            row = s.get(IssuedCert, bundle.serial)
        assert row is not None and (row.subject, row.kind, row.revoked_at) == ("cam-1", "device", None)
        assert row.not_after == bundle.not_after
        config = config_from_mapping(tomllib.loads(bundle.agent_config), base_dir=Path("/etc/edgefleet"))
        assert (config.device_id, config.fleet) == ("cam-1", FLEET)
        assert config.mqtt.tls and config.mqtt.port == 8883
        assert config.mqtt.cert_file == Path("/etc/edgefleet/client.crt")
        assert config.mqtt.key_file == Path("/etc/edgefleet/client.key")
        assert config.hub.grpc_tls and config.hub.grpc_endpoint == "hub.example:50051"
        assert config.trust.root_file == Path("/etc/edgefleet/root.json")

    def test_revoke_revokes_every_certificate_of_the_device_and_rewrites_the_crl(
        self, sessions: SessionFactory, ca: CertificateAuthority, settings: Settings, clock: FrozenClock
    ) -> None:
        with sessions() as s:
            first, second, other = (
                service.provision_device(
                    s, ca, settings, d, artifact_endpoint="h:1", root_json=None, clock=clock
                )
                for d in ("cam-1", "cam-1", "cam-2")
            )
            revoked = service.revoke_device(s, ca, settings, "cam-1", clock=clock)
            assert sorted(revoked) == sorted([first.serial, second.serial])
            assert service.revoke_device(s, ca, settings, "cam-1", clock=clock) == []
            assert service.certificate_state(s, first.serial).revoked  # type: ignore[union-attr]
            assert not service.certificate_state(s, other.serial).revoked  # type: ignore[union-attr]
            assert service.certificate_state(s, "abc") is None
            with pytest.raises(NotFoundError, match="holds no certificate"):
                service.revoke_device(s, ca, settings, "cam-9", clock=clock)
        crl = x509.load_pem_x509_crl(settings.resolved_crl_file().read_bytes())
        listed = {serial_hex(r.serial_number) for r in crl}
        assert listed == {first.serial, second.serial}
        assert stat.S_IMODE(settings.resolved_crl_file().stat().st_mode) == 0o644


def _caller(
    *, pem: bytes | None = None, token: str | None = None, peer: str = "ipv4:10.1.2.3:5000"
) -> CallerInfo:
    auth: dict[str, Sequence[bytes]] = {} if pem is None else {"x509_pem_cert": [pem]}
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    return CallerInfo(auth=auth, metadata=metadata, peer=peer)


class TestArtifactAccess:
    def test_certificates_tokens_and_loopback(
        self, sessions: SessionFactory, ca: CertificateAuthority, settings: Settings, clock: FrozenClock
    ) -> None:
        with sessions() as s:
            good = service.provision_device(s, ca, settings, "cam-1", artifact_endpoint="h:1", root_json=None)
            bad = service.provision_device(s, ca, settings, "cam-2", artifact_endpoint="h:1", root_json=None)
            service.revoke_device(s, ca, settings, "cam-2", clock=clock)
            _row, secret = tokens.create_token(s, "ci", Role.VIEWER, clock=clock)
        unknown = ca.issue_device(FLEET, "cam-3").cert_pem  # signed, but never recorded
        tls = ArtifactAccess(sessions, plaintext=False, clock=clock)
        plain = ArtifactAccess(sessions, plaintext=True, clock=clock)

        assert tls(_caller(pem=good.cert_pem)) == "device:cam-1"
        assert tls(_caller(token=secret)) == "token:ci"
        assert plain(_caller(peer="ipv4:127.0.0.1:4000")) == "loopback"
        assert plain(_caller(peer="ipv6:[::1]:4000")) == "loopback"
        refusals = [
            (tls, _caller(pem=bad.cert_pem), "is revoked", False),
            (tls, _caller(pem=unknown), "not one this hub issued", False),
            (tls, _caller(token=secret + "x"), "invalid API token", True),
            (tls, _caller(peer="ipv4:127.0.0.1:4000"), "had neither", True),
            (plain, _caller(), "had neither", True),
        ]
        for access, caller, message, unauthenticated in refusals:
            with pytest.raises(CallRefusedError, match=message) as refused:
                access(caller)
            assert refused.value.unauthenticated is unauthenticated

    @pytest.mark.parametrize(
        ("peer", "loopback"),
        [
            ("ipv4:127.0.0.1:1", True),
            ("ipv4:127.8.9.1:1", True),
            ("ipv6:[::1]:1", True),
            ("unix:/tmp/s", True),
            ("ipv4:10.0.0.1:1", False),
            ("ipv6:[2001:db8::1]:1", False),
            ("ipv4:localhostx:1", False),
        ],
    )
    def test_loopback_peers(self, peer: str, loopback: bool) -> None:
        assert is_loopback_peer(peer) is loopback


class TestTlsSettings:
    def test_plaintext_off_loopback_is_warned_about(self, tmp_path: Path) -> None:
        assert plaintext_warnings(Settings(data_dir=tmp_path)) == []
        found = plaintext_warnings(Settings(data_dir=tmp_path, mqtt_host="broker.lan", grpc_host="0.0.0.0"))
        assert len(found) == 2 and "MQTT" in found[0] and "gRPC" in found[1]
        quiet = Settings(
            data_dir=tmp_path,
            mqtt_host="broker.lan",
            mqtt_tls_ca=tmp_path / "ca.crt",
            grpc_host="0.0.0.0",
            grpc_tls_cert=tmp_path / "c",
            grpc_tls_key=tmp_path / "k",
        )
        assert plaintext_warnings(quiet) == []

    def test_tls_files_come_in_pairs(self, tmp_path: Path) -> None:
        with pytest.raises(
            ValueError, match="EDGEFLEET_MQTT_TLS_CERT and EDGEFLEET_MQTT_TLS_KEY go together"
        ):
            Settings(data_dir=tmp_path, mqtt_tls_cert=tmp_path / "c")
        with pytest.raises(ValueError, match="EDGEFLEET_GRPC_TLS_CLIENT_CA needs TLS"):
            Settings(data_dir=tmp_path, grpc_tls_client_ca=tmp_path / "ca")
