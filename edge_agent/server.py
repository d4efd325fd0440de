"""The local prediction API: ``InferenceService`` and gRPC health on a Unix socket or loopback TCP.

Applications on the device call it; it never listens off-host. The Unix socket
is created mode 0660, so access is granted by group membership. Bad requests get
INVALID_ARGUMENT with what was expected and what came; a device that serves no
model yet answers FAILED_PRECONDITION. Feedback on an unknown or expired prediction
answers NOT_FOUND, a second label ALREADY_EXISTS, a label that is not a class
INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edge_agent.errors import (
    AgentError,
    DuplicateLabelError,
    InferenceError,
    InputError,
    LabelError,
    NoModelError,
    UnknownPredictionError,
)
from edge_agent.feedback import FeedbackResult
from edge_agent.serving import LoadedModel, Prediction
from edge_agent.tensors import Array, array_to_tensor, spec_to_proto, tensor_to_array
from edgefleet_proto.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["INFERENCE_SERVICE", "LocalApiServer", "PredictionBackend"]

log = logging.getLogger(__name__)

INFERENCE_SERVICE = "edgefleet.v1.InferenceService"
SOCKET_MODE = 0o660


class PredictionBackend(Protocol):
    """What the local API serves from (the agent)."""

    @property
    def device_id(self) -> str: ...

    @property
    def active_model(self) -> LoadedModel | None: ...

    def health(self) -> str: ...

    def predict(self, inputs: Mapping[str, Array]) -> Prediction: ...

    def feedback(self, prediction_id: str, label: int) -> FeedbackResult: ...


class _InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, backend: PredictionBackend) -> None:
        self._backend = backend

    async def Predict(  # noqa: N802  (the name is the RPC's)
        self, request: inference_pb2.PredictRequest, context: Any
    ) -> inference_pb2.PredictResponse:
        try:
            inputs = {name: tensor_to_array(tensor, name) for name, tensor in request.inputs.items()}
            result = self._backend.predict(inputs)
            outputs = {name: array_to_tensor(value) for name, value in result.outputs.items()}
        except InputError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NoModelError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except InferenceError as e:
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        return inference_pb2.PredictResponse(
            outputs=outputs, model=result.model, latency_ms=result.latency_ms, prediction_id=result.id
        )

    async def Feedback(  # noqa: N802
        self, request: inference_pb2.FeedbackRequest, context: Any
    ) -> inference_pb2.FeedbackResponse:
        try:
            result = self._backend.feedback(request.prediction_id, request.label)
        except UnknownPredictionError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except DuplicateLabelError as e:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(e))
        except LabelError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return inference_pb2.FeedbackResponse(model=result.model, correct=result.correct)

    async def Info(  # noqa: N802
        self, request: inference_pb2.InfoRequest, context: Any
    ) -> inference_pb2.InfoResponse:
        reply = inference_pb2.InfoResponse(device_id=self._backend.device_id, health=self._backend.health())
        loaded = self._backend.active_model
        if loaded is not None:
            reply.model.CopyFrom(loaded.ref)
            reply.inputs.extend(spec_to_proto(s) for s in loaded.runtime.inputs)
            reply.outputs.extend(spec_to_proto(s) for s in loaded.runtime.outputs)
        return reply


def _clear_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        # Never delete a file we did not make: the path is probably misconfigured.
        raise AgentError(f"local_api.socket {path} exists and is not a socket; refusing to replace it")
    path.unlink()


def _listen(server: grpc.aio.Server, address: str) -> None:
    # grpc reports a failed bind by raising or by returning port 0, depending on the version.
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise AgentError(f"local API cannot listen on {address}: {str(e).split(';')[0]}") from e
    if bound == 0:
        raise AgentError(f"local API cannot listen on {address}")


class LocalApiServer:
    """A grpc.aio server with InferenceService and health, on a Unix socket and/or 127.0.0.1."""

    def __init__(self, backend: PredictionBackend, *, socket_path: Path | None, tcp_port: int = 0) -> None:
        if socket_path is None and tcp_port == 0:
            raise AgentError("local API needs a Unix socket path or a TCP port; both are disabled")
        self._backend = backend
        self._socket = socket_path
        self._tcp_port = tcp_port
        self._server: grpc.aio.Server | None = None
        # grpc_health's stubs predate its asyncio servicer.
        self._health: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def targets(self) -> list[str]:
        """gRPC targets a client can use: ``unix:/path`` and/or ``127.0.0.1:port``."""
        found = [f"unix:{self._socket}"] if self._socket is not None else []
        if self._tcp_port:
            found.append(f"127.0.0.1:{self._tcp_port}")
        return found

    async def start(self) -> None:
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(_InferenceServicer(self._backend), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            self._bind(server)
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        if self._socket is not None:
            self._socket.chmod(SOCKET_MODE)
        self._server = server
        await self.set_serving(self._backend.active_model is not None)
        log.info("local API listening on %s", ", ".join(self.targets))

    def _bind(self, server: grpc.aio.Server) -> None:
        if self._socket is not None:
            self._socket.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale_socket(self._socket)
            _listen(server, f"unix:{self._socket}")
        if self._tcp_port:
            _listen(server, f"127.0.0.1:{self._tcp_port}")

    async def set_serving(self, serving: bool) -> None:
        """Health of the whole server stays SERVING while it runs; the inference service follows the model."""
        status = health_pb2.HealthCheckResponse
        await self._health.set("", status.SERVING)
        await self._health.set(INFERENCE_SERVICE, status.SERVING if serving else status.NOT_SERVING)

    def notify_serving(self, serving: bool) -> None:
        """:meth:`set_serving` from synchronous code running on the event loop."""
        task = asyncio.get_running_loop().create_task(self.set_serving(serving))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)
