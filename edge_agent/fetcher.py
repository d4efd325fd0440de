"""Fetching artifacts from the hub into a ``.part`` file, resumably.

:class:`Fetcher` is the seam: the updater only knows that a fetch appends the
bytes from ``offset`` on to a partial file and reports progress. The real one,
:class:`GrpcFetcher`, streams ``ArtifactService.Fetch`` over a channel from a
:class:`ChannelPool`, so that a thousand simulated agents share one channel per
endpoint instead of opening a thousand. :class:`SyncChannels` is its blocking twin, for
the TUF client, which is synchronous and runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import grpc
import grpc.aio

from edge_agent.backoff import Backoff
from edge_agent.errors import (
    ArtifactNotFoundError,
    DownloadError,
    DownloadIncompleteError,
    DownloadProtocolError,
    DownloadRefusedError,
    DownloadStalledError,
    HubUnavailableError,
)
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc, common_pb2

__all__ = ["ChannelPool", "Fetcher", "GrpcFetcher", "SyncChannels", "write_chunks_from"]

DEFAULT_CHUNK_SIZE = 256 * 1024
# Pauses while the hub is busy (cloud.transport.grpc_server: EDGEFLEET_GRPC_MAX_ACTIVE_DOWNLOADS),
# first and longest, and how long a device keeps coming back before the download counts as failed.
BUSY_RETRY_S = (2.0, 30.0)
BUSY_WAIT_MAX_S = 900.0
# The end-of-stream marker of grpc.aio's read(); the stubs type it only as `object`.
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


class Fetcher(Protocol):
    """Appends an artifact's bytes from ``offset`` to ``dest_partial``."""

    def fetch(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        """Yield the number of bytes held in ``dest_partial`` after each chunk.

        ``dest_partial`` is truncated to ``offset`` first. Ends when ``ref.length``
        bytes are held; raises a :class:`DownloadError` otherwise. ``endpoint``
        overrides the provisioned hub endpoint ("" keeps it).
        """
        ...


class ChannelPool:
    """One grpc.aio channel per (endpoint, TLS settings), shared by every agent in the process."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, bool, str, str, str], grpc.aio.Channel] = {}

    def get(
        self,
        endpoint: str,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> grpc.aio.Channel:
        key = (endpoint, tls, str(ca_file or ""), str(cert_file or ""), str(key_file or ""))
        channel = self._channels.get(key)
        if channel is None:
            if tls:
                channel = grpc.aio.secure_channel(endpoint, _credentials(ca_file, cert_file, key_file))
            else:
                channel = grpc.aio.insecure_channel(endpoint)
            self._channels[key] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)


def _credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """The hub verified against ``ca_file`` (else the system's store); the device's certificate, when
    given, presented for mTLS (the hub then knows the device by it)."""
    files = {"hub CA": ca_file, "client certificate": cert_file, "client key": key_file}
    read: dict[str, bytes | None] = {}
    for what, path in files.items():
        try:
            read[what] = path.read_bytes() if path is not None else None
        except OSError as e:
            raise DownloadError(f"cannot read the {what} file {path}: {e.strerror}") from e
    return grpc.ssl_channel_credentials(
        root_certificates=read["hub CA"],
        private_key=read["client key"],
        certificate_chain=read["client certificate"],
    )


class SyncChannels:
    """Blocking gRPC channels, one per (endpoint, TLS settings), safe to share between threads.

    It lives here rather than beside the TUF transport that uses it, so that an agent can hold
    one from the start without importing the signed-update stack before it checks anything.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, bool, str, str, str], grpc.Channel] = {}

    def get(
        self,
        endpoint: str,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> grpc.Channel:
        """The channel for ``endpoint``; a :class:`DownloadError` when a TLS file cannot be read."""
        key = (endpoint, tls, str(ca_file or ""), str(cert_file or ""), str(key_file or ""))
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                if tls:
                    channel = grpc.secure_channel(endpoint, _credentials(ca_file, cert_file, key_file))
                else:
                    channel = grpc.insecure_channel(endpoint)
                self._channels[key] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def _open_at(path: Path, offset: int) -> BinaryIO:
    """``path`` opened at ``offset``, cut back or created as needed; a DownloadError if it cannot be."""
    try:
        f = path.open("r+b") if path.exists() else path.open("w+b")
    except OSError as e:
        raise DownloadError(f"cannot write partial file {path}: {e.strerror}") from e
    try:
        f.truncate(offset)
        f.seek(offset)
    except OSError as e:
        f.close()
        raise DownloadError(f"cannot write partial file {path}: {e.strerror}") from e
    return f


async def write_chunks_from(
    chunks: AsyncIterator[tuple[int, bytes]], ref: common_pb2.ModelRef, dest: Path, offset: int, limit: int
) -> AsyncIterator[int]:
    """Append ``(offset, data)`` chunks to ``dest`` with the checks every fetcher needs.

    Refuses a chunk that does not start where the file ends, and any byte past
    ``min(ref.length, limit)``; fsyncs before reporting the last byte so that a
    resumed download trusts only what reached the disk.
    """
    expected = ref.length
    if offset > expected:
        raise ValueError(f"offset {offset} is past the pinned length {expected}; discard the partial first")
    if expected > limit:
        raise DownloadProtocolError(f"artifact is {expected} bytes; the limit on this device is {limit}")
    held = offset
    # The file is opened at the first byte, not before: a device whose hub is slow to answer holds
    # no file meanwhile (a simulated fleet of 10,000 ran out of open files waiting). A longer partial
    # is cut back to ``offset`` now, as the caller asked, without holding it open.
    if offset < _size(dest):
        _open_at(dest, offset).close()
    f: BinaryIO | None = None
    try:
        async for chunk_offset, data in chunks:
            if chunk_offset != held:
                raise DownloadProtocolError(f"chunk out of order: expected offset {held}, got {chunk_offset}")
            if held + len(data) > expected:
                raise DownloadProtocolError(
                    f"hub sent more than the pinned {expected} bytes (at least {held + len(data)})"
                )
            if f is None:
                f = _open_at(dest, offset)
            try:
                f.write(data)
            except OSError as e:
                raise DownloadError(f"cannot write partial file {dest}: {e.strerror}") from e
            held += len(data)
            if held == expected:
                f.flush()
                os.fsync(f.fileno())
            yield held
        if f is None:
            # Nothing arrived: the partial still exists, at ``offset`` bytes, for the caller.
            f = _open_at(dest, offset)
        if held < expected:
            f.flush()
            raise DownloadIncompleteError(f"stream ended at {held} of {expected} bytes")
        if held == offset:
            # Nothing arrived because nothing was missing: still report where we stand.
            yield held
    finally:
        if f is not None:
            f.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
_REFUSED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def map_rpc_error(e: grpc.aio.AioRpcError, endpoint: str, sha256: str, held: int) -> DownloadError:
    """A domain error for a failed Fetch, naming the endpoint, the artifact and how far it got."""
    code = e.code()
    where = f"hub {endpoint} at byte {held} of {sha256}"
    text = f"{code.name}: {e.details() or 'no details'}"
    if code == grpc.StatusCode.NOT_FOUND:
        return ArtifactNotFoundError(f"hub {endpoint} has no artifact {sha256} ({text})")
    if code in _REFUSED:
        return DownloadRefusedError(f"{where} refused the download: {text}")
    if code in _TRANSIENT:
        return HubUnavailableError(f"{where}: stream failed: {text}")
    return DownloadError(f"{where}: {text}")


class GrpcFetcher:
    """A :class:`Fetcher` over ``ArtifactService.Fetch`` (grpc.aio)."""

    def __init__(
        self,
        channels: ChannelPool,
        *,
        endpoint: str,
        device_id: str,
        chunk_timeout_s: float = 30.0,
        max_bytes: int = 256 * 1024 * 1024,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        busy_retry_s: tuple[float, float] = BUSY_RETRY_S,
        busy_wait_max_s: float = BUSY_WAIT_MAX_S,
        rng: random.Random | None = None,
        slots: asyncio.Semaphore | None = None,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._channels = channels
        self._endpoint = endpoint
        # While the hub answers "busy" (RESOURCE_EXHAUSTED before any byte): the first and the
        # longest pause between tries, and how long to keep trying before the download fails.
        self._busy_retry_s = busy_retry_s
        self._busy_wait_max_s = busy_wait_max_s
        self._rng = rng
        # How a pause the busy hub asked for is waited out (a test hands in its own clock).
        self._pause = pause
        # Shared by the devices of a simulated fleet (edge_agent.sim): a try waits for a place first.
        self._slots = slots
        self._device_id = device_id
        self._cert_file = cert_file
        self._key_file = key_file
        self._chunk_timeout = chunk_timeout_s
        self._max_bytes = max_bytes
        self._chunk_size = chunk_size
        self._tls = tls
        self._ca_file = ca_file

    async def fetch(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        target = endpoint or self._endpoint
        if offset >= ref.length:
            # A complete partial from an earlier run: nothing to ask the hub for.
            async for held in write_chunks_from(_no_chunks(), ref, dest_partial, offset, self._max_bytes):
                yield held
            return
        # A hub streaming as many downloads as it allows says so before the first byte; the device
        # comes back after a jittered pause, without a failed download: in a rollout of 10,000
        # devices most are told to wait at first, and each report would cost the hub a write.
        busy = Backoff(initial_s=self._busy_retry_s[0], max_s=self._busy_retry_s[1], rng=self._rng)
        waited = 0.0
        while True:
            try:
                async with self._slots or contextlib.nullcontext():
                    async for held in self._fetch_once(ref, dest_partial, offset, target):
                        yield held
                return
            except _HubBusyError as e:
                delay = busy.next_delay()
                if waited + delay > self._busy_wait_max_s:
                    raise HubUnavailableError(
                        f"hub {target} stayed busy for {waited:.0f} s at byte {offset} of {ref.sha256}: {e}"
                    ) from None
                waited += delay
                await self._pause(delay)

    async def _fetch_once(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, target: str
    ) -> AsyncIterator[int]:
        channel = self._channels.get(
            target, tls=self._tls, ca_file=self._ca_file, cert_file=self._cert_file, key_file=self._key_file
        )
        stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
        request = artifact_pb2.FetchRequest(
            sha256=ref.sha256, offset=offset, chunk_size=self._chunk_size, device_id=self._device_id
        )
        call = stub.Fetch(request)
        progress = _Progress(offset)
        try:
            chunks = self._checked_chunks(call, ref, target, progress)
            async for held in write_chunks_from(chunks, ref, dest_partial, offset, self._max_bytes):
                progress.held = held
                yield held
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and progress.held == offset:
                raise _HubBusyError(e.details() or "RESOURCE_EXHAUSTED") from e
            raise map_rpc_error(e, target, ref.sha256, progress.held) from e
        finally:
            call.cancel()

    async def _checked_chunks(
        self,
        call: grpc.aio.UnaryStreamCall[artifact_pb2.FetchRequest, artifact_pb2.ArtifactChunk],
        ref: common_pb2.ModelRef,
        target: str,
        progress: _Progress,
    ) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            try:
                chunk = await asyncio.wait_for(call.read(), self._chunk_timeout)
            except TimeoutError:
                raise DownloadStalledError(
                    f"hub {target} sent nothing for {self._chunk_timeout:g} s "
                    f"at byte {progress.held} of {ref.sha256}"
                ) from None
            if chunk is _EOF:
                return
            if not isinstance(chunk, artifact_pb2.ArtifactChunk):
                kind = type(chunk).__name__
                raise DownloadProtocolError(f"hub {target} sent {kind}, expected ArtifactChunk")
            if chunk.total_length and chunk.total_length != ref.length:
                raise DownloadProtocolError(
                    f"hub {target} says {ref.sha256} is {chunk.total_length} bytes; "
                    f"the desired state pins {ref.length}"
                )
            yield chunk.offset, chunk.data


class _HubBusyError(Exception):
    """The hub refused to start the stream for now (RESOURCE_EXHAUSTED): try again after a pause."""


class _Progress:
    __slots__ = ("held",)

    def __init__(self, held: int) -> None:
        self.held = held


async def _no_chunks() -> AsyncIterator[tuple[int, bytes]]:
    return
    yield  # an async generator that yields nothing
