"""Training runs with lineage: the run folder, data validation that stops a run, torchrun with two ranks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud.training.optimize import default_version, optimize_run
from cloud.training.runs import RUN_FILE, WEIGHTS_FILE, code_revision, load_run, train_run
from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError, DataError, DataValidationError
from tests.integration.conftest import TrainedRun

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_a_run_records_its_lineage(mlp_run: TrainedRun) -> None:
    record, folder = mlp_run.record, mlp_run.folder
    assert folder.name == record.run_id and len(record.run_id) == 32
    assert sorted(p.name for p in folder.iterdir()) == sorted([RUN_FILE, WEIGHTS_FILE])
    stored = json.loads((folder / RUN_FILE).read_text())
    assert stored == record.to_dict()
    splits = load_digits_splits(seed=0)
    assert record.dataset_hash == splits.content_hash and record.dataset_name == "sklearn-digits"
    assert record.dataset_sizes == splits.sizes()
    assert record.code_revision == code_revision() != ""
    assert record.device == "cpu" and record.world_size == 1 and record.seed == 0
    assert record.params["epochs"] == 60 and record.params["architecture"] == {"hidden": [128, 64]}
    assert record.metrics["test_accuracy"] >= 0.95 and record.duration_s > 0
    assert record.started_at <= record.finished_at
    assert [r["split"] for r in record.validation] == ["train", "val", "test"]
    assert all(r["ok"] for r in record.validation)


def test_load_run_restores_the_trained_model(mlp_run: TrainedRun) -> None:
    record, model = load_run(mlp_run.folder)
    assert record == mlp_run.record
    splits = load_digits_splits(seed=0)
    with torch.no_grad():
        predicted = model(torch.from_numpy(np.array(splits.x_test))).argmax(1).numpy()
    assert float(np.mean(predicted == splits.y_test)) == pytest.approx(record.metrics["test_accuracy"])


def _broken(**arrays: np.ndarray) -> object:
    return dataclasses.replace(load_digits_splits(seed=0), **arrays)


def test_nan_in_the_data_stops_the_run_and_names_rows_and_columns(tmp_path: Path) -> None:
    splits = load_digits_splits(seed=0)
    x = np.array(splits.x_train)
    x[[4, 90], 10] = np.nan
    with pytest.raises(
        DataValidationError, match=r"(?s)train: 1 check\(s\) failed.*nan: .*rows 4, 90; columns 10"
    ):
        train_run("mlp", tmp_path, splits=_broken(x_train=x))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_wrong_shapes_stop_the_run(tmp_path: Path) -> None:
    splits = load_digits_splits(seed=0)
    with pytest.raises(DataValidationError, match=r"expected features of shape \(N, 64\), got \(270, 63\)"):
        train_run("mlp", tmp_path, splits=_broken(x_test=np.array(splits.x_test)[:, :63]))  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match=r"expected labels in \[0, 9\]"):
        y = np.array(splits.y_val)
        y[0] = 12
        train_run("mlp", tmp_path, splits=_broken(y_val=y))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_optimize_refuses_a_run_whose_data_changed(mlp_run: TrainedRun, tmp_path: Path) -> None:
    copy = tmp_path / mlp_run.record.run_id
    copy.mkdir()
    data = mlp_run.record.to_dict() | {"dataset_hash": "0" * 64}
    (copy / RUN_FILE).write_text(json.dumps(data))
    (copy / WEIGHTS_FILE).write_bytes((mlp_run.folder / WEIGHTS_FILE).read_bytes())
    with pytest.raises(DataError, match="the data set changed since run"):
        optimize_run(copy)
    with pytest.raises(ConfigError, match="version must be"):
        optimize_run(mlp_run.folder, version="../x")
    with pytest.raises(ConfigError, match="is not a training run"):
        optimize_run(tmp_path)
    when = datetime(2030, 1, 2, tzinfo=UTC)
    assert default_version(mlp_run.record, when) == f"20300102T000000Z-{mlp_run.record.run_id[:8]}"


def test_torchrun_with_two_ranks_records_one_run(tmp_path: Path) -> None:
    """`fleet train` under torchrun: DistributedDataParallel over gloo, rank 0 writes and reports."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "cloud.cli",
            "train",
            "--model",
            "mlp",
            "--epochs",
            "3",
            "--runs-dir",
            str(tmp_path),
            "--no-register",
            "--output",
            "json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["world_size"] == 2 and report["device"] == "cpu" and report["registered"] is False
    (folder,) = list(tmp_path.iterdir())
    assert folder.name == report["run_id"]
    record, _model = load_run(folder)
    assert record.world_size == 2 and record.params["epochs"] == 3
