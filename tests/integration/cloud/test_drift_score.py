"""Scoring cohort rollups on SQLite and on the real PostgreSQL: drift, labels, idempotent upserts."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlmodel import select

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory
from cloud.drift import report
from cloud.drift.baseline import BaselineSource
from cloud.drift.score import score
from cloud.drift.tables import CohortMetric
from cloud.telemetry.tables import CohortRollup
from edgefleet_proto.v1 import sketch_pb2
from tests.unit.cloud.helpers import T0
from tests.unit.cloud.sketches import add_bundle, labels, normal, profile, window

pytestmark = pytest.mark.integration

FLEET = "unit"
MODEL, VERSION = "digits", "2"
CALM, SHIFTED = 1, 2
N = 20_000
BUCKET = T0.replace(minute=0, second=0, microsecond=0)
EARLIER = BUCKET - timedelta(minutes=5)
ALPHA = 0.01
Key = tuple[int, str, str, datetime]


def rollup(
    cohort: int,
    bucket: datetime,
    sketch: sketch_pb2.SketchWindow | bytes,
    *,
    version: str = VERSION,
    requests: int = 0,
    errors: int = 0,
    p95_ms: float | None = None,
) -> CohortRollup:
    data = sketch if isinstance(sketch, bytes) else sketch.SerializeToString()
    samples = 0 if isinstance(sketch, bytes) else sketch.samples
    return CohortRollup(
        fleet=FLEET,
        cohort_id=cohort,
        model_name=MODEL,
        model_version=version,
        bucket_start=bucket,
        bucket_s=300,
        samples=samples,
        sketch=data,
        requests=requests,
        errors=errors,
        p95_ms=p95_ms,
    )


def seen(seed: int, *, shift: float = 0.0, **extra: object) -> sketch_pb2.SketchWindow:
    """What a cohort's devices sketched: f0 (shifted by ``shift`` sigma), f1, and f2 that sketched nothing."""
    return window(
        model=MODEL,
        version=VERSION,
        features={"f0": normal(seed, N, shift), "f1": normal(seed + 1, N), "f2": None},
        class_counts=[N // 2, N // 2],
        confidence=np.linspace(0.5, 1.0, 101),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def baseline(sessions: SessionFactory, store: ArtifactStore) -> BaselineSource:
    data = profile(
        model=MODEL,
        version=VERSION,
        features={"f0": normal(100, N), "f1": normal(101, N), "f2": normal(102, N)},
        class_distribution=[0.5, 0.5],
        class_names=["cat", "dog"],
    )
    with sessions() as s:
        add_bundle(s, store, data, metrics={"fp32_test_accuracy": 0.9})
    return BaselineSource(sessions, store)


@pytest.fixture
def rollups(sessions: SessionFactory) -> list[Key]:
    calm_labels = [labels(VERSION, {(0, 0): 90, (0, 1): 10, (1, 1): 80, (1, 0): 20})]
    with sessions() as s:
        s.add(rollup(CALM, EARLIER, seen(1)))
        s.add(rollup(SHIFTED, EARLIER, seen(3)))
        s.add(rollup(CALM, BUCKET, seen(5, label_counts=calm_labels), requests=1000, errors=10, p95_ms=12.5))
        s.add(rollup(SHIFTED, BUCKET, seen(7, shift=1.0), requests=0))
        # Labels of version 1 arrive in a window of version 2 (the label came after the swap).
        late = window(
            model=MODEL, version="1", features={}, label_counts=[labels("1", {(0, 0): 3, (1, 0): 1})]
        )
        s.add(rollup(CALM, BUCKET, late, version="1"))
        s.commit()
    return [(CALM, MODEL, VERSION, BUCKET), (SHIFTED, MODEL, VERSION, BUCKET)]


def metrics(sessions: SessionFactory, **where: object) -> dict[tuple[str, str, str], CohortMetric]:
    with sessions() as s:
        query = select(CohortMetric)
        for name, value in where.items():
            query = query.where(getattr(CohortMetric, name) == value)
        return {(m.metric, m.feature, m.reference): m for m in s.exec(query).all()}


def test_only_the_shifted_cohort_and_feature_drift(
    sessions: SessionFactory, baseline: BaselineSource, rollups: list[Key]
) -> None:
    written = score(sessions, fleet=FLEET, keys=rollups, alpha=ALPHA, now=T0, baseline=baseline)
    assert written > 0
    calm = metrics(sessions, cohort_id=CALM, model_version=VERSION, bucket_start=BUCKET)
    shifted = metrics(sessions, cohort_id=SHIFTED, model_version=VERSION, bucket_start=BUCKET)
    for reference in ("baseline", "previous"):
        assert shifted[("drift_ks", "f0", reference)].drifted
        assert shifted[("drift_score", "", reference)].drifted
        assert shifted[("drift_score", "", reference)].value > 1.0
        assert not shifted[("drift_ks", "f1", reference)].drifted
        assert calm[("drift_score", "", reference)].value < 1.0
    assert [key for key, m in calm.items() if m.drifted] == []
    assert {key for key, m in shifted.items() if m.drifted} == {
        ("drift_ks", "f0", "baseline"),
        ("drift_ks", "f0", "previous"),
        ("drift_psi", "f0", "baseline"),
        ("drift_psi", "f0", "previous"),
        ("drift_score", "", "baseline"),
        ("drift_score", "", "previous"),
    }
    ks = shifted[("drift_ks", "f0", "baseline")]
    assert ks.n == N and ks.threshold is not None and ks.value > ks.threshold
    assert shifted[("drift_psi", "f0", "baseline")].value > calm[("drift_psi", "f0", "baseline")].value
    assert shifted[("drift_wasserstein", "f0", "baseline")].value == pytest.approx(1.0, abs=0.1)
    # f2 sketched nothing: it is left out, not scored as "no drift".
    assert not any(feature == "f2" for _, feature, _ in calm | shifted)
    # Predictions split as the profile says: no prediction drift.
    assert calm[("prediction_psi", "", "baseline")].value == pytest.approx(0.0, abs=1e-9)
    assert calm[("prediction_js", "", "previous")].n == N
    assert calm[("confidence_p50", "", "")].value == pytest.approx(0.75, abs=0.01)


def test_telemetry_accuracy_and_recall(
    sessions: SessionFactory, baseline: BaselineSource, rollups: list[Key]
) -> None:
    score(sessions, fleet=FLEET, keys=rollups, alpha=ALPHA, now=T0, baseline=baseline)
    calm = metrics(sessions, cohort_id=CALM, model_version=VERSION, bucket_start=BUCKET)
    assert calm[("requests", "", "")].value == 1000
    assert calm[("error_rate", "", "")].value == pytest.approx(0.01)
    assert calm[("p95_ms", "", "")].value == 12.5
    accuracy = calm[("accuracy", "", "")]
    assert accuracy.value == pytest.approx(0.85)
    assert accuracy.n == 200
    assert calm[("labelled", "", "")].value == 200
    # Recall is named by the profile's class names.
    assert calm[("recall", "cat", "")].value == pytest.approx(0.9)
    assert calm[("recall", "dog", "")].value == pytest.approx(0.8)
    # The late labels of version 1 are scored for version 1 (which has no profile: classes by id).
    older = metrics(sessions, cohort_id=CALM, model_version="1", bucket_start=BUCKET)
    assert older[("accuracy", "", "")].value == pytest.approx(0.75)
    assert older[("recall", "0", "")].value == 1.0
    # No request served: no error rate, but the zero is kept.
    shifted = metrics(sessions, cohort_id=SHIFTED, model_version=VERSION, bucket_start=BUCKET)
    assert shifted[("requests", "", "")].value == 0
    assert ("error_rate", "", "") not in shifted
    assert ("accuracy", "", "") not in shifted


def test_scoring_again_rewrites_the_same_rows(
    sessions: SessionFactory, baseline: BaselineSource, rollups: list[Key]
) -> None:
    def every_row() -> dict[tuple[object, ...], CohortMetric]:
        with sessions() as s:
            rows = s.exec(select(CohortMetric)).all()
        return {
            (m.cohort_id, m.model_version, m.bucket_start, m.metric, m.feature, m.reference): m for m in rows
        }

    first = score(sessions, fleet=FLEET, keys=rollups, alpha=ALPHA, now=T0, baseline=baseline)
    before = {k: (m.id, m.value, m.drifted) for k, m in every_row().items()}
    assert len(before) == first
    later = T0 + timedelta(minutes=1)
    again = score(sessions, fleet=FLEET, keys=rollups + rollups, alpha=ALPHA, now=later, baseline=baseline)
    assert again == first
    after = every_row()
    assert {k: (m.id, m.value, m.drifted) for k, m in after.items()} == before
    assert {m.computed_at for m in after.values()} == {later}


def test_a_broken_rollup_is_skipped_and_the_others_scored(
    sessions: SessionFactory, baseline: BaselineSource, rollups: list[Key]
) -> None:
    broken = T0 + timedelta(hours=1)
    with sessions() as s:
        s.add(rollup(CALM, broken, b"\xff\xff not a window"))
        s.commit()
    keys = [(CALM, MODEL, VERSION, broken), *rollups, (9, MODEL, VERSION, BUCKET)]  # 9: no such rollup
    written = score(sessions, fleet=FLEET, keys=keys, alpha=ALPHA, now=T0, baseline=baseline)
    assert written == score(sessions, fleet=FLEET, keys=rollups, alpha=ALPHA, now=T0, baseline=baseline)
    assert metrics(sessions, bucket_start=broken) == {}


def test_without_a_bundle_profile_only_the_previous_bucket_is_a_reference(
    sessions: SessionFactory, store: ArtifactStore, rollups: list[Key]
) -> None:
    score(sessions, fleet=FLEET, keys=rollups, alpha=ALPHA, now=T0, baseline=BaselineSource(sessions, store))
    shifted = metrics(sessions, cohort_id=SHIFTED, bucket_start=BUCKET)
    assert {ref for _, _, ref in shifted} == {"previous", ""}
    assert shifted[("drift_score", "", "previous")].drifted


def test_reports_read_the_latest_values_and_series(
    sessions: SessionFactory, baseline: BaselineSource, rollups: list[Key]
) -> None:
    earlier = [(CALM, MODEL, VERSION, EARLIER), (SHIFTED, MODEL, VERSION, EARLIER)]
    score(sessions, fleet=FLEET, keys=earlier + rollups, alpha=ALPHA, now=T0, baseline=baseline)
    with sessions() as s:
        newest = report.latest(s, fleet=FLEET, cohort_id=SHIFTED)
        assert {p.bucket_start for p in newest} == {BUCKET}
        worst = [p for p in newest if p.metric == "drift_score" and p.reference == "baseline"]
        assert len(worst) == 1 and worst[0].drifted
        assert report.latest(s, fleet="another") == []
        lines = report.series(
            s,
            fleet=FLEET,
            metric="drift_ks",
            cohort_id=SHIFTED,
            model_name=MODEL,
            since=EARLIER,
            reference="baseline",
        )
    assert [(line.feature, [p.bucket_start for p in line.points]) for line in lines] == [
        ("f0", [EARLIER, BUCKET]),
        ("f1", [EARLIER, BUCKET]),
    ]
    f0 = lines[0].points
    assert not f0[0].drifted and f0[1].drifted


def test_the_baseline_source_reads_bundles_and_survives_a_missing_profile(
    sessions: SessionFactory, store: ArtifactStore, baseline: BaselineSource
) -> None:
    found = baseline.profile(MODEL, VERSION)
    assert found is not None and [f.name for f in found.features] == ["f0", "f1", "f2"]
    assert baseline.profile(MODEL, VERSION) is found, "parsed once, then kept"
    assert baseline.accuracy(MODEL, VERSION) == 0.9
    with sessions() as s:
        assert baseline.profile(MODEL, "9", session=s) is None
        assert baseline.accuracy(MODEL, "9", session=s) is None
    # A version whose profile file went missing from the store has no baseline (and says so in the log).
    orphan = profile(
        model=MODEL, version="3", features={"f0": normal(1, 10)}, class_distribution=[1.0], class_names=["a"]
    )
    with sessions() as s:
        add_bundle(s, store, orphan)
    store.delete(hashlib.sha256(orphan.SerializeToString(deterministic=True)).hexdigest())
    assert BaselineSource(sessions, store).profile(MODEL, "3") is None
