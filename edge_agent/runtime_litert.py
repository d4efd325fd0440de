"""LiteRT runtime: serve .tflite variants with ai-edge-litert (tflite-runtime as a fallback).

The interpreter work lives in ``model_tools.litert`` (light: numpy and LiteRT),
shared with the hub's evaluation so that a variant is measured the way devices
run it. This module adapts it to the agent's :class:`ModelRuntime` contract and
errors. LiteRT is imported only when a .tflite model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import InferenceError, ModelLoadError
from edge_agent.tensors import Array, TensorSpec

if TYPE_CHECKING:
    from edge_agent.runtime import RuntimeOptions
    from model_tools.litert import LiteRTSession

__all__ = ["LiteRTModel", "litert_available", "litert_runtime_name"]


def litert_runtime_name() -> str | None:
    """``"litert/<version>"`` (or ``"tflite-runtime/<version>"``) when one is installed, else None."""
    from model_tools.litert import litert_runtime

    found = litert_runtime()
    return f"{found[0]}/{found[1]}" if found else None


def litert_available() -> bool:
    return litert_runtime_name() is not None


class LiteRTModel:
    """A .tflite model in a LiteRT interpreter; calls are serialised (an interpreter is not thread-safe)."""

    def __init__(self, session: LiteRTSession) -> None:
        self._session = session
        self._inputs = tuple(TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in session.inputs)
        self._outputs = tuple(TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in session.outputs)

    @classmethod
    def load(cls, path: Path, options: RuntimeOptions) -> LiteRTModel:
        """Open ``path``; raise :class:`ModelLoadError` saying why it does not load."""
        from model_tools.errors import InvalidModelError
        from model_tools.litert import LiteRTSession, LiteRTUnavailableError, is_tflite_file

        try:
            if not is_tflite_file(path):
                raise ModelLoadError(f"{path.name} is not a TFLite model: expected the 'TFL3' identifier")
            session = LiteRTSession(path, threads=options.intra_op_threads)
        except (InvalidModelError, LiteRTUnavailableError, OSError) as e:
            raise ModelLoadError(f"LiteRT cannot load {path.name}: {e}") from e
        return cls(session)

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        try:
            return self._session.run(inputs)
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InferenceError(f"LiteRT failed: {first}") from e
