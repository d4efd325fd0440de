"""The gRPC artifact service with TLS but no client CA: downloads need a token; metadata stays public.
And the plaintext demo: loopback peers download without one.

A real server on a real socket, the unit fixtures' SQLite database for tokens and certificates.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.identity import service
from cloud.identity.grpc_auth import ArtifactAccess
from cloud.models import Role
from cloud.services import tokens
from cloud.settings import Settings
from cloud.transport.grpc_server import ServerTls, start_grpc_server
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc

pytestmark = pytest.mark.integration

DATA = b"model bytes " * 1000


@pytest.fixture
def token(sessions: SessionFactory) -> str:
    with sessions() as s:
        return tokens.create_token(s, "ci", Role.VIEWER)[1]


def _start(store: ArtifactStore, sessions: SessionFactory, tls: ServerTls | None) -> tuple[object, str, str]:
    sha = store.put_bytes(DATA).sha256
    access = ArtifactAccess(sessions, plaintext=tls is None)
    server, port = start_grpc_server(
        store, {sha}.__contains__, metadata=lambda _n: b"{}", tls=tls, authorize=access, port=0
    )
    return server, f"localhost:{port}", sha


@pytest.fixture
def tls_server(
    store: ArtifactStore, sessions: SessionFactory, settings: Settings
) -> Iterator[tuple[str, str, bytes]]:
    ca = service.open_ca(settings)
    issued = ca.issue_server(["localhost", "127.0.0.1"])
    assert issued.key_pem is not None
    server, endpoint, sha = _start(store, sessions, ServerTls(issued.cert_pem, issued.key_pem))
    yield endpoint, sha, ca.cert_pem
    server.stop(grace=None).wait(5)  # type: ignore[attr-defined]


def _stub(endpoint: str, ca_pem: bytes | None) -> tuple[grpc.Channel, artifact_pb2_grpc.ArtifactServiceStub]:
    if ca_pem is None:
        channel = grpc.insecure_channel(endpoint)
    else:
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=ca_pem))
    return channel, artifact_pb2_grpc.ArtifactServiceStub(channel)


def test_over_tls_a_token_is_needed_to_download(tls_server: tuple[str, str, bytes], token: str) -> None:
    endpoint, sha, ca_pem = tls_server
    channel, stub = _stub(endpoint, ca_pem)
    with channel:
        request = artifact_pb2.FetchRequest(sha256=sha)
        auth = (("authorization", f"Bearer {token}"),)
        assert b"".join(c.data for c in stub.Fetch(request, metadata=auth, timeout=10)) == DATA
        for metadata, message in [
            ((), "had neither"),
            ((("authorization", "Bearer nope"),), "invalid API token"),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Fetch(request, metadata=metadata, timeout=10))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as stat:
            stub.Stat(artifact_pb2.StatRequest(sha256=sha), timeout=10)
        assert stat.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # TUF metadata is signed and holds no weights: public.
        meta = stub.FetchMetadata(artifact_pb2.MetadataRequest(name="timestamp.json"), timeout=10)
        assert b"".join(c.data for c in meta) == b"{}"


def test_a_plaintext_server_serves_loopback_peers_without_a_token(
    store: ArtifactStore, sessions: SessionFactory
) -> None:
    server, endpoint, sha = _start(store, sessions, None)
    try:
        channel, stub = _stub(endpoint.replace("localhost", "127.0.0.1"), None)
        with channel:
            chunks = stub.Fetch(artifact_pb2.FetchRequest(sha256=sha), timeout=10)
            assert b"".join(c.data for c in chunks) == DATA
    finally:
        server.stop(grace=None).wait(5)  # type: ignore[attr-defined]
