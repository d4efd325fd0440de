"""The signed-update channel on a real hub (SQLite, HTTP, gRPC, Mosquitto).

- a stock python-tuf client (its own urllib3 fetcher) verifies the hub's /tuf/ repository and
  downloads a registered model as a target;
- the agent's transport reads the same metadata over gRPC, and over HTTP when gRPC is down;
- `fleet keys init` moves root to offline keys with a 2-of-3 threshold, after which rotations need
  the custodians, and devices follow the root chain;
- `fleet firmware push` registers an image and a delta, both signed targets.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from cloud.cli.common import Output
from cloud.cli.keys import init as keys_init
from cloud.cli.keys import rotate as keys_rotate
from cloud.client.signing import SigningClient
from cloud.hub import Hub
from cloud.settings import Settings
from edge_agent.trust.repository import TrustedRepository, install_root
from edge_agent.trust.transport import SyncChannels, TufTransport
from firmware_images.build import load_bundle
from firmware_images.samples import SAMPLE_DIR
from tests.unit.cloud.helpers import tiny_onnx

pytestmark = pytest.mark.integration

PASSPHRASE = "custodian passphrase"


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        yield running


@pytest.fixture
def client(hub: Hub) -> Iterator[SigningClient]:
    with SigningClient(hub.api_url, hub.admin_token) as c:
        yield c


def push_model(hub: Hub) -> tuple[bytes, dict[str, object]]:
    data = tiny_onnx(3.0)
    with httpx.Client(base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.admin_token}"}) as api:
        row = api.post("/api/v1/models", data={"name": "m", "version": "1"}, files={"file": ("m.onnx", data)})
        assert row.status_code == 201, row.text
        return data, row.json()


class TokenFetcher(FetcherInterface):
    """python-tuf's fetcher over httpx, with an API token: targets are not public, metadata is."""

    def __init__(self, token: str | None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        r = httpx.get(url, headers=self._headers)
        if r.status_code != 200:
            raise tuf_errors.DownloadHTTPError(f"{url}: {r.status_code}", r.status_code)
        return iter([r.content])


def test_a_stock_tuf_client_verifies_the_hub_repository(hub: Hub, tmp_path: Path) -> None:
    data, _ = push_model(hub)  # published as a target by the time the push answers: no sync here
    sha = hashlib.sha256(data).hexdigest()
    root = httpx.get(f"{hub.api_url}/tuf/metadata/1.root.json").content
    for token in (None, hub.admin_token):
        folder = tmp_path / ("with-token" if token else "anonymous")
        folder.mkdir()
        updater = Updater(
            str(folder),
            f"{hub.api_url}/tuf/metadata/",
            str(folder),
            f"{hub.api_url}/tuf/targets/",
            fetcher=TokenFetcher(token),
            bootstrap=root,
        )
        updater.refresh()  # metadata needs no token
        info = updater.get_targetinfo(f"models/m/1/{sha}.onnx")
        assert info is not None and info.custom["kind"] == "model"
        if token is None:
            with pytest.raises(tuf_errors.DownloadHTTPError, match="401"):
                updater.download_target(info)
        else:
            assert Path(updater.download_target(info)).read_bytes() == data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_agent_reads_metadata_over_grpc_and_falls_back_to_http(hub: Hub, tmp_path: Path) -> None:
    root = httpx.get(f"{hub.api_url}/tuf/metadata/root.json").content
    channels = SyncChannels()
    try:
        for endpoint, http, route in (
            (hub.grpc_endpoint, None, "grpc"),
            (f"127.0.0.1:{_free_port()}", f"{hub.api_url}/tuf", "http"),  # nothing listens on the gRPC port
        ):
            folder = tmp_path / route
            install_root(folder, root)
            transport = TufTransport(
                channels=channels, endpoint=endpoint, device_id="d1", http_base=http, timeout_s=5
            )
            result = TrustedRepository(folder, transport).refresh()
            assert result.timestamp_version >= 1
            assert transport.last_route == route
    finally:
        channels.close()


def test_keys_init_moves_root_offline_and_devices_follow(
    hub: Hub, client: SigningClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFLEET_ROOT_PASSPHRASE", PASSPHRASE)
    device = tmp_path / "device"
    install_root(device, client.root_metadata(1))
    usb = tmp_path / "usb"
    keys_init(root_dir=usb, keys=3, threshold=2, passphrase_file=None, old_root_dir=None,
              hub_url=hub.api_url, token=hub.admin_token, output=Output.table)  # fmt: skip
    status = client.keys()
    assert not status["root_keys_on_hub"]
    root = next(r for r in status["roles"] if r["role"] == "root")
    assert (root["version"], root["threshold"], len(root["keyids"])) == (2, 2, 3)

    # The hub can no longer rotate alone; the custodians' folder signs.
    pending = client.propose_rotation("timestamp")
    assert pending["state"] == "pending" and pending["missing"]["previous root"] == 2
    keys_rotate(role="director", root_dir=[usb], passphrase_file=None, new_root_dir=None, keys=1, threshold=1,
                hub_url=hub.api_url, token=hub.admin_token, output=Output.table)  # fmt: skip
    assert next(r for r in client.keys()["roles"] if r["role"] == "root")["version"] == 3

    channels = SyncChannels()
    try:
        repo = TrustedRepository(
            device, TufTransport(channels=channels, endpoint=hub.grpc_endpoint, device_id="d1")
        )
        assert repo.refresh().root_version == 3
        director = repo.director_keys()
        assert director.root_version == 3 and len(director.keys) == 1
    finally:
        channels.close()


def test_firmware_push_registers_an_image_and_a_signed_delta(hub: Hub, client: SigningClient) -> None:
    first = client.push_firmware(SAMPLE_DIR / "edgefleet-fw-sim-board-1.0.0.efw")
    assert [r["kind"] for r in first["data"]] == ["full"]
    second = client.push_firmware(SAMPLE_DIR / "edgefleet-fw-sim-board-1.1.0.efw")
    kinds = {r["kind"]: r for r in second["data"]}
    assert set(kinds) == {"full", "delta"}
    assert kinds["delta"]["length"] < 0.1 * kinds["full"]["length"]
    assert hub.context is not None and hub.context.signing is not None
    targets = hub.context.signing.repo.targets()
    full = targets[kinds["full"]["target_path"]]
    assert full.custom["kind"] == "firmware"
    base = load_bundle(SAMPLE_DIR / "edgefleet-fw-sim-board-1.0.0.efw").manifest.payload_sha256
    assert full.custom["deltas"] == {base: kinds["delta"]["target_path"]}
    assert targets[kinds["delta"]["target_path"]].custom["kind"] == "firmware-delta"
    assert [r["version"] for r in client.list_firmware()] == ["1.0.0", "1.1.0", "1.1.0"]
