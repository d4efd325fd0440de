"""Export a model to one self-contained ONNX file that computes what torch does (hub only: imports torch).

The file is what gets hashed, signed and shipped, so it must stand alone (no
external weight files) and must compute what the trained model computes: after
export it runs in onnxruntime at several batch sizes and is compared with torch.
A file appears at the destination only once it has passed that check.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import external_data_helper
from torch import nn

from model_tools.errors import ConfigError, ExportError, ParityError
from model_tools.hashing import sha256_file
from model_tools.onnx_info import TensorSpec, describe_onnx

# The exporter warns once per torchvision operator when torchvision is absent; edgefleet's models use
# none of them, so those lines are noise in every export.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

__all__ = ["DEFAULT_PARITY_BATCH_SIZES", "ExportResult", "export_onnx"]

# Batch 1 is what a device serves most; 7 is odd and not 1, so a batch dimension that was
# accidentally fixed at export time fails here rather than on a device.
DEFAULT_PARITY_BATCH_SIZES: tuple[int, ...] = (1, 7)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ExportResult:
    """A verified ONNX file: where it is, what it hashes to, and how close it came to torch."""

    path: Path
    sha256: str
    length: int
    opset: int
    max_abs_diff: float
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    checked_batch_sizes: tuple[int, ...]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example: np.ndarray,
    input_name: str = "input",
    output_name: str = "logits",
    opset: int | None = None,
    parity_atol: float = 1e-4,
    parity_batch_sizes: Sequence[int] = DEFAULT_PARITY_BATCH_SIZES,
) -> ExportResult:
    """Export ``model`` (one tensor in, one tensor out) to ``path`` with a dynamic batch dimension.

    ``example`` is a float32 batch (first axis is the batch) used to trace the
    model and, with ``parity_batch_sizes``, to compare onnxruntime against torch.
    Raises ParityError when the largest absolute difference exceeds
    ``parity_atol`` and ExportError when any step fails; the model passed in is
    left untouched (export works on a CPU copy in eval mode).
    """
    _check_example(example)
    if not parity_atol >= 0:
        raise ConfigError(f"parity_atol must be a non-negative number, got {parity_atol}")
    if any(b < 1 for b in parity_batch_sizes):
        raise ConfigError(f"parity_batch_sizes must be positive, got {tuple(parity_batch_sizes)}")
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling, so an interrupted or failed export never leaves a file at ``path``.
    staging = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.partial")
    source = copy.deepcopy(model).to("cpu").eval()
    batch_sizes = tuple(dict.fromkeys([example.shape[0], *parity_batch_sizes]))
    try:
        _export(source, staging, example=example, input_name=input_name, output_name=output_name, opset=opset)
        _check_self_contained(staging)
        max_diff = _check_parity(
            source,
            staging,
            example=example,
            input_name=input_name,
            output_name=output_name,
            atol=parity_atol,
            batch_sizes=batch_sizes,
        )
        staging.replace(destination)
    finally:
        for leftover in (staging, staging.with_name(staging.name + ".data")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    schema = describe_onnx(destination)
    return ExportResult(
        path=destination,
        sha256=sha256_file(destination),
        length=destination.stat().st_size,
        opset=schema.opset,
        max_abs_diff=max_diff,
        inputs=schema.inputs,
        outputs=schema.outputs,
        checked_batch_sizes=batch_sizes,
    )


def _check_example(example: np.ndarray) -> None:
    if not isinstance(example, np.ndarray):
        raise ConfigError(f"example must be a numpy array, got {type(example).__name__}")
    if example.dtype != np.float32:
        raise ConfigError(f"example must be float32, got {example.dtype}")
    if example.ndim < 2 or example.shape[0] < 1:
        raise ConfigError(f"example must be a batch of shape (N >= 1, features...), got {example.shape}")


def _export(
    model: nn.Module,
    staging: Path,
    *,
    example: np.ndarray,
    input_name: str,
    output_name: str,
    opset: int | None,
) -> None:
    args = (torch.from_numpy(example.copy()),)
    try:
        with warnings.catch_warnings():
            # torch's own pytree code trips this deprecation inside the exporter; callers cannot act on it.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(
                model,
                args,
                str(staging),
                dynamo=True,
                external_data=False,
                verbose=False,
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as e:  # torch.export and onnxscript raise many unrelated types
        raise ExportError(
            f"torch.onnx.export of {type(model).__name__} failed: {type(e).__name__}: {_plain(str(e))}"
        ) from e
    if not staging.is_file():
        raise ExportError(f"torch.onnx.export of {type(model).__name__} returned but wrote no file")


def _check_self_contained(staging: Path) -> None:
    try:
        proto = onnx.load(str(staging), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as e:  # onnx raises ValidationError, DecodeError and OSError alike
        raise ExportError(f"the exported file is not a valid ONNX model: {e}") from e
    external = [t.name for t in proto.graph.initializer if external_data_helper.uses_external_data(t)]
    if external:
        raise ExportError(
            f"the exported model keeps {len(external)} weights in external files: {external[:5]}"
        )


def _check_parity(
    model: nn.Module,
    staging: Path,
    *,
    example: np.ndarray,
    input_name: str,
    output_name: str,
    atol: float,
    batch_sizes: tuple[int, ...],
) -> float:
    try:
        session = ort.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's exception classes are not importable types
        raise ExportError(f"onnxruntime cannot load the exported model: {e}") from e
    worst = 0.0
    for batch in batch_sizes:
        # Rows of the example repeated to the wanted size: realistic inputs at any batch size.
        x = np.ascontiguousarray(example[np.arange(batch) % example.shape[0]])
        with torch.no_grad():
            expected = model(torch.from_numpy(x.copy())).numpy()
        try:
            got = _run_onnx(session, input_name, output_name, x)
        except Exception as e:  # onnxruntime's exception classes are not importable types
            raise ExportError(
                f"onnxruntime could not run the exported model at batch size {batch}: {e}"
            ) from e
        if got.shape != expected.shape:
            raise ExportError(
                f"onnxruntime output shape {got.shape} differs from torch's {expected.shape} "
                f"at batch size {batch}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
        if not np.isfinite(diff):
            # NaN compares false against any tolerance; treat it as the worst mismatch there is.
            diff = float("inf")
        if diff > atol:
            raise ParityError(diff, atol, batch_size=batch)
        worst = max(worst, diff)
    return worst


def _plain(message: str, limit: int = 1000) -> str:
    """``message`` without terminal colour codes (the exporter adds them), cut to ``limit`` characters."""
    text = _ANSI_ESCAPE.sub("", message).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _run_onnx(session: ort.InferenceSession, input_name: str, output_name: str, x: np.ndarray) -> np.ndarray:
    (out,) = session.run([output_name], {input_name: x})
    return np.asarray(out)
