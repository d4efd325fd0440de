"""TFLite variants (the `tflite` extra, installed in CI): parity with torch, LiteRT on hub and agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_agent.errors import ModelLoadError
from edge_agent.runtime import RuntimeOptions, RuntimeRegistry
from edge_agent.runtime_litert import LiteRTModel
from model_tools.data import DigitsSplits, load_digits_splits
from model_tools.errors import TFLiteError
from model_tools.litert import LiteRTSession, is_tflite_file
from model_tools.prune import prune_structured
from model_tools.tflite import convert_tflite
from model_tools.train import train_classifier
from model_tools.zoo import DigitsMLP, build_model

pytestmark = pytest.mark.integration

# Stated tolerance: the fp32 .tflite computes what torch does to 1e-4 (measured: ~1e-5).
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: build_model("mlp", seed=0), id="mlp"),
        pytest.param(lambda: build_model("cnn", seed=0), id="cnn"),
        pytest.param(lambda: prune_structured(build_model("cnn", seed=1), 0.25).model, id="pruned-cnn"),
        pytest.param(
            lambda: build_model("cnn", seed=2, channels=(3, 4, 5), upsample=1), id="cnn-multichannel"
        ),
    ],
)
def test_fp32_tflite_matches_torch(model: object, splits: DigitsSplits, tmp_path: Path) -> None:
    torch_model: nn.Module = model().eval()  # type: ignore[operator]
    result = convert_tflite(
        torch_model, tmp_path / "m.tflite", precision="fp32", example=np.array(splits.x_test[:8])
    )
    assert result.max_abs_diff is not None and result.max_abs_diff <= FP32_ATOL
    assert is_tflite_file(result.path)
    session = LiteRTSession(result.path)
    assert [(t.name, t.dtype, t.shape) for t in session.inputs] == [("input", "float32", (-1, 64))]
    assert [(t.name, t.shape) for t in session.outputs] == [("logits", (-1, 10))]
    x = np.array(splits.x_test)  # a batch the parity check did not use: the batch dimension is dynamic
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run_single(x), expected, atol=FP32_ATOL, rtol=0)


def test_int8_tflite_agrees_with_torch_and_is_a_quarter_of_the_size(
    splits: DigitsSplits, tmp_path: Path
) -> None:
    model = train_classifier(
        build_model("cnn", seed=0), splits, epochs=2, lr=2e-3, batch_size=64, seed=0, device="cpu"
    ).model
    seen: list[int] = []
    fp32 = convert_tflite(
        model, tmp_path / "fp32.tflite", precision="fp32", example=np.array(splits.x_test[:8])
    )
    int8 = convert_tflite(
        model,
        tmp_path / "int8.tflite",
        precision="int8",
        example=np.array(splits.x_test[:8]),
        calibration=np.array(splits.x_train),
        calibration_rows=64,
        progress=lambda d, _t: seen.append(d),
    )
    assert int8.calibration_samples == 64 and max(seen) == 64
    assert int8.length < 0.35 * fp32.length
    x = np.array(splits.x_test)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).argmax(1).numpy()
    got = LiteRTSession(int8.path).run_single(x).argmax(1)
    assert float(np.mean(got == expected)) >= 0.95


def test_layers_keras_cannot_rebuild_are_named(splits: DigitsSplits, tmp_path: Path) -> None:
    class WithTanh(DigitsMLP):
        def __init__(self) -> None:
            super().__init__(hidden=(8,))
            self.layers[1] = nn.Tanh()

    with pytest.raises(TFLiteError, match=r"cannot rebuild layer 'layers.1' \(Tanh\) in Keras"):
        convert_tflite(
            WithTanh(), tmp_path / "m.tflite", precision="fp32", example=np.array(splits.x_test[:2])
        )
    with pytest.raises(TFLiteError, match="calibration rows"):
        convert_tflite(
            build_model("mlp"), tmp_path / "m.tflite", precision="int8", example=np.array(splits.x_test[:2])
        )
    assert list(tmp_path.iterdir()) == []


def test_the_agent_serves_tflite_through_litert(splits: DigitsSplits, tmp_path: Path) -> None:
    model = build_model("mlp", seed=0).eval()
    made = convert_tflite(model, tmp_path / "m.tflite", precision="fp32", example=np.array(splits.x_test[:8]))
    registry = RuntimeRegistry()
    assert registry.supports("tflite")
    assert any(r.startswith("litert/") for r in registry.runtime_names())
    loaded = registry.load("tflite", made.path, RuntimeOptions(intra_op_threads=1))
    assert isinstance(loaded, LiteRTModel)
    assert [(s.name, s.dtype, s.shape) for s in loaded.inputs] == [("input", "float32", (-1, 64))]
    x = np.array(splits.x_test[:5])
    out = loaded.predict({"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(out["logits"], model(torch.from_numpy(x)).numpy(), atol=FP32_ATOL, rtol=0)
    # A device with only LiteRT reports and loads only LiteRT.
    only = RuntimeRegistry.only(["litert"])
    assert only.formats == ["tflite"] and [r.split("/")[0] for r in only.runtime_names()] == ["litert"]
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        registry.load("tflite", tmp_path / "bad.tflite", RuntimeOptions())
