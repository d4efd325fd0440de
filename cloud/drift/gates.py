"""Rollout gates on drift and labelled accuracy: ``drift_score`` and ``accuracy_drop``.

Both are registered with ``cloud.rollouts.gates`` on import (``cloud.rollouts.figures`` imports
this module, so every process that judges a stage has them) and take their thresholds from the
plan's ``gates:`` mapping; a plan that names neither never pays for them.

- ``drift_score``: the stage's devices' sketches of the target version, merged, against the
  target's bundle profile. The value is the worst feature's KS statistic over its threshold
  (``cloud.drift.stats.ks_test``): 1 is the edge of significance at the configured alpha. The
  gate passes while the value is at or below the plan's threshold.
- ``accuracy_drop``: percentage points by which the stage's labelled accuracy on the target lies
  below the reference: the same devices' labelled accuracy on the versions they ran before (over
  ``LABEL_LOOKBACK`` before the stage's first offer on), or, with fewer than ``MIN_LABELS`` of those,
  the held-out accuracy the target's bundle records. Not judged below ``MIN_LABELS`` labels on
  the target: a handful of labels says little.

The figures come from raw ``SketchRecord`` rows. A stage's sketches are read incrementally: the
rows already merged are remembered by id per (database, rollout, stage), so each engine tick
parses only the rows that arrived since the last one (ids, not times: a row committed late with
a smaller id is still picked up).

The hub hands this module its baseline source and the drift alpha once at start
(:func:`configure`); until then ``drift_score`` is not judged, since the profile lives in the
artifact store, which a database session cannot reach.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from google.protobuf.message import DecodeError
from sqlalchemy import Subquery
from sqlmodel import Session, col, select

from cloud.drift.baseline import BaselineSource, baseline_accuracy
from cloud.drift.stats import LabelTally, ks_test, load_sketch
from cloud.models import Rollout
from cloud.rollouts.gates import GateResult, StageFigures, register_gate, registered
from cloud.telemetry.merge import SketchMergeError, SketchMerger
from cloud.telemetry.tables import SketchRecord
from edgefleet_proto.v1 import sketch_pb2

__all__ = [
    "ACCURACY_DROP",
    "DRIFT_FEATURE_PREFIX",
    "DRIFT_SCORE",
    "LABEL_LOOKBACK",
    "MIN_LABELS",
    "AccuracyDropGate",
    "DriftScoreGate",
    "configure",
    "forget",
    "stage_extra",
]

log = logging.getLogger(__name__)

DRIFT_SCORE: Final = "drift_score"
ACCURACY_DROP: Final = "accuracy_drop"
# Each feature's KS score rides along in the figures as "drift_score:<feature>".
DRIFT_FEATURE_PREFIX: Final = "drift_score:"
# Fewer labels than this on the target leave accuracy_drop not judged; fewer on the previous
# versions send the comparison to the bundle's held-out accuracy. At 200 labels the standard
# error of an accuracy near 90% is about 2 points.
MIN_LABELS: Final = 200
# How far before the stage's first offer labels of the previous versions count as the reference.
LABEL_LOOKBACK: Final = timedelta(hours=24)
_DEFAULT_ALPHA: Final = 0.01
# Stages remembered at once (each holds one merged window and a set of row ids).
_MAX_STAGES: Final = 64
_ROWS_PER_READ: Final = 500


def _num(value: float) -> str:
    return f"{value:.4g}"


def _verdict(key: str, label: str, value: float, threshold: float, *, unit: str, why: str) -> GateResult:
    passed = value <= threshold
    word = "within" if passed else "above"
    detail = f"{label} {_num(value)}{unit} ({why}) is {word} the threshold {_num(threshold)}{unit}"
    return GateResult(key, value, threshold, passed, detail)


@dataclass(frozen=True)
class DriftScoreGate:
    """Passes while the worst feature's KS statistic over its threshold is at most the plan's."""

    key: str = DRIFT_SCORE

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        extra = figures.extra
        samples = int(extra.get("drift_samples", 0))
        score = extra.get(DRIFT_SCORE)
        if score is None:
            why = (
                "no sketch of the target from the stage's devices yet"
                if samples <= 0
                else f"no baseline profile of the target to compare {samples} sketched predictions with"
            )
            return GateResult(self.key, None, threshold, True, f"drift score not judged: {why}")
        features = {
            k[len(DRIFT_FEATURE_PREFIX) :]: v for k, v in extra.items() if k.startswith(DRIFT_FEATURE_PREFIX)
        }
        worst = max(features, key=lambda name: features[name]) if features else None
        why = f"{samples} predictions sketched" + (f", worst feature {worst!r}" if worst is not None else "")
        return _verdict(self.key, "drift score", score, threshold, unit="", why=why)


@dataclass(frozen=True)
class AccuracyDropGate:
    """Passes while labelled accuracy on the target is at most the plan's points below the reference."""

    key: str = ACCURACY_DROP
    min_labels: int = MIN_LABELS

    def judge(self, figures: StageFigures, threshold: float) -> GateResult:
        extra = figures.extra
        labelled = int(extra.get("accuracy_labelled", 0))
        drop = extra.get(ACCURACY_DROP)
        if labelled < self.min_labels:
            why = f"{labelled} labelled predictions on the target, {self.min_labels} needed"
            return GateResult(self.key, None, threshold, True, f"accuracy drop not judged: {why}")
        if drop is None:
            why = "no labelled accuracy of the previous version and no held-out accuracy in the bundle"
            return GateResult(self.key, None, threshold, True, f"accuracy drop not judged: {why}")
        target, reference = extra["accuracy_target"], extra["accuracy_reference"]
        before = int(extra.get("accuracy_reference_labelled", 0))
        source = f"{before} labels before" if before > 0 else "held out in the bundle"
        why = f"{_num(target)}% on {labelled} labels, {_num(reference)}% {source}"
        return _verdict(self.key, "accuracy drop", drop, threshold, unit=" points", why=why)


for _gate in (DriftScoreGate(), AccuracyDropGate()):
    if _gate.key not in registered():
        register_gate(_gate.key, _gate)


# --- figures -------------------------------------------------------------------------------------


@dataclass
class _Settings:
    baseline: BaselineSource | None = None
    alpha: float = _DEFAULT_ALPHA


_settings = _Settings()


def configure(baseline: BaselineSource | None, *, alpha: float = _DEFAULT_ALPHA) -> None:
    """Where the gates find bundle profiles, and the KS test's significance level (``drift_alpha``)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a significance level in (0, 1), got {alpha!r}")
    _settings.baseline = baseline
    _settings.alpha = alpha


@dataclass
class _Stage:
    """What one stage's rows added up to so far."""

    merger: SketchMerger = field(default_factory=SketchMerger)
    seen: set[int] = field(default_factory=set)
    target: LabelTally = field(default_factory=LabelTally)
    before: LabelTally = field(default_factory=LabelTally)
    lock: threading.Lock = field(default_factory=threading.Lock)


_stages: OrderedDict[tuple[str, str, int | None, str], _Stage] = OrderedDict()
_stages_lock = threading.Lock()


def forget() -> None:
    """Drop every remembered stage (the next figures re-read their rows)."""
    with _stages_lock:
        _stages.clear()


def _stage(session: Session, rollout: Rollout, stage: int | None) -> _Stage:
    key = (str(session.get_bind().engine.url), rollout.id, stage, rollout.target_version)
    with _stages_lock:
        found = _stages.get(key)
        if found is None:
            found = _stages[key] = _Stage()
        _stages.move_to_end(key)
        while len(_stages) > _MAX_STAGES:
            _stages.popitem(last=False)
        return found


def _wanted(plan: Mapping[str, object]) -> set[str]:
    gates = plan.get("gates")
    if not isinstance(gates, Mapping):
        return set()
    return {key for key in (DRIFT_SCORE, ACCURACY_DROP) if gates.get(key) is not None}


def stage_extra(
    session: Session,
    rollout: Rollout,
    stage: int | None,
    offered: Subquery,
    *,
    first_offer: datetime,
    now: datetime,
) -> dict[str, float]:
    """The figures of the drift and accuracy gates the rollout's plan turns on (empty: none)."""
    wanted = _wanted(rollout.plan)
    if rollout.target_kind != "model" or not wanted:
        return {}
    state = _stage(session, rollout, stage)
    with state.lock:
        _read_new(session, rollout, offered, state, since=first_offer - LABEL_LOOKBACK, now=now)
        extra: dict[str, float] = {}
        if DRIFT_SCORE in wanted:
            extra.update(_drift(session, rollout, state))
        if ACCURACY_DROP in wanted:
            extra.update(_accuracy(session, rollout, state))
        return extra


def _read_new(
    session: Session, rollout: Rollout, offered: Subquery, state: _Stage, *, since: datetime, now: datetime
) -> None:
    rows = session.exec(
        select(
            col(SketchRecord.id),
            col(SketchRecord.model_version),
            col(SketchRecord.window_end),
            offered.c.offered_at,
        )
        .join(offered, col(SketchRecord.device_id) == offered.c.device_id)
        .where(
            SketchRecord.model_name == rollout.target_name,
            col(SketchRecord.window_end) >= since,
            col(SketchRecord.window_end) <= now,
        )
    ).all()
    new: dict[int, tuple[str, bool]] = {}
    for row_id, version, end, offered_at in rows:
        if row_id is not None and row_id not in state.seen:
            new[row_id] = (version, end >= offered_at)
    ids = sorted(new)
    for start in range(0, len(ids), _ROWS_PER_READ):
        chunk = ids[start : start + _ROWS_PER_READ]
        payloads = session.exec(
            select(col(SketchRecord.id), col(SketchRecord.payload)).where(col(SketchRecord.id).in_(chunk))
        ).all()
        for found_id, payload in payloads:
            assert found_id is not None  # a primary key read back
            version, after_offer = new[found_id]
            on_target = after_offer and version == rollout.target_version
            _add(rollout, state, found_id, payload, on_target=on_target)
        state.seen.update(chunk)


def _add(rollout: Rollout, state: _Stage, row_id: int, payload: bytes, *, on_target: bool) -> None:
    try:
        window = sketch_pb2.SketchWindow.FromString(payload)
        if on_target:
            state.merger.add(window)
    except (DecodeError, SketchMergeError) as e:
        log.warning("rollout %s: sketch row %d left out of the gates' figures: %s", rollout.id, row_id, e)
        return
    for labels in window.labels:
        if labels.model_version == rollout.target_version:
            state.target.add(labels)
        elif labels.model_version:
            state.before.add(labels)


def _drift(session: Session, rollout: Rollout, state: _Stage) -> dict[str, float]:
    merged = state.merger.result()
    found: dict[str, float] = {"drift_samples": float(merged.samples)}
    source = _settings.baseline
    profile = source.profile(rollout.target_name, rollout.target_version, session=session) if source else None
    if profile is None or merged.samples <= 0:
        return found
    reference = {f.name: f.kll_floats for f in profile.features if f.kll_floats}
    for feature in merged.features:
        against = reference.get(feature.name)
        if against is None or not feature.kll_floats:
            continue
        observed, expected = load_sketch(feature.kll_floats), load_sketch(against)
        if observed.is_empty() or expected.is_empty():
            continue
        found[DRIFT_FEATURE_PREFIX + feature.name] = ks_test(observed, expected, alpha=_settings.alpha).score
    scores = [v for k, v in found.items() if k.startswith(DRIFT_FEATURE_PREFIX)]
    if scores:
        found[DRIFT_SCORE] = max(scores)
    return found


def _accuracy(session: Session, rollout: Rollout, state: _Stage) -> dict[str, float]:
    target = state.target.accuracy
    found: dict[str, float] = {"accuracy_labelled": float(state.target.total)}
    if target is None:
        return found
    reference = state.before.accuracy if state.before.total >= MIN_LABELS else None
    before = state.before.total if reference is not None else 0
    if reference is None:
        reference = baseline_accuracy(session, rollout.target_name, rollout.target_version)
    found["accuracy_target"] = 100.0 * target
    if reference is not None:
        found["accuracy_reference"] = 100.0 * reference
        found["accuracy_reference_labelled"] = float(before)
        found[ACCURACY_DROP] = 100.0 * (reference - target)
    return found
