"""The optimization pipeline end to end on the digits MLP: variants, gates, profile, manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import model_tools.tflite
from cloud.training.optimize import optimize_run
from model_tools.bundle import verify_bundle
from model_tools.data import load_digits_splits
from model_tools.errors import ConfigError, PipelineError
from model_tools.evaluate import VariantMetrics, evaluate_variant
from model_tools.gates import GatePolicy, Measured, judge
from model_tools.litert import is_tflite_file
from model_tools.pipeline import OptimizeOptions, PipelineResult
from model_tools.profile import parse_profile
from tests.integration.conftest import QUICK_LATENCY, TrainedRun

pytestmark = pytest.mark.integration


def test_the_bundle_holds_every_gated_variant_and_verifies(
    mlp_bundle: PipelineResult, mlp_run: TrainedRun
) -> None:
    manifest = verify_bundle(mlp_bundle.bundle_dir)
    assert manifest == mlp_bundle.manifest
    names = [v.name for v in manifest.variants]
    assert names == ["fp32", "fp32-pruned", "int8-dynamic", "tflite-fp32", "tflite-int8"]
    assert manifest.baseline == "fp32" and manifest.rejected == ()
    assert mlp_bundle.skipped == ()
    by_name = {v.name: v for v in manifest.variants}
    # Lineage: the whole experiment, the data set hash and the code revision.
    assert manifest.lineage["experiment"]["run_id"] == mlp_run.record.run_id
    assert manifest.lineage["dataset"]["hash"] == mlp_run.record.dataset_hash
    assert manifest.lineage["code_revision"] == mlp_run.record.code_revision
    # Schema with dtype, shape and preprocessing.
    assert manifest.inputs[0].to_dict()["shape"] == [-1, 64]
    assert "divide by 16 to [0, 1]" in manifest.inputs[0].preprocessing["steps"]
    # Each step records what it did.
    pruning = by_name["fp32-pruned"].details["pruning"]
    assert pruning["widths_before"] == [128, 64] and pruning["widths_after"] == [96, 48]
    assert by_name["int8-dynamic"].details["quantization"]["method"] == "dynamic"
    assert by_name["int8-dynamic"].derived_from == "fp32-pruned"
    assert by_name["fp32"].details["opset"] >= 17
    assert by_name["tflite-int8"].runtimes[0].name == "litert"
    assert is_tflite_file(mlp_bundle.bundle_dir / by_name["tflite-int8"].file)
    # Every variant was measured and passed: accuracy within a point of fp32, smaller where it should be.
    fp32 = by_name["fp32"].metrics
    for v in manifest.variants:
        assert v.gates["passed"] is True
        assert set(v.metrics["latency_ms"]) == {"1", "32"}
        assert len(v.metrics["per_class_accuracy"]) == 10
        assert fp32["accuracy"] - v.metrics["accuracy"] <= 0.01 + 1e-9
    assert by_name["int8-dynamic"].length < 0.4 * by_name["fp32"].length
    assert by_name["tflite-int8"].length < 0.4 * by_name["fp32"].length


def test_the_profile_describes_the_held_out_data(mlp_bundle: PipelineResult) -> None:
    manifest = mlp_bundle.manifest
    profile = parse_profile((mlp_bundle.bundle_dir / manifest.profile.file).read_bytes())
    assert (profile.model_name, profile.model_version) == ("digits-mlp", "1.0.0")
    assert profile.samples == 270 and len(profile.features) == 64
    assert profile.dataset_hash == load_digits_splits(seed=0).content_hash
    # The predicted classes of a ~96%-accurate model on a balanced split: every class near 10%.
    assert all(0.05 < share < 0.15 for share in profile.class_distribution)


def _damage(source: Path, destination: Path) -> Path:
    """Scramble the weights of a model: it still loads and runs, and answers nonsense."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype in (np.float32, np.int8) and array.size > 100:
            tensor.CopyFrom(
                numpy_helper.from_array(rng.permutation(array.ravel()).reshape(array.shape), tensor.name)
            )
    onnx.save(model, str(destination))
    return destination


def test_gates_refuse_a_deliberately_damaged_variant(mlp_bundle: PipelineResult, tmp_path: Path) -> None:
    folder = mlp_bundle.bundle_dir
    fp32 = VariantMetrics.from_dict(mlp_bundle.manifest.variant("fp32").metrics)
    damaged = _damage(folder / "int8-dynamic.onnx", tmp_path / "damaged.onnx")
    splits = load_digits_splits(seed=0)
    metrics = evaluate_variant(
        damaged, "onnx", np.array(splits.x_test), np.array(splits.y_test), num_classes=10, plan=QUICK_LATENCY
    )
    reference = Measured(fp32.accuracy, fp32.bytes, fp32.latency_ms)
    decision = judge(
        "int8-dynamic",
        Measured(metrics.accuracy, metrics.bytes, metrics.latency_ms),
        reference=reference,
        latency_baseline=reference,
        policy=GatePolicy(max_latency_increase_pct=1e6),
    )
    assert not decision.passed
    (reason,) = decision.reasons
    assert (
        reason.startswith(f"accuracy {metrics.accuracy:.4f} is ") and "expected a drop of at most 1" in reason
    )


def test_rejected_variants_are_listed_with_reasons_and_ship_no_file(
    mlp_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without TensorFlow the pipeline still runs, and says what it skipped.
    monkeypatch.setattr(model_tools.tflite, "tensorflow_available", lambda: False)
    policy = GatePolicy(max_bytes_ratio=0.5, max_latency_increase_pct=1e6)
    result = optimize_run(
        mlp_run.folder,
        version="2",
        out_dir=tmp_path / "b",
        options=OptimizeOptions(latency=QUICK_LATENCY, policy=policy),
    )
    manifest = verify_bundle(result.bundle_dir)
    assert [v.name for v in manifest.variants] == ["fp32", "int8-dynamic"]
    (rejected,) = manifest.rejected
    assert rejected.name == "fp32-pruned" and "0.70x fp32's" in rejected.reasons[0]
    assert not (result.bundle_dir / "fp32-pruned.onnx").exists()
    # The pruned model lost its place, so int8 was made from the unpruned one.
    assert manifest.variant("int8-dynamic").derived_from == "fp32"
    assert any("TensorFlow is not installed" in s for s in result.skipped)
    assert manifest.gate_policy["max_bytes_ratio"] == 0.5


def test_a_failed_run_leaves_no_bundle(mlp_run: TrainedRun, tmp_path: Path) -> None:
    options = OptimizeOptions(
        prune_amount=0.0, tflite=False, latency=QUICK_LATENCY, policy=GatePolicy(min_accuracy=0.9999)
    )
    with pytest.raises(PipelineError, match=r"the fp32 baseline fails its own gates: accuracy 0\.9"):
        optimize_run(mlp_run.folder, version="3", out_dir=tmp_path / "b", options=options)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        optimize_run(mlp_run.folder, version="3", out_dir=tmp_path / "taken", options=options)


def test_a_copied_bundle_with_a_changed_file_does_not_verify(
    mlp_bundle: PipelineResult, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(mlp_bundle.bundle_dir, tmp_path / "copy"))
    with (copy / "tflite-int8.tflite").open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    from model_tools.errors import BundleError

    with pytest.raises(BundleError, match=r"tflite-int8\.tflite does not match its manifest: expected"):
        verify_bundle(copy)
