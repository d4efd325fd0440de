"""Runtimes: a real onnxruntime session on a tiny model; clear errors for what does not load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import InferenceError, ModelLoadError, UnknownFormatError
from edge_agent.runtime import OnnxRuntimeModel, RuntimeOptions, RuntimeRegistry, available_runtimes
from tests.unit.agent.fakes import expected_output, linear_model


def test_an_onnx_model_loads_reports_its_specs_and_predicts(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(linear_model(2.0))
    model = RuntimeRegistry().load("onnx", path, RuntimeOptions(intra_op_threads=1))
    assert [(s.name, s.dtype, s.shape) for s in model.inputs] == [("x", "float32", (-1, 4))]
    assert [(s.name, s.dtype, s.shape) for s in model.outputs] == [("y", "float32", (-1, 2))]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(model.predict({"x": x})["y"], expected_output(2.0, x))


def test_a_file_that_is_not_a_model_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not onnx")
    with pytest.raises(ModelLoadError, match=r"onnxruntime cannot load junk\.onnx"):
        OnnxRuntimeModel.load(path, RuntimeOptions())


def test_an_unknown_format_names_the_ones_this_device_runs(tmp_path: Path) -> None:
    # A device with onnxruntime only (with LiteRT installed, "tflite" is a known format).
    registry = RuntimeRegistry.only(["onnxruntime"])
    assert registry.formats == ["onnx"]
    with pytest.raises(
        UnknownFormatError, match=r"unknown model format 'tflite': this device runs \['onnx'\]"
    ):
        registry.load("tflite", tmp_path / "m.tflite", RuntimeOptions())


def test_runtime_failures_are_inference_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(linear_model(1.0))
    model = OnnxRuntimeModel.load(path, RuntimeOptions())
    with pytest.raises(InferenceError, match="onnxruntime failed"):
        model.predict({"x": np.zeros((2, 3), np.float32)})


def test_available_runtimes_name_and_version() -> None:
    runtimes = available_runtimes()
    assert any(re.fullmatch(r"onnxruntime/\d+\.\d+\.\d+.*", r) for r in runtimes)
