"""Measure a model variant: accuracy overall and per class, bytes, latency (light: no torch).

Every variant is measured the way a small device runs it: one thread, one
request at a time. Latency is the median of many single calls at batch 1 (what a
device serves most) and at batch 32, after warm-up calls that are not counted.
ONNX files run in onnxruntime, .tflite files in LiteRT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_tools.errors import ConfigError, EvaluationError, InvalidModelError, ModelToolsError

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "LatencyPlan",
    "Runner",
    "VariantMetrics",
    "evaluate_variant",
    "load_runner",
    "measure_latency",
]

Runner = Callable[[np.ndarray], np.ndarray]
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 32)


@dataclass(frozen=True)
class LatencyPlan:
    """How many calls to time per batch size; the defaults keep a tiny model's median stable."""

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    warmup: int = 20
    repeats: Mapping[int, int] = field(default_factory=lambda: {1: 300, 32: 100})
    default_repeats: int = 50

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if self.warmup < 0 or self.default_repeats < 1 or any(r < 1 for r in self.repeats.values()):
            raise ConfigError("warmup must be >= 0 and every repeat count >= 1")

    def repeats_for(self, batch: int) -> int:
        return int(self.repeats.get(batch, self.default_repeats))


@dataclass(frozen=True)
class VariantMetrics:
    """What one variant scored on the held-out split, and how fast it ran."""

    accuracy: float
    per_class_accuracy: tuple[float, ...]
    samples: int
    bytes: int
    latency_ms: dict[int, float]
    """Median milliseconds per call, by batch size."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": list(self.per_class_accuracy),
            "samples": self.samples,
            "bytes": self.bytes,
            "latency_ms": {str(b): v for b, v in sorted(self.latency_ms.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantMetrics:
        try:
            return cls(
                accuracy=float(data["accuracy"]),
                per_class_accuracy=tuple(float(v) for v in data["per_class_accuracy"]),
                samples=int(data["samples"]),
                bytes=int(data["bytes"]),
                latency_ms={int(b): float(v) for b, v in dict(data["latency_ms"]).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"variant metrics are malformed: {e}") from e


def load_runner(path: str | os.PathLike[str], fmt: str, *, threads: int = 1) -> Runner:
    """A single-input, single-output callable for the file at ``path`` (``fmt``: onnx or tflite)."""
    file = Path(path)
    if fmt == "onnx":
        return _onnx_runner(file, threads)
    if fmt == "tflite":
        from model_tools.litert import LiteRTSession

        session = LiteRTSession(file, threads=threads)
        return session.run_single
    raise ConfigError(f"format must be 'onnx' or 'tflite', got {fmt!r}")


def _onnx_runner(file: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's exception classes are not importable types
        raise InvalidModelError(f"onnxruntime cannot load {file.name}: {str(e).strip()[:300]}") from e
    if len(session.get_inputs()) != 1 or len(session.get_outputs()) < 1:
        raise EvaluationError(f"{file.name}: expected one input and at least one output")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        (out,) = session.run([output_name], {input_name: x})
        return np.asarray(out)

    return run


def measure_latency(
    runner: Runner,
    x: np.ndarray,
    plan: LatencyPlan,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Median milliseconds per call of ``runner`` at each of the plan's batch sizes."""
    result: dict[int, float] = {}
    for batch in plan.batch_sizes:
        rows = np.ascontiguousarray(x[np.arange(batch) % x.shape[0]])
        for _ in range(plan.warmup):
            runner(rows)
        times = []
        for _ in range(plan.repeats_for(batch)):
            started = clock()
            runner(rows)
            times.append(clock() - started)
        result[batch] = float(np.median(times) * 1e3)
    return result


def evaluate_variant(
    path: str | os.PathLike[str],
    fmt: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    plan: LatencyPlan | None = None,
    runner: Runner | None = None,
) -> VariantMetrics:
    """Accuracy (overall and per class) of the model at ``path`` on ``(x, y)``, its size, its latency."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"expected as many labels as rows (and some rows), got {x.shape[0]} and {y.shape[0]}"
        )
    file = Path(path)
    try:
        run = runner or load_runner(file, fmt)
        logits = run(np.ascontiguousarray(x, dtype=np.float32))
        latency = measure_latency(run, np.ascontiguousarray(x, dtype=np.float32), plan or LatencyPlan())
    except ModelToolsError:
        raise
    except Exception as e:  # runtimes raise their own unrelated types
        raise EvaluationError(f"could not run {file.name} ({fmt}): {type(e).__name__}: {e}") from e
    if logits.ndim != 2 or logits.shape != (x.shape[0], num_classes):
        raise EvaluationError(
            f"{file.name}: expected logits of shape ({x.shape[0]}, {num_classes}), got {logits.shape}"
        )
    predicted = logits.argmax(axis=1)
    return VariantMetrics(
        accuracy=float(np.mean(predicted == y)),
        per_class_accuracy=per_class_accuracy(predicted, y, num_classes),
        samples=int(x.shape[0]),
        bytes=file.stat().st_size,
        latency_ms=latency,
    )


def per_class_accuracy(predicted: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Recall of each class (NaN for a class absent from ``y``)."""
    out: list[float] = []
    for c in range(num_classes):
        mask = y == c
        out.append(float(np.mean(predicted[mask] == c)) if mask.any() else float("nan"))
    return tuple(out)


def predicted_classes(runner: Runner, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Argmax class of every row, in batches."""
    parts: Sequence[np.ndarray] = [
        runner(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).argmax(axis=1)
        for i in range(0, x.shape[0], batch)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
