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
channels, shared per endpoint through :class:`~edge_agent.fetcher.SyncChannels` (a simulator
runs many agents; re-exported here for the callers that import it from this module).

This module imports python-tuf: only the lazily built repository (``edge_agent.trust.lazy``)
imports it in an agent, when the first check needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from edge_agent.errors import DownloadError
from edge_agent.fetcher import SyncChannels
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
        cert_file: Path | None = None,
        key_file: Path | None = None,
        http_base: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._channels = channels
        self._endpoint = endpoint
        self._device_id = device_id
        self._tls = tls
        self._ca_file = ca_file
        # The device's certificate: target downloads over gRPC need an identity (mTLS).
        self._cert_file = cert_file
        self._key_file = key_file
        self._http_base = http_base.rstrip("/") if http_base else None
        self._http = Urllib3Fetcher() if http_base else None
        self._timeout = timeout_s
        # What the last fetch used, for the agent's logs ("grpc" or "http").
        self.last_route = ""

    def _stub(self) -> artifact_pb2_grpc.ArtifactServiceStub:
        try:
            channel = self._channels.get(
                self._endpoint,
                tls=self._tls,
                ca_file=self._ca_file,
                cert_file=self._cert_file,
                key_file=self._key_file,
            )
        except DownloadError as e:  # the TUF client understands only its own error family
            raise tuf_errors.DownloadError(str(e)) from e
        return artifact_pb2_grpc.ArtifactServiceStub(channel)

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
