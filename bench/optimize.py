"""Benchmark the optimization pipeline: every variant's bytes, accuracy and latency, against fp32.

    python bench/optimize.py                  # both demo models, default timing
    python bench/optimize.py --models cnn --repeats 400

For each model it trains the recipe (CPU), runs the whole pipeline (pruning,
int8, TFLite, evaluation, gates) and reports, per variant, bytes, accuracy and
median latency at batch 1 and 32 (one thread: onnxruntime for .onnx, LiteRT for
.tflite), with ratios against the fp32 ONNX baseline.

The CNN targets' latency is measured again with the bare runtimes (an
``onnxruntime.InferenceSession`` and a LiteRT ``Interpreter``, nothing of
edgefleet's in the loop), fp32 and int8 interleaved round by round in the same
process, so that both see the same machine state. The last line of output is one
JSON object (machine, versions, results, targets).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.training.optimize import optimize_run
from cloud.training.runs import train_run
from model_tools.data import load_digits_splits
from model_tools.evaluate import LatencyPlan
from model_tools.pipeline import OptimizeOptions, PipelineResult
from model_tools.quantize import quantize_onnx

TARGETS = {
    "cnn_int8_bytes_ratio": (0.30, "x fp32 bytes"),
    "cnn_int8_accuracy_drop_points": (1.0, "points"),
    "cnn_int8_latency_ratio_b32": (0.80, "x fp32 latency, onnxruntime 1 thread"),
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "tensorflow-cpu", "ai-edge-litert", "numpy", "edgefleet"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def variant_rows(result: PipelineResult) -> dict[str, dict[str, Any]]:
    base = next(o for o in result.outcomes if o.name == "fp32").metrics
    rows = {}
    for o in result.outcomes:
        m = o.metrics
        rows[o.name] = {
            "format": o.format,
            "precision": o.precision,
            "published": o.decision.passed,
            "gate_reasons": list(o.decision.reasons),
            "bytes": m.bytes,
            "bytes_ratio": round(m.bytes / base.bytes, 4),
            "accuracy": round(m.accuracy, 4),
            "accuracy_drop_points": round((base.accuracy - m.accuracy) * 100, 3),
            "latency_ms_b1": round(m.latency_ms[1], 5),
            "latency_ms_b32": round(m.latency_ms[32], 5),
            "latency_ratio_b1": round(m.latency_ms[1] / base.latency_ms[1], 4),
            "latency_ratio_b32": round(m.latency_ms[32] / base.latency_ms[32], 4),
            "derived_from": o.derived_from,
        }
    return rows


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _litert(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    index = it.get_input_details()[0]["index"]
    out = it.get_output_details()[0]["index"]
    shape: list[int] = []

    def run(x: np.ndarray) -> Any:
        if list(x.shape) != shape:
            it.resize_tensor_input(index, list(x.shape))
            it.allocate_tensors()
            shape[:] = list(x.shape)
        it.set_tensor(index, x)
        it.invoke()
        return it.get_tensor(out)

    return run


def interleaved(runners: dict[str, Any], x: np.ndarray, rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per call of each runner, the runners taking turns round by round."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(20):
            run(x)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                started = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - started)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def bare_latency(bundle: Path, batch: int, repeats: int) -> dict[str, float]:
    x = np.ascontiguousarray(load_digits_splits(seed=0).x_test[:batch])
    onnx = {"fp32": _ort(bundle / "fp32.onnx")}
    int8 = next((p for p in bundle.glob("int8-*.onnx")), None)
    if int8 is not None:
        onnx["int8"] = _ort(int8)
    result = {
        f"onnxruntime_{k}": v
        for k, v in interleaved(onnx, x, rounds=10, per_round=max(1, repeats // 10)).items()
    }
    lite = {p.stem: _litert(p) for p in sorted(bundle.glob("tflite-*.tflite"))}
    if lite:
        result |= {
            f"litert_{k}": v
            for k, v in interleaved(lite, x, rounds=10, per_round=max(1, repeats // 10)).items()
        }
    return result


def int8_without_pruning(bundle: Path, folder: Path, fp32_accuracy: float, repeats: int) -> dict[str, float]:
    """The int8 step alone: the unpruned fp32 model quantized the same way, measured the same way."""
    splits = load_digits_splits(seed=0)
    made = quantize_onnx(
        bundle / "fp32.onnx", folder / "int8-unpruned.onnx", calibration=np.array(splits.x_train[:512])
    )
    x_test = np.array(splits.x_test)
    accuracy = float(np.mean(_ort(made.path)(x_test)[0].argmax(1) == splits.y_test))
    x = np.ascontiguousarray(x_test[:32])
    timed = interleaved(
        {"fp32": _ort(bundle / "fp32.onnx"), "int8": _ort(made.path)}, x, 10, max(1, repeats // 10)
    )
    return {
        "method": made.choice.method,
        "bytes_ratio": round(made.length / (bundle / "fp32.onnx").stat().st_size, 4),
        "accuracy_drop_points": round((fp32_accuracy - accuracy) * 100, 3),
        "latency_ratio_b32": round(timed["int8"] / timed["fp32"], 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn (default both)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per variant and batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prune", type=float, default=0.25, help="share of units pruned (default 0.25)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    plan = LatencyPlan(warmup=20, repeats={1: args.repeats, 32: max(20, args.repeats // 2)})
    results: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="efbench-") as tmp:
        for kind in kinds:
            started = time.perf_counter()
            record, run_dir = train_run(kind, Path(tmp) / "runs", seed=args.seed, device="cpu")
            assert run_dir is not None
            result = optimize_run(
                run_dir, version="bench", options=OptimizeOptions(prune_amount=args.prune, latency=plan)
            )
            rows = variant_rows(result)
            bare_b32 = bare_latency(result.bundle_dir, 32, args.repeats)
            bare_b1 = bare_latency(result.bundle_dir, 1, args.repeats)
            fp32_accuracy = rows["fp32"]["accuracy"]
            unpruned = int8_without_pruning(result.bundle_dir, Path(tmp), fp32_accuracy, args.repeats)
            results[kind] = {
                "test_accuracy_torch": round(record.metrics["test_accuracy"], 4),
                "train_seconds": round(record.duration_s, 2),
                "pipeline_seconds": result.seconds,
                "total_seconds": round(time.perf_counter() - started, 2),
                "skipped": list(result.skipped),
                "variants": rows,
                "bare_latency_ms_b1": {k: round(v, 5) for k, v in bare_b1.items()},
                "bare_latency_ms_b32": {k: round(v, 5) for k, v in bare_b32.items()},
                "int8_without_pruning": unpruned,
                "units": {
                    "bytes": "bytes",
                    "latency": "ms per call, median, 1 thread",
                    "accuracy": "fraction",
                },
            }
            if kind == "cnn":
                int8 = next((r for n, r in rows.items() if n.startswith("int8-")), None)
                if int8 is not None:
                    values = {
                        "cnn_int8_bytes_ratio": int8["bytes_ratio"],
                        "cnn_int8_accuracy_drop_points": int8["accuracy_drop_points"],
                        "cnn_int8_latency_ratio_b32": round(
                            bare_b32["onnxruntime_int8"] / bare_b32["onnxruntime_fp32"], 4
                        ),
                    }
                    for name, value in values.items():
                        goal, unit = TARGETS[name]
                        targets[name] = {"value": value, "goal": goal, "unit": unit, "met": value <= goal}
                if "litert_tflite-int8" in bare_b32 and "litert_tflite-fp32" in bare_b32:
                    results[kind]["litert_int8_latency_ratio_b32"] = round(
                        bare_b32["litert_tflite-int8"] / bare_b32["litert_tflite-fp32"], 4
                    )
                    results[kind]["litert_int8_vs_onnxruntime_fp32_latency_ratio_b32"] = round(
                        bare_b32["litert_tflite-int8"] / bare_b32["onnxruntime_fp32"], 4
                    )
            print(
                f"{kind}: " + ", ".join(f"{n} {r['bytes_ratio']:.2f}x bytes" for n, r in rows.items()),
                flush=True,
            )
    print(json.dumps({"machine": machine(), "versions": versions(), "results": results, "targets": targets}))
    return 0 if all(t["met"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
