"""A tiny test-only ArtifactService (grpc.aio) serving artifacts from a dict, with injectable faults.

It stands in for the hub's artifact service in the agent's tests: it records
every request, can break a stream half way (once per artifact), and can stall.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc


@dataclass
class DictArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    blobs: dict[str, bytes] = field(default_factory=dict)
    chunk: int = 64
    break_once: set[str] = field(default_factory=set)
    stall: set[str] = field(default_factory=set)
    # Paces every stream (a slow link), so that a test can catch a download half way.
    chunk_delay_s: float = 0.0
    requests: list[artifact_pb2.FetchRequest] = field(default_factory=list)
    # Fetches answered "hub busy" (RESOURCE_EXHAUSTED, as the hub past its active downloads) first.
    busy_first: int = 0

    def add(self, data: bytes, *, sha256: str | None = None) -> str:
        key = sha256 or hashlib.sha256(data).hexdigest()
        self.blobs[key] = data
        return key

    async def Stat(self, request: artifact_pb2.StatRequest, context: Any) -> artifact_pb2.ArtifactInfo:
        data = self.blobs.get(request.sha256)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.sha256}")
            raise AssertionError("abort returns only by raising")
        return artifact_pb2.ArtifactInfo(sha256=request.sha256, length=len(data))

    async def Fetch(
        self, request: artifact_pb2.FetchRequest, context: Any
    ) -> AsyncIterator[artifact_pb2.ArtifactChunk]:
        self.requests.append(request)
        if len(self.requests) <= self.busy_first:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "hub busy: 1 downloads in progress")
        data = self.blobs.get(request.sha256)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no artifact {request.sha256}")
            return
        if request.offset > len(data):
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} > {len(data)}")
        pos = request.offset
        while pos < len(data):
            if request.sha256 in self.break_once and pos >= len(data) // 2:
                self.break_once.discard(request.sha256)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected break half way")
            piece = data[pos : pos + self.chunk]
            yield artifact_pb2.ArtifactChunk(offset=pos, data=piece, total_length=len(data))
            pos += len(piece)
            if request.sha256 in self.stall:
                await asyncio.Event().wait()  # hangs until the client gives up and cancels
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)  # the link's pace, not a wait for an event


async def start_artifact_server(service: DictArtifactService) -> tuple[grpc.aio.Server, str]:
    """Serve ``service`` on a free loopback port; returns (server, "127.0.0.1:port")."""
    server = grpc.aio.server()
    artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
