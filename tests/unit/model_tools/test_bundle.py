"""Bundle manifests: round trip, validation, and files checked against what the manifest pins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_tools.bundle import (
    BundleManifest,
    ProfileEntry,
    RejectedVariant,
    TensorSchema,
    VariantEntry,
    load_manifest,
    runtime_needs,
    verify_bundle,
    write_manifest,
)
from model_tools.errors import BundleError
from model_tools.hashing import sha256_bytes

FILES = {"fp32.onnx": b"fp32 model bytes", "tflite-int8.tflite": b"tflite bytes", "profile.pb": b"profile"}


def _variant(name: str, file: str, fmt: str, precision: str) -> VariantEntry:
    data = FILES[file]
    return VariantEntry(
        name=name,
        file=file,
        format=fmt,
        precision=precision,
        sha256=sha256_bytes(data),
        length=len(data),
        runtimes=runtime_needs(fmt, 18 if fmt == "onnx" else None),
        metrics={"accuracy": 0.97},
        gates={"passed": True, "reasons": []},
    )


def _manifest(**changes: Any) -> BundleManifest:
    fields: dict[str, Any] = {
        "name": "digits-mlp",
        "version": "1.0.0",
        "created_at": "2030-01-02T03:04:05+00:00",
        "lineage": {"dataset": {"name": "d", "hash": "0" * 64}},
        "metrics": {"test_accuracy": 0.97},
        "inputs": (TensorSchema("input", "float32", (-1, 64), {"range": [0, 1]}),),
        "outputs": (TensorSchema("logits", "float32", (-1, 10)),),
        "classes": tuple(str(c) for c in range(10)),
        "baseline": "fp32",
        "variants": (
            _variant("fp32", "fp32.onnx", "onnx", "fp32"),
            _variant("tflite-int8", "tflite-int8.tflite", "tflite", "int8"),
        ),
        "profile": ProfileEntry(
            "profile.pb", sha256_bytes(FILES["profile.pb"]), 7, "application/x-edgefleet-profile+protobuf"
        ),
        "rejected": (RejectedVariant("int8-dynamic", "onnx", "int8", ("latency at batch 1 is 1.37x",)),),
    }
    fields.update(changes)
    return BundleManifest(**fields)


def _bundle(tmp_path: Path) -> Path:
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    write_manifest(tmp_path, _manifest())
    return tmp_path


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    loaded = load_manifest(folder)
    assert loaded == _manifest()
    assert loaded.files == {name: (sha256_bytes(data), len(data)) for name, data in FILES.items()}
    assert loaded.variant("tflite-int8").runtimes[0].name == "litert"
    assert verify_bundle(folder) == loaded


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "fp32.onnx").write_bytes(b"fp32 model bytez"), "expected sha256 .*, got"),
        (
            lambda f: (f / "fp32.onnx").write_bytes(b"short"),
            "fp32.onnx does not match its manifest: expected 16 bytes, got 5",
        ),
        (lambda f: (f / "profile.pb").unlink(), "bundle file profile.pb is missing"),
        (lambda f: (f / "manifest.json").write_text("{"), "manifest is not valid JSON"),
    ],
)
def test_verify_names_the_file_that_differs(tmp_path: Path, damage: Any, message: str) -> None:
    folder = _bundle(tmp_path)
    damage(folder)
    with pytest.raises(BundleError, match=message):
        verify_bundle(folder)


def _edit(tmp_path: Path, change: Any) -> dict[str, Any]:
    data = json.loads(_manifest().to_json())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="other/v9"), "schema is 'other/v9'"),
        (lambda d: d.pop("version"), r"manifest.version is missing"),
        (lambda d: d["variants"][0].update(file="../escape.onnx"), "must be a plain file name"),
        (lambda d: d["variants"][0].update(sha256="ABC"), "sha256 must be 64 lowercase hex digits"),
        (lambda d: d["variants"][0].update(length=-1), "expected a non-negative integer"),
        (lambda d: d["variants"][0].update(format="pt"), r"format 'pt' is not one of"),
        (lambda d: d["variants"][0].update(precision="int4"), r"precision 'int4' is not one of"),
        (lambda d: d["variants"][0].update(runtimes=[]), "at least one runtime"),
        (lambda d: d["variants"][0]["runtimes"][0].update(min_version="latest"), "needs a version like 1.17"),
        (lambda d: d.update(baseline="tflite-int8"), "expected an fp32 ONNX variant"),
        (lambda d: d.update(baseline="nope"), "baseline 'nope' is not a published variant"),
        (lambda d: d["variants"].append(dict(d["variants"][0])), "listed twice"),
        (lambda d: d.update(variants=[]), "no published variant"),
        (lambda d: d["profile"].update(file="fp32.onnx"), "also a variant's file"),
        (
            lambda d: d["rejected"].append(
                {"name": "fp32", "format": "onnx", "precision": "fp32", "reasons": []}
            ),
            "both published and rejected",
        ),
        (lambda d: d["inputs"][0].update(shape=[-1, "64"]), "shape must be integers"),
        (lambda d: d.update(inputs=[]), "expected one input and one output"),
    ],
)
def test_malformed_manifests_are_refused(tmp_path: Path, change: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        BundleManifest.from_dict(_edit(tmp_path, change))


def test_runtime_needs_follow_the_opset() -> None:
    assert runtime_needs("onnx", 18)[0].min_version == "1.14"
    assert runtime_needs("onnx", 12)[0].min_version == "1.13"
    assert runtime_needs("onnx", 99)[0].min_version == "1.22"
    assert [n.name for n in runtime_needs("tflite")] == ["litert", "tflite-runtime"]
    with pytest.raises(BundleError):
        runtime_needs("pt")
