"""python-tuf's ``FetcherInterface`` over the hub's gRPC ArtifactService, with HTTP as fallback.

The TUF client asks for URLs; these are not fetched from anywhere, they name what to ask
the hub for:

    edgefleet-tuf:/metadata/<name>                  -> ArtifactService.FetchMetadata(name)
    edgefleet-tuf:/targets/<dir>/<sha256>.<file>    -> ArtifactService.Fetch(sha256)

When the gRPC service cannot be reached and ``http_base`` is set (``http://hub:8080/tuf``),
the same file comes from the hub's HTTP repository instead. Everything fetched is
verified by the TUF client against keys the device already trusts, so the transport
needs no trust of its own; it maps errors: NOT_FOUND becomes the HTTP 404 that tells the
client "no newer root", a deadline becomes a slow-retrieval error.

The TUF client is synchronous and runs in a worker thread, so this uses blocking gRPC
channels, shared per endpoint through :class:`SyncChannels` (a simulator runs many agents).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc

__all__ = ["METADATA_URL", "TARGETS_URL", "SyncChannels", "TufTransport"]

METADATA_URL = "edgefleet-tuf:/metadata/"
TARGETS_URL = "edgefleet-tuf:/targets/"
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def _code(e: grpc.RpcError) -> grpc.StatusCode:
    """The status of a failed call (blocking-stub errors are also ``grpc.Call`` objects)."""
    code = getattr(e, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class SyncChannels:
    """Blocking gRPC channels, one per (endpoint, TLS settings), safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, bool, str], grpc.Channel] = {}

    def get(self, endpoint: str, *, tls: bool = False, ca_file: Path | None = None) -> grpc.Channel:
        key = (endpoint, tls, str(ca_file or ""))
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                if tls:
                    try:
                        root = ca_file.read_bytes() if ca_file is not None else None
                    except OSError as e:
                        raise tuf_errors.DownloadError(
                            f"cannot read the hub CA file {ca_file}: {e.strerror}"
                        ) from e
                    channel = grpc.secure_channel(
                        endpoint, grpc.ssl_channel_credentials(root_certificates=root)
                    )
                else:
                    channel = grpc.insecure_channel(endpoint)
                self._channels[key] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class TufTransport(FetcherInterface):
    """Fetches TUF metadata and targets from the hub: gRPC first, HTTP when gRPC is unreachable."""

    def __init__(
        self,
        *,
        channels: SyncChannels,
        endpoint: str,
        device_id: str,
        tls: bool = False,
        ca_file: Path | None = None,
        http_base: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._channels = channels
        self._endpoint = endpoint
        self._device_id = device_id
        self._tls = tls
        self._ca_file = ca_file
        self._http_base = http_base.rstrip("/") if http_base else None
        self._http = Urllib3Fetcher() if http_base else None
        self._timeout = timeout_s
        # What the last fetch used, for the agent's logs ("grpc" or "http").
        self.last_route = ""

    def _stub(self) -> artifact_pb2_grpc.ArtifactServiceStub:
        return artifact_pb2_grpc.ArtifactServiceStub(
            self._channels.get(self._endpoint, tls=self._tls, ca_file=self._ca_file)
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        if url.startswith(METADATA_URL):
            name = url[len(METADATA_URL) :]
            request = artifact_pb2.MetadataRequest(name=name, device_id=self._device_id)
            return self._stream(
                lambda: self._stub().FetchMetadata(request, timeout=self._timeout), url, "metadata/" + name
            )
        if url.startswith(TARGETS_URL):
            path = url[len(TARGETS_URL) :]
            sha256 = path.rpartition("/")[2].partition(".")[0]
            if len(sha256) != 64:
                raise tuf_errors.DownloadHTTPError(f"target URL {url} has no content hash prefix", 404)
            fetch = artifact_pb2.FetchRequest(sha256=sha256, device_id=self._device_id)
            return self._stream(
                lambda: self._stub().Fetch(fetch, timeout=self._timeout), url, "targets/" + path
            )
        raise tuf_errors.DownloadHTTPError(
            f"unknown URL {url}: expected {METADATA_URL} or {TARGETS_URL}", 404
        )

    def _stream(self, call: object, url: str, http_path: str) -> Iterator[bytes]:
        assert callable(call)
        try:
            responses = call()
            first = next(responses, None)
        except grpc.RpcError as e:
            code = _code(e)
            if code == grpc.StatusCode.NOT_FOUND:
                raise tuf_errors.DownloadHTTPError(f"hub has no {url}", 404) from e
            if code in _TRANSIENT and self._http is not None:
                self.last_route = "http"
                return self._http.fetch(f"{self._http_base}/{http_path}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise tuf_errors.SlowRetrievalError(f"hub {self._endpoint} stalled on {url}") from e
            raise tuf_errors.DownloadError(f"hub {self._endpoint} failed on {url}: {code.name}") from e
        self.last_route = "grpc"
        return self._rest(first, responses, url)

    def _rest(
        self,
        first: artifact_pb2.ArtifactChunk | None,
        responses: Iterator[artifact_pb2.ArtifactChunk],
        url: str,
    ) -> Iterator[bytes]:
        try:
            if first is not None:
                yield first.data
            for chunk in responses:
                yield chunk.data
        except grpc.RpcError as e:
            code = _code(e)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise tuf_errors.SlowRetrievalError(f"hub {self._endpoint} stalled on {url}") from e
            raise tuf_errors.DownloadError(f"stream of {url} broke: {code.name}") from e
