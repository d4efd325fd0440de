"""gRPC artifact server over a real socket: Stat, chunked Fetch, resume from an offset, errors, health."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud.artifacts import ArtifactStore
from cloud.errors import NotFoundError
from cloud.settings import Settings
from cloud.transport.grpc_server import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_ACTIVE_DOWNLOADS,
    DEFAULT_MAX_PENDING_CALLS,
    MAX_CHUNK,
    SERVICE_NAME,
    GrpcServerError,
    ServerLimits,
    start_grpc_server,
)
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc

pytestmark = pytest.mark.integration

DATA = os.urandom(3 * MAX_CHUNK + 12345)


@pytest.fixture
def served(store: ArtifactStore) -> tuple[str, str]:
    """(registered sha, stored-but-unregistered sha)."""
    return store.put_bytes(DATA).sha256, store.put_bytes(b"not registered").sha256


@pytest.fixture
def channel(store: ArtifactStore, served: tuple[str, str]) -> Iterator[grpc.Channel]:
    registered = {served[0]}
    server, port = start_grpc_server(store, registered.__contains__, host="127.0.0.1", port=0)
    assert port > 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        server.stop(grace=None).wait(5)


def _fetch(
    stub: artifact_pb2_grpc.ArtifactServiceStub, sha: str, *, offset: int = 0, chunk_size: int = 0
) -> list[artifact_pb2.ArtifactChunk]:
    request = artifact_pb2.FetchRequest(sha256=sha, offset=offset, chunk_size=chunk_size)
    return list(stub.Fetch(request, timeout=10))


def test_stat_and_full_fetch(channel: grpc.Channel, served: tuple[str, str]) -> None:
    stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
    sha = served[0]
    info = stub.Stat(artifact_pb2.StatRequest(sha256=sha), timeout=10)
    assert (info.sha256, info.length) == (sha, len(DATA))
    chunks = _fetch(stub, sha)
    assert all(len(c.data) <= DEFAULT_CHUNK for c in chunks) and len(chunks[0].data) == DEFAULT_CHUNK
    assert [c.offset for c in chunks] == list(range(0, len(DATA), DEFAULT_CHUNK))
    assert {c.total_length for c in chunks} == {len(DATA)}
    assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == sha


def test_resume_from_an_offset(channel: grpc.Channel, served: tuple[str, str]) -> None:
    stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
    sha = served[0]
    # A download broken after a first part: take two chunks, then resume from what is held.
    stream = stub.Fetch(artifact_pb2.FetchRequest(sha256=sha, chunk_size=100_000), timeout=10)
    chunks = iter(stream)
    held = b"".join(next(chunks).data for _ in range(2))
    stream.cancel()  # type: ignore[no-untyped-call]
    rest = _fetch(stub, sha, offset=len(held), chunk_size=100_000)
    assert rest[0].offset == len(held) == 200_000
    assert held + b"".join(c.data for c in rest) == DATA
    assert _fetch(stub, sha, offset=len(DATA)) == []  # nothing left is not an error


def test_chunk_size_is_capped(channel: grpc.Channel, served: tuple[str, str]) -> None:
    chunks = _fetch(artifact_pb2_grpc.ArtifactServiceStub(channel), served[0], chunk_size=16 * MAX_CHUNK)
    assert max(len(c.data) for c in chunks) == MAX_CHUNK


@pytest.mark.parametrize(
    ("sha", "offset", "code", "message"),
    [
        ("../../etc/passwd", 0, grpc.StatusCode.INVALID_ARGUMENT, "expected 64 lowercase hex digits"),
        ("ab" * 32, 0, grpc.StatusCode.NOT_FOUND, "is not a registered model version"),
        ("unregistered", 0, grpc.StatusCode.NOT_FOUND, "is not a registered model version"),
        ("registered", len(DATA) + 1, grpc.StatusCode.OUT_OF_RANGE, f"expected at most {len(DATA)}"),
    ],
)
def test_errors(
    channel: grpc.Channel, served: tuple[str, str], sha: str, offset: int, code: grpc.StatusCode, message: str
) -> None:
    sha = {"registered": served[0], "unregistered": served[1]}.get(sha, sha)
    stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        _fetch(stub, sha, offset=offset)
    assert info.value.code() == code
    assert message in (info.value.details() or "")
    if offset == 0:
        with pytest.raises(grpc.RpcError) as stat_info:
            stub.Stat(artifact_pb2.StatRequest(sha256=sha), timeout=10)
        assert stat_info.value.code() == code


def test_registered_but_missing_file_is_not_found(
    channel: grpc.Channel, store: ArtifactStore, served: tuple[str, str]
) -> None:
    store.delete(served[0])
    with pytest.raises(grpc.RpcError) as info:
        _fetch(artifact_pb2_grpc.ArtifactServiceStub(channel), served[0])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_many_downloads_stream_at_once(store: ArtifactStore, served: tuple[str, str]) -> None:
    # A download is a coroutine, not a worker thread: streams far beyond any thread pool's size
    # all get their first chunk while every other one is still open and unread. Without BDP
    # probing the client's window stays small, so an unread stream cannot be sent to the end
    # (a server with a thread per stream then runs out of threads at the 17th).
    server, port = start_grpc_server(store, {served[0]}.__contains__, port=0)
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            request = artifact_pb2.FetchRequest(sha256=served[0], chunk_size=MAX_CHUNK)
            streams = [stub.Fetch(request, timeout=30) for _ in range(48)]
            firsts = [next(iter(s)) for s in streams]
            assert {c.offset for c in firsts} == {0} and {len(c.data) for c in firsts} == {MAX_CHUNK}
            for first, stream in zip(firsts, streams, strict=True):
                assert first.data + b"".join(c.data for c in stream) == DATA
    finally:
        server.stop().wait(5)


async def _burst(port: int, sha: str, calls: int) -> tuple[int, dict[str, int]]:
    """``calls`` Fetches sent at once over one connection: (how many got every byte, failures by code)."""
    failures: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
        request = artifact_pb2.FetchRequest(sha256=sha)

        async def one() -> bool:
            try:
                chunks = [c async for c in stub.Fetch(request, timeout=120)]
            except grpc.aio.AioRpcError as e:
                failures[e.code().name] = failures.get(e.code().name, 0) + 1
                return False
            return b"".join(c.data for c in chunks) == SMALL

        done = await asyncio.gather(*(one() for _ in range(calls)))
    return sum(done), failures


SMALL = os.urandom(64 * 1024)
BURST = 3000


def test_a_rollout_burst_of_downloads_is_served_not_cancelled(store: ArtifactStore) -> None:
    # A stage that offers thousands of devices at once sends their Fetches together. gRPC's
    # default limit on calls waiting for the server's loop (1,000, hard 3,000) cancelled a
    # quarter of such a burst; every one of them must be served.
    sha = store.put_bytes(SMALL).sha256
    # Every one of them may stream at once: the limit on active downloads is tested on its own.
    limits = ServerLimits(max_active_downloads=BURST)
    server, port = start_grpc_server(store, {sha}.__contains__, port=0, limits=limits)
    try:
        served, failures = asyncio.run(_burst(port, sha, BURST))
    finally:
        server.stop().wait(5)
    assert failures == {} and served == BURST


def test_calls_past_the_pending_limit_are_cancelled(store: ArtifactStore) -> None:
    # The limit is the operator's (EDGEFLEET_GRPC_MAX_PENDING_CALLS): past it calls end CANCELLED,
    # which devices retry after a back-off, and the calls within it are still served whole.
    sha = store.put_bytes(SMALL).sha256
    server, port = start_grpc_server(
        store,
        {sha}.__contains__,
        port=0,
        limits=ServerLimits(max_pending_calls=50, max_active_downloads=BURST),
    )
    try:
        served, failures = asyncio.run(_burst(port, sha, BURST))
    finally:
        server.stop().wait(5)
    assert set(failures) == {"CANCELLED"}
    assert served + failures["CANCELLED"] == BURST and served >= 50


@pytest.mark.parametrize("name", ["max_pending_calls", "max_active_downloads"])
def test_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: expected at least 1, got 0"):
        ServerLimits(**{name: 0})


def test_the_hub_settings_default_to_the_servers_limits() -> None:
    settings = Settings()
    assert settings.grpc_max_pending_calls == DEFAULT_MAX_PENDING_CALLS
    assert settings.grpc_max_active_downloads == DEFAULT_MAX_ACTIVE_DOWNLOADS


def test_downloads_past_the_active_limit_are_told_the_hub_is_busy(
    store: ArtifactStore, served: tuple[str, str]
) -> None:
    # Two streams held open unread; a third is refused at once, saying why and what to do, and once
    # one of the two ends a new one is served.
    server, port = start_grpc_server(
        store, {served[0]}.__contains__, port=0, limits=ServerLimits(max_active_downloads=2)
    )
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            request = artifact_pb2.FetchRequest(sha256=served[0], chunk_size=MAX_CHUNK)
            held = [stub.Fetch(request, timeout=30) for _ in range(2)]
            firsts = [next(iter(s)) for s in held]  # both admitted and streaming
            with pytest.raises(grpc.RpcError) as info:
                _fetch(stub, served[0])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details() or ""
            assert "hub busy: 2 downloads in progress" in details
            assert "EDGEFLEET_GRPC_MAX_ACTIVE_DOWNLOADS" in details
            assert firsts[0].data + b"".join(c.data for c in held[0]) == DATA
            assert b"".join(c.data for c in _fetch(stub, served[0])) == DATA
            held[1].cancel()
    finally:
        server.stop().wait(5)


def test_stop_lets_a_download_in_flight_finish_and_refuses_new_ones(
    store: ArtifactStore, served: tuple[str, str]
) -> None:
    server, port = start_grpc_server(store, {served[0]}.__contains__, port=0)
    stopped = None
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            stream = iter(
                stub.Fetch(artifact_pb2.FetchRequest(sha256=served[0], chunk_size=65536), timeout=30)
            )
            held = next(stream).data
            stopped = server.stop(grace=20)
            assert held + b"".join(c.data for c in stream) == DATA
            assert stopped.wait(20)
            with pytest.raises(grpc.RpcError) as info:
                stub.Stat(artifact_pb2.StatRequest(sha256=served[0]), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None).wait(5)
    assert server.stop() is stopped  # stopping again is a no-op


def test_a_taken_port_is_an_error_and_leaves_nothing_running(store: ArtifactStore) -> None:
    server, port = start_grpc_server(store, lambda _sha: False, port=0)
    try:
        with pytest.raises(GrpcServerError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            start_grpc_server(store, lambda _sha: False, port=port)
    finally:
        server.stop().wait(5)
    assert not [t for t in threading.enumerate() if t.name == "grpc-artifacts" and t.is_alive()]


METADATA = {"timestamp.json": b'{"signed": "t"}', "2.root.json": os.urandom(MAX_CHUNK + 10)}


def _metadata_file(name: str) -> bytes:
    try:
        return METADATA[name]
    except KeyError:
        raise NotFoundError(f"no metadata file {name}") from None


@pytest.mark.parametrize(
    ("name", "offset", "code"),
    [
        ("timestamp.json", 0, None),
        ("2.root.json", 0, None),
        ("2.root.json", MAX_CHUNK + 3, None),
        ("9.root.json", 0, grpc.StatusCode.NOT_FOUND),
        ("timestamp.json", 16, grpc.StatusCode.OUT_OF_RANGE),
    ],
)
def test_fetch_metadata(store: ArtifactStore, name: str, offset: int, code: grpc.StatusCode | None) -> None:
    server, port = start_grpc_server(store, lambda _sha: False, metadata=_metadata_file, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            request = artifact_pb2.MetadataRequest(name=name, offset=offset)
            if code is None:
                chunks = list(stub.FetchMetadata(request, timeout=10))
                assert chunks[0].offset == offset and {c.total_length for c in chunks} == {
                    len(METADATA[name])
                }
                assert b"".join(c.data for c in chunks) == METADATA[name][offset:]
            else:
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.FetchMetadata(request, timeout=10))
                assert info.value.code() == code
    finally:
        server.stop().wait(5)


def test_fetch_metadata_without_an_update_repository(channel: grpc.Channel) -> None:
    stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FetchMetadata(artifact_pb2.MetadataRequest(name="timestamp.json"), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
