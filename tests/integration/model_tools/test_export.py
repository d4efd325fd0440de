"""ONNX export of the demo models, checked against the real onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import external_data_helper
from torch import nn

import model_tools.export as export_module
from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import ConfigError, ExportError, ParityError
from model_tools.export import ExportResult, export_onnx
from model_tools.hashing import sha256_file
from model_tools.train import train_classifier
from model_tools.zoo import RECIPES, build_model

pytestmark = pytest.mark.integration

ATOL = 1e-4


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def trained(splits: DigitsSplits) -> dict[str, nn.Module]:
    models = {}
    for kind, recipe in RECIPES.items():
        result = train_classifier(
            build_model(kind, seed=0),
            splits,
            epochs=recipe.epochs,
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            seed=0,
            device="cpu",
        )
        models[kind] = result.model
    return models


@pytest.fixture(scope="module")
def exported(
    trained: dict[str, nn.Module], splits: DigitsSplits, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ExportResult]:
    results = {}
    for kind, model in trained.items():
        folder = tmp_path_factory.mktemp(f"export-{kind}")
        results[kind] = export_onnx(model, folder / f"{kind}.onnx", example=np.array(splits.x_test[:1]))
    return results


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_export_writes_exactly_one_self_contained_file(kind: str, exported: dict[str, ExportResult]) -> None:
    result = exported[kind]
    assert sorted(p.name for p in result.path.parent.iterdir()) == [f"{kind}.onnx"]
    proto = onnx.load(str(result.path), load_external_data=False)
    assert proto.graph.initializer, "weights should be stored in the file"
    assert not any(external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
    assert result.sha256 == sha256_file(result.path)
    assert result.length == result.path.stat().st_size
    assert result.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_export_reports_parity_at_batch_1_and_7(kind: str, exported: dict[str, ExportResult]) -> None:
    result = exported[kind]
    assert {1, 7} <= set(result.checked_batch_sizes)
    assert 0.0 <= result.max_abs_diff <= ATOL


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_exported_model_has_the_contract_and_a_dynamic_batch(
    kind: str, exported: dict[str, ExportResult], trained: dict[str, nn.Module], splits: DigitsSplits
) -> None:
    result = exported[kind]
    assert [(s.name, s.dtype, s.shape) for s in result.inputs] == [("input", "float32", (-1, 64))]
    assert [(s.name, s.dtype, s.shape) for s in result.outputs] == [("logits", "float32", (-1, 10))]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 33):
        x = np.array(splits.x_val[:batch])
        (got,) = session.run(["logits"], {"input": x})
        with torch.no_grad():
            expected = trained[kind](torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_exported_model_is_as_accurate_as_torch(
    kind: str, exported: dict[str, ExportResult], trained: dict[str, nn.Module], splits: DigitsSplits
) -> None:
    session = ort.InferenceSession(str(exported[kind].path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": np.array(splits.x_test)})
    with torch.no_grad():
        torch_pred = trained[kind](torch.from_numpy(np.array(splits.x_test))).argmax(1).numpy()
    np.testing.assert_array_equal(logits.argmax(1), torch_pred)
    assert float(np.mean(logits.argmax(1) == splits.y_test)) >= 0.95


def test_export_leaves_the_model_in_its_mode(trained: dict[str, nn.Module], tmp_path: Path) -> None:
    model = trained["mlp"]
    model.train()
    try:
        export_onnx(model, tmp_path / "m.onnx", example=np.zeros((2, 64), dtype=np.float32))
        assert model.training
    finally:
        model.eval()


def _export_with_skewed_runtime(
    monkeypatch: pytest.MonkeyPatch, model: nn.Module, folder: Path, skew: float
) -> None:
    real_run = export_module._run_onnx

    def skewed(*args: object, **kwargs: object) -> np.ndarray:
        return real_run(*args, **kwargs) + np.float32(skew)  # type: ignore[arg-type]

    # Stands in for a runtime that computes something else than torch does.
    monkeypatch.setattr(export_module, "_run_onnx", skewed)
    export_onnx(model, folder / "skewed.onnx", example=np.zeros((3, 64), dtype=np.float32))


def test_broken_parity_raises_and_leaves_no_file(
    trained: dict[str, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ParityError, match=r"max abs difference 0\.001\d* above tolerance 0\.0001") as info:
        _export_with_skewed_runtime(monkeypatch, trained["mlp"], tmp_path, 1e-3)
    assert info.value.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert info.value.tolerance == ATOL
    assert list(tmp_path.iterdir()) == []


def test_nan_output_is_a_parity_failure(
    trained: dict[str, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ParityError, match="max abs difference inf"):
        _export_with_skewed_runtime(monkeypatch, trained["mlp"], tmp_path, float("nan"))


class _NotExportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Eigenvalues have no ONNX operator, so conversion (step 3 of the exporter) fails.
        values: torch.Tensor = torch.linalg.eigvals(x[:, :4].reshape(-1, 2, 2)).real
        return values


def test_export_failure_is_wrapped_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"torch\.onnx\.export of _NotExportable failed") as info:
        export_onnx(_NotExportable(), tmp_path / "bad.onnx", example=np.zeros((2, 64), dtype=np.float32))
    assert info.value.__cause__ is not None
    assert "\x1b[" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("example", "kwargs", "match"),
    [
        (np.zeros((2, 64), dtype=np.float64), {}, "example must be float32, got float64"),
        (np.zeros(64, dtype=np.float32), {}, r"got \(64,\)"),
        (np.zeros((2, 64), dtype=np.float32), {"parity_atol": -1.0}, "non-negative"),
        (np.zeros((2, 64), dtype=np.float32), {"parity_batch_sizes": (0,)}, "positive"),
    ],
)
def test_bad_arguments_are_refused(
    trained: dict[str, nn.Module], tmp_path: Path, example: np.ndarray, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        export_onnx(trained["mlp"], tmp_path / "m.onnx", example=example, **kwargs)  # type: ignore[arg-type]
