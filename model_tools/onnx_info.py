"""Read an ONNX file's inputs, outputs and opset (light: onnxruntime and protobuf only).

This runs on devices, which carry onnxruntime but not the ``onnx`` package. The
input and output specs come from an onnxruntime session, so they are what the
device will actually run; the opset comes from the file's header, read with a
minimal protobuf schema of the ONNX ModelProto (field numbers from onnx.proto).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import onnxruntime as ort
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from model_tools.errors import InvalidModelError

__all__ = ["ModelSchema", "TensorSpec", "describe_onnx", "numpy_dtype_name"]

# onnxruntime's "tensor(...)" element names that differ from numpy's dtype names.
_ORT_TO_NUMPY = {"float": "float32", "double": "float64", "string": "str"}
_T = descriptor_pb2.FieldDescriptorProto.Type
_L = descriptor_pb2.FieldDescriptorProto.Label


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: ``shape`` has -1 for every dimension not fixed in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSchema:
    """The interface of an ONNX model: its inputs, outputs and default-domain opset."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    ir_version: int
    producer: str

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``."""
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``."""
        return _by_name(self.outputs, name, "output")


def describe_onnx(path: str | os.PathLike[str]) -> ModelSchema:
    """Describe the ONNX model at ``path``; raise InvalidModelError when it is not a loadable model."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise InvalidModelError(f"cannot read ONNX model {file}: {e.strerror or e}") from e
    ir_version, opset, producer = _read_header(raw, file)
    session = _session(file)
    return ModelSchema(
        inputs=tuple(_spec(arg) for arg in session.get_inputs()),
        outputs=tuple(_spec(arg) for arg in session.get_outputs()),
        opset=opset,
        ir_version=ir_version,
        producer=producer,
    )


def numpy_dtype_name(ort_type: str) -> str:
    """Numpy dtype name for an onnxruntime type string: ``"tensor(float)"`` -> ``"float32"``.

    Types that are not tensors (sequences, maps) come back unchanged.
    """
    if not (ort_type.startswith("tensor(") and ort_type.endswith(")")):
        return ort_type
    element = ort_type[len("tensor(") : -1]
    return _ORT_TO_NUMPY.get(element, element)


def _read_header(raw: bytes, file: Path) -> tuple[int, int, str]:
    if not raw:
        raise InvalidModelError(f"{file} is empty; expected an ONNX model")
    model = _model_proto_class()()
    try:
        model.ParseFromString(raw)
    except DecodeError as e:
        raise InvalidModelError(
            f"{file} is not an ONNX model: it does not parse as a ModelProto ({e})"
        ) from e
    fields: Any = model
    default_opsets = [int(o.version) for o in fields.opset_import if o.domain in ("", "ai.onnx")]
    if int(fields.ir_version) <= 0 or not default_opsets:
        raise InvalidModelError(
            f"{file} is not an ONNX model: expected an IR version and a default-domain opset, "
            f"found ir_version={fields.ir_version} and {len(default_opsets)} default opsets"
        )
    return int(fields.ir_version), max(default_opsets), str(fields.producer_name)


def _session(file: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Only the interface is wanted: skip graph rewriting to keep this cheap.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        # Loading by path (not bytes) lets onnxruntime resolve external data files beside the model.
        return ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped exception classes
        raise InvalidModelError(f"onnxruntime cannot load {file}: {str(e).strip()[:500]}") from e


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(name=str(arg.name), dtype=numpy_dtype_name(str(arg.type)), shape=shape)


def _by_name(specs: tuple[TensorSpec, ...], name: str, what: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no {what} named {name!r}; the model has {[s.name for s in specs]}")


@cache
def _model_proto_class() -> type[Message]:
    """A ModelProto class that knows only the header fields; the parser skips the rest."""
    file = descriptor_pb2.FileDescriptorProto(
        name="edgefleet_onnx_header.proto", package="edgefleet_onnx_header"
    )
    file.syntax = "proto2"
    opset = file.message_type.add(name="OperatorSetIdProto")
    opset.field.add(name="domain", number=1, type=_T.TYPE_STRING, label=_L.LABEL_OPTIONAL)
    opset.field.add(name="version", number=2, type=_T.TYPE_INT64, label=_L.LABEL_OPTIONAL)
    model = file.message_type.add(name="ModelProto")
    model.field.add(name="ir_version", number=1, type=_T.TYPE_INT64, label=_L.LABEL_OPTIONAL)
    model.field.add(name="producer_name", number=2, type=_T.TYPE_STRING, label=_L.LABEL_OPTIONAL)
    model.field.add(
        name="opset_import",
        number=8,
        type=_T.TYPE_MESSAGE,
        label=_L.LABEL_REPEATED,
        type_name=".edgefleet_onnx_header.OperatorSetIdProto",
    )
    # A private pool, so this never clashes with the real onnx package's descriptors.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgefleet_onnx_header.ModelProto"))
