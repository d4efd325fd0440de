"""The drift report API: the newest scores per cohort and version, series, cohort names and auth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.drift.tables import CohortMetric
from cloud.models import Cohort, Role
from cloud.services import tokens
from tests.unit.cloud.helpers import T0


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


def _metric(fleet: str, cohort_id: int, bucket: int, metric: str, value: float, **kw: object) -> CohortMetric:
    return CohortMetric(
        fleet=fleet,
        cohort_id=cohort_id,
        model_name="digits",
        model_version="1.0.0",
        bucket_start=T0 + timedelta(minutes=5 * bucket),
        metric=metric,
        value=value,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def seeded(ctx: HubContext) -> dict[str, int]:
    fleet = ctx.settings.fleet
    with ctx.sessions() as s:
        eu = Cohort(fleet=fleet, name="eu", selector="region=eu")
        us = Cohort(fleet=fleet, name="us", selector="region=us")
        s.add_all([eu, us])
        s.commit()
        assert eu.id is not None and us.id is not None
        rows = [
            # An older bucket of us that must not show as the newest.
            _metric(fleet, us.id, 0, "drift_score", 0.4, reference="baseline"),
            _metric(fleet, us.id, 1, "drift_score", 2.5, reference="baseline"),
            _metric(
                fleet,
                us.id,
                1,
                "drift_ks",
                0.2,
                feature="mean",
                reference="baseline",
                threshold=0.08,
                drifted=True,
            ),
            _metric(fleet, us.id, 1, "drift_ks", 0.01, feature="std", reference="baseline", threshold=0.08),
            _metric(fleet, us.id, 1, "accuracy", 0.75, n=40),
            _metric(fleet, us.id, 1, "recall", 0.5, feature="3", n=4),
            _metric(fleet, eu.id, 1, "drift_score", 0.3, reference="baseline"),
            _metric(fleet, 0, 1, "drift_score", 1.1, reference="baseline"),
            _metric("other-fleet", 0, 1, "drift_score", 9.0, reference="baseline"),
        ]
        s.add_all(rows)
        s.commit()
        return {"eu": eu.id, "us": us.id}


def test_report_names_cohorts_and_picks_the_newest_bucket(
    client: TestClient, viewer: dict[str, str], seeded: dict[str, int]
) -> None:
    body = client.get("/api/v1/drift", headers=viewer).json()
    by_scope = {r["cohort"]: r for r in body["data"]}
    assert list(by_scope) == [None, "eu", "us"]  # the fleet first, then cohorts by name
    us = by_scope["us"]
    assert us["drift_score"] == 2.5
    assert us["drifted_features"] == ["mean"]
    assert us["accuracy"] == 0.75 and us["labelled"] == 40
    assert us["recall"] == {"3": 0.5}
    assert by_scope["eu"]["drift_score"] == 0.3 and by_scope["eu"]["accuracy"] is None
    assert by_scope[None]["drift_score"] == 1.1  # not the other fleet's 9.0


def test_report_filters_by_cohort_and_the_fleet_scope(
    client: TestClient, viewer: dict[str, str], seeded: dict[str, int]
) -> None:
    only_us = client.get("/api/v1/drift", params={"cohort": "us"}, headers=viewer).json()["data"]
    assert [r["cohort"] for r in only_us] == ["us"]
    fleet = client.get("/api/v1/drift", params={"cohort": "@fleet"}, headers=viewer).json()["data"]
    assert [r["cohort"] for r in fleet] == [None]
    missing = client.get("/api/v1/drift", params={"cohort": "nope"}, headers=viewer)
    assert missing.status_code == 404
    assert "nope" in missing.text


def test_series_in_time_order(
    client: TestClient, ctx: HubContext, viewer: dict[str, str], seeded: dict[str, int]
) -> None:
    ctx.clock = lambda: T0 + timedelta(hours=1)
    body = client.get(
        "/api/v1/drift/series",
        params={"metric": "drift_score", "model": "digits", "cohort": "us"},
        headers=viewer,
    ).json()
    assert body["count"] == 1
    assert [p["value"] for p in body["data"][0]["points"]] == [0.4, 2.5]


def test_report_needs_a_token(client: TestClient, seeded: dict[str, int]) -> None:
    assert client.get("/api/v1/drift").status_code == 401
