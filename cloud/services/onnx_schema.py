"""Load an ONNX file in onnxruntime and describe its inputs and outputs.

Loading it is the check that matters: a file the hub accepts must be one a device can run.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cloud.artifacts import without_path
from cloud.errors import InvalidArtifactError
from cloud.models import ModelVariant, ModelVersion

# Operators that only a quantized graph holds: a pushed file with any of them is an int8 variant.
_INT8_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)

# onnxruntime spells element types as "tensor(float)"; the wire contract uses numpy names.
_ORT_TO_NUMPY = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "str",
}


def _dtype(ort_type: str) -> str:
    inner = ort_type.removeprefix("tensor(").removesuffix(")")
    return _ORT_TO_NUMPY.get(inner, inner)


def _shape(shape: Any) -> list[int]:
    # Symbolic ("batch") and unknown (None) dimensions are both dynamic.
    return [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (shape or [])]


def onnx_io_schema(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as ``[{"name", "dtype", "shape"}]``; InvalidArtifactError if it does not load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Validation needs the graph loaded, not optimised; keep it cheap and quiet.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own unrelated classes for each failure
        said = without_path(str(e).strip(), path, f"artifact {path.name}")
        reason = said.splitlines()[0][:300] if said else type(e).__name__
        raise InvalidArtifactError(
            f"artifact is not a loadable ONNX model (corrupt or not ONNX): onnxruntime said: {reason}"
        ) from e
    inputs = [
        {"name": i.name, "dtype": _dtype(i.type), "shape": _shape(i.shape)} for i in session.get_inputs()
    ]
    outputs = [
        {"name": o.name, "dtype": _dtype(o.type), "shape": _shape(o.shape)} for o in session.get_outputs()
    ]
    return inputs, outputs


def single_file_variant(path: Path, version: ModelVersion, now: datetime) -> ModelVariant:
    """The one variant of a version pushed as a single ONNX file (its precision read from the graph)."""
    import onnx

    from model_tools.bundle import runtime_needs

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError and others
        said = without_path(str(e), path, f"artifact {path.name}")
        raise InvalidArtifactError(f"artifact is not a readable ONNX model: {said}") from e
    ops = {node.op_type for node in model.graph.node}
    opsets = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    precision = "int8" if ops & _INT8_OPS else "fp32"
    assert version.id is not None
    return ModelVariant(
        model_version_id=version.id,
        variant=precision,
        format=version.format,
        precision=precision,
        sha256=version.sha256,
        length=version.length,
        runtimes=[n.to_dict() for n in runtime_needs("onnx", max(opsets) if opsets else None)],
        is_baseline=True,
        created_at=now,
    )
