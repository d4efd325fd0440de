"""int8 with onnxruntime on real models: the method chosen from the graph, calibration checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from torch import nn

from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import CalibrationError
from model_tools.evaluate import load_runner
from model_tools.export import export_onnx
from model_tools.quantize import choose_method, quantize_onnx
from model_tools.train import train_classifier
from model_tools.zoo import build_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


@pytest.fixture(scope="module")
def cnn_onnx(splits: DigitsSplits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Two epochs: enough for a model whose int8 copy can be compared, in a couple of seconds.
    model: nn.Module = train_classifier(
        build_model("cnn", seed=0), splits, epochs=2, lr=2e-3, batch_size=64, seed=0, device="cpu"
    ).model
    return export_onnx(
        model, tmp_path_factory.mktemp("cnn") / "fp32.onnx", example=np.array(splits.x_test[:8])
    ).path


@pytest.fixture(scope="module")
def mlp_onnx(splits: DigitsSplits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("mlp", seed=0).eval()
    return export_onnx(
        model, tmp_path_factory.mktemp("mlp") / "fp32.onnx", example=np.array(splits.x_test[:8])
    ).path


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_convolutions_get_static_qdq_per_channel(
    cnn_onnx: Path, splits: DigitsSplits, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    result = quantize_onnx(
        cnn_onnx,
        tmp_path / "int8.onnx",
        calibration=np.array(splits.x_train[:256]),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.variant == "int8-qdq"
    choice = result.choice
    assert choice.method == "static-qdq" and choice.per_channel and choice.calibration_samples == 256
    assert "Conv" in choice.reason and "ConvInteger" in choice.reason
    assert seen[-1] == (8, 8) and len(seen) == 8
    ops = _ops(result.path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    assert result.length < 0.35 * cnn_onnx.stat().st_size
    x = np.array(splits.x_test)
    fp32 = load_runner(cnn_onnx, "onnx")(x).argmax(1)
    int8 = load_runner(result.path, "onnx")(x).argmax(1)
    assert float(np.mean(fp32 == int8)) >= 0.97


def test_linear_only_graphs_get_dynamic_int8_without_calibration(mlp_onnx: Path, tmp_path: Path) -> None:
    assert choose_method(mlp_onnx)[0] == "dynamic"
    result = quantize_onnx(mlp_onnx, tmp_path / "int8.onnx")
    assert result.variant == "int8-dynamic" and result.choice.calibration_samples == 0
    assert "MatMulInteger" in _ops(result.path) or "DynamicQuantizeMatMul" in _ops(result.path)
    assert result.length < 0.4 * mlp_onnx.stat().st_size


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (None, r"static QDQ needs calibration data: expected float32 of shape \(N, 64\), got none"),
        (np.zeros((64, 63), np.float32), r"calibration data has shape \(64, 63\): expected \(N, 64\)"),
        (np.zeros((64, 8, 8), np.float32), r"has shape \(64, 8, 8\): expected \(N, 64\)"),
        (np.zeros((64, 64), np.float64), "expected float32 calibration data for input 'input', got float64"),
        (np.zeros((5, 64), np.float32), "expected at least 32 calibration samples, got 5"),
        (np.full((64, 64), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_calibration_data_that_does_not_fit_is_refused(
    cnn_onnx: Path, tmp_path: Path, calibration: np.ndarray | None, message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        quantize_onnx(cnn_onnx, tmp_path / "int8.onnx", calibration=calibration)
    assert list(tmp_path.iterdir()) == []
