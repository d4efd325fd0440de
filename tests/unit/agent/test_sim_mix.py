"""Device kinds of a simulated fleet (`--runtimes-mix`): what each device reports and runs."""

from __future__ import annotations

import pytest

from edge_agent.errors import ConfigError
from edge_agent.runtime import RuntimeRegistry
from edge_agent.sim_mix import DeviceKind, parse_runtimes_mix


def test_items_name_runtimes_and_a_precision_label() -> None:
    kinds = parse_runtimes_mix("onnxruntime+litert, litert ,onnxruntime@fp32")
    assert kinds == [
        DeviceKind(("onnxruntime", "litert")),
        DeviceKind(("litert",)),
        DeviceKind(("onnxruntime",), "fp32"),
    ]
    assert kinds[2].labels() == {"precision": "fp32"} and kinds[0].labels() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty item"),
        ("onnxruntime,,litert", "empty item"),
        ("openvino", r"unknown runtime \['openvino'\]"),
        ("onnxruntime+", r"unknown runtime \[''\]"),
        ("litert@int4", "precision must be one of"),
    ],
)
def test_bad_mixes_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_runtimes_mix(text)


def test_a_kind_loads_and_reports_only_its_runtimes() -> None:
    onnx_only = DeviceKind(("onnxruntime",)).registry()
    assert onnx_only.formats == ["onnx"]
    assert [r.split("/")[0] for r in onnx_only.runtime_names()] == ["onnxruntime"]
    both = DeviceKind(("onnxruntime", "litert")).registry()
    assert both.formats == RuntimeRegistry().formats == ["onnx", "tflite"]
    assert {r.split("/")[0] for r in both.runtime_names()} == {"onnxruntime", "litert"}
