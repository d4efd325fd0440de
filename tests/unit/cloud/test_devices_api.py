"""The device listing's filters (cohort, health, last seen) and the fleet summary, through the HTTP API.

SQLite in a temp folder (the unit fixtures); devices are written as rows, as ingest leaves them,
so each test states exactly the fleet it reads. The PostgreSQL run of the cohort filter is in
tests/integration/cloud/test_devices_listing_db.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Device, DeviceState, Role
from cloud.services import cohorts, devices, labels, tokens
from tests.unit.cloud.helpers import T0

LIST = "/api/v1/devices"
SUMMARY = "/api/v1/fleet/summary"


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


def _add(
    ctx: HubContext,
    device_id: str,
    *,
    health: str = "serving",
    state: DeviceState = DeviceState.ONLINE,
    site: str = "a",
    seen: datetime = T0,
    version: str | None = "1",
    fleet: str | None = None,
) -> None:
    with ctx.sessions() as s:
        row = Device(
            id=device_id,
            fleet=fleet or ctx.settings.fleet,
            state=state,
            health=health,
            labels={"site": site},
            active_model_name="digits" if version else None,
            active_model_version=version,
            active_model_sha256="ab" * 32 if version else None,
            first_seen=seen,
            last_seen=seen,
        )
        s.add(row)
        labels.sync_labels(s, [row])
        s.commit()


def _ids(client: TestClient, headers: dict[str, str], **params: str) -> list[str]:
    r = client.get(LIST, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]]


HEALTHS = {
    "d-serving": "serving",
    "d-idle": "idle",
    "d-degraded": "degraded: checksum mismatch",
    "d-trial": "trial: digits:2 (serve, 3/200 requests)",
    "d-offline": "offline",
    "d-unknown": "",
    "d-other": "warming up",
    "d-degradedish": "degradedness",  # not "degraded: ...": a prefix alone does not make the kind
    "d-loud": "DEGRADED: loud",  # the agent writes kinds in lower case; the match is exact on every database
}


def test_health_filter_matches_the_kind_of_the_reported_text(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    for device_id, text in HEALTHS.items():
        _add(ctx, device_id, health=text)
    assert _ids(client, viewer, health="serving") == ["d-serving"]
    assert _ids(client, viewer, health="idle") == ["d-idle"]
    assert _ids(client, viewer, health="degraded") == ["d-degraded"]
    assert _ids(client, viewer, health="trial") == ["d-trial"]
    assert _ids(client, viewer, health="offline") == ["d-offline"]
    assert _ids(client, viewer, health="unknown") == ["d-unknown"]
    assert _ids(client, viewer, health="other") == ["d-degradedish", "d-loud", "d-other"]
    r = client.get(LIST, headers=viewer, params={"health": "sick"})
    assert r.status_code == 422
    assert "health" in r.text


def test_last_seen_filters_take_an_interval_with_an_inclusive_start(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    for minutes in (0, 10, 20, 30):
        _add(ctx, f"d{minutes:02d}", seen=T0 + timedelta(minutes=minutes))
    at = (T0 + timedelta(minutes=10)).isoformat()
    until = (T0 + timedelta(minutes=30)).isoformat()
    assert _ids(client, viewer, seen_after=at) == ["d10", "d20", "d30"]
    assert _ids(client, viewer, seen_before=at) == ["d00"]
    assert _ids(client, viewer, seen_after=at, seen_before=until) == ["d10", "d20"]
    # Another offset names the same instant.
    assert _ids(client, viewer, seen_after=(T0 + timedelta(minutes=20)).astimezone().isoformat()) == [
        "d20",
        "d30",
    ]


def test_last_seen_filters_refuse_a_naive_time_and_an_empty_interval(
    client: TestClient, viewer: dict[str, str]
) -> None:
    r = client.get(LIST, headers=viewer, params={"seen_after": "2026-01-01T00:00:00"})
    assert r.status_code == 422
    assert "no time zone" in r.json()["detail"]
    r = client.get(
        LIST,
        headers=viewer,
        params={"seen_after": "2026-01-02T00:00:00Z", "seen_before": "2026-01-01T00:00:00Z"},
    )
    assert r.status_code == 422
    assert "is not before seen_before" in r.json()["detail"]
    # An instant UTC cannot hold is the caller's mistake, not the database's.
    r = client.get(LIST, headers=viewer, params={"seen_before": "9999-12-31T23:59:59-05:00"})
    assert r.status_code == 422
    assert "is out of range" in r.json()["detail"]


def test_cohort_filter_lists_members_by_selector_and_by_list_with_the_other_filters(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    for i in range(6):
        _add(
            ctx,
            f"d{i}",
            site="a" if i % 2 == 0 else "b",
            state=DeviceState.OFFLINE if i == 4 else DeviceState.ONLINE,
        )
    _add(ctx, "x-other-fleet", site="a", fleet="elsewhere")
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="site-a", selector="site=a")
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="picked", devices=["d1", "d3"])
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="both", selector="site=a", devices=["d1"])
    assert _ids(client, viewer, cohort="site-a") == ["d0", "d2", "d4"]
    assert _ids(client, viewer, cohort="picked") == ["d1", "d3"]
    assert _ids(client, viewer, cohort="both") == ["d0", "d1", "d2", "d4"]
    assert _ids(client, viewer, cohort="site-a", state="online") == ["d0", "d2"]
    assert _ids(client, viewer, cohort="both", label="site=b") == ["d1"]
    r = client.get(LIST, headers=viewer, params={"cohort": "nope"})
    assert r.status_code == 404
    assert "cohort 'nope' is not known" in r.json()["detail"]


def test_cohort_listing_pages_through_every_member_once(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    for i in range(23):
        _add(ctx, f"d{i:02d}", site="a" if i % 3 else "b")
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="site-a", selector="site=a")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"cohort": "site-a", "limit": "4", **({"cursor": cursor} if cursor else {})}
        body = client.get(LIST, headers=viewer, params=params).json()
        seen += [d["id"] for d in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = [f"d{i:02d}" for i in range(23) if i % 3]
    assert seen == expected
    assert pages == -(-len(expected) // 4)


def test_summary_counts_by_state_health_version_and_cohort(
    ctx: HubContext, client: TestClient, viewer: dict[str, str]
) -> None:
    _add(ctx, "d1", version="1")
    _add(ctx, "d2", version="1", health="degraded: no space")
    _add(ctx, "d3", version="2", site="b")
    _add(ctx, "d4", version=None, state=DeviceState.OFFLINE, health="offline")
    _add(ctx, "d5", version="2", state=DeviceState.UNKNOWN, health="", site="b")
    _add(ctx, "x1", version="9", fleet="elsewhere")
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="site-b", selector="site=b")
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="empty", selector="site=zzz")
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="listed", devices=["d1", "d4"])
    r = client.get(SUMMARY, headers=viewer)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "fleet": ctx.settings.fleet,
        "total": 5,
        "by_state": {"online": 3, "offline": 1, "unknown": 1},
        "by_health": {
            "serving": 2,
            "idle": 0,
            "degraded": 1,
            "trial": 0,
            "offline": 1,
            "unknown": 1,
            "other": 0,
        },
        "by_version": [
            {"name": "digits", "version": "1", "count": 2},
            {"name": "digits", "version": "2", "count": 2},
            {"name": None, "version": None, "count": 1},
        ],
        "by_cohort": {"empty": 0, "listed": 2, "site-b": 2},
    }


def test_summary_of_an_empty_fleet_and_without_a_token(client: TestClient, viewer: dict[str, str]) -> None:
    body = client.get(SUMMARY, headers=viewer).json()
    assert body["total"] == 0
    assert body["by_state"] == {"online": 0, "offline": 0, "unknown": 0}
    assert body["by_version"] == [] and body["by_cohort"] == {}
    assert client.get(SUMMARY).status_code == 401


class _Statements:
    """Counts the SQL statements an engine runs (reads included), to show a cost that does not grow."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0

    def _seen(self, *_args: object, **_kw: object) -> None:
        self.count += 1

    def __enter__(self) -> _Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def _statements_for(ctx: HubContext, engine: Engine, fn_name: str) -> int:
    with ctx.sessions() as s:
        s.connection()  # begin outside the count: only the queries themselves are compared
        with _Statements(engine) as counted:
            if fn_name == "summary":
                devices.fleet_summary(s, ctx.settings.fleet)
            else:
                cohort = cohorts.get_cohort(s, ctx.settings.fleet, "site-a")
                devices.page_devices(s, fleet=ctx.settings.fleet, cohort=cohort, limit=1000)
        return counted.count


@pytest.mark.parametrize("what", ["summary", "page"])
def test_queries_do_not_grow_with_the_fleet(ctx: HubContext, engine: Engine, what: str) -> None:
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="site-a", selector="site=a")
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="site-b", selector="site=b")
    _add(ctx, "d000", site="a")
    small = _statements_for(ctx, engine, what)
    for i in range(1, 60):
        _add(ctx, f"d{i:03d}", site="a" if i % 2 else "b", version=str(i % 4))
    assert _statements_for(ctx, engine, what) == small
    # The cohort lookup and the summary's four GROUP BY / UNION ALL queries; a page and its desired states.
    assert small == (5 if what == "summary" else 3)
