"""The shipped Mosquitto config (deploy/mosquitto/) on a real broker: certificates, ACLs and the CRL.

Non-delivery is shown without waiting for a time-out: after a refused publish the same client publishes
an allowed message on the same connection, and the broker delivers one client's QoS 1 messages in
order, so once the hub has the allowed one, the refused one would have come before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.clock import utcnow
from cloud.db import SessionFactory, session_factory
from cloud.identity import service
from cloud.identity.ca import CertificateAuthority
from cloud.settings import Settings
from cloud.startup import open_database
from tests.integration.identity.shipped_broker import ShippedBroker, TlsClient, write_pair

pytestmark = pytest.mark.integration

FLEET = "plant"
NOT_AUTHORIZED = 0x87
REPORTS = ("status", "telemetry", "sketch", "events")


def topic(device: str, channel: str) -> str:
    return f"ef/v1/{FLEET}/dev/{device}/{channel}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "hub", fleet=FLEET)


@pytest.fixture
def sessions(settings: Settings) -> SessionFactory:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return session_factory(open_database(settings.resolved_database_url()))


@pytest.fixture
def ca(settings: Settings) -> CertificateAuthority:
    return service.open_ca(settings)


@pytest.fixture
def broker(ca: CertificateAuthority, sessions: SessionFactory, settings: Settings) -> Iterator[ShippedBroker]:
    with sessions() as session:
        crl = service.write_crl(session, ca, settings)
    with ShippedBroker(ca, crl.read_bytes()) as b:
        yield b


class Clients:
    """Connected clients of one test, closed at its end."""

    def __init__(self, broker: ShippedBroker, ca: CertificateAuthority, folder: Path) -> None:
        self.broker, self.ca, self.folder = broker, ca, folder
        self.open: list[TlsClient] = []

    def device(self, device_id: str, issued: object = None) -> TlsClient:
        issued = issued or self.ca.issue_device(FLEET, device_id)
        cert, key = write_pair(self.folder, device_id, issued)  # type: ignore[arg-type]
        return self._connect(device_id, cert, key)

    def hub(self) -> TlsClient:
        cert, key = write_pair(self.folder, "hub", self.ca.issue_hub_client())
        client = self._connect("hub", cert, key)
        for channel in REPORTS:
            assert not client.subscribe(f"ef/v1/{FLEET}/dev/+/{channel}").is_failure
        return client

    def _connect(self, client_id: str, cert: Path | None, key: Path | None) -> TlsClient:
        client = TlsClient(self.broker, client_id, self.broker.tls_context(cert, key))
        self.open.append(client)
        assert client.connect(), f"{client_id} was refused: {client.connect_reason or client.connect_error}"
        return client

    def close(self) -> None:
        for c in self.open:
            c.close()


@pytest.fixture
def clients(broker: ShippedBroker, ca: CertificateAuthority, tmp_path: Path) -> Iterator[Clients]:
    c = Clients(broker, ca, tmp_path)
    yield c
    c.close()


@pytest.mark.parametrize("channel", REPORTS)
def test_a_device_publishes_its_own_reports_only(clients: Clients, channel: str) -> None:
    hub = clients.hub()
    a = clients.device("cam-a")
    refused = a.publish(topic("cam-b", channel), b"forged")
    assert refused.value == NOT_AUTHORIZED, f"expected 'Not authorized' (0x87), got {refused}"
    assert not a.publish(topic("cam-a", channel), b"own").is_failure
    hub.wait_for(topic("cam-a", channel), b"own")
    assert topic("cam-b", channel) not in hub.topics()


def test_a_device_cannot_read_another_devices_instructions(clients: Clients) -> None:
    hub = clients.hub()
    a = clients.device("cam-a")
    # Mosquitto 2.0 grants these subscriptions (SUBACK 1) and applies the ACL to every message it would
    # deliver: what counts is that nothing of cam-b's arrives.
    for channel in ("desired", "cmd"):
        a.subscribe(topic("cam-b", channel))
        assert not a.subscribe(topic("cam-a", channel)).is_failure
    a.subscribe(f"ef/v1/{FLEET}/dev/+/desired")
    for channel in ("desired", "cmd"):
        assert not hub.publish(topic("cam-b", channel), b"for b", retain=channel == "desired").is_failure
        assert not hub.publish(topic("cam-a", channel), b"for a", retain=channel == "desired").is_failure
        a.wait_for(topic("cam-a", channel), b"for a")
    assert {m.topic for m in a.messages} == {topic("cam-a", "desired"), topic("cam-a", "cmd")}


def test_a_device_cannot_write_instructions(clients: Clients) -> None:
    hub = clients.hub()
    assert not hub.subscribe(f"ef/v1/{FLEET}/dev/+/desired").is_failure
    a = clients.device("cam-a")
    assert a.publish(topic("cam-a", "desired"), b"self-granted").value == NOT_AUTHORIZED
    assert a.publish(topic("cam-b", "desired"), b"forged").value == NOT_AUTHORIZED
    assert not a.publish(topic("cam-a", "status"), b"marker").is_failure
    hub.wait_for(topic("cam-a", "status"), b"marker")
    assert not any(m.topic.endswith("/desired") for m in hub.messages)


def test_the_hub_reads_every_devices_reports(clients: Clients) -> None:
    hub = clients.hub()
    devices = [clients.device(d) for d in ("cam-a", "cam-b", "cam-c")]
    for name, d in zip(("cam-a", "cam-b", "cam-c"), devices, strict=True):
        for channel in REPORTS:
            assert not d.publish(topic(name, channel), name.encode()).is_failure
            hub.wait_for(topic(name, channel), name.encode())


def test_a_client_without_a_certificate_is_refused(broker: ShippedBroker) -> None:
    client = TlsClient(broker, "anon", broker.tls_context())
    assert not client.connect()
    client.close()


def test_a_certificate_of_another_ca_is_refused(broker: ShippedBroker, tmp_path: Path) -> None:
    other = CertificateAuthority.open(tmp_path / "other-ca", FLEET)
    cert, key = write_pair(tmp_path, "cam-a", other.issue_device(FLEET, "cam-a"))
    client = TlsClient(broker, "cam-a", broker.tls_context(cert, key))
    assert not client.connect()
    client.close()


def test_a_revoked_device_is_refused_after_the_broker_reloads(
    broker: ShippedBroker,
    clients: Clients,
    ca: CertificateAuthority,
    sessions: SessionFactory,
    settings: Settings,
    tmp_path: Path,
) -> None:
    with sessions() as session:
        bundle_c = service.provision_device(
            session, ca, settings, "cam-c", artifact_endpoint="hub:50051", root_json=None
        )
        bundle_d = service.provision_device(
            session, ca, settings, "cam-d", artifact_endpoint="hub:50051", root_json=None
        )
    for b in (bundle_c, bundle_d):
        (tmp_path / f"{b.device_id}.crt").write_bytes(b.cert_pem)
        assert b.key_pem is not None
        (tmp_path / f"{b.device_id}.key").write_bytes(b.key_pem)
    clients.device("cam-c", _Pair(bundle_c.cert_pem, bundle_c.key_pem)).close()

    with sessions() as session:
        revoked = service.revoke_device(session, ca, settings, "cam-c", clock=utcnow)
    assert revoked == [bundle_c.serial]
    broker.write_crl(settings.resolved_crl_file().read_bytes())
    broker.reload()

    c = TlsClient(broker, "cam-c-again", broker.tls_context(tmp_path / "cam-c.crt", tmp_path / "cam-c.key"))
    assert not c.connect(), "a revoked certificate still connects after the broker reloaded the CRL"
    c.close()
    # Another device of the same CA is unaffected.
    clients.device("cam-d", _Pair(bundle_d.cert_pem, bundle_d.key_pem))


class _Pair:
    """A certificate and key as :func:`write_pair` takes them (from a provisioned bundle)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes | None) -> None:
        self.cert_pem, self.key_pem = cert_pem, key_pem
