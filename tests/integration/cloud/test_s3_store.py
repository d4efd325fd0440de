"""Artifacts in an S3-compatible object store: moto's S3 server over real HTTP, on a port of its own.

The store is exercised alone (multipart upload, a second replica's empty cache, a corrupt object, the
cache's size cap, a missing bucket) and inside a real hub process configured for S3, whose pushed
model a second store serves over gRPC as another replica would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloud.artifacts import ArtifactStore
from cloud.settings import Settings
from cloud.storage import StorageError, open_artifact_store
from cloud.transport.grpc_server import start_grpc_server
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
from tests.integration.cloud.hub_process import HubProcess, running_hub
from tests.large_model import MiB, make_large_onnx

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
moto_server = pytest.importorskip(
    "moto.moto_server.threaded_moto_server", reason="moto[server] is not installed"
)

from cloud.storage.s3 import CorruptArtifactError, S3ArtifactStore, S3Location  # noqa: E402

pytestmark = pytest.mark.integration

BUCKET = "edgefleet-artifacts"
# moto accepts any credentials; they reach boto3 the standard way, through the environment.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a fresh S3 server with an empty ``BUCKET``."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        _client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _store(root: Path, endpoint: str, *, cap: int = 1024 * MiB, bucket: str = BUCKET) -> S3ArtifactStore:
    location = S3Location(bucket=bucket, prefix="fleet-a/", endpoint_url=endpoint, region="us-east-1")
    return S3ArtifactStore(root, location, cache_max_bytes=cap)


def _cached_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("sha256/*/*"))


def test_a_second_replica_with_an_empty_cache_fetches_and_verifies_what_the_first_stored(
    tmp_path: Path, s3_endpoint: str
) -> None:
    data = os.urandom(20 * MiB)  # above the 8 MiB multipart threshold
    first = _store(tmp_path / "a", s3_endpoint)
    info = first.put_bytes(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    head = _client(s3_endpoint).head_object(
        Bucket=BUCKET, Key=f"fleet-a/sha256/{info.sha256[:2]}/{info.sha256}"
    )
    assert head["ContentLength"] == len(data)

    second = _store(tmp_path / "b", s3_endpoint)
    assert _cached_files(tmp_path / "b") == []
    assert second.stat(info.sha256).length == len(data)  # from the object store, nothing fetched yet
    assert _cached_files(tmp_path / "b") == []
    assert second.path(info.sha256).read_bytes() == data
    assert _cached_files(tmp_path / "b") == [info.sha256]
    assert second.verify(info.sha256)


def test_a_corrupt_object_is_refused_on_fetch_and_never_cached(tmp_path: Path, s3_endpoint: str) -> None:
    first = _store(tmp_path / "a", s3_endpoint)
    info = first.put_bytes(b"the real bytes" * 1000)
    key = f"fleet-a/sha256/{info.sha256[:2]}/{info.sha256}"
    _client(s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=b"tampered bytes" * 1000)

    second = _store(tmp_path / "b", s3_endpoint)
    with pytest.raises(
        CorruptArtifactError, match=f"artifact {info.sha256} in s3://{BUCKET}/fleet-a/.*corrupt"
    ):
        second.open(info.sha256)
    assert _cached_files(tmp_path / "b") == []
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_the_cache_keeps_the_most_recently_used_files_within_its_cap(
    tmp_path: Path, s3_endpoint: str
) -> None:
    writer = _store(tmp_path / "w", s3_endpoint)
    a, b, c = (writer.put_bytes(bytes([n]) * MiB) for n in range(3))
    cache = _store(tmp_path / "c", s3_endpoint, cap=2 * MiB + 1)
    cache.path(a.sha256)
    cache.path(b.sha256)
    cache.path(a.sha256)  # a is now more recent than b
    cache.path(c.sha256)
    assert _cached_files(tmp_path / "c") == sorted([a.sha256, c.sha256])
    # An evicted file comes back from the object store.
    assert cache.path(b.sha256).read_bytes() == bytes([1]) * MiB


def test_an_upload_the_bucket_refuses_fails_and_leaves_nothing_cached(
    tmp_path: Path, s3_endpoint: str
) -> None:
    _client(s3_endpoint).create_bucket(Bucket="going-away")
    store = _store(tmp_path / "a", s3_endpoint, bucket="going-away")
    _client(s3_endpoint).delete_bucket(Bucket="going-away")
    with pytest.raises(
        StorageError,
        match=r"cannot store artifact [0-9a-f]{64} in s3://going-away/fleet-a/ .*: NoSuchBucket$",
    ):
        store.put_bytes(b"model bytes")
    assert _cached_files(tmp_path / "a") == []
    assert list((tmp_path / "a" / "tmp").iterdir()) == []


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, s3_endpoint: str) -> None:
    with pytest.raises(
        StorageError, match=r"the artifact bucket s3://no-such-bucket/fleet-a/ .* does not exist"
    ):
        _store(tmp_path / "a", s3_endpoint, bucket="no-such-bucket")


def test_settings_choose_the_store(tmp_path: Path, s3_endpoint: str) -> None:
    local = open_artifact_store(Settings(data_dir=tmp_path / "l"))
    assert type(local) is ArtifactStore
    s3 = open_artifact_store(
        Settings(
            data_dir=tmp_path / "s",
            artifact_store="s3",
            s3_bucket=BUCKET,
            s3_prefix="p",
            s3_endpoint_url=s3_endpoint,
            artifact_cache_max_bytes=8 * MiB,
        )
    )
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.location.prefix, s3.cache_max_bytes) == ("p/", 8 * MiB)
    with pytest.raises(ValueError, match="EDGEFLEET_S3_BUCKET"):
        Settings(artifact_store="s3")


def _fetch(target: str, sha256: str) -> str:
    digest = hashlib.sha256()
    with grpc.insecure_channel(target) as channel:
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
        for chunk in stub.Fetch(artifact_pb2.FetchRequest(sha256=sha256)):
            digest.update(chunk.data)
    return digest.hexdigest()


def _hub_env(endpoint: str) -> dict[str, str]:
    return {
        **AWS_ENV,
        "EDGEFLEET_ARTIFACT_STORE": "s3",
        "EDGEFLEET_S3_BUCKET": BUCKET,
        "EDGEFLEET_S3_PREFIX": "fleet-a",
        "EDGEFLEET_S3_ENDPOINT_URL": endpoint,
    }


def test_a_model_pushed_to_a_hub_on_s3_is_served_by_another_replica_and_refused_once_corrupted(
    short_tmp: Path, s3_endpoint: str, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    model = make_large_onnx(short_tmp / "small.onnx", target_bytes=MiB)
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    data_dir = short_tmp / "hub"
    data_dir.mkdir()
    hub: HubProcess
    with running_hub(data_dir, mqtt_broker, fleet_name, _hub_env(s3_endpoint)) as hub:
        response = hub.push(model, "on-s3", "1.0.0")
        assert response.status_code == 201, response.text
        assert hub.fetch_sha256(sha256) == sha256

    replica = _store(short_tmp / "replica", s3_endpoint)
    server, port = start_grpc_server(replica, lambda _sha256: True)
    try:
        assert _fetch(f"127.0.0.1:{port}", sha256) == sha256
        # Tampered with in the bucket: a replica that has not cached it refuses to serve it.
        key = f"fleet-a/sha256/{sha256[:2]}/{sha256}"
        _client(s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=b"not the model")
        fresh = _store(short_tmp / "fresh", s3_endpoint)
        fresh_server, fresh_port = start_grpc_server(fresh, lambda _sha256: True)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                _fetch(f"127.0.0.1:{fresh_port}", sha256)
            assert refused.value.code() == grpc.StatusCode.DATA_LOSS
            assert "corrupt" in str(refused.value.details())
        finally:
            fresh_server.stop().wait(30)
    finally:
        server.stop().wait(30)


def test_a_hub_configured_for_a_missing_bucket_does_not_start(
    short_tmp: Path, s3_endpoint: str, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(_hub_env(s3_endpoint))
    env.update(
        EDGEFLEET_S3_BUCKET="no-such-bucket",
        EDGEFLEET_DATA_DIR=str(short_tmp / "hub"),
        EDGEFLEET_FLEET=fleet_name,
        EDGEFLEET_MQTT_HOST=mqtt_broker[0],
        EDGEFLEET_MQTT_PORT=str(mqtt_broker[1]),
        EDGEFLEET_API_PORT="0",
        EDGEFLEET_GRPC_PORT="0",
    )
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "hub"], env=env, capture_output=True, timeout=120, check=False
    )
    said = done.stderr.decode()
    assert done.returncode == 4, said
    assert "the artifact bucket s3://no-such-bucket/fleet-a/" in said
    assert "does not exist" in said
    assert "EDGEFLEET_ARTIFACT_STORE" in said
    assert "testing" not in said  # no credential in the message
