"""Inference runtimes: what loads a verified artifact and runs it.

:class:`ModelRuntime` is what the agent serves through; :class:`RuntimeRegistry`
maps an artifact format ("onnx") to the loader for it. onnxruntime is imported
only when a model is loaded, so that the command line starts fast.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.errors import InferenceError, ModelLoadError, UnknownFormatError
from edge_agent.runtime_litert import LiteRTModel, litert_available, litert_runtime_name
from edge_agent.tensors import Array, TensorSpec

__all__ = [
    "ModelRuntime",
    "OnnxRuntimeModel",
    "RuntimeOptions",
    "RuntimeRegistry",
    "available_runtimes",
]


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    intra_op_threads: int = 1


class ModelRuntime(Protocol):
    """A loaded model, ready to serve."""

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run the model on inputs keyed by input name (already checked against :attr:`inputs`)."""
        ...


Loader = Callable[[Path, RuntimeOptions], ModelRuntime]

# onnxruntime's element types, as numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _spec(node: Any) -> TensorSpec:
    # Symbolic ("batch") and unknown (None) dimensions are both dynamic to a caller.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or ()))
    return TensorSpec(name=node.name, dtype=_ORT_TYPES.get(node.type, node.type), shape=shape)


class OnnxRuntimeModel:
    """An onnxruntime ``InferenceSession`` on the CPU execution provider."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = tuple(_spec(n) for n in session.get_inputs())
        self._outputs = tuple(_spec(n) for n in session.get_outputs())
        self._output_names = [s.name for s in self._outputs]

    @classmethod
    def load(cls, path: Path, options: RuntimeOptions) -> OnnxRuntimeModel:
        """Open ``path``; raise :class:`ModelLoadError` saying why it does not load."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        # Thread spinning burns a core per session while idle; a device runs other work.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes and RuntimeError alike
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"onnxruntime cannot load {path.name}: {first_line}") from e
        return cls(session)

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as e:  # onnxruntime's errors have no common base class
            raise InferenceError(f"onnxruntime failed: {str(e).strip().splitlines()[0]}") from e
        if len(results) == 1:  # the common case, without zip's per-call cost
            return {self._output_names[0]: results[0]}
        return dict(zip(self._output_names, results, strict=True))


# Which artifact format each runtime (as reported to the hub) loads.
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite", "tflite-runtime": "tflite"}


class RuntimeRegistry:
    """Loaders by artifact format."""

    def __init__(self, loaders: Mapping[str, Loader] | None = None) -> None:
        default: dict[str, Loader] = {"onnx": OnnxRuntimeModel.load}
        if litert_available():  # .tflite variants, where ai-edge-litert or tflite-runtime is installed
            default["tflite"] = LiteRTModel.load
        self._loaders = dict(loaders) if loaders is not None else default

    @classmethod
    def only(cls, runtimes: Iterable[str]) -> RuntimeRegistry:
        """The default registry cut down to the named runtimes ("onnxruntime", "litert"): a simulated
        device that reports, and runs, only those."""
        wanted = {RUNTIME_FORMATS[r] for r in runtimes if r in RUNTIME_FORMATS}
        full = cls()
        return cls({fmt: loader for fmt, loader in full._loaders.items() if fmt in wanted})

    def runtime_names(self) -> list[str]:
        """The installed runtimes this registry loads with, as "name/version" (reported to the hub)."""
        return [r for r in available_runtimes() if RUNTIME_FORMATS.get(r.split("/")[0]) in self._loaders]

    @property
    def formats(self) -> list[str]:
        return sorted(self._loaders)

    def supports(self, fmt: str) -> bool:
        return fmt in self._loaders

    def check_format(self, fmt: str) -> None:
        if fmt not in self._loaders:
            raise UnknownFormatError(f"unknown model format {fmt!r}: this device runs {self.formats}")

    def load(self, fmt: str, path: Path, options: RuntimeOptions) -> ModelRuntime:
        self.check_format(fmt)
        return self._loaders[fmt](path, options)


def available_runtimes() -> list[str]:
    """Runtimes installed on this device, as "name/version" (the hub picks a variant by them)."""
    found: list[str] = []
    for dist in ("onnxruntime",):
        try:
            found.append(f"{dist}/{importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    litert = litert_runtime_name()
    if litert is not None:
        found.append(litert)
    return found
