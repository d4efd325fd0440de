"""gRPC artifact server: streams registered artifacts in resumable chunks, plus gRPC health.

A device that lost its connection mid-download asks again from the offset it already
holds. Only artifacts pinned by a registered model version are served, so the store
cannot be used to fetch arbitrary leftovers.

The server is grpc's asyncio server, in a thread of its own with its own event loop (the
hub's other parts are threads). A download is a coroutine, not a worker thread, so a
thousand devices fetching at once are a thousand streams rather than a queue behind a
thread pool. What blocks (the caller's and the registry's checks, stat, file reads, TUF metadata
from the database) runs on a small thread pool, a call's checks and its first chunk in one trip
there; a stream holds at most one chunk in memory.

TLS (``ServerTls``) is set when the server binds; with a client CA every client must present a
certificate it issued. Who may download (``Stat``, ``Fetch``) is decided per call by ``authorize``
(cloud.identity.grpc_auth: a device certificate, a token, or loopback in the plaintext demo);
``FetchMetadata`` serves signed TUF metadata to anyone.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from typing_extensions import override

from cloud.artifacts import ArtifactNotFoundError, ArtifactStore, check_sha256
from cloud.errors import HubError, InvalidArtifactError, InvalidInputError, NotFoundError
from cloud.identity.grpc_auth import CallerInfo, CallRefusedError
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 256 * 1024
MAX_CHUNK = 1024 * 1024
SERVICE_NAME = "edgefleet.v1.ArtifactService"
# Threads for the blocking parts of a call; each holds the thread for microseconds (a cached
# check, a read from the page cache), so a few serve thousands of streams.
IO_THREADS = 4
# Seconds to wait for the event loop to bind, start or stop the server.
LOOP_TIMEOUT_S = 30.0
# Calls that reached the server but that its loop has not taken up yet. gRPC's own defaults
# (1,000, and a hard 3,000) cancel the rest: when a rollout offers 3,000 devices at once, about a
# quarter of their downloads and metadata fetches end CANCELLED within a second, and each comes
# back after a back-off. A waiting call costs the server a few hundred bytes, so the default
# takes a whole reconnect storm of the fleet sizes in docs/capacity.md.
DEFAULT_MAX_PENDING_CALLS = 20_000
# Downloads streamed at once; past it a Fetch is refused at once with RESOURCE_EXHAUSTED, and the
# device comes back after a back-off (edge_agent.fetcher). Streams share the hub's link and its one
# event loop fairly, so each message of N streams arrives only once N chunks went out: 10,000 at
# once (a rollout's stage, bench/scale.py) took every stream past the devices' 30 s chunk timeout,
# all of them, again on every retry. Capped, the downloads in flight finish and the rest follow.
DEFAULT_MAX_ACTIVE_DOWNLOADS = 1_000

# glibc's mallopt parameter, and the size from which each allocation is its own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024

T = TypeVar("T")
# Who may download (cloud.identity.grpc_auth.ArtifactAccess): returns the caller's name or raises
# CallRefusedError. Blocking (it reads the database), so it runs on the I/O threads.
Authorize = Callable[[CallerInfo], str]


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain and key (PEM); ``client_ca``: require client certificates it issued."""

    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.client_ca_pem is not None,
        )


class GrpcServerError(HubError):
    """The gRPC server could not start (the port is taken, the host does not resolve)."""


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str
) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("ServicerContext.abort returns only by raising")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How much the artifact service takes on at once (``EDGEFLEET_GRPC_MAX_PENDING_CALLS`` and
    ``EDGEFLEET_GRPC_MAX_ACTIVE_DOWNLOADS``); the constants above say why each is what it is."""

    max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS
    max_active_downloads: int = DEFAULT_MAX_ACTIVE_DOWNLOADS

    def __post_init__(self) -> None:
        for name in ("max_pending_calls", "max_active_downloads"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: expected at least 1, got {value}")


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What a call asks for: ``chunk_size`` None for a Stat (no file opened)."""

    sha256: str
    offset: int = 0
    chunk_size: int | None = None


@dataclass(frozen=True, slots=True)
class _Admission:
    """A call let through (its length; for a Fetch the open file and the first chunk), or refused."""

    length: int = 0
    file: BinaryIO | None = None
    first: bytes = b""
    code: grpc.StatusCode | None = None
    details: str = ""

    @staticmethod
    def refused(code: grpc.StatusCode, details: str) -> _Admission:
        return _Admission(code=code, details=details)


class ArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    """Stat and Fetch over an ArtifactStore; ``is_served(sha256)`` says whether it is registered."""

    def __init__(
        self,
        store: ArtifactStore,
        is_served: Callable[[str], bool],
        metadata: Callable[[str], bytes] | None = None,
        *,
        io: ThreadPoolExecutor,
        authorize: Authorize | None = None,
        max_active_downloads: int = DEFAULT_MAX_ACTIVE_DOWNLOADS,
    ) -> None:
        self._store = store
        # Fetches between their admission and their last chunk; only the loop thread counts them.
        self._active = 0
        self._max_active = max_active_downloads
        # None: every caller may download (tests of the streaming itself); the hub always sets one.
        self._authorize = authorize
        self._is_served = is_served
        # TUF metadata by file name ("timestamp.json", "3.root.json"); None: no update repository.
        self._metadata = metadata
        self._io = io

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> CallerInfo | None:
        if self._authorize is None:
            return None
        return CallerInfo(
            auth=context.auth_context(),
            metadata=tuple(context.invocation_metadata() or ()),
            peer=context.peer(),
        )

    def _admit(self, caller: CallerInfo | None, request: _Wanted) -> _Admission:
        """Everything a call needs before its first byte, in one trip to the I/O threads (blocking).

        Who calls, whether the artifact is served, its length, and for a Fetch the open file and the
        first chunk. One trip, not one per step: the hub's other threads (ingest, the rollout engine,
        the API) hold the GIL for milliseconds at a time, and each trip waits for it twice. With five
        trips a call, a rollout offering 10,000 devices at once left downloads without a first byte
        past the devices' 30 s chunk timeout (bench/scale.py).
        """
        sha256 = request.sha256
        if caller is not None and self._authorize is not None:
            try:
                self._authorize(caller)
            except CallRefusedError as e:
                code = (
                    grpc.StatusCode.UNAUTHENTICATED
                    if e.unauthenticated
                    else grpc.StatusCode.PERMISSION_DENIED
                )
                return _Admission.refused(code, str(e))
        try:
            check_sha256(sha256)
        except InvalidInputError as e:
            return _Admission.refused(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if not self._is_served(sha256):
            return _Admission.refused(
                grpc.StatusCode.NOT_FOUND, f"artifact {sha256} is not a registered model version"
            )
        if request.chunk_size is None:  # Stat: the length only
            try:
                return _Admission(length=self._store.stat(sha256).length)
            except ArtifactNotFoundError as e:
                return _Admission.refused(grpc.StatusCode.NOT_FOUND, str(e))
            except HubError as e:  # an object store behind the cache did not answer
                log.warning("artifact %s: %s", sha256, e)
                return _Admission.refused(grpc.StatusCode.UNAVAILABLE, str(e))
        try:
            # A store backed by an object store fetches and verifies the file here, before any byte goes.
            f = self._store.open(sha256)
        except ArtifactNotFoundError as e:
            return _Admission.refused(grpc.StatusCode.NOT_FOUND, str(e))
        except InvalidArtifactError as e:
            log.error("refused to serve artifact %s: %s", sha256, e)
            return _Admission.refused(grpc.StatusCode.DATA_LOSS, str(e))
        except HubError as e:
            log.warning("artifact %s: %s", sha256, e)
            return _Admission.refused(grpc.StatusCode.UNAVAILABLE, str(e))
        try:
            length = os.fstat(f.fileno()).st_size
            if request.offset > length:
                f.close()
                return _Admission.refused(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"offset {request.offset} is past the end of artifact {sha256}: "
                    f"expected at most {length}",
                )
            first = os.pread(f.fileno(), min(request.chunk_size, length - request.offset), request.offset)
        except BaseException:
            f.close()
            raise
        return _Admission(length=length, file=f, first=first)

    @override
    async def Stat(
        self, request: artifact_pb2.StatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifact_pb2.ArtifactInfo:
        admitted = await self._blocking(self._admit, self._caller(context), _Wanted(request.sha256))
        if admitted.code is not None:
            await _abort(context, admitted.code, admitted.details)
        return artifact_pb2.ArtifactInfo(sha256=request.sha256, length=admitted.length)

    @override
    async def Fetch(
        self, request: artifact_pb2.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        if self._active >= self._max_active:
            await _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"hub busy: {self._active} downloads in progress, the most it streams at once "
                "(EDGEFLEET_GRPC_MAX_ACTIVE_DOWNLOADS); retry after a back-off",
            )
        self._active += 1
        try:
            async for chunk in self._stream(request, context):
                yield chunk
        finally:
            self._active -= 1

    async def _stream(
        self, request: artifact_pb2.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        chunk_size = min(request.chunk_size or DEFAULT_CHUNK, MAX_CHUNK)
        wanted = _Wanted(request.sha256, request.offset, chunk_size)
        admitted = await self._blocking(self._admit, self._caller(context), wanted)
        if admitted.code is not None or admitted.file is None:
            await _abort(context, admitted.code or grpc.StatusCode.INTERNAL, admitted.details)
        f, length, data = admitted.file, admitted.length, admitted.first
        offset = request.offset
        try:
            fd = f.fileno()
            while data:
                # Returns once grpc took the message: flow control paces the reads to the device.
                yield artifact_pb2.ArtifactChunk(offset=offset, data=data, total_length=length)
                offset += len(data)
                if offset >= length:
                    break
                data = await self._blocking(os.pread, fd, min(chunk_size, length - offset), offset)
        finally:
            f.close()
        if request.device_id:
            log.debug(
                "device %s fetched %s from %d to %d",
                request.device_id,
                request.sha256,
                request.offset,
                offset,
            )

    @override
    async def FetchMetadata(
        self, request: artifact_pb2.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        """A TUF metadata file, in chunks from ``offset`` (the files are small; one chunk is usual)."""
        if self._metadata is None:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this hub has no update repository")
        try:
            data = await self._blocking(self._metadata, request.name)
        except NotFoundError as e:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(e))
        if request.offset > len(data):
            await _abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the end of {request.name}: expected at most {len(data)}",
            )
        for offset in range(request.offset, len(data), MAX_CHUNK):
            yield artifact_pb2.ArtifactChunk(
                offset=offset, data=data[offset : offset + MAX_CHUNK], total_length=len(data)
            )


def _map_chunks_apart() -> None:
    """Make glibc give every chunk-sized buffer its own mapping, returned to the system when freed.

    Ten downloads of 1 MiB chunks allocate and free gigabytes in threads of their own. By default
    glibc raises its mmap threshold to the largest block freed, so these buffers move onto per-thread
    arenas that keep their pages: measured, the hub's peak RSS grew 63 MiB instead of 34 MiB. A fixed
    threshold (glibc's initial 128 KiB) keeps that from happening, for a few extra page faults.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:  # glibc only: musl and others do not keep freed blocks this way
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


class ArtifactServer:
    """A grpc.aio server on an event loop in its own thread, driven from any other thread.

    States: bound (listening socket reserved, nothing served) -> serving -> stopped. The
    loop thread lives from the bind to the stop.
    """

    def __init__(
        self,
        address: str,
        tls: ServerTls | None = None,
        *,
        limits: ServerLimits | None = None,
    ) -> None:
        _map_chunks_apart()
        self.tls = tls
        self.limits = limits or ServerLimits()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-artifacts", daemon=True)
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="grpc-artifacts-io")
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._serving = False
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._thread.start()
        try:
            self.port = self._call(self._bind(address, tls))
        except BaseException:
            self._shut_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = LOOP_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _bind(self, address: str, tls: ServerTls | None) -> int:
        server = self._server = grpc.aio.server(
            options=[
                # A chunk is at most 1 MiB; requests are tiny.
                ("grpc.max_send_message_length", MAX_CHUNK + 64 * 1024),
                # gRPC sets SO_REUSEPORT by default, so a second hub on the same port would bind
                # too and take half of the first one's connections. A taken port is an error.
                ("grpc.so_reuseport", 0),
                # Past the soft limit gRPC cancels new calls at random, past the hard one all of them.
                ("grpc.server.max_pending_requests", self.limits.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", self.limits.max_pending_calls),
            ]
        )
        try:
            if tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, tls.credentials())
        except RuntimeError as e:
            raise GrpcServerError(
                f"cannot listen for gRPC on {address}: the port is taken or the host is unknown"
            ) from e
        if bound == 0:
            raise GrpcServerError(
                f"cannot listen for gRPC on {address}: the port is taken or the host is unknown"
            )
        return bound

    def serve(
        self,
        store: ArtifactStore,
        is_served: Callable[[str], bool],
        *,
        metadata: Callable[[str], bytes] | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        """Add the artifact and health services and start serving (once)."""
        if self._serving or self._stopping:
            raise RuntimeError("an artifact server serves once, between its bind and its stop")
        service = ArtifactService(
            store,
            is_served,
            metadata,
            io=self._io,
            authorize=authorize,
            max_active_downloads=self.limits.max_active_downloads,
        )
        self._call(self._serve(service))
        self._serving = True

    async def _serve(self, artifacts: ArtifactService) -> None:
        server = self._server
        if server is None:
            raise RuntimeError("the server is bound before it serves")
        artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(artifacts, server)
        # grpc_health's stubs predate its asyncio servicer.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop serving; downloads in flight get ``grace`` seconds to finish (None: none).

        Returns at once, like grpc's ``Server.stop``; the event is set once the port is
        released and the loop thread has ended. Calling it again returns the same event.
        """
        with self._stop_lock:
            if self._stopping:
                return self._stopped
            self._stopping = True
        threading.Thread(target=self._stop, args=(grace,), name="grpc-artifacts-stop", daemon=True).start()
        return self._stopped

    def _stop(self, grace: float | None) -> None:
        try:
            wait = (grace or 0.0) + LOOP_TIMEOUT_S
            self._call(self._stop_server(grace), timeout=wait)
        except Exception:
            log.exception("the gRPC artifact server did not stop cleanly")
        finally:
            self._shut_loop()

    async def _stop_server(self, grace: float | None) -> None:
        if self._health is not None:
            # Health checks say NOT_SERVING while the downloads in flight finish.
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)

    def _shut_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(LOOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        self._io.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()


def bind_grpc_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls: ServerTls | None = None,
    limits: ServerLimits | None = None,
) -> tuple[ArtifactServer, int]:
    """A server bound to ``host:port`` with no services yet; returns it and its port (``port=0``: any).

    Nothing is served until :func:`serve_artifacts`: the hub binds its ports before it opens
    the database or talks to the broker, so that a taken port stops it before either.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = ArtifactServer(address, tls, limits=limits)
    return server, server.port


def serve_artifacts(
    server: ArtifactServer,
    store: ArtifactStore,
    is_served: Callable[[str], bool],
    *,
    metadata: Callable[[str], bytes] | None = None,
    authorize: Authorize | None = None,
) -> None:
    """Add the artifact and health services to a bound server and start it."""
    server.serve(store, is_served, metadata=metadata, authorize=authorize)


def start_grpc_server(
    store: ArtifactStore,
    is_served: Callable[[str], bool],
    *,
    metadata: Callable[[str], bytes] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ServerTls | None = None,
    authorize: Authorize | None = None,
    limits: ServerLimits | None = None,
) -> tuple[ArtifactServer, int]:
    """Start the artifact and health services; returns the server and its bound port (``port=0``: any)."""
    server, bound = bind_grpc_server(host, port, tls=tls, limits=limits)
    try:
        serve_artifacts(server, store, is_served, metadata=metadata, authorize=authorize)
    except BaseException:
        server.stop().wait(LOOP_TIMEOUT_S)
        raise
    log.info("gRPC artifact server listening on %s:%d (%s)", host, bound, "TLS" if tls else "plaintext")
    return server, bound
