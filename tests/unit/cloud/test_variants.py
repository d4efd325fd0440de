"""Variant choice per device: what its runtimes can run, its precision label, then the smallest file."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.services.variants import (
    NoCompatibleVariantError,
    RuntimeNeed,
    VariantOption,
    choose_for_devices,
    choose_variant,
    device_runtimes,
    parse_version,
)

ORT = (RuntimeNeed("onnxruntime", "1.17"),)
LITE = (RuntimeNeed("litert", "1.0"), RuntimeNeed("tflite-runtime", "2.14"))

# A bundle like the CNN's: bytes fall as optimizations stack up.
BUNDLE = [
    VariantOption(1, "fp32", "onnx", "fp32", 507_000, ORT, 0.080, is_baseline=True),
    VariantOption(2, "fp32-pruned", "onnx", "fp32", 295_000, ORT, 0.061),
    VariantOption(3, "int8-qdq", "onnx", "int8", 93_000, ORT, 0.037),
    VariantOption(4, "tflite-fp32", "tflite", "fp32", 284_000, LITE, 0.092),
    VariantOption(5, "tflite-int8", "tflite", "int8", 83_000, LITE, 0.029),
]


def caps(*runtimes: str) -> dict[str, Any]:
    return {"runtimes": list(runtimes), "cpu_arch": "aarch64"}


@pytest.mark.parametrize(
    ("capabilities", "labels", "expected"),
    [
        (caps("onnxruntime/1.32.0", "litert/2.3.0"), {}, "tflite-int8"),
        (caps("litert/2.3.0"), {}, "tflite-int8"),
        (caps("tflite-runtime/2.14.0"), {}, "tflite-int8"),
        (caps("onnxruntime/1.32.0"), {}, "int8-qdq"),
        (caps("onnxruntime/1.32.0"), {"precision": "fp32"}, "fp32-pruned"),
        (caps("onnxruntime/1.32.0", "litert/2.3.0"), {"precision": "fp32"}, "tflite-fp32"),
        (caps("litert/2.3.0"), {"precision": "FP32 "}, "tflite-fp32"),
        # a preference nothing satisfies falls back to the usual order
        (caps("onnxruntime/1.32.0"), {"precision": "int4"}, "int8-qdq"),
        # an onnxruntime too old for the opset can still take the TFLite variants
        (caps("onnxruntime/1.16.3", "litert/2.3.0"), {}, "tflite-int8"),
        # unknown runtimes (an old agent, a device heard of only through telemetry): the baseline
        ({}, {}, "fp32"),
        (caps(), {"precision": "int8"}, "fp32"),
    ],
)
def test_choice_per_device(capabilities: dict[str, Any], labels: dict[str, str], expected: str) -> None:
    assert choose_variant(BUNDLE, capabilities, labels).variant == expected


def test_a_device_that_runs_nothing_here_is_refused_with_what_it_has_and_needs() -> None:
    with pytest.raises(NoCompatibleVariantError) as caught:
        choose_variant(BUNDLE[:3], caps("litert/2.3.0"), {})
    assert "it runs litert/2.3.0, but fp32 needs onnxruntime>=1.17" in caught.value.reasons["device"]
    with pytest.raises(NoCompatibleVariantError, match=r"onnxruntime/1\.16\.3"):
        choose_variant(BUNDLE[:3], caps("onnxruntime/1.16.3"), {})


def test_choose_for_devices_lists_every_device_that_fails() -> None:
    devices = [
        ("a", caps("onnxruntime/1.32.0"), {}),
        ("b", caps("litert/2.3.0"), {}),
        ("c", caps("openvino/2024.1"), {}),
    ]
    with pytest.raises(
        NoCompatibleVariantError, match=r"no variant runs on 2 device\(s\): b: .*; c: "
    ) as caught:
        choose_for_devices(BUNDLE[:3], devices)
    assert sorted(caught.value.reasons) == ["b", "c"]
    chosen = choose_for_devices(BUNDLE, devices[:2])
    assert {k: v.variant for k, v in chosen.items()} == {"a": "int8-qdq", "b": "tflite-int8"}


def test_ties_break_on_latency_then_name() -> None:
    same_size = [
        VariantOption(1, "b", "onnx", "fp32", 10, ORT, 0.5),
        VariantOption(2, "a", "onnx", "fp32", 10, ORT, 0.5),
        VariantOption(3, "c", "onnx", "fp32", 10, ORT, 0.1),
    ]
    assert choose_variant(same_size, caps("onnxruntime/1.20"), {}).variant == "c"
    assert choose_variant(same_size[:2], caps("onnxruntime/1.20"), {}).variant == "a"


def test_versions_and_runtime_strings_parse() -> None:
    assert parse_version("1.32.0") == (1, 32, 0)
    assert parse_version("2.14.0rc1") == (2, 14, 0)
    assert parse_version("2.13.0+cpu") == (2, 13, 0)
    assert parse_version("") == ()
    assert device_runtimes({"runtimes": ["ONNXRuntime/1.2", "litert/2.3.0", "/9", "bare"]}) == {
        "onnxruntime": (1, 2),
        "litert": (2, 3, 0),
        "bare": (),
    }
