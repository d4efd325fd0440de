"""Gates: a stage's figures judged against the plan's thresholds.

Each gate turns :class:`StageFigures` into one value and passes while that value
is at or below the plan's threshold. A value that cannot be computed yet (no
device has reported, no latency on the previous version) is *not judged*: it
neither passes a stage on its own nor fails it. Built-in gates are keyed by the
fields of ``plan.Gates``; other gates (drift scores) join with :func:`register_gate`
and take their thresholds from the same ``gates:`` mapping of the plan. Pure: the
figures are read elsewhere (``figures.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from cloud.rollouts.plan import Gates

__all__ = [
    "BUILTIN_KEYS",
    "Gate",
    "GateResult",
    "Outcome",
    "StageFigures",
    "Verdict",
    "custom_keys",
    "judge_all",
    "register_gate",
    "registered",
    "unregister_gate",
]

Outcome = Literal["pass", "fail", "insufficient"]


@dataclass(frozen=True)
class StageFigures:
    """What the devices of one stage did with the target (counts of devices unless said otherwise)."""

    devices: int = 0  # offered the target in this stage
    updated: int = 0  # committed the target
    failed: int = 0  # the update failed before the swap
    rolled_back: int = 0  # tried the target and went back to their previous version
    offline: int = 0  # offered, and offline now
    reporting: int = 0  # with an outcome for the target (committed, rolled back, failed) or telemetry on it
    requests: int = 0  # inference requests served by the target (all devices' reports added up)
    errors: int = 0  # of those, failed ones
    # Errors per request, combined from each device's own rate so that no device sways it alone
    # (cloud.rollouts.robust); None: errors / requests (figures not read from the database).
    error_rate: float | None = None
    rate_devices: int = 0  # devices whose requests error_rate was combined from
    p95_ms: float | None = None  # p95 latency on the target (per device, then combined robustly)
    baseline_p95_ms: float | None = None  # p95 latency of the previous version on the same devices
    # Figures of registered gates, by gate key (e.g. a drift score).
    extra: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None  # None: not judged (nothing to compute it from yet)
    threshold: float
    passed: bool
    detail: str  # a sentence naming the value and the threshold

    @property
    def judged(self) -> bool:
        return self.value is not None


class Gate(Protocol):
    """A gate: ``judge`` passes while its value is at or below ``threshold``."""

    @property
    def key(self) -> str: ...

    def judge(self, figures: StageFigures, threshold: float) -> GateResult: ...


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    results: list[GateResult]
    failed: list[GateResult]  # the gates that decided a "fail"; empty otherwise
    detail: str


def _num(value: float) -> str:
    return f"{value:.4g}"


def _pct(part: int, whole: int) -> float | None:
    return None if whole <= 0 else 100.0 * part / whole


def _result(
    key: str, label: str, value: float | None, threshold: float, *, unit: str, why: str
) -> GateResult:
    """``why`` explains the value when it is judged, and why it is not otherwise."""
    if value is None:
        return GateResult(key, None, threshold, True, f"{label} not judged: {why}")
    passed = value <= threshold
    verdict = "within" if passed else "above"
    detail = f"{label} {_num(value)}{unit} ({why}) is {verdict} the threshold {_num(threshold)}{unit}"
    return GateResult(key, value, threshold, passed, detail)


@dataclass(frozen=True)
class _ShareGate:
    """A percentage of devices: ``part`` out of ``whole``."""

    key: str
    label: str
    part: Callable[[StageFigures], int]
    whole: Callable[[StageFigures], int]
    of_whom: str  # names the whole, e.g. "reporting devices"

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        part, whole = self.part(figures), self.whole(figures)
        why = f"{part} of {whole} {self.of_whom}" if whole > 0 else f"no {self.of_whom} yet"
        return _result(self.key, self.label, _pct(part, whole), threshold, unit="%", why=why)


class _ErrorRateGate:
    key = "max_error_rate"

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        if figures.requests <= 0:
            return _result(
                self.key, "error rate", None, threshold, unit="", why="no request served by the target yet"
            )
        if figures.error_rate is None:
            value = figures.errors / figures.requests
            why = f"{figures.errors} errors in {figures.requests} requests"
        else:
            value = figures.error_rate
            why = (
                f"trimmed mean of {figures.rate_devices} devices' rates; "
                f"{figures.errors} errors in {figures.requests} requests in all"
            )
        return _result(self.key, "error rate", value, threshold, unit="", why=why)


class _LatencyRatioGate:
    key = "max_latency_ratio"

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        label = "p95 latency ratio"
        if figures.p95_ms is None:
            return _result(
                self.key, label, None, threshold, unit="x", why="no latency reported on the target yet"
            )
        if figures.baseline_p95_ms is None or figures.baseline_p95_ms <= 0:
            return _result(
                self.key,
                label,
                None,
                threshold,
                unit="x",
                why="no latency of the previous version to compare",
            )
        value = figures.p95_ms / figures.baseline_p95_ms
        why = f"{_num(figures.p95_ms)} ms on the target, {_num(figures.baseline_p95_ms)} ms before"
        return _result(self.key, label, value, threshold, unit="x", why=why)


BUILTIN_KEYS: Final = (
    "max_update_failure_pct",
    "max_rollback_pct",
    "max_error_rate",
    "max_latency_ratio",
    "max_offline_pct",
)
# Devices that went dark after an update report nothing: waiting for reports must not hide them.
_JUDGED_WITHOUT_REPORTS: Final = frozenset({"max_offline_pct"})
_KEY: Final = re.compile(r"[a-z][a-z0-9_]*")

_registry: dict[str, Gate] = {
    "max_update_failure_pct": _ShareGate(
        "max_update_failure_pct",
        "update failure",
        lambda f: f.failed,
        lambda f: f.reporting,
        "reporting devices",
    ),
    "max_rollback_pct": _ShareGate(
        "max_rollback_pct", "rollbacks", lambda f: f.rolled_back, lambda f: f.reporting, "reporting devices"
    ),
    "max_error_rate": _ErrorRateGate(),
    "max_latency_ratio": _LatencyRatioGate(),
    "max_offline_pct": _ShareGate(
        "max_offline_pct", "offline", lambda f: f.offline, lambda f: f.devices, "offered devices"
    ),
}


def register_gate(key: str, gate: Gate, *, replace: bool = False) -> None:
    """Make ``gate`` judge every stage whose plan gives ``key`` a threshold under ``gates:``.

    Raises:
        ValueError: ``key`` is not a lower-case identifier, is not ``gate.key``, or is taken
            (pass ``replace=True`` to swap a gate, e.g. in tests).
    """
    if not _KEY.fullmatch(key) or key == "min_reporting":
        raise ValueError(f"gate key: expected a lower-case identifier other than min_reporting, got {key!r}")
    if gate.key != key:
        raise ValueError(f"gate key: expected the gate's own key {gate.key!r}, got {key!r}")
    if key in _registry and not replace:
        raise ValueError(f"gate key: expected a key not registered yet, got {key!r}")
    _registry[key] = gate


def unregister_gate(key: str) -> None:
    """Forget a registered gate; built-in gates stay."""
    if key in BUILTIN_KEYS:
        raise ValueError(f"gate key: expected a registered (not built-in) gate, got {key!r}")
    _registry.pop(key, None)


def registered() -> Mapping[str, Gate]:
    """Every gate by key: the built-ins first, then registered ones in the order they came."""
    return dict(_registry)


def custom_keys() -> list[str]:
    """Keys of registered gates that are not built in (the plan accepts them under ``gates:``)."""
    return [key for key in _registry if key not in BUILTIN_KEYS]


def judge_all(figures: StageFigures, gates: Gates) -> Verdict:
    """Judge every gate the plan turns on.

    ``insufficient`` while fewer devices report than ``min_reporting`` (capped at the
    stage's size, so a small stage can finish), unless a gate that needs no reports
    (offline devices) already fails; ``fail`` when a judged gate is above its threshold;
    ``pass`` otherwise.
    """
    results = []
    for key, gate in _registry.items():
        threshold = gates.threshold(key)
        if threshold is not None:
            results.append(gate.judge(figures, threshold))
    failed = [result for result in results if not result.passed]
    required = min(gates.min_reporting, figures.devices)
    if figures.reporting < required:
        failed = [result for result in failed if result.gate in _JUDGED_WITHOUT_REPORTS]
        if not failed:
            detail = f"{figures.reporting} of the {required} devices needed have reported"
            return Verdict("insufficient", results, [], detail)
    if failed:
        return Verdict("fail", results, failed, "; ".join(result.detail for result in failed))
    judged = sum(result.judged for result in results)
    detail = f"{judged} of {len(results)} gates judged, all within their thresholds"
    return Verdict("pass", results, [], detail)
