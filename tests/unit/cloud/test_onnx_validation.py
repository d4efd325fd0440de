"""ONNX validation outside the hub's memory: the child process, its memory cap, the size above which the
onnxruntime load is skipped, and the errors each refusal gives."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cloud.api.errors import status_for
from cloud.errors import InvalidArtifactError
from cloud.services.onnx_schema import ValidationLimits, ValidationMemoryError, inspect_onnx
from cloud.settings import Settings
from tests.large_model import MiB, make_large_onnx

IN_CHILD = ValidationLimits(in_process_max_bytes=0)
SCHEMA = (
    [{"name": "x", "dtype": "float32", "shape": [-1, 64]}],
    [{"name": "probs", "dtype": "float32", "shape": [-1, 10]}],
)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_large_onnx(tmp_path_factory.mktemp("m") / "small.onnx", target_bytes=MiB)


def test_the_child_describes_a_model_as_the_hub_process_does(small_model: Path) -> None:
    in_child = inspect_onnx(small_model, IN_CHILD)
    in_process = inspect_onnx(small_model, ValidationLimits())
    assert in_child == in_process
    assert (in_child.inputs, in_child.outputs) == SCHEMA
    assert (in_child.precision, in_child.max_opset, in_child.load_checked) == ("fp32", 17, True)


@pytest.mark.parametrize("limits", [IN_CHILD, ValidationLimits()], ids=["child", "in-process"])
def test_a_file_that_is_not_onnx_is_refused_naming_no_path(tmp_path: Path, limits: ValidationLimits) -> None:
    bad = tmp_path / ("ab" * 32)
    bad.write_bytes(b"this is not a model" * 100)
    with pytest.raises(InvalidArtifactError, match="not a loadable ONNX model") as refused:
        inspect_onnx(bad, limits)
    assert str(tmp_path) not in str(refused.value)


def test_above_the_load_size_the_load_is_skipped_and_logged(
    small_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cloud.services.onnx_schema"):
        facts = inspect_onnx(small_model, ValidationLimits(load_max_bytes=1024, in_process_max_bytes=0))
    assert not facts.load_checked
    assert (facts.inputs, facts.outputs) == SCHEMA  # read from the graph instead
    assert any("load check is skipped" in r.getMessage() for r in caplog.records)


def test_a_model_that_needs_more_than_the_memory_limit_is_a_413_naming_the_limit(tmp_path: Path) -> None:
    model = make_large_onnx(tmp_path / "big.onnx", target_bytes=96 * MiB)
    limit = 300 * MiB  # enough for Python and onnxruntime, not for a session holding 96 MiB twice
    with pytest.raises(ValidationMemoryError) as refused:
        inspect_onnx(model, ValidationLimits(memory_limit_bytes=limit, in_process_max_bytes=0))
    assert status_for(refused.value) == 413
    assert f"validation limit of {limit} bytes" in str(refused.value)
    assert "EDGEFLEET_VALIDATE_MEMORY_LIMIT_BYTES" in str(refused.value)


def test_limits_come_from_the_settings() -> None:
    settings = Settings(
        validate_load_max_bytes=5 * MiB,
        validate_memory_limit_bytes=512 * MiB,
        validate_in_process_max_bytes=0,
    )
    assert ValidationLimits.from_settings(settings) == ValidationLimits(
        load_max_bytes=5 * MiB, memory_limit_bytes=512 * MiB, in_process_max_bytes=0
    )
