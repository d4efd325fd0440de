"""Telemetry series through the HTTP API: a cohort's rolled-up buckets, a device's windows in a time range.

SQLite in a temp folder; rollup rows are written as the rollup job leaves them (the job itself is
tested in test_rollup.py), windows as ingest stores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import cohorts, tokens
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.telemetry.tables import FLEET_SCOPE, CohortRollup
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import T0, FrozenClock, status, telemetry

SERIES = "/api/v1/telemetry/series"


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


def _rollup(ctx: HubContext, cohort_id: int, version: str, minutes_ago: int, requests: int) -> None:
    with ctx.sessions() as s:
        s.add(
            CohortRollup(
                fleet=ctx.settings.fleet,
                cohort_id=cohort_id,
                model_name="digits",
                model_version=version,
                bucket_start=T0 - timedelta(minutes=minutes_ago),
                bucket_s=300,
                devices=3,
                windows=9,
                requests=requests,
                errors=1,
                p95_ms=4.5,
            )
        )
        s.commit()


def test_cohort_series_is_a_series_per_version_oldest_bucket_first(
    ctx: HubContext, clock: FrozenClock, client: TestClient, viewer: dict[str, str]
) -> None:
    with ctx.sessions() as s:
        lab = cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="lab", selector="site=lab")
    assert lab.id is not None
    clock.now = T0
    for minutes_ago, requests in ((5, 50), (30, 30), (60 * 30, 1)):  # the last is over a day old
        _rollup(ctx, lab.id, "1", minutes_ago, requests)
    _rollup(ctx, lab.id, "2", 5, 7)
    _rollup(ctx, FLEET_SCOPE, "1", 5, 500)
    r = client.get(SERIES, headers=viewer, params={"cohort": "lab"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(s["cohort"], s["version"], [b["requests"] for b in s["buckets"]]) for s in body["data"]] == [
        ("lab", "1", [30, 50]),
        ("lab", "2", [7]),
    ]
    first = body["data"][0]["buckets"][0]
    assert first["bucket_s"] == 300 and first["devices"] == 3 and first["p95_ms"] == 4.5
    fleet = client.get(SERIES, headers=viewer, params={"version": "1"}).json()["data"]
    assert [(s["cohort"], [b["requests"] for b in s["buckets"]]) for s in fleet] == [(None, [500])]
    older = client.get(SERIES, headers=viewer, params={"cohort": "lab", "hours": "48", "version": "1"}).json()
    assert [b["requests"] for b in older["data"][0]["buckets"]] == [1, 30, 50]
    ranged = client.get(
        SERIES,
        headers=viewer,
        params={
            "cohort": "lab",
            "since": (T0 - timedelta(minutes=40)).isoformat(),
            "until": (T0 - timedelta(minutes=10)).isoformat(),
        },
    ).json()
    assert [b["requests"] for s in ranged["data"] for b in s["buckets"]] == [30]


def test_cohort_series_refuses_an_unknown_cohort_and_an_empty_range(
    client: TestClient, viewer: dict[str, str]
) -> None:
    r = client.get(SERIES, headers=viewer, params={"cohort": "nope"})
    assert r.status_code == 404
    assert "cohort 'nope' is not known" in r.json()["detail"]
    r = client.get(
        SERIES, headers=viewer, params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    )
    assert r.status_code == 422
    assert "is not before until" in r.json()["detail"]
    r = client.get(SERIES, headers=viewer, params={"until": "2026-01-01T00:00:00"})
    assert r.status_code == 422
    assert "until 2026-01-01T00:00:00 has no time zone" in r.json()["detail"]


def test_device_telemetry_in_a_time_range_newest_first(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev/d1"
    ingestor.ingest(
        [
            InboundMessage(f"{base}/status", status("d1").SerializeToString()),
            InboundMessage(f"{base}/telemetry", telemetry("d1", 1, 2, 3, 4).SerializeToString()),
        ]
    )
    # Window n ends at (n + 1) s after the epoch (tests.unit.cloud.helpers.telemetry).
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    path = "/api/v1/devices/d1/telemetry"
    r = client.get(
        path,
        headers=viewer,
        params={
            "since": (epoch + timedelta(seconds=3)).isoformat(),
            "until": (epoch + timedelta(seconds=5)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    assert [w["seq"] for w in r.json()["data"]] == [3, 2]
    assert [w["seq"] for w in client.get(path, headers=viewer, params={"limit": 2}).json()["data"]] == [4, 3]
    assert "cpu_percent" in r.json()["data"][0]
    naive = client.get(path, headers=viewer, params={"until": "1970-01-01T00:00:05"})
    assert naive.status_code == 422
    assert "has no time zone" in naive.json()["detail"]
