"""Train, export and verify a demo digits model in one call (hub only: imports torch).

This is the function behind ``fleet demo`` and ``fleet train``: it loads the
digits splits, trains the chosen kind (on the GPU when there is one), exports
one self-contained ONNX file that has passed the parity check, and returns what
the registry needs to record the version and its lineage.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError
from model_tools.export import export_onnx
from model_tools.onnx_info import TensorSpec
from model_tools.train import ProgressCallback, train_classifier
from model_tools.zoo import INPUT_NAME, MODEL_KINDS, OUTPUT_NAME, RECIPES, build_model

__all__ = ["TrainedModel", "model_name", "train_demo_model"]

# A version is part of a file name and of MQTT payloads: keep it to a safe alphabet.
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# Rows of the test split that trace the export and seed the parity check.
_EXAMPLE_ROWS = 8


@dataclass(frozen=True)
class TrainedModel:
    """One trained and exported model version, with what it was trained on and how well it did."""

    name: str
    version: str
    kind: str
    onnx_path: Path
    sha256: str
    length: int
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metrics: dict[str, float]
    dataset_name: str
    dataset_hash: str
    seed: int
    epochs: int
    device: str
    duration_s: float
    """Seconds spent training (export and parity check not included)."""
    max_abs_diff: float


def model_name(kind: str) -> str:
    """Registry name of a demo model kind: ``"mlp"`` -> ``"digits-mlp"``."""
    return f"digits-{kind}"


def train_demo_model(
    kind: str,
    out_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    seed: int = 0,
    version: str | None = None,
    progress: ProgressCallback | None = None,
    device: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TrainedModel:
    """Train a demo model of ``kind`` ("mlp" or "cnn") and write ``out_dir/digits-KIND-VERSION.onnx``.

    ``epochs`` defaults to the kind's recipe (seconds on a CPU). ``version``
    defaults to a UTC timestamp and the first 8 hex digits of the file's sha256.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    if version is not None and not _VERSION_PATTERN.match(version):
        raise ConfigError(
            f"version must be 1-64 characters of letters, digits, '.', '_', '+' or '-' "
            f"starting with a letter or digit, got {version!r}"
        )
    recipe = RECIPES[kind]
    run_epochs = recipe.epochs if epochs is None else epochs
    name = model_name(kind)
    folder = Path(out_dir)

    splits = load_digits_splits(seed=seed)
    trained = train_classifier(
        build_model(kind, seed=seed),
        splits,
        epochs=run_epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    # The default version names the file's hash, which is known only after export.
    staged = folder / f".{name}-{uuid.uuid4().hex[:8]}.onnx"
    exported = export_onnx(
        trained.model,
        staged,
        example=np.array(splits.x_test[:_EXAMPLE_ROWS]),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
    )
    if version is None:
        version = f"{now().astimezone(UTC):%Y%m%dT%H%M%SZ}-{exported.sha256[:8]}"
    final = folder / f"{name}-{version}.onnx"
    staged.replace(final)
    return TrainedModel(
        name=name,
        version=version,
        kind=kind,
        onnx_path=final,
        sha256=exported.sha256,
        length=exported.length,
        opset=exported.opset,
        inputs=exported.inputs,
        outputs=exported.outputs,
        metrics=dict(trained.metrics),
        dataset_name=splits.name,
        dataset_hash=splits.content_hash,
        seed=seed,
        epochs=run_epochs,
        device=trained.device,
        duration_s=trained.duration_s,
        max_abs_diff=exported.max_abs_diff,
    )
