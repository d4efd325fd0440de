"""Check an ONNX file and describe it, without holding the model in the hub's memory.

Loading it in onnxruntime is the check that matters: a file the hub accepts must be one a device
can run. But a session holds the whole model, and a parsed graph holds every initializer, so a
200 MiB upload checked in the hub's own process costs it several hundred MiB of resident memory
that the allocator rarely gives back. A file above ``ValidationLimits.in_process_max_bytes`` is
therefore checked in a child process (a fresh interpreter, never a fork of the threaded hub) whose
address space is capped with ``RLIMIT_AS`` before it imports onnx or onnxruntime; it prints what it
found as one JSON line. Above ``load_max_bytes`` the onnxruntime load is skipped (logged), and the
schema is read from the graph alone.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud.artifacts import without_path
from cloud.errors import InvalidArtifactError, TooLargeError

if TYPE_CHECKING:
    from cloud.models import ModelVariant, ModelVersion
    from cloud.settings import Settings

__all__ = [
    "ModelFacts",
    "ValidationLimits",
    "ValidationMemoryError",
    "inspect_onnx",
    "onnx_io_schema",
    "single_file_variant",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

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

# The child's exit codes besides 0: the file is not a model, or the child ran out of its memory.
_EXIT_INVALID = 2
_EXIT_MEMORY = 3


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """How far the hub goes to check an uploaded ONNX file (``EDGEFLEET_VALIDATE_*``).

    ``load_max_bytes``: larger files are not loaded in onnxruntime (schema from the graph only).
    ``memory_limit_bytes``: the child's address-space cap; a model that needs more is refused (413).
    ``in_process_max_bytes``: files up to this size are checked in the hub's process, where a child's
    start-up (about half a second) would cost more than the memory saved.
    """

    load_max_bytes: int = 1024 * MiB
    memory_limit_bytes: int = 2048 * MiB
    in_process_max_bytes: int = 8 * MiB
    timeout_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationLimits:
        return cls(
            load_max_bytes=settings.validate_load_max_bytes,
            memory_limit_bytes=settings.validate_memory_limit_bytes,
            in_process_max_bytes=settings.validate_in_process_max_bytes,
        )


DEFAULT_LIMITS = ValidationLimits()


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the hub records of an ONNX file: its schema, precision and opset, and how it was checked."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    precision: str
    max_opset: int | None
    load_checked: bool


class ValidationMemoryError(TooLargeError):
    """The model needs more memory to load than the validation child may use."""

    def __init__(self, limit: int, name: str) -> None:
        # Not TooLargeError's own message: the limit is on memory, not on the artifact's length.
        super(TooLargeError, self).__init__(
            f"artifact {name} needs more memory to load than the hub's validation limit of {limit} bytes "
            "(EDGEFLEET_VALIDATE_MEMORY_LIMIT_BYTES): raise the limit, or skip the load check for files "
            "this large (EDGEFLEET_VALIDATE_LOAD_MAX_BYTES)"
        )
        self.limit = limit
        self.got = None


class _RefusedError(Exception):
    """onnx or onnxruntime refused the file (the child reports which, and its words)."""

    def __init__(self, library: str, cause: BaseException) -> None:
        self.library = library
        self.cause = cause
        super().__init__(f"{library}: {cause}")


def _dtype(ort_type: str) -> str:
    inner = ort_type.removeprefix("tensor(").removesuffix(")")
    return _ORT_TO_NUMPY.get(inner, inner)


def _shape(shape: Any) -> list[int]:
    # Symbolic ("batch") and unknown (None) dimensions are both dynamic.
    return [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (shape or [])]


def _graph_facts(path: Path) -> dict[str, Any]:
    """Precision, opset and (for a file not loaded in onnxruntime) the schema, read from the graph."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    opsets = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    weights = {t.name for t in model.graph.initializer}

    def values(infos: Any) -> list[dict[str, Any]]:
        described = []
        for info in infos:
            if info.name in weights:
                continue  # an initializer listed as a graph input (old exporters) is not fed
            tensor = info.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
            described.append(
                {"name": info.name, "dtype": "str" if dtype == "object" else dtype, "shape": dims}
            )
        return described

    return {
        "inputs": values(model.graph.input),
        "outputs": values(model.graph.output),
        "precision": "int8" if ops & _INT8_OPS else "fp32",
        "max_opset": max(opsets) if opsets else None,
    }


def _session_schema(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Validation needs the graph loaded, not optimised; keep it cheap and quiet.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return {
        "inputs": [
            {"name": i.name, "dtype": _dtype(i.type), "shape": _shape(i.shape)} for i in session.get_inputs()
        ],
        "outputs": [
            {"name": o.name, "dtype": _dtype(o.type), "shape": _shape(o.shape)} for o in session.get_outputs()
        ],
    }


def _describe(path: Path, *, load: bool) -> dict[str, Any]:
    """The facts as plain data (what the child prints); raises what onnx or onnxruntime raise."""
    facts: dict[str, Any] = {"load_checked": load}
    if load:
        try:
            facts.update(_session_schema(path))
        except MemoryError:
            raise
        except Exception as e:  # onnxruntime raises its own unrelated classes for each failure
            raise _RefusedError("onnxruntime", e) from e
    try:
        graph = _graph_facts(path)
    except MemoryError:
        raise
    except Exception as e:  # onnx raises DecodeError, OSError and others
        raise _RefusedError("onnx", e) from e
    if load:
        graph.pop("inputs")
        graph.pop("outputs")  # onnxruntime's view of the schema is the one a device sees
    facts.update(graph)
    return facts


def _refusal(library: str, said: str, path: Path) -> InvalidArtifactError:
    said = without_path(said.strip(), path, f"artifact {path.name}")
    if library == "onnxruntime":
        reason = said.splitlines()[0][:300] if said else "no reason given"
        return InvalidArtifactError(
            f"artifact is not a loadable ONNX model (corrupt or not ONNX): onnxruntime said: {reason}"
        )
    return InvalidArtifactError(f"artifact is not a readable ONNX model: {said[:300]}")


def _looks_like_memory(text: str) -> bool:
    lowered = text.lower()
    return "bad_alloc" in lowered or "bad allocation" in lowered or "memoryerror" in lowered


def _in_process(path: Path, *, load: bool) -> ModelFacts:
    try:
        facts = _describe(path, load=load)
    except _RefusedError as e:
        raise _refusal(e.library, str(e.cause) or type(e.cause).__name__, path) from e.cause
    return _facts(facts)


def _facts(data: dict[str, Any]) -> ModelFacts:
    return ModelFacts(
        inputs=list(data["inputs"]),
        outputs=list(data["outputs"]),
        precision=str(data["precision"]),
        max_opset=data["max_opset"],
        load_checked=bool(data["load_checked"]),
    )


def _in_child(path: Path, *, load: bool, limits: ValidationLimits) -> ModelFacts:
    command = [
        sys.executable,
        "-m",
        "cloud.services.onnx_schema",
        str(path),
        str(limits.memory_limit_bytes),
        "load" if load else "graph",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=limits.timeout_s, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise InvalidArtifactError(
            f"artifact {path.name} took longer than {limits.timeout_s:.0f} s to validate"
        ) from e
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    answer: dict[str, Any] = {}
    if lines:
        try:
            answer = json.loads(lines[-1])
        except json.JSONDecodeError:
            answer = {}
    if done.returncode == 0 and "facts" in answer:
        return _facts(answer["facts"])
    said = str(answer.get("error", "")) or done.stderr.decode("utf-8", "replace")[-2000:]
    if done.returncode == _EXIT_INVALID and not _looks_like_memory(said):
        raise _refusal(str(answer.get("library", "onnx")), said, path)
    if done.returncode in (_EXIT_MEMORY, _EXIT_INVALID) or done.returncode < 0 or _looks_like_memory(said):
        # Killed by a signal (an abort on a failed allocation) or out of memory: the cap was hit.
        log.warning(
            "validation of artifact %s stopped at the memory limit of %d bytes (exit %d)",
            path.name,
            limits.memory_limit_bytes,
            done.returncode,
        )
        raise ValidationMemoryError(limits.memory_limit_bytes, path.name)
    log.error("the validation child for artifact %s failed (exit %d): %s", path.name, done.returncode, said)
    raise InvalidArtifactError(
        f"artifact {path.name} could not be validated: the checker exited {done.returncode}"
    )


def inspect_onnx(path: Path, limits: ValidationLimits = DEFAULT_LIMITS) -> ModelFacts:
    """Check an ONNX file and describe it; InvalidArtifactError if it does not load.

    ValidationMemoryError (413) when the child checking it hits ``limits.memory_limit_bytes``.
    """
    size = path.stat().st_size
    load = size <= limits.load_max_bytes
    if not load:
        log.warning(
            "artifact %s is %d bytes, above EDGEFLEET_VALIDATE_LOAD_MAX_BYTES=%d: the onnxruntime load "
            "check is skipped; its schema is read from the graph",
            path.name,
            size,
            limits.load_max_bytes,
        )
    if size <= limits.in_process_max_bytes:
        return _in_process(path, load=load)
    return _in_child(path, load=load, limits=limits)


def onnx_io_schema(
    path: Path, limits: ValidationLimits = DEFAULT_LIMITS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as ``[{"name", "dtype", "shape"}]``; InvalidArtifactError if it does not load."""
    facts = inspect_onnx(path, limits)
    return facts.inputs, facts.outputs


def single_file_variant(facts: ModelFacts, version: ModelVersion, now: datetime) -> ModelVariant:
    """The one variant of a version pushed as a single ONNX file (its precision read from the graph)."""
    from cloud.models import ModelVariant
    from model_tools.bundle import runtime_needs

    assert version.id is not None
    return ModelVariant(
        model_version_id=version.id,
        variant=facts.precision,
        format=version.format,
        precision=facts.precision,
        sha256=version.sha256,
        length=version.length,
        runtimes=[n.to_dict() for n in runtime_needs("onnx", facts.max_opset)],
        is_baseline=True,
        created_at=now,
    )


def _child_main(argv: list[str]) -> int:
    """``python -m cloud.services.onnx_schema PATH LIMIT load|graph``: one JSON line on stdout."""
    path, limit, mode = Path(argv[0]), int(argv[1]), argv[2]
    # Before onnx and onnxruntime are imported, so that every allocation of theirs counts.
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        facts = _describe(path, load=mode == "load")
    except MemoryError:
        print(json.dumps({"error": "MemoryError"}), flush=True)
        return _EXIT_MEMORY
    except _RefusedError as e:
        said = str(e.cause) or type(e.cause).__name__
        print(json.dumps({"library": e.library, "error": said}), flush=True)
        return _EXIT_INVALID
    print(json.dumps({"facts": facts}), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(_child_main(sys.argv[1:]))
