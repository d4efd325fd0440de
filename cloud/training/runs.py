"""Training runs with lineage, and the one-call demo model (hub only: imports torch).

``train_run`` is what ``fleet train`` runs: it validates the data (bad data stops
the run with a report naming rows and columns), trains the chosen kind on the GPU
when there is one (data-parallel under torchrun), and writes a run folder:

    {runs}/{run_id}/run.json     the experiment record: params, seed, metrics, data set
                                 hash, code revision, duration, device, world size
    {runs}/{run_id}/model.pt     the trained weights (a state dict; loaded with weights_only)

``fleet models optimize`` turns a run folder into a version bundle
(``cloud.training.optimize``). ``train_demo_model`` trains and exports a single ONNX file
in one call, for the quick path of ``fleet demo``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import ConfigError, TrainingError
from model_tools.export import export_onnx
from model_tools.onnx_info import TensorSpec
from model_tools.train import DistributedContext, ProgressCallback, train_classifier
from model_tools.validate import require_valid, validate_dataset
from model_tools.zoo import INPUT_NAME, MODEL_KINDS, OUTPUT_NAME, RECIPES, architecture, build_model

__all__ = [
    "RUN_FILE",
    "VERSION_PATTERN",
    "WEIGHTS_FILE",
    "ExperimentRecord",
    "TrainedModel",
    "code_revision",
    "load_run",
    "model_name",
    "train_demo_model",
    "train_run",
    "validate_splits",
]

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.pt"

# A version is part of a file name and of MQTT payloads: keep it to a safe alphabet.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
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
    if version is not None and not VERSION_PATTERN.match(version):
        raise ConfigError(
            f"version must be 1-64 characters of letters, digits, '.', '_', '+' or '-' "
            f"starting with a letter or digit, got {version!r}"
        )
    recipe = RECIPES[kind]
    run_epochs = recipe.epochs if epochs is None else epochs
    name = model_name(kind)
    folder = Path(out_dir)

    splits = load_digits_splits(seed=seed)
    validate_splits(splits)
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


# --- training runs with lineage ----------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentRecord:
    """One training run, as the registry records it (``run.json``)."""

    run_id: str
    name: str
    kind: str
    params: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    dataset_name: str
    dataset_hash: str
    dataset_sizes: dict[str, int]
    code_revision: str
    duration_s: float
    device: str
    world_size: int
    started_at: str
    finished_at: str
    validation: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentRecord:
        names = set(cls.__dataclass_fields__)
        missing = sorted(n for n in names if n not in data and n != "validation")
        if missing:
            raise ConfigError(
                f"experiment record lacks {missing}: expected a run.json written by fleet train"
            )
        return cls(**{k: v for k, v in data.items() if k in names})


def validate_splits(splits: DigitsSplits) -> list[dict[str, Any]]:
    """Validate every split; raise DataValidationError naming the offending rows and columns."""
    reports = [
        validate_dataset(
            x, y, feature_shape=splits.feature_shape, num_classes=splits.num_classes, split=split
        )
        for split, x, y in (
            ("train", splits.x_train, splits.y_train),
            ("val", splits.x_val, splits.y_val),
            ("test", splits.x_test, splits.y_test),
        )
    ]
    require_valid(*reports)
    return [r.to_dict() for r in reports]


def train_run(
    kind: str,
    runs_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = None,
    splits: DigitsSplits | None = None,
    progress: ProgressCallback | None = None,
    distributed: DistributedContext | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ExperimentRecord, Path | None]:
    """Validate, train and record one run; returns the record and its folder (None on ranks > 0).

    ``splits`` defaults to the digits splits for ``seed``; pass others to train on
    other data of the same shape.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    recipe = RECIPES[kind]
    run_epochs = recipe.epochs if epochs is None else epochs
    data = splits if splits is not None else load_digits_splits(seed=seed)
    validation = validate_splits(data)
    started_at = now()
    model = build_model(kind, seed=seed)
    trained = train_classifier(
        model,
        data,
        epochs=run_epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=seed,
        device=device,
        progress=progress,
        clock=clock,
        distributed=distributed,
    )
    record = ExperimentRecord(
        run_id=uuid.uuid4().hex,
        name=model_name(kind),
        kind=kind,
        params={
            "epochs": run_epochs,
            "lr": recipe.lr,
            "batch_size": recipe.batch_size,
            "architecture": architecture(trained.model),
            "optimizer": "adam",
        },
        seed=seed,
        metrics={k: float(v) for k, v in trained.metrics.items()},
        dataset_name=data.name,
        dataset_hash=data.content_hash,
        dataset_sizes=data.sizes(),
        code_revision=code_revision(),
        duration_s=round(trained.duration_s, 3),
        device=trained.device,
        world_size=trained.world_size,
        started_at=started_at.astimezone(UTC).isoformat(),
        finished_at=now().astimezone(UTC).isoformat(),
        validation=validation,
    )
    if distributed is not None and not distributed.is_main:
        return record, None
    folder = Path(runs_dir) / record.run_id
    staging = folder.with_name(f".{record.run_id}.partial")
    staging.mkdir(parents=True)
    torch.save(trained.model.state_dict(), staging / WEIGHTS_FILE)
    (staging / RUN_FILE).write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n", "utf-8")
    staging.replace(folder)
    return record, folder


def load_run(run_dir: str | os.PathLike[str]) -> tuple[ExperimentRecord, nn.Module]:
    """The record and the trained model (CPU, eval mode) of a run folder."""
    folder = Path(run_dir)
    try:
        data = json.loads((folder / RUN_FILE).read_text("utf-8"))
    except OSError as e:
        raise ConfigError(
            f"{folder} is not a training run: cannot read {RUN_FILE} ({e.strerror or e})"
        ) from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{folder / RUN_FILE} is not valid JSON: {e}") from e
    record = ExperimentRecord.from_dict(data)
    model = build_model(record.kind, **dict(record.params.get("architecture", {})))
    try:
        # weights_only: a run folder is data, and unpickling arbitrary objects would run code.
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, ValueError) as e:
        raise TrainingError(
            f"cannot load the weights of run {record.run_id} from {folder / WEIGHTS_FILE}: {e}"
        ) from e
    return record, model.eval()


@cache
def code_revision() -> str:
    """The git commit the code runs from (``+dirty`` with uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"edgefleet {version('edgefleet')}"
        except PackageNotFoundError:
            return "unknown"
    return f"{head}+dirty" if dirty else head
