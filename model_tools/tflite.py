"""Make fp32 and full-int8 .tflite files from a torch model (hub only; needs the ``tflite`` extra).

How: the torch model is rebuilt layer by layer in Keras with the same weights
(NCHW -> NHWC), converted with ``tf.lite.TFLiteConverter``, and the fp32 file is
checked against torch before it is kept. TensorFlow runs only in a child process
(``model_tools.tflite_worker``): loaded into a long-lived process it was measured
to crash grpc's protoc there, and the hub need not carry its runtime anyway. This
module turns the torch model into a layer plan with numpy weights already in
Keras layout, so the child needs neither torch nor the model's classes.

Why a Keras rebuild rather than litert-torch: litert-torch fixes the batch at 1
and pulls a second torch toolchain in; the rebuild keeps a dynamic batch and
needs only tensorflow-cpu, at the price of supporting only the layers below.

Limits (documented in docs/models.md):

- layers: Linear, Conv2d (stride 1, no dilation or groups, "same" or no
  padding), ReLU, MaxPool2d (square, stride = kernel), nearest Upsample by an
  integer factor, Flatten, Identity, in one straight chain; anything else is
  refused with the layer's name;
- input: the flat ``[batch, 64]`` contract; image models view it as
  ``model.image_shape`` (C, H, W) the way their forward() does;
- int8: weights and activations int8 (``TFLITE_BUILTINS_INT8``), calibrated on
  training rows; input and output stay float32 so the device API is the same
  for every variant (the converter adds the quantize/dequantize at the edges).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from model_tools.errors import ConfigError, TFLiteError, TFLiteParityError, TFLiteUnavailableError
from model_tools.hashing import sha256_file
from model_tools.litert import LiteRTSession
from model_tools.zoo import NUM_FEATURES

__all__ = [
    "DEFAULT_INT8_CALIBRATION_ROWS",
    "TFLiteResult",
    "convert_tflite",
    "convert_tflite_many",
    "layer_plan",
    "tensorflow_available",
]

Precision = Literal["fp32", "int8"]
DEFAULT_INT8_CALIBRATION_ROWS = 256
_PARITY_BATCHES = (1, 7)


@dataclass(frozen=True)
class TFLiteResult:
    path: Path
    sha256: str
    length: int
    precision: Precision
    max_abs_diff: float | None
    """fp32 only: the largest difference from torch on the parity rows."""
    calibration_samples: int
    tensorflow_version: str

    def details(self) -> dict[str, Any]:
        return {
            "converter": f"tensorflow {self.tensorflow_version} (Keras rebuild, TFLiteConverter)",
            "max_abs_diff_vs_torch": self.max_abs_diff,
            "calibration_samples": self.calibration_samples,
            "io_dtype": "float32",
        }


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (looks, does not import)."""
    return importlib.util.find_spec("tensorflow") is not None


def layer_plan(model: nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The Keras rebuild of ``model`` as data: its steps, and their weights in Keras layout."""
    source = model.to("cpu").eval()
    leaves = [(n, m) for n, m in source.named_modules() if not any(True for _ in m.children())]
    if not any(isinstance(m, nn.Linear) for _n, m in leaves):
        raise TFLiteError(f"{type(model).__name__} has no Linear layer: expected a classifier head")
    steps: list[dict[str, Any]] = []
    weights: dict[str, np.ndarray] = {}
    chw: tuple[int, int, int] | None = None  # the map's (C, H, W) while the tensor is an image
    image_shape = getattr(source, "image_shape", None)
    if image_shape is not None:
        chw = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
        steps.append({"op": "image", "chw": list(chw)})
    flattened_from: tuple[int, int, int] | None = None
    for name, layer in leaves:
        key = f"l{len(steps)}"
        if isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, nn.ReLU):
            steps.append({"op": "relu"})
        elif isinstance(layer, nn.Upsample):
            chw = _need_image(name, chw)
            factor = _upsample_factor(name, layer)
            steps.append({"op": "upsample", "factor": factor})
            chw = (chw[0], chw[1] * factor, chw[2] * factor)
        elif isinstance(layer, nn.Conv2d):
            chw = _need_image(name, chw)
            padding = _conv_padding(name, layer)
            weights[f"{key}k"] = layer.weight.detach().numpy().transpose(2, 3, 1, 0)  # -> (kh, kw, in, out)
            weights[f"{key}b"] = _bias(layer.bias, layer.out_channels)
            steps.append({"op": "conv", "kernel": f"{key}k", "bias": f"{key}b", "padding": padding})
            shrink = 0 if padding == "same" else layer.kernel_size[0] - 1
            chw = (layer.out_channels, chw[1] - shrink, chw[2] - shrink)
        elif isinstance(layer, nn.MaxPool2d):
            chw = _need_image(name, chw)
            k = _pool_size(name, layer)
            steps.append({"op": "maxpool", "size": k})
            chw = (chw[0], chw[1] // k, chw[2] // k)
        elif isinstance(layer, nn.Flatten):
            flattened_from, chw = _need_image(name, chw), None
            steps.append({"op": "flatten"})
        elif isinstance(layer, nn.Linear):
            if chw is not None:
                raise TFLiteError(f"layer {name!r}: a Linear layer on an image map needs a Flatten before it")
            w = layer.weight.detach().numpy()
            if flattened_from is not None:
                # torch flattened (C, H, W); Keras flattens (H, W, C): reorder the input columns to match.
                c, h, ww = flattened_from
                w = w.reshape(w.shape[0], c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            weights[f"{key}k"] = np.ascontiguousarray(w.T)
            weights[f"{key}b"] = _bias(layer.bias, layer.out_features)
            steps.append({"op": "dense", "kernel": f"{key}k", "bias": f"{key}b"})
            flattened_from = None
        else:
            raise TFLiteError(
                f"cannot rebuild layer {name!r} ({type(layer).__name__}) in Keras: supported are Linear, "
                "Conv2d, ReLU, MaxPool2d, nearest Upsample, Flatten and Identity"
            )
    return {"features": NUM_FEATURES, "layers": steps}, weights


def convert_tflite_many(
    model: nn.Module,
    destinations: Mapping[Precision, str | os.PathLike[str]],
    *,
    example: np.ndarray,
    calibration: np.ndarray | None = None,
    calibration_rows: int = DEFAULT_INT8_CALIBRATION_ROWS,
    parity_atol: float = 1e-4,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600.0,
) -> dict[Precision, TFLiteResult]:
    """Write ``model`` as .tflite files, one per precision, with one TensorFlow child process.

    fp32: compared with torch on ``example`` rows at batch sizes 1 and 7;
    TFLiteParityError above ``parity_atol``. int8: needs ``calibration`` rows
    (float32 [N, 64], training data); the first ``calibration_rows`` are used,
    and ``progress(done, total)`` is called as the converter reads them. A file
    appears at its destination only once its checks passed.
    """
    if not destinations or any(p not in ("fp32", "int8") for p in destinations):
        raise ConfigError(f"precisions must be 'fp32' or 'int8', got {list(destinations)!r}")
    _check_rows("example", example, minimum=1)
    rows: np.ndarray | None = None
    if "int8" in destinations:
        if calibration is None:
            raise TFLiteError("int8 conversion needs calibration rows: expected float32 [N, 64], got none")
        _check_rows("calibration", calibration, minimum=1)
        rows = np.ascontiguousarray(calibration[:calibration_rows])
    plan, weights = layer_plan(model)
    if not tensorflow_available():
        raise TFLiteUnavailableError(
            "TensorFlow is not installed: expected the 'tflite' extra "
            "(pip install 'edgefleet[tflite]') to make .tflite variants"
        )
    plan["precisions"] = list(destinations)
    results: dict[Precision, TFLiteResult] = {}
    with tempfile.TemporaryDirectory(prefix="ef-tflite-") as tmp:
        work = Path(tmp)
        (work / "plan.json").write_text(json.dumps(plan), "utf-8")
        arrays = dict(weights) | ({"calibration": rows} if rows is not None else {})
        np.savez(work / "weights.npz", **arrays)  # type: ignore[arg-type]
        version = _run_worker(work, progress, timeout_s)
        for precision, destination in destinations.items():
            made = work / f"{precision}.tflite"
            session = LiteRTSession(made, threads=1)
            max_diff = _check(model, session, example, precision=precision, atol=parity_atol)
            dst = Path(destination)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(made, dst)
            results[precision] = TFLiteResult(
                path=dst,
                sha256=sha256_file(dst),
                length=dst.stat().st_size,
                precision=precision,
                max_abs_diff=max_diff,
                calibration_samples=len(rows) if precision == "int8" and rows is not None else 0,
                tensorflow_version=version,
            )
    return results


def convert_tflite(
    model: nn.Module,
    destination: str | os.PathLike[str],
    *,
    precision: Precision,
    example: np.ndarray,
    calibration: np.ndarray | None = None,
    calibration_rows: int = DEFAULT_INT8_CALIBRATION_ROWS,
    parity_atol: float = 1e-4,
    progress: Callable[[int, int], None] | None = None,
) -> TFLiteResult:
    """One .tflite file of ``precision`` (see :func:`convert_tflite_many`)."""
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    made = convert_tflite_many(
        model,
        {precision: destination},
        example=example,
        calibration=calibration,
        calibration_rows=calibration_rows,
        parity_atol=parity_atol,
        progress=progress,
    )
    return made[precision]


def _run_worker(folder: Path, progress: Callable[[int, int], None] | None, timeout_s: float) -> str:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    outcome: dict[str, Any] = {}
    # TensorFlow's own logging goes to a file: it is shown only when the conversion fails.
    with (folder / "stderr.txt").open("w+b") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model_tools.tflite_worker", str(folder)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
                    message = json.loads(line)
                    if "progress" in message and progress is not None:
                        progress(int(message["progress"][0]), int(message["progress"][1]))
                    elif "ok" in message or "error" in message:
                        outcome = message
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise TFLiteError(f"the TensorFlow converter did not finish within {timeout_s:g} s") from e
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        tail = err.read()[-1500:].decode("utf-8", "replace").strip()
    if "ok" in outcome and proc.returncode == 0:
        return str(outcome["ok"].get("tensorflow", "unknown"))
    if proc.returncode == 3:
        raise TFLiteUnavailableError(str(outcome.get("error", "TensorFlow is not installed")))
    reason = outcome.get("error") or f"exit code {proc.returncode}; {tail or 'no output'}"
    raise TFLiteError(f"TFLiteConverter failed: {reason}")


def _bias(bias: torch.Tensor | None, width: int) -> np.ndarray:
    return bias.detach().numpy().copy() if bias is not None else np.zeros(width, np.float32)


def _check(
    model: nn.Module, session: LiteRTSession, example: np.ndarray, *, precision: str, atol: float
) -> float | None:
    worst = 0.0
    for batch in _PARITY_BATCHES:
        x = np.ascontiguousarray(example[np.arange(batch) % example.shape[0]])
        with torch.no_grad():
            expected = model(torch.from_numpy(x.copy())).numpy()
        try:
            got = session.run_single(x)
        except (ValueError, RuntimeError) as e:
            raise TFLiteError(f"LiteRT could not run the {precision} model at batch size {batch}: {e}") from e
        if got.shape != expected.shape:
            raise TFLiteError(
                f"LiteRT output shape {got.shape} differs from torch's {expected.shape} at batch size {batch}"
            )
        if precision == "fp32":
            diff = float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0))
            diff = diff if np.isfinite(diff) else float("inf")
            if diff > atol:
                raise TFLiteParityError(diff, atol, batch_size=batch, what="TFLite fp32")
            worst = max(worst, diff)
    return worst if precision == "fp32" else None


def _check_rows(what: str, x: np.ndarray, *, minimum: int) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != NUM_FEATURES:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TFLiteError(f"{what} rows must be float32 of shape (N, {NUM_FEATURES}), got {got}")
    if x.shape[0] < minimum:
        raise TFLiteError(f"expected at least {minimum} {what} rows, got {x.shape[0]}")


def _need_image(name: str, chw: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if chw is None:
        raise TFLiteError(f"layer {name!r} works on images, but the tensor is flat here (model.image_shape?)")
    return chw


def _upsample_factor(name: str, layer: nn.Upsample) -> int:
    factor = layer.scale_factor
    value = factor[0] if isinstance(factor, tuple) else factor
    if layer.mode != "nearest" or value is None or float(value) != int(value) or layer.size is not None:
        raise TFLiteError(f"layer {name!r}: only nearest upsampling by an integer factor is supported")
    return int(value)


def _conv_padding(name: str, layer: nn.Conv2d) -> str:
    k = layer.kernel_size
    if layer.stride != (1, 1) or layer.dilation != (1, 1) or layer.groups != 1 or k[0] != k[1]:
        raise TFLiteError(f"layer {name!r}: expected a square Conv2d with stride 1, no dilation, no groups")
    if layer.padding == (0, 0):
        return "valid"
    if layer.padding == (k[0] // 2, k[1] // 2) and k[0] % 2 == 1:
        return "same"
    raise TFLiteError(f"layer {name!r}: padding {layer.padding} is neither 'same' nor none")


def _pool_size(name: str, layer: nn.MaxPool2d) -> int:
    k, s = layer.kernel_size, layer.stride
    if not isinstance(k, int) or s not in (k, (k, k)) or layer.padding not in (0, (0, 0)):
        raise TFLiteError(f"layer {name!r}: expected a square MaxPool2d with stride = kernel and no padding")
    return k
