"""Run a .tflite model with LiteRT (light: numpy, and LiteRT when present).

Devices run TFLite variants with ``ai-edge-litert`` (the renamed tflite-runtime,
which works with numpy 2). Where only the older ``tflite-runtime`` package is
installed (it needs numpy < 2) it is used instead. The hub's evaluation and the
agent's runtime share this module, so both measure and serve the same way.

Callers see the model's signature names (``input`` -> ``logits`` for edgefleet's
exports) and float32 tensors: a model with int8 inputs or outputs is fed and read
through its own quantization parameters. A dynamic batch dimension is resized per
call; a model fixed at batch 1 (as litert-torch makes them) runs row by row.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.errors import InvalidModelError, ModelToolsError

__all__ = [
    "LITERT_PACKAGES",
    "LiteRTSession",
    "LiteRTUnavailableError",
    "TensorInfo",
    "is_tflite_file",
    "litert_runtime",
]

# (distribution, module with Interpreter, runtime name reported to the hub), in order of preference.
LITERT_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
)
# FlatBuffers put the file identifier at bytes 4..8; TFLite's is "TFL3".
_TFLITE_IDENTIFIER = b"TFL3"


class LiteRTUnavailableError(ModelToolsError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


@dataclass(frozen=True)
class TensorInfo:
    """A signature input or output as callers see it (float32 where the model is quantized)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def litert_runtime() -> tuple[str, str] | None:
    """("litert", version) or ("tflite-runtime", version) for the installed package, else None.

    Looks at package metadata only: nothing is imported.
    """
    for dist, module, name in LITERT_PACKAGES:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        try:
            return name, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def is_tflite_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file carries the TFLite FlatBuffer identifier."""
    with Path(path).open("rb") as f:
        head = f.read(8)
    return len(head) == 8 and head[4:8] == _TFLITE_IDENTIFIER


def _interpreter_class() -> Any:
    errors: list[str] = []
    for _dist, module, _name in LITERT_PACKAGES:
        try:
            return importlib.import_module(module).Interpreter
        except ImportError as e:
            errors.append(f"{module}: {e}")
    raise LiteRTUnavailableError(
        "no LiteRT runtime: expected ai-edge-litert (or tflite-runtime) to be installed; " + "; ".join(errors)
    )


@dataclass
class _Port:
    info: TensorInfo
    index: int
    dtype: Any
    scale: float
    zero_point: int
    batch: int  # -1: dynamic
    quantized: bool = False  # int8/uint8 in the model, float32 to callers


class LiteRTSession:
    """One interpreter, serialised by a lock (a TFLite interpreter is not thread-safe)."""

    def __init__(self, model: str | os.PathLike[str] | bytes, *, threads: int = 1) -> None:
        interpreter_class = _interpreter_class()
        shown = "<bytes>" if isinstance(model, bytes) else Path(model).name
        try:
            if isinstance(model, bytes):
                self._it = interpreter_class(model_content=model, num_threads=threads)
            else:
                self._it = interpreter_class(model_path=str(model), num_threads=threads)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InvalidModelError(f"LiteRT cannot load {shown}: {str(e).strip()[:300]}") from e
        self._lock = threading.Lock()
        input_names, output_names = self._signature_names()
        self._inputs = [self._port(d, input_names) for d in self._it.get_input_details()]
        self._outputs = [self._port(d, output_names) for d in self._it.get_output_details()]
        self._shapes: dict[int, tuple[int, ...]] = {
            p.index: tuple(int(v) for v in d["shape"])
            for p, d in zip(self._inputs, self._it.get_input_details(), strict=True)
        }
        fixed = {p.batch for p in self._inputs if p.batch != -1}
        self._fixed_batch: int | None = fixed.pop() if len(fixed) == 1 else None

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return tuple(p.info for p in self._inputs)

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return tuple(p.info for p in self._outputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on inputs keyed by signature name; every input carries the same batch size first."""
        try:
            arrays = {p.index: np.asarray(inputs[p.info.name], dtype=np.float32) for p in self._inputs}
        except KeyError:
            missing = [p.info.name for p in self._inputs if p.info.name not in inputs]
            raise ValueError(
                f"missing inputs {missing}: expected {[p.info.name for p in self._inputs]}"
            ) from None
        batch = next(iter(arrays.values())).shape[0]
        with self._lock:
            step = self._fixed_batch
            if step is not None and batch != step:
                # A model fixed at batch b: run b rows at a time and stack the results.
                if batch % step:
                    raise ValueError(f"this model runs batches of {step}; got {batch} rows")
                parts = [
                    self._invoke({i: a[r : r + step] for i, a in arrays.items()})
                    for r in range(0, batch, step)
                ]
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            return self._invoke(arrays)

    def run_single(self, x: np.ndarray) -> np.ndarray:
        """One input in, the first output out."""
        if len(self._inputs) != 1:
            raise ValueError(f"run_single needs a one-input model; this one has {len(self._inputs)}")
        return self.run({self._inputs[0].info.name: x})[self._outputs[0].info.name]

    def _invoke(self, arrays: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
        resized = False
        for port in self._inputs:
            shape = arrays[port.index].shape
            if self._shapes[port.index] != shape:
                self._it.resize_tensor_input(port.index, list(shape))
                self._shapes[port.index] = shape
                resized = True
        if resized:
            self._it.allocate_tensors()
        for port in self._inputs:
            self._it.set_tensor(port.index, _to_model(arrays[port.index], port))
        self._it.invoke()
        return {p.info.name: _from_model(self._it.get_tensor(p.index), p) for p in self._outputs}

    def _signature_names(self) -> tuple[dict[int, str], dict[int, str]]:
        """Tensor index -> signature name, from the first signature when the model has one."""
        try:
            signatures = self._it.get_signature_list()
        except (AttributeError, ValueError):
            return {}, {}
        if not signatures:
            return {}, {}
        runner = self._it.get_signature_runner(next(iter(signatures)))
        inputs = {int(d["index"]): name for name, d in runner.get_input_details().items()}
        outputs = {int(d["index"]): name for name, d in runner.get_output_details().items()}
        return inputs, outputs

    @staticmethod
    def _port(detail: Mapping[str, Any], names: dict[int, str]) -> _Port:
        index = int(detail["index"])
        signature = detail.get("shape_signature")
        shape = tuple(
            int(v) for v in (signature if signature is not None and len(signature) else detail["shape"])
        )
        scale, zero_point = detail.get("quantization", (0.0, 0))
        dtype = detail["dtype"]
        quantized = np.dtype(dtype) in (np.dtype(np.int8), np.dtype(np.uint8)) and scale
        shown = "float32" if quantized else np.dtype(dtype).name
        return _Port(
            info=TensorInfo(name=names.get(index, str(detail["name"])), dtype=shown, shape=shape),
            index=index,
            dtype=dtype,
            scale=float(scale),
            zero_point=int(zero_point),
            batch=shape[0] if shape else -1,
            quantized=bool(quantized),
        )


def _to_model(x: np.ndarray, port: _Port) -> np.ndarray:
    if port.quantized:
        info = np.iinfo(port.dtype)
        q = np.round(x / port.scale + port.zero_point)
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(port.dtype))
    return np.ascontiguousarray(x.astype(port.dtype, copy=False))


def _from_model(y: np.ndarray, port: _Port) -> np.ndarray:
    if port.quantized:
        return ((y.astype(np.float32) - port.zero_point) * port.scale).astype(np.float32)
    # get_tensor hands back a copy, so the result outlives the next invoke.
    return y
