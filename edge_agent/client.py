"""The Python API for applications on the device: call the agent's local prediction service.

    with LocalClient("unix:/var/lib/edgefleet/agent.sock") as client:
        y = client.predict(x)                  # one input, one output
        outs = client.predict_named({"x": x})  # by name
        print(client.info().model_version)
        answer = client.predict_with_id({"x": x})
        client.feedback(answer.prediction_id, label=3)  # the true class, when the app learns it

Synchronous on purpose: an application should not need an event loop to ask
for a prediction.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from edge_agent.errors import AgentError, DuplicateLabelError, LabelError, UnknownPredictionError
from edge_agent.tensors import Array, TensorSpec, array_to_tensor, tensor_to_array
from edgefleet_proto.v1 import inference_pb2, inference_pb2_grpc

__all__ = [
    "AlreadyLabelledError",
    "FeedbackReply",
    "InvalidInputError",
    "InvalidLabelError",
    "LocalApiError",
    "LocalClient",
    "ModelInfo",
    "NoModelServingError",
    "PredictResult",
    "PredictionNotFoundError",
]


class LocalApiError(AgentError):
    """The local API answered with an error; ``code`` is the gRPC status code."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidInputError(LocalApiError, ValueError):
    """The inputs do not match the model (the message says what it expects)."""


class NoModelServingError(LocalApiError):
    """The device has no model loaded yet."""


class PredictionNotFoundError(LocalApiError, UnknownPredictionError):
    """Feedback named a prediction the agent does not hold (unknown, forgotten or expired)."""


class AlreadyLabelledError(LocalApiError, DuplicateLabelError):
    """Feedback named a prediction that already has a label."""


class InvalidLabelError(LocalApiError, LabelError):
    """The label is not one of the model's classes."""


@dataclass(frozen=True, slots=True)
class PredictResult:
    """Outputs by name, the model that answered, and the id to send feedback under."""

    outputs: dict[str, Array]
    model_name: str
    model_version: str
    model_sha256: str
    latency_ms: float
    prediction_id: str


@dataclass(frozen=True, slots=True)
class FeedbackReply:
    """The model version that made the labelled prediction, and whether it was right."""

    model_name: str
    model_version: str
    model_sha256: str
    correct: bool


@dataclass(frozen=True, slots=True)
class ModelInfo:
    device_id: str
    health: str
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def _wrap(e: grpc.RpcError, target: str, *, feedback: bool = False) -> LocalApiError:
    # The RpcError grpc raises is also a Call; the stubs cannot say so.
    call: Any = e
    is_call = callable(getattr(call, "code", None))
    code: grpc.StatusCode | None = call.code() if is_call else None
    details: str = (call.details() if is_call else None) or str(e)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidLabelError(details, code) if feedback else InvalidInputError(details, code)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NoModelServingError(details, code)
    if feedback and code == grpc.StatusCode.NOT_FOUND:
        return PredictionNotFoundError(details, code)
    if feedback and code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyLabelledError(details, code)
    name = code.name if code is not None else "error"
    return LocalApiError(f"local API at {target}: {name}: {details}", code)


def _specs(specs: object) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in specs)  # type: ignore[attr-defined]


class LocalClient:
    """A client of one agent's local API.

    ``target`` is ``unix:/path``, a bare ``/path``, or ``127.0.0.1:port``.
    """

    def __init__(self, target: str, *, timeout_s: float = 10.0) -> None:
        self.target = f"unix:{target}" if target.startswith("/") else target
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(self.target)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)

    def predict_named(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, Array]:
        """Run the model on inputs by name; returns outputs by name."""
        return self.predict_with_id(inputs).outputs

    def predict_with_id(self, inputs: Mapping[str, npt.ArrayLike]) -> PredictResult:
        """Run the model on inputs by name; the outputs, the model, and the prediction's id."""
        request = inference_pb2.PredictRequest(
            inputs={name: array_to_tensor(np.asarray(value)) for name, value in inputs.items()}
        )
        try:
            reply = self._stub.Predict(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _wrap(e, self.target) from e
        return PredictResult(
            outputs={name: tensor_to_array(tensor, name) for name, tensor in reply.outputs.items()},
            model_name=reply.model.name,
            model_version=reply.model.version,
            model_sha256=reply.model.sha256,
            latency_ms=reply.latency_ms,
            prediction_id=reply.prediction_id,
        )

    def feedback(self, prediction_id: str, label: int) -> FeedbackReply:
        """Tell the agent the true class of an earlier prediction (its id from :meth:`predict_with_id`).

        Raises :class:`PredictionNotFoundError` (unknown or expired id), :class:`AlreadyLabelledError`
        or :class:`InvalidLabelError` (not one of the model's classes).
        """
        raw: object = label  # numpy integers are welcome; floats and bools are not class ids
        if isinstance(raw, bool) or not isinstance(raw, numbers.Integral) or not 0 <= int(raw) < 2**32:
            raise InvalidLabelError(f"expected a class id in 0..2**32-1 as the label, got {raw!r}")
        request = inference_pb2.FeedbackRequest(prediction_id=prediction_id, label=int(raw))
        try:
            reply = self._stub.Feedback(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _wrap(e, self.target, feedback=True) from e
        return FeedbackReply(
            model_name=reply.model.name,
            model_version=reply.model.version,
            model_sha256=reply.model.sha256,
            correct=reply.correct,
        )

    def predict(self, x: npt.ArrayLike) -> Array:
        """Run a single-input, single-output model on ``x``."""
        outputs = self.predict_named({"": x})
        if len(outputs) != 1:
            raise LocalApiError(
                f"predict() needs a model with one output; this one has {sorted(outputs)}: "
                "use predict_named()"
            )
        return next(iter(outputs.values()))

    def info(self) -> ModelInfo:
        try:
            reply = self._stub.Info(inference_pb2.InfoRequest(), timeout=self._timeout)
        except grpc.RpcError as e:
            raise _wrap(e, self.target) from e
        has_model = reply.HasField("model")
        return ModelInfo(
            device_id=reply.device_id,
            health=reply.health,
            model_name=reply.model.name if has_model else None,
            model_version=reply.model.version if has_model else None,
            model_sha256=reply.model.sha256 if has_model else None,
            inputs=_specs(reply.inputs),
            outputs=_specs(reply.outputs),
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
