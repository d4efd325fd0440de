"""Turn a training run into a gated version bundle (hub only: imports torch).

``optimize_run`` is what ``fleet models optimize`` runs: it reloads the run's
model and data (refusing data whose content hash differs from what the run
recorded), and hands them to ``model_tools.pipeline.optimize`` with the lineage
the registry records: the experiment, the data set hash, the code revision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud.training.runs import VERSION_PATTERN, ExperimentRecord, code_revision, load_run, validate_splits
from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError, DataError
from model_tools.pipeline import OptimizeOptions, PipelineResult, ProgressSink, VersionInfo, optimize
from model_tools.zoo import RECIPES

__all__ = ["DIGITS_PREPROCESSING", "default_version", "lineage_of", "optimize_run"]

# What a caller must do to raw digits before the model sees them; shipped in the manifest.
DIGITS_PREPROCESSING: dict[str, Any] = {
    "source": "8x8 grayscale digit, pixel values 0..16 (scikit-learn digits)",
    "steps": ["divide by 16 to [0, 1]", "flatten row-major to 64 values"],
    "range": [0.0, 1.0],
}


def default_version(record: ExperimentRecord, now: datetime) -> str:
    """``YYYYmmddTHHMMSSZ-<run id prefix>``: sortable, and names the run it came from."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{record.run_id[:8]}"


def lineage_of(record: ExperimentRecord) -> dict[str, Any]:
    """The lineage block of a manifest: the whole experiment record, plus the optimizing code."""
    experiment = record.to_dict()
    experiment.pop("validation", None)
    return {
        "experiment": experiment,
        "dataset": {"name": record.dataset_name, "hash": record.dataset_hash},
        "code_revision": record.code_revision,
        "optimized_by": code_revision(),
        "parent": None,
    }


def optimize_run(
    run_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    options: OptimizeOptions | None = None,
    progress: ProgressSink | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PipelineResult:
    """Build the bundle of the run in ``run_dir`` (default folder: ``{run_dir}/bundles/{version}``)."""
    record, model = load_run(run_dir)
    version = version or default_version(record, now())
    if not VERSION_PATTERN.match(version):
        raise ConfigError(
            f"version must be 1-64 characters of letters, digits, '.', '_', '+' or '-' "
            f"starting with a letter or digit, got {version!r}"
        )
    splits = load_digits_splits(seed=record.seed)
    if splits.content_hash != record.dataset_hash:
        raise DataError(
            f"the data set changed since run {record.run_id}: expected content hash {record.dataset_hash}, "
            f"got {splits.content_hash}"
        )
    validate_splits(splits)
    default_epochs = RECIPES[record.kind].epochs
    recipe = replace(RECIPES[record.kind], epochs=int(record.params.get("epochs", default_epochs)))
    destination = Path(out_dir) if out_dir is not None else Path(run_dir) / "bundles" / version
    image_shape = getattr(model, "image_shape", None)
    preprocessing = dict(DIGITS_PREPROCESSING)
    if image_shape is not None:
        preprocessing["image_shape"] = list(image_shape)
    info = VersionInfo(
        name=record.name,
        version=version,
        lineage=lineage_of(record),
        train_metrics=record.metrics,
        preprocessing=preprocessing,
        image_shape=image_shape,
    )
    return optimize(
        model,
        splits,
        destination,
        info=info,
        recipe=recipe,
        seed=record.seed,
        options=options,
        progress=progress,
        now=now,
    )
