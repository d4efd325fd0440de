"""In-memory stand-ins for the agent's peers, and tiny real ONNX models, for the agent's tests.

- ``FakeClock``: time that moves only when a test says so.
- ``FakeFetcher``: a hub that serves artifacts from a dict, records every fetch,
  and can break a stream part way, once, to exercise resume.
- ``FakeResources``: disk and memory figures a test sets (a full disk, no memory).
- ``linear_model``: a valid ONNX file (y = x @ W + b, input "x" float32 [N, 4]).
- ``classifier_model``: 4-class ONNX models that answer well, badly, or with NaN.
- ``NO_TRIAL``: trial settings that commit at once, for tests about everything but trials.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.config import TrialConfig
from edge_agent.errors import HubUnavailableError
from edge_agent.fetcher import write_chunks_from
from edgefleet_proto.v1 import common_pb2

IN_FEATURES = 4
OUT_FEATURES = 2
NO_TRIAL = TrialConfig(window_requests=0, window_s=0)


@dataclass
class FakeResources:
    """Free disk and available memory as the test says (plenty unless told otherwise)."""

    disk: int = 1 << 40
    memory: int = 1 << 40

    def disk_free(self, path: Path) -> int:
        return self.disk

    def memory_available(self) -> int:
        return self.memory


class FakeClock:
    def __init__(self, wall_ms: int = 1_700_000_000_000, mono: float = 1000.0) -> None:
        self.now_ms = wall_ms
        self.mono = mono

    def wall_ms(self) -> int:
        return self.now_ms

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)
        self.mono += seconds


def linear_model(scale: float) -> bytes:
    """ONNX bytes for y = x @ (scale * ones(4, 2)) + scale; different ``scale`` -> different sha256."""
    w = np.full((IN_FEATURES, OUT_FEATURES), scale, dtype=np.float32)
    b = np.full((OUT_FEATURES,), scale, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_FEATURES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def expected_output(scale: float, x: np.ndarray) -> np.ndarray:
    return x @ np.full((IN_FEATURES, OUT_FEATURES), scale, dtype=np.float32) + np.float32(scale)


def ref_for(
    data: bytes, *, version: str = "1", name: str = "linear", fmt: str = "onnx"
) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(
        name=name, version=version, format=fmt, sha256=hashlib.sha256(data).hexdigest(), length=len(data)
    )


@dataclass
class FakeFetcher:
    """A hub in memory: serves ``blobs[sha256]`` in ``chunk`` byte pieces.

    ``break_at[sha256]`` breaks the first stream of that artifact at that byte.
    """

    blobs: dict[str, bytes] = field(default_factory=dict)
    break_at: dict[str, int] = field(default_factory=dict)
    unavailable: bool = False
    chunk: int = 64
    limit: int = 1 << 30
    calls: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, data: bytes, *, sha256: str | None = None) -> str:
        """Serve ``data`` under its own digest, or under ``sha256`` to serve the wrong bytes."""
        key = sha256 or hashlib.sha256(data).hexdigest()
        self.blobs[key] = data
        return key

    async def fetch(
        self, ref: common_pb2.ModelRef, dest_partial: Path, offset: int, *, endpoint: str = ""
    ) -> AsyncIterator[int]:
        self.calls.append((ref.sha256, offset, endpoint))
        if self.unavailable:
            raise HubUnavailableError(f"hub fake at byte {offset} of {ref.sha256}: UNAVAILABLE: switched off")
        data = self.blobs.get(ref.sha256)
        if data is None:
            raise HubUnavailableError(f"fake hub has no {ref.sha256}")
        stop_at = self.break_at.pop(ref.sha256, None)
        async for held in write_chunks_from(
            self._chunks(data, offset, stop_at), ref, dest_partial, offset, self.limit
        ):
            yield held

    async def _chunks(
        self, data: bytes, offset: int, stop_at: int | None
    ) -> AsyncIterator[tuple[int, bytes]]:
        pos = offset
        while pos < len(data):
            if stop_at is not None and pos >= stop_at:
                raise HubUnavailableError(f"stream broken at byte {pos}")
            piece = data[pos : pos + self.chunk]
            yield pos, piece
            pos += len(piece)


CLASSES = 4


def classifier_model(kind: str) -> bytes:
    """ONNX bytes for a 4-class "classifier" on x float32 [N, 4]: y = x @ W + b, logits [N, 4].

    - ``identity``: the class is the argmax of the input (a good model)
    - ``scaled``: the same answers from other bytes (a good new version)
    - ``constant``: always class 2, whatever the input (garbage outputs)
    - ``shifted``: class (argmax + 1) % 4: the same class shares, every answer different
    - ``nan``: NaN in every output
    """
    eye = np.eye(CLASSES, dtype=np.float32)
    weights = {
        "identity": (eye, np.zeros(CLASSES, np.float32)),
        "scaled": (2 * eye, np.zeros(CLASSES, np.float32)),
        "constant": (np.zeros((CLASSES, CLASSES), np.float32), 10 * eye[2]),
        "shifted": (np.roll(eye, 1, axis=1), np.zeros(CLASSES, np.float32)),
        "nan": (eye, np.full(CLASSES, np.nan, np.float32)),
    }
    w, b = weights[kind]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        f"classifier_{kind}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", CLASSES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def one_hot_rows(classes: list[int]) -> np.ndarray:
    """Inputs whose argmax is the given class, one row per entry."""
    x = np.zeros((len(classes), CLASSES), np.float32)
    x[np.arange(len(classes)), classes] = 1.0
    return x
