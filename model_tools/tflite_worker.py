"""The TensorFlow side of TFLite conversion: a child process, ``python -m model_tools.tflite_worker DIR``.

TensorFlow brings its own native protobuf and absl runtimes; loaded into a long-lived
process beside grpc's protoc (and other native protobuf users) it was measured to
crash that process. So it never loads into the hub or the CLI: ``model_tools.tflite``
writes a layer plan (``plan.json`` and ``weights.npz``, weights already in Keras
layout) into DIR, and this program builds the Keras model, converts it and writes
``{precision}.tflite`` files there. It reports on stdout, one JSON object a line:
``{"progress": [done, total]}`` while int8 calibration reads rows, then
``{"ok": {"tensorflow": version}}`` or ``{"error": message}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def build_keras(tf: Any, plan: dict[str, Any], weights: Any) -> Any:
    keras = tf.keras
    inputs = keras.Input(shape=(int(plan["features"]),), name=INPUT_NAME)
    h = inputs
    for step in plan["layers"]:
        op = step["op"]
        if op == "image":
            c, hh, ww = step["chw"]
            # torch views the row as (C, H, W); Keras works in (H, W, C).
            if c > 1:
                h = keras.layers.Permute((2, 3, 1))(keras.layers.Reshape((c, hh, ww))(h))
            else:
                h = keras.layers.Reshape((hh, ww, 1))(h)
        elif op == "relu":
            h = keras.layers.ReLU()(h)
        elif op == "upsample":
            h = keras.layers.UpSampling2D(size=int(step["factor"]), interpolation="nearest")(h)
        elif op == "maxpool":
            h = keras.layers.MaxPooling2D(pool_size=int(step["size"]))(h)
        elif op == "flatten":
            h = keras.layers.Flatten()(h)
        elif op == "conv":
            kernel, bias = weights[step["kernel"]], weights[step["bias"]]
            layer = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], padding=step["padding"])
            h = layer(h)
            layer.set_weights([kernel, bias])
        elif op == "dense":
            kernel, bias = weights[step["kernel"]], weights[step["bias"]]
            layer = keras.layers.Dense(kernel.shape[1])
            h = layer(h)
            layer.set_weights([kernel, bias])
        else:
            raise ValueError(f"unknown plan step {op!r}")
    # A dict output names the signature's output "logits", as the ONNX export does (a plain
    # output would be "output_0"). Measured: converting from a tf.function instead loses the
    # Keras 3 weights (the file computes NaN), so the converter gets the Keras model itself.
    return keras.Model(inputs, {OUTPUT_NAME: h})


def convert(tf: Any, model: Any, rows: np.ndarray | None) -> bytes:
    reports = sys.stdout
    # The converter prints its traced signatures on stdout, which carries this program's reports.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Input statistics matter only for int8 inputs; the I/O here stays float32.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs", category=UserWarning)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if rows is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: _representative(rows, reports)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return bytes(converter.convert())


def _representative(rows: np.ndarray, reports: TextIO) -> Iterator[list[np.ndarray]]:
    for i in range(len(rows)):
        # stdout is redirected while the converter runs: report on the stream saved before that.
        reports.write(json.dumps({"progress": [i + 1, len(rows)]}) + "\n")
        reports.flush()
        yield [rows[i : i + 1]]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        _say({"error": "usage: python -m model_tools.tflite_worker PLAN_DIR"})
        return 2
    folder = Path(argv[0])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # type: ignore[import-untyped]
    except ImportError as e:
        _say({"error": f"TensorFlow is not installed: {e}"})
        return 3
    try:
        plan = json.loads((folder / "plan.json").read_text("utf-8"))
        with np.load(folder / "weights.npz") as weights:
            model = build_keras(tf, plan, weights)
            rows = weights.get("calibration")
        for precision in plan["precisions"]:
            blob = convert(tf, model, rows if precision == "int8" else None)
            (folder / f"{precision}.tflite").write_bytes(blob)
    except Exception as e:  # the converter raises ConverterError, ValueError and others
        _say({"error": f"{type(e).__name__}: {str(e).strip()[:800]}"})
        return 1
    _say({"ok": {"tensorflow": str(tf.__version__)}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
