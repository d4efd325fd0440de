"""From a trained model to a gated version bundle (hub only: imports torch).

Each step is a function of its own module (export, prune, quantize, tflite,
evaluate, gates, profile, bundle); this module runs them in order:

1. export the trained model to ONNX: the fp32 **baseline** (parity-checked);
2. structured pruning + fine-tuning, exported as ``fp32-pruned`` (when asked);
3. int8 with onnxruntime from the best fp32 model that passed its gates:
   dynamic or static QDQ, chosen from the graph;
4. fp32 and full-int8 TFLite from the same model (when TensorFlow is installed);
5. evaluation of every variant on the held-out split, and the gates;
6. the baseline data profile, and the manifest.

The bundle is built in a hidden sibling folder and renamed into place at the
end, so a failed run leaves no bundle behind; variants the gates refuse are
listed in the manifest with the reasons, and their files are not kept.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from model_tools.bundle import (
    BundleManifest,
    ProfileEntry,
    RejectedVariant,
    TensorSchema,
    VariantEntry,
    runtime_needs,
    write_manifest,
)
from model_tools.data import DigitsSplits
from model_tools.errors import ConfigError, PipelineError
from model_tools.evaluate import LatencyPlan, VariantMetrics, evaluate_variant, load_runner, predicted_classes
from model_tools.export import ExportResult, export_onnx
from model_tools.gates import GateDecision, GatePolicy, Measured, judge
from model_tools.hashing import sha256_bytes, sha256_file
from model_tools.profile import PROFILE_MEDIA_TYPE, build_profile
from model_tools.prune import finetune_pruned, prune_structured
from model_tools.quantize import quantize_onnx
from model_tools.zoo import INPUT_NAME, NUM_CLASSES, NUM_FEATURES, OUTPUT_NAME, TrainingRecipe

__all__ = [
    "OptimizeOptions",
    "PipelineResult",
    "ProgressEvent",
    "ProgressSink",
    "VariantOutcome",
    "VersionInfo",
    "optimize",
]

PROFILE_FILE = "profile.pb"
BASELINE = "fp32"
# Training rows for int8 calibration: activation ranges settle well before this.
_CALIBRATION_ROWS = 512
_EXAMPLE_ROWS = 8


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress: ``done`` of ``total`` in ``stage`` (total 0: a one-off note)."""

    stage: str
    done: int
    total: int
    message: str = ""


ProgressSink = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class OptimizeOptions:
    prune_amount: float = 0.25
    finetune_epochs: int | None = None
    """None: a third of the recipe's epochs (at least 2)."""
    tflite: bool = True
    policy: GatePolicy = field(default_factory=GatePolicy)
    latency: LatencyPlan | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_amount < 1.0:
            raise ConfigError(f"prune_amount must be in [0, 1), got {self.prune_amount}")
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise ConfigError(f"finetune_epochs must be at least 1, got {self.finetune_epochs}")


@dataclass(frozen=True)
class VariantOutcome:
    """One variant as measured and judged."""

    name: str
    format: str
    precision: str
    metrics: VariantMetrics
    decision: GateDecision
    derived_from: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class PipelineResult:
    bundle_dir: Path
    manifest: BundleManifest
    outcomes: tuple[VariantOutcome, ...]
    skipped: tuple[str, ...]
    """Steps that did not run, with the reason (no TensorFlow, pruning off)."""
    seconds: dict[str, float]


@dataclass
class _Candidate:
    name: str
    fmt: str
    precision: str
    path: Path
    derived_from: str | None
    details: dict[str, Any]
    runtime: str  # latency baseline group: "onnxruntime" or "litert"


@dataclass(frozen=True)
class VersionInfo:
    """What the manifest says about the version besides its variants."""

    name: str
    version: str
    lineage: Mapping[str, Any]
    train_metrics: Mapping[str, float]
    preprocessing: Mapping[str, Any]
    image_shape: tuple[int, int, int] | None


def optimize(
    model: nn.Module,
    splits: DigitsSplits,
    destination: str | Path,
    *,
    info: VersionInfo,
    recipe: TrainingRecipe,
    seed: int,
    options: OptimizeOptions | None = None,
    progress: ProgressSink | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PipelineResult:
    """Build the bundle for ``model`` at ``destination`` (which must not exist yet)."""
    opts = options or OptimizeOptions()
    dest = Path(destination)
    if dest.exists():
        raise ConfigError(f"bundle folder {dest} already exists: expected a new path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        build = _Build(model, splits, staging, recipe=recipe, seed=seed, opts=opts, emit=progress)
        build.baseline()
        build.prune()
        source_name, source_model = build.source()
        build.quantize(source_name)
        build.tflite(source_name, source_model)
        manifest = build.finish(info, now())
        staging.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PipelineResult(
        bundle_dir=dest,
        manifest=manifest,
        outcomes=tuple(build.outcomes[c.name] for c in build.candidates),
        skipped=tuple(build.skipped),
        seconds=dict(build.seconds),
    )


class _Build:
    """The state one pipeline run shares between its steps."""

    def __init__(
        self,
        model: nn.Module,
        splits: DigitsSplits,
        folder: Path,
        *,
        recipe: TrainingRecipe,
        seed: int,
        opts: OptimizeOptions,
        emit: ProgressSink | None,
    ) -> None:
        self.model = model
        self.splits = splits
        self.folder = folder
        self.recipe = recipe
        self.seed = seed
        self.opts = opts
        self.emit: ProgressSink = emit or (lambda _e: None)
        self.example = np.array(splits.x_test[:_EXAMPLE_ROWS])
        self.calibration = np.array(splits.x_train[:_CALIBRATION_ROWS])
        self.x_test = np.array(splits.x_test)
        self.y_test = np.array(splits.y_test)
        self.plan = opts.latency or LatencyPlan(
            batch_sizes=tuple(sorted({1, 32, *opts.policy.latency_batch_sizes}))
        )
        self.candidates: list[_Candidate] = []
        self.outcomes: dict[str, VariantOutcome] = {}
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}
        self.pruned_model: nn.Module | None = None
        self.opset: int | None = None

    def baseline(self) -> None:
        with _Timed(self.seconds, "export"):
            base = self._export(self.model, BASELINE)
        self.opset = base.opset
        details = {"opset": base.opset, "max_abs_diff_vs_torch": base.max_abs_diff}
        self._add(_Candidate(BASELINE, "onnx", "fp32", base.path, None, details, "onnxruntime"))
        if self.outcomes[BASELINE].decision.reasons:
            reasons = "; ".join(self.outcomes[BASELINE].decision.reasons)
            raise PipelineError(f"the fp32 baseline fails its own gates: {reasons}")

    def prune(self) -> None:
        if self.opts.prune_amount <= 0:
            self.skipped.append("structured pruning: prune amount is 0")
            return
        with _Timed(self.seconds, "prune"):
            pruned = prune_structured(self.model, self.opts.prune_amount)
            epochs = self.opts.finetune_epochs or max(2, self.recipe.epochs // 3)
            self.emit(ProgressEvent("prune fine-tune", 0, epochs))
            tuned, before = finetune_pruned(
                pruned,
                self.splits,
                epochs=epochs,
                lr=self.recipe.lr / 2,
                batch_size=self.recipe.batch_size,
                seed=self.seed,
                device=self.opts.device,
                progress=lambda p: self.emit(
                    ProgressEvent("prune fine-tune", p.epoch, p.epochs, f"val {p.val_accuracy:.3f}")
                ),
            )
            self.pruned_model = tuned.model
            exported = self._export(tuned.model, "fp32-pruned")
        pruning = {**pruned.to_dict(), "finetune_epochs": epochs, "test_accuracy_before_finetune": before}
        details = {
            "opset": exported.opset,
            "max_abs_diff_vs_torch": exported.max_abs_diff,
            "pruning": pruning,
        }
        self._add(_Candidate("fp32-pruned", "onnx", "fp32", exported.path, BASELINE, details, "onnxruntime"))

    def source(self) -> tuple[str, nn.Module]:
        """The fp32 model derived variants start from: the pruned one only when it passed its gates."""
        pruned = self.outcomes.get("fp32-pruned")
        if self.pruned_model is not None and pruned is not None and pruned.decision.passed:
            return "fp32-pruned", self.pruned_model
        return BASELINE, self.model

    def quantize(self, source_name: str) -> None:
        with _Timed(self.seconds, "quantize"):
            q = quantize_onnx(
                self.folder / f"{source_name}.onnx",
                self.folder / "int8.onnx",
                calibration=self.calibration,
                progress=lambda d, t: self.emit(ProgressEvent("calibrate int8", d, t)),
            )
            final = q.path.with_name(f"{q.variant}.onnx")
            q.path.replace(final)
        details = {"opset": self.opset, "quantization": q.choice.to_dict()}
        self._add(_Candidate(q.variant, "onnx", "int8", final, source_name, details, "onnxruntime"))

    def tflite(self, source_name: str, source_model: nn.Module) -> None:
        if not self.opts.tflite:
            self.skipped.append("TFLite: turned off")
            return
        from model_tools.tflite import convert_tflite_many, tensorflow_available

        if not tensorflow_available():
            reason = "TFLite: TensorFlow is not installed (the 'tflite' extra); no .tflite variants made"
            self.skipped.append(reason)
            self.emit(ProgressEvent("tflite", 0, 0, reason))
            return
        with _Timed(self.seconds, "tflite"):
            made = convert_tflite_many(
                source_model,
                {"fp32": self.folder / "tflite-fp32.tflite", "int8": self.folder / "tflite-int8.tflite"},
                example=self.example,
                calibration=self.calibration,
                progress=lambda d, t: self.emit(ProgressEvent("calibrate tflite int8", d, t)),
            )
        # fp32 first: it is the latency baseline the int8 file is judged against.
        for precision, result in sorted(made.items(), key=lambda kv: kv[0] != "fp32"):
            name = f"tflite-{precision}"
            self._add(
                _Candidate(name, "tflite", precision, result.path, source_name, result.details(), "litert")
            )

    def finish(self, info: VersionInfo, created: datetime) -> BundleManifest:
        """Write the profile and the manifest; drop the files of rejected variants."""
        with _Timed(self.seconds, "profile"):
            predicted = predicted_classes(load_runner(self.folder / f"{BASELINE}.onnx", "onnx"), self.x_test)
            profile = build_profile(
                model_name=info.name,
                model_version=info.version,
                dataset_hash=self.splits.content_hash,
                x=self.x_test,
                predicted=predicted,
                num_classes=NUM_CLASSES,
                image_shape=info.image_shape,
            )
            blob = profile.SerializeToString(deterministic=True)
            (self.folder / PROFILE_FILE).write_bytes(blob)
        published: list[VariantEntry] = []
        rejected: list[RejectedVariant] = []
        for c in self.candidates:
            o = self.outcomes[c.name]
            if o.decision.passed:
                published.append(_entry(c, o))
            else:
                details = {**c.details, "derived_from": c.derived_from}
                metrics = o.metrics.to_dict()
                rejected.append(
                    RejectedVariant(c.name, c.fmt, c.precision, o.decision.reasons, metrics, details)
                )
                c.path.unlink(missing_ok=True)
        fp32_accuracy = self.outcomes[BASELINE].metrics.accuracy
        manifest = BundleManifest(
            name=info.name,
            version=info.version,
            created_at=created.astimezone(UTC).isoformat(),
            lineage=dict(info.lineage),
            metrics={
                **dict(info.train_metrics),
                "fp32_test_accuracy": fp32_accuracy,
                "seconds": self.seconds,
            },
            inputs=(TensorSchema(INPUT_NAME, "float32", (-1, NUM_FEATURES), dict(info.preprocessing)),),
            outputs=(
                TensorSchema(OUTPUT_NAME, "float32", (-1, NUM_CLASSES), {"meaning": "class scores (logits)"}),
            ),
            classes=tuple(str(c) for c in range(NUM_CLASSES)),
            baseline=BASELINE,
            variants=tuple(published),
            rejected=tuple(rejected),
            profile=ProfileEntry(PROFILE_FILE, sha256_bytes(blob), len(blob), PROFILE_MEDIA_TYPE),
            gate_policy=self.opts.policy.to_dict(),
        )
        write_manifest(self.folder, manifest)
        return manifest

    def _export(self, model: nn.Module, name: str) -> ExportResult:
        return export_onnx(
            model,
            self.folder / f"{name}.onnx",
            example=self.example,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
        )

    def _add(self, c: _Candidate) -> None:
        """Measure a candidate and judge it against what was measured before it."""
        self.emit(ProgressEvent("evaluate", 0, 1, c.name))
        with _Timed(self.seconds, "evaluate"):
            metrics = evaluate_variant(
                c.path, c.fmt, self.x_test, self.y_test, num_classes=NUM_CLASSES, plan=self.plan
            )
        self.emit(ProgressEvent("evaluate", 1, 1, c.name))
        measured = _measured(metrics)
        reference = _measured(self.outcomes[BASELINE].metrics) if c.name != BASELINE else measured
        # Each runtime's fp32 model is its own latency baseline; see model_tools.gates.
        baseline_name = {"onnxruntime": BASELINE, "litert": "tflite-fp32"}[c.runtime]
        latency_baseline = (
            None if c.name == baseline_name else _measured(self.outcomes[baseline_name].metrics)
        )
        # The baseline is the reference: only the absolute floor applies to it, not the ratios.
        policy = self.opts.policy if c.name != BASELINE else replace(self.opts.policy, max_bytes_ratio=None)
        decision = judge(
            c.name, measured, reference=reference, latency_baseline=latency_baseline, policy=policy
        )
        self.candidates.append(c)
        self.outcomes[c.name] = VariantOutcome(
            c.name, c.fmt, c.precision, metrics, decision, c.derived_from, c.details
        )


def _entry(c: _Candidate, o: VariantOutcome) -> VariantEntry:
    return VariantEntry(
        name=c.name,
        file=c.path.name,
        format=c.fmt,
        precision=c.precision,
        sha256=sha256_file(c.path),
        length=c.path.stat().st_size,
        runtimes=runtime_needs(c.fmt, c.details.get("opset") if c.fmt == "onnx" else None),
        metrics=o.metrics.to_dict(),
        gates=o.decision.to_dict(),
        derived_from=c.derived_from,
        details=c.details,
    )


def _measured(m: VariantMetrics) -> Measured:
    return Measured(accuracy=m.accuracy, bytes=m.bytes, latency_ms=m.latency_ms)


class _Timed:
    """Adds the seconds a block took to ``seconds[key]``."""

    def __init__(self, seconds: dict[str, float], key: str) -> None:
        self._seconds = seconds
        self._key = key
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        elapsed = time.perf_counter() - self._start
        self._seconds[self._key] = round(self._seconds.get(self._key, 0.0) + elapsed, 3)
