"""A hub, the shipped broker config and a real agent, all over certificates from the fleet CA.

The hub connects to the broker with its own client certificate (CN edgefleet-hub) and serves artifacts
over gRPC with mTLS; a device provisioned through the API (`POST /devices/{id}/credentials`) runs from
the agent config in its bundle, comes online over mTLS MQTT, and installs a signed model fetched over
TLS gRPC with its certificate. Then the same gRPC service refuses a revoked certificate, one without a
certificate, and one from another CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import httpx
import pytest
from sqlmodel import select

from cloud.db import session_factory
from cloud.hub import Hub
from cloud.identity import service
from cloud.identity.ca import CertificateAuthority
from cloud.models import Device, DeviceState
from cloud.settings import Settings
from cloud.startup import HubStartError, open_database
from cloud.transport.mqtt import check_broker
from edge_agent.agent import Agent
from edge_agent.config import BackoffConfig, config_from_mapping
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
from tests.integration.cloud.mqtt_probe import wait_for
from tests.integration.identity.shipped_broker import ShippedBroker, write_pair
from tests.unit.agent.fakes import NO_TRIAL
from tests.unit.cloud.helpers import tiny_onnx

pytestmark = pytest.mark.integration

FLEET = "plant"
TIMEOUT_S = 30.0


@dataclass
class TlsHub:
    hub: Hub
    broker: ShippedBroker
    ca: CertificateAuthority
    folder: Path

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.hub.admin_token}"}
        return httpx.Client(base_url=self.hub.api_url, headers=headers, timeout=30)

    def provision(self, device_id: str) -> Path:
        """The device's bundle from the API, written as `fleet devices provision` writes it."""
        with self.api() as api:
            r = api.post(f"/api/v1/devices/{device_id}/credentials")
        assert r.status_code == 201, r.text
        bundle = r.json()
        out = self.folder / device_id
        out.mkdir()
        (out / "client.crt").write_text(bundle["certificate_pem"])
        (out / "client.key").write_text(bundle["private_key_pem"])
        (out / "ca.crt").write_text(bundle["ca_certificate_pem"])
        assert bundle["root_json"], "the hub's TUF root belongs in the bundle"
        (out / "root.json").write_text(bundle["root_json"])
        (out / "agent.toml").write_text(bundle["agent_config_toml"])
        return out


@pytest.fixture
def tls_hub(short_tmp: Path) -> Iterator[TlsHub]:
    pki = short_tmp / "pki"
    pki.mkdir()
    settings = Settings(data_dir=short_tmp / "hub", fleet=FLEET)
    ca = service.open_ca(settings)
    with ShippedBroker(ca, initial_crl(settings)) as broker:
        hub_cert, hub_key = write_pair(pki, "hub", ca.issue_hub_client())
        grpc_cert, grpc_key = write_pair(pki, "grpc", ca.issue_server(["localhost", "127.0.0.1"]))
        (pki / "ca.crt").write_bytes(ca.cert_pem)
        settings = Settings(
            data_dir=short_tmp / "hub",
            fleet=FLEET,
            mqtt_host="localhost",
            mqtt_port=broker.port,
            mqtt_tls_ca=pki / "ca.crt",
            mqtt_tls_cert=hub_cert,
            mqtt_tls_key=hub_key,
            api_port=0,
            grpc_host="127.0.0.1",
            grpc_port=0,
            grpc_tls_cert=grpc_cert,
            grpc_tls_key=grpc_key,
            grpc_tls_client_ca=pki / "ca.crt",
            device_mqtt_endpoint=f"localhost:{broker.port}",
        )
        with Hub(settings) as running:
            assert running.mqtt.wait_ready(TIMEOUT_S), "the hub did not connect with its certificate"
            yield TlsHub(running, broker, ca, short_tmp)


def initial_crl(settings: Settings) -> bytes:
    """The CRL the broker starts with, written by the hub's own service from an empty database."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sessions = session_factory(open_database(settings.resolved_database_url()))
    with sessions() as session:
        return service.write_crl(session, service.open_ca(settings), settings).read_bytes()


def test_a_provisioned_agent_installs_a_model_over_mtls(tls_hub: TlsHub) -> None:
    bundle = tls_hub.provision("tls-1")
    data = tomllib.loads((bundle / "agent.toml").read_text())
    data["state_dir"] = str(tls_hub.folder / "state")  # the bundle says /var/lib/edgefleet
    config = config_from_mapping(data, base_dir=bundle)
    assert config.mqtt.tls and config.hub.grpc_tls and config.mqtt.cert_file == bundle / "client.crt"
    config = replace(config, trial=NO_TRIAL, backoff=BackoffConfig(initial_s=0.05, max_s=0.5))
    ctx = tls_hub.hub.context
    assert ctx is not None

    def online() -> bool:
        with ctx.sessions() as s:
            row = s.exec(select(Device).where(Device.id == "tls-1")).first()
            return row is not None and row.state == DeviceState.ONLINE

    model = tiny_onnx(2.0)
    sha = hashlib.sha256(model).hexdigest()

    def assign() -> None:
        with tls_hub.api() as api:
            r = api.post(
                "/api/v1/models", data={"name": "m", "version": "1"}, files={"file": ("m.onnx", model)}
            )
            assert r.status_code == 201, r.text
            r = api.post("/api/v1/assignments", json={"model": "m", "version": "1", "devices": ["tls-1"]})
            assert r.status_code == 200, r.text

    async def scenario() -> None:
        agent = Agent(config)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.to_thread(wait_for, online, TIMEOUT_S)
            await asyncio.to_thread(assign)
            await agent.wait_serving(sha, timeout=TIMEOUT_S)
        finally:
            stop.set()
            await task

    asyncio.run(asyncio.wait_for(scenario(), 3 * TIMEOUT_S))


def _fetch(hub: Hub, sha256: str, creds: grpc.ChannelCredentials) -> bytes:
    with grpc.secure_channel(hub.grpc_endpoint, creds) as channel:
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
        chunks = stub.Fetch(artifact_pb2.FetchRequest(sha256=sha256), timeout=10)
        return b"".join(c.data for c in chunks)


def _creds(
    ca: CertificateAuthority, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def test_grpc_downloads_need_a_valid_unrevoked_certificate(tls_hub: TlsHub) -> None:
    model = tiny_onnx(3.0)
    sha = hashlib.sha256(model).hexdigest()
    with tls_hub.api() as api:
        r = api.post("/api/v1/models", data={"name": "m", "version": "1"}, files={"file": ("m.onnx", model)})
        assert r.status_code == 201, r.text
    bundle = tls_hub.provision("tls-2")
    good = _creds(tls_hub.ca, bundle / "client.crt", bundle / "client.key")
    assert _fetch(tls_hub.hub, sha, good) == model

    # No client certificate: the TLS handshake fails before any call.
    with pytest.raises(grpc.RpcError) as no_cert:
        _fetch(tls_hub.hub, sha, _creds(tls_hub.ca))
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE

    # A certificate of another CA: refused by TLS too.
    other = CertificateAuthority.open(tls_hub.folder / "other-ca", FLEET)
    cert, key = write_pair(tls_hub.folder, "stranger", other.issue_device(FLEET, "tls-2"))
    with pytest.raises(grpc.RpcError) as stranger:
        _fetch(tls_hub.hub, sha, _creds(tls_hub.ca, cert, key))
    assert stranger.value.code() == grpc.StatusCode.UNAVAILABLE

    # Revoked through the API: TLS still accepts it (the CA signed it), the service refuses it.
    with tls_hub.api() as api:
        r = api.post("/api/v1/devices/tls-2/credentials/revoke")
    assert r.status_code == 200 and r.json()["revoked"], r.text
    with pytest.raises(grpc.RpcError) as revoked:
        _fetch(tls_hub.hub, sha, _creds(tls_hub.ca, bundle / "client.crt", bundle / "client.key"))
    assert revoked.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (revoked.value.details() or "")


def test_the_start_check_connects_with_the_hub_certificate_and_names_the_settings(tls_hub: TlsHub) -> None:
    settings = tls_hub.hub.settings
    check_broker(settings, timeout=TIMEOUT_S)
    no_cert = settings.model_copy(update={"mqtt_tls_cert": None, "mqtt_tls_key": None})
    with pytest.raises(HubStartError, match="EDGEFLEET_MQTT_TLS_CERT") as refused:
        check_broker(no_cert, timeout=TIMEOUT_S)
    assert f"localhost:{tls_hub.broker.port}" in str(refused.value)
