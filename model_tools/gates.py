"""Gates: which optimized variants are good enough to publish (light: stdlib only).

Every variant is judged against references measured in the same run:

- accuracy against the fp32 ONNX model (what torch computes): a variant may lose
  at most ``max_accuracy_drop_points`` percentage points;
- latency against the fp32 model *of the same runtime* (fp32 ONNX for ONNX
  variants, fp32 TFLite for TFLite ones): an optimization that makes its own
  runtime slower by more than ``max_latency_increase_pct`` at any of
  ``latency_batch_sizes`` is no optimization. Comparing across runtimes would
  judge onnxruntime against LiteRT on the hub's CPU, which says nothing about a
  device. The fp32 model of each runtime is that runtime's baseline and has no
  latency gate. An increase smaller than ``latency_noise_ms`` (2 µs by default)
  passes whatever its ratio: on a model that runs in a few microseconds, a
  microsecond is timer and scheduling noise, not a slower model.

A policy file is TOML or JSON, the keys at the top or under ``[gates]``:

    [gates]
    max_accuracy_drop_points = 1.0
    max_latency_increase_pct = 10.0
    latency_batch_sizes = [1, 32]
    latency_noise_ms = 0.002
    min_accuracy = 0.9          # optional absolute floor
    max_bytes_ratio = 0.5       # optional: at most this share of the fp32 file
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_tools.errors import GatePolicyError

__all__ = ["GateDecision", "GatePolicy", "Measured", "judge"]


@dataclass(frozen=True)
class GatePolicy:
    """The limits a variant must meet to be published."""

    max_accuracy_drop_points: float = 1.0
    max_latency_increase_pct: float = 10.0
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    latency_noise_ms: float = 0.002
    min_accuracy: float | None = None
    max_bytes_ratio: float | None = None

    def __post_init__(self) -> None:
        _check_number("max_accuracy_drop_points", self.max_accuracy_drop_points, minimum=0.0)
        _check_number("max_latency_increase_pct", self.max_latency_increase_pct, minimum=0.0)
        _check_number("latency_noise_ms", self.latency_noise_ms, minimum=0.0)
        if not self.latency_batch_sizes or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.latency_batch_sizes
        ):
            raise GatePolicyError(
                f"latency_batch_sizes must be a non-empty list of positive integers, "
                f"got {list(self.latency_batch_sizes)!r}"
            )
        if self.min_accuracy is not None:
            _check_number("min_accuracy", self.min_accuracy, minimum=0.0, maximum=1.0)
        if self.max_bytes_ratio is not None:
            _check_number("max_bytes_ratio", self.max_bytes_ratio, minimum=0.0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_accuracy_drop_points": self.max_accuracy_drop_points,
            "max_latency_increase_pct": self.max_latency_increase_pct,
            "latency_batch_sizes": list(self.latency_batch_sizes),
            "latency_noise_ms": self.latency_noise_ms,
        }
        if self.min_accuracy is not None:
            out["min_accuracy"] = self.min_accuracy
        if self.max_bytes_ratio is not None:
            out["max_bytes_ratio"] = self.max_bytes_ratio
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "gate policy") -> GatePolicy:
        """A policy from parsed TOML/JSON; unknown keys and wrong types are errors naming the key."""
        if not isinstance(data, Mapping):
            raise GatePolicyError(f"{source}: expected a table of gate settings, got {type(data).__name__}")
        body: Any = data.get("gates", data) if set(data) <= {"gates"} else data
        if not isinstance(body, Mapping):
            raise GatePolicyError(f"{source}: [gates] must be a table, got {type(body).__name__}")
        allowed = sorted(f.name for f in cls.__dataclass_fields__.values())
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise GatePolicyError(f"{source}: unknown keys {unknown}: expected some of {allowed}")
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "latency_batch_sizes":
                if not isinstance(value, list | tuple):
                    raise GatePolicyError(
                        f"{source}: latency_batch_sizes must be a list of positive integers, got {value!r}"
                    )
                values[key] = tuple(value)
            else:
                values[key] = value
        try:
            return cls(**values)
        except GatePolicyError as e:
            raise GatePolicyError(f"{source}: {e}") from None

    @classmethod
    def parse(cls, text: str, *, fmt: str, source: str = "gate policy") -> GatePolicy:
        """Parse TOML (``fmt="toml"``) or JSON (``fmt="json"``) text."""
        try:
            if fmt == "toml":
                data: Any = tomllib.loads(text)
            elif fmt == "json":
                data = json.loads(text)
            else:
                raise GatePolicyError(f"{source}: format must be 'toml' or 'json', got {fmt!r}")
        except tomllib.TOMLDecodeError as e:
            raise GatePolicyError(f"{source} is not valid TOML: {e}") from e
        except json.JSONDecodeError as e:
            raise GatePolicyError(f"{source} is not valid JSON: {e}") from e
        return cls.from_mapping(data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GatePolicy:
        """Read a policy file; ``.json`` files are JSON, anything else TOML."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise GatePolicyError(f"cannot read gate policy {file}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise GatePolicyError(f"gate policy {file} is not UTF-8 text: {e}") from e
        return cls.parse(text, fmt="json" if file.suffix.lower() == ".json" else "toml", source=str(file))


@dataclass(frozen=True)
class Measured:
    """The figures a gate reads: accuracy in [0, 1], bytes, median latency (ms) by batch size."""

    accuracy: float
    bytes: int
    latency_ms: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    """Whether a variant is published, and why not when it is not."""

    variant: str
    passed: bool
    reasons: tuple[str, ...]
    checks: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "checks": self.checks}


def judge(
    variant: str,
    measured: Measured,
    *,
    reference: Measured,
    latency_baseline: Measured | None,
    policy: GatePolicy,
) -> GateDecision:
    """Judge one variant. ``latency_baseline`` is None for a runtime's own fp32 baseline."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    drop = (reference.accuracy - measured.accuracy) * 100.0
    checks["accuracy_drop_points"] = round(drop, 4)
    if not math.isfinite(measured.accuracy) or drop > policy.max_accuracy_drop_points + 1e-9:
        reasons.append(
            f"accuracy {measured.accuracy:.4f} is {drop:.2f} points below fp32's {reference.accuracy:.4f}: "
            f"expected a drop of at most {policy.max_accuracy_drop_points:g}"
        )
    if policy.min_accuracy is not None and measured.accuracy < policy.min_accuracy:
        reasons.append(f"accuracy {measured.accuracy:.4f} is below the floor {policy.min_accuracy:g}")
    if policy.max_bytes_ratio is not None and reference.bytes > 0:
        ratio = measured.bytes / reference.bytes
        checks["bytes_ratio"] = round(ratio, 4)
        if ratio > policy.max_bytes_ratio:
            reasons.append(
                f"{measured.bytes} bytes is {ratio:.2f}x fp32's {reference.bytes}: "
                f"expected at most {policy.max_bytes_ratio:g}x"
            )
    if latency_baseline is not None:
        limit = 1.0 + policy.max_latency_increase_pct / 100.0
        for batch in policy.latency_batch_sizes:
            base = latency_baseline.latency_ms.get(batch)
            mine = measured.latency_ms.get(batch)
            if base is None or mine is None:
                reasons.append(f"latency at batch {batch} was not measured: expected it for the gate")
                continue
            ratio = mine / base if base > 0 else math.inf
            checks[f"latency_ratio_b{batch}"] = round(ratio, 4)
            if ratio > limit and mine - base > policy.latency_noise_ms:
                reasons.append(
                    f"latency at batch {batch} is {mine:.4g} ms, {ratio:.2f}x the same runtime's fp32 "
                    f"{base:.4g} ms: expected at most {limit:.2f}x"
                )
    return GateDecision(variant=variant, passed=not reasons, reasons=tuple(reasons), checks=checks)


def _check_number(key: str, value: object, *, minimum: float, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GatePolicyError(f"{key} must be a number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise GatePolicyError(f"{key} must be {bound}, got {value!r}")
