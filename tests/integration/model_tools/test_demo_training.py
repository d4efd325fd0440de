"""cloud.training.runs.train_demo_model end to end: digits -> torch -> ONNX file checked in onnxruntime."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cloud.training.runs import train_demo_model
from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError
from model_tools.hashing import sha256_file
from model_tools.train import EpochProgress
from model_tools.zoo import RECIPES

pytestmark = pytest.mark.integration

FIXED_NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_demo_mlp_is_trained_exported_and_versioned(tmp_path: Path) -> None:
    seen: list[EpochProgress] = []
    model = train_demo_model("mlp", tmp_path / "out", seed=0, progress=seen.append, now=lambda: FIXED_NOW)

    assert model.name == "digits-mlp"
    assert model.version == f"20250102T030405Z-{model.sha256[:8]}"
    assert model.onnx_path == tmp_path / "out" / f"digits-mlp-{model.version}.onnx"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [model.onnx_path.name]
    assert model.sha256 == sha256_file(model.onnx_path)
    assert model.length == model.onnx_path.stat().st_size
    assert model.metrics["test_accuracy"] >= 0.95
    assert model.epochs == RECIPES["mlp"].epochs == len(seen)
    splits = load_digits_splits(seed=0)
    assert model.dataset_hash == splits.content_hash
    assert model.dataset_name == "sklearn-digits"
    assert 0.0 <= model.max_abs_diff <= 1e-4
    assert model.duration_s > 0

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": np.array(splits.x_test)})
    accuracy = float(np.mean(logits.argmax(1) == splits.y_test))
    assert accuracy == pytest.approx(model.metrics["test_accuracy"], abs=1 / len(splits.y_test))


def test_explicit_version_and_epochs(tmp_path: Path) -> None:
    model = train_demo_model("cnn", tmp_path, epochs=1, version="1.0.0-rc1")
    assert model.version == "1.0.0-rc1" and model.epochs == 1
    assert model.onnx_path.name == "digits-cnn-1.0.0-rc1.onnx"
    assert [(s.name, s.shape) for s in model.inputs] == [("input", (-1, 64))]


@pytest.mark.parametrize(
    ("kind", "version", "match"),
    [
        ("svm", None, "one of mlp, cnn, got 'svm'"),
        ("mlp", "../escape", "version must be"),
        ("mlp", "", "version must be"),
        ("mlp", "a b", "version must be"),
    ],
)
def test_bad_kind_or_version_is_refused_before_training(
    tmp_path: Path, kind: str, version: str | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        train_demo_model(kind, tmp_path, version=version)
    assert list(tmp_path.iterdir()) == []
