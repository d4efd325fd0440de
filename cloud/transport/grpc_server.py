"""gRPC artifact server: streams registered artifacts in resumable chunks, plus gRPC health.

A device that lost its connection mid-download asks again from the offset it already
holds. Only artifacts pinned by a registered model version are served, so the store
cannot be used to fetch arbitrary leftovers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typing_extensions import override

from cloud.artifacts import ArtifactNotFoundError, ArtifactStore, check_sha256
from cloud.errors import HubError, InvalidInputError, NotFoundError
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 1024 * 1024
SERVICE_NAME = "edgefleet.v1.ArtifactService"


class GrpcServerError(HubError):
    """The gRPC server could not start (the port is taken, the host does not resolve)."""


class ArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    """Stat and Fetch over an ArtifactStore; ``is_served(sha256)`` says whether it is registered."""

    def __init__(
        self,
        store: ArtifactStore,
        is_served: Callable[[str], bool],
        metadata: Callable[[str], bytes] | None = None,
    ) -> None:
        self._store = store
        self._is_served = is_served
        # TUF metadata by file name ("timestamp.json", "3.root.json"); None: no update repository.
        self._metadata = metadata

    def _check(self, sha256: str, context: grpc.ServicerContext) -> int:
        """The artifact's length, or abort the call with the status that says why not."""
        try:
            check_sha256(sha256)
        except InvalidInputError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        try:
            if not self._is_served(sha256):
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"artifact {sha256} is not a registered model version"
                )
            return self._store.stat(sha256).length
        except ArtifactNotFoundError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))

    @override
    def Stat(
        self, request: artifact_pb2.StatRequest, context: grpc.ServicerContext
    ) -> artifact_pb2.ArtifactInfo:
        length = self._check(request.sha256, context)
        return artifact_pb2.ArtifactInfo(sha256=request.sha256, length=length)

    @override
    def Fetch(
        self, request: artifact_pb2.FetchRequest, context: grpc.ServicerContext
    ) -> Iterator[artifact_pb2.ArtifactChunk]:
        length = self._check(request.sha256, context)
        if request.offset > length:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the end of artifact {request.sha256}: "
                f"expected at most {length}",
            )
        chunk_size = min(request.chunk_size or DEFAULT_CHUNK, MAX_CHUNK)
        offset = request.offset
        with self._store.open(request.sha256) as f:
            f.seek(offset)
            while offset < length and context.is_active():
                data = f.read(min(chunk_size, length - offset))
                if not data:
                    break
                yield artifact_pb2.ArtifactChunk(offset=offset, data=data, total_length=length)
                offset += len(data)
        if request.device_id:
            log.debug(
                "device %s fetched %s from %d to %d",
                request.device_id,
                request.sha256,
                request.offset,
                offset,
            )

    @override
    def FetchMetadata(
        self, request: artifact_pb2.MetadataRequest, context: grpc.ServicerContext
    ) -> Iterator[artifact_pb2.ArtifactChunk]:
        """A TUF metadata file, in chunks from ``offset`` (the files are small; one chunk is usual)."""
        if self._metadata is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this hub has no update repository")
        try:
            data = self._metadata(request.name)
        except NotFoundError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        if request.offset > len(data):
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the end of {request.name}: expected at most {len(data)}",
            )
        for offset in range(request.offset, len(data), MAX_CHUNK):
            yield artifact_pb2.ArtifactChunk(
                offset=offset, data=data[offset : offset + MAX_CHUNK], total_length=len(data)
            )


def bind_grpc_server(
    host: str = "127.0.0.1", port: int = 0, *, max_workers: int = 16
) -> tuple[grpc.Server, int]:
    """A server bound to ``host:port`` with no services yet; returns it and its port (``port=0``: any).

    Nothing is served until :func:`serve_artifacts`: the hub binds its ports before it opens
    the database or talks to the broker, so that a taken port stops it before either.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-artifacts"),
        options=[
            # A chunk is at most 1 MiB; requests are tiny.
            ("grpc.max_send_message_length", MAX_CHUNK + 64 * 1024),
            # gRPC sets SO_REUSEPORT by default, so a second hub on the same port would bind
            # too and take half of the first one's connections. A taken port is an error.
            ("grpc.so_reuseport", 0),
        ],
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise GrpcServerError(
            f"cannot listen for gRPC on {address}: the port is taken or the host is unknown"
        ) from e
    if bound == 0:
        raise GrpcServerError(
            f"cannot listen for gRPC on {address}: the port is taken or the host is unknown"
        )
    return server, bound


def serve_artifacts(
    server: grpc.Server,
    store: ArtifactStore,
    is_served: Callable[[str], bool],
    *,
    metadata: Callable[[str], bytes] | None = None,
) -> None:
    """Add the artifact and health services to a bound server and start it."""
    artifacts = ArtifactService(store, is_served, metadata)
    artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(artifacts, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)


def start_grpc_server(
    store: ArtifactStore,
    is_served: Callable[[str], bool],
    *,
    metadata: Callable[[str], bytes] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
) -> tuple[grpc.Server, int]:
    """Start the artifact and health services; returns the server and its bound port (``port=0``: any)."""
    server, bound = bind_grpc_server(host, port, max_workers=max_workers)
    serve_artifacts(server, store, is_served, metadata=metadata)
    log.info("gRPC artifact server listening on %s:%d", host, bound)
    return server, bound
