"""The device listing filtered by cohort, paged with cursors, and the fleet summary, on SQLite and PostgreSQL.

A few hundred devices, written in bulk as ingest leaves them; every page goes through the HTTP API
(auth, query parsing, the service's SQL) against the real database of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Device, DeviceLabel, Role
from cloud.services import cohorts, labels, tokens
from tests.unit.cloud.helpers import T0

DEVICES = 300
SITES = ("lab", "office", "field")


def _labels_of(i: int) -> dict[str, str]:
    found = {"site": SITES[i % 3]}
    if i % 10 == 0:
        found["tier"] = "canary"
    return found


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def viewer(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def fleet(ctx: HubContext) -> list[str]:
    """DEVICES devices of the test's fleet (ids in an order that is not their insertion order)."""
    ids = [f"dev-{(i * 7919) % DEVICES:04d}" for i in range(DEVICES)]
    rows: list[dict[str, Any]] = [
        {
            "id": device_id,
            "fleet": ctx.settings.fleet,
            "state": "online",
            "health": "serving",
            "labels": _labels_of(int(device_id[4:])),
            "operator_labels": {},
            "capabilities": {},
            "first_seen": T0,
            "last_seen": T0 + timedelta(seconds=int(device_id[4:])),
        }
        for device_id in ids
    ]
    with ctx.sessions() as s:
        s.execute(insert(Device), rows)
        s.execute(
            insert(DeviceLabel),
            [
                {"device_id": device_id, "key": k, "value": v}
                for device_id in ids
                for k, v in _labels_of(int(device_id[4:])).items()
            ],
        )
        # A device of another fleet with the same labels: never a member of this fleet's cohorts.
        other = Device(id="dev-other", fleet="elsewhere", labels={"site": "lab"}, first_seen=T0, last_seen=T0)
        s.add(other)
        labels.sync_labels(s, [other])
        s.commit()
    return sorted(ids)


def _page_through(client: TestClient, headers: dict[str, str], limit: int, **params: str) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(DEVICES + 1):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/devices", headers=headers, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == len(body["data"]) <= limit
        seen += [d["id"] for d in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError(f"the listing {params} did not end after {DEVICES + 1} pages")


def test_cohort_filter_pages_through_every_member_once_in_id_order(
    ctx: HubContext, client: TestClient, viewer: dict[str, str], fleet: list[str]
) -> None:
    listed = [*fleet[5:12], "dev-0001"]
    with ctx.sessions() as s:
        cohorts.create_cohort(
            s, fleet=ctx.settings.fleet, name="indoor", selector="site in (lab,office),!tier"
        )
        cohorts.create_cohort(
            s, fleet=ctx.settings.fleet, name="canary-or-listed", selector="tier=canary", devices=listed
        )
    indoor = [d for d in fleet if _labels_of(int(d[4:]))["site"] != "field" and int(d[4:]) % 10 != 0]
    assert _page_through(client, viewer, 37, cohort="indoor") == indoor
    canary = sorted({d for d in fleet if int(d[4:]) % 10 == 0} | set(listed))
    assert _page_through(client, viewer, 9, cohort="canary-or-listed") == canary
    # With the other filters: members last seen in the second half of the fleet's ids.
    late = (T0 + timedelta(seconds=DEVICES // 2)).isoformat()
    assert _page_through(client, viewer, 25, cohort="indoor", seen_after=late) == [
        d for d in indoor if int(d[4:]) >= DEVICES // 2
    ]


def test_a_device_joining_the_cohort_behind_the_cursor_neither_repeats_nor_skips_a_row(
    ctx: HubContext, client: TestClient, viewer: dict[str, str], fleet: list[str]
) -> None:
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="lab", selector="site=lab")
    lab = [d for d in fleet if _labels_of(int(d[4:]))["site"] == "lab"]
    first = client.get("/api/v1/devices", headers=viewer, params={"cohort": "lab", "limit": "50"}).json()
    assert [d["id"] for d in first["data"]] == lab[:50]
    # Between two pages, one device before the cursor and one after it move to the lab.
    before, after = "dev-0001", "dev-0298"
    assert before < lab[49] < after
    with ctx.sessions() as s:
        for device_id in (before, after):
            labels.update_operator_labels(s, ctx.settings.fleet, device_id, set_labels={"site": "lab"})
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        body = client.get(
            "/api/v1/devices", headers=viewer, params={"cohort": "lab", "limit": "50", "cursor": cursor}
        ).json()
        rest += [d["id"] for d in body["data"]]
        cursor = body["next_cursor"]
    assert rest == sorted([*lab[50:], after])


def test_summary_counts_cohorts_in_the_database(
    ctx: HubContext, client: TestClient, viewer: dict[str, str], fleet: list[str]
) -> None:
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="lab", selector="site=lab")
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="not-lab", selector="site!=lab")
    body = client.get("/api/v1/fleet/summary", headers=viewer).json()
    assert body["total"] == DEVICES
    assert body["by_state"]["online"] == DEVICES
    assert body["by_cohort"] == {"lab": DEVICES // 3, "not-lab": DEVICES - DEVICES // 3}


def test_health_kinds_match_exactly_on_the_database(
    ctx: HubContext, client: TestClient, viewer: dict[str, str], fleet: list[str]
) -> None:
    texts = {
        "dev-0003": "degraded: no space",
        "dev-0004": "DEGRADED: shouting",
        "dev-0005": "trial: m:2 (serve)",
    }
    with ctx.sessions() as s:
        for device_id, text in texts.items():
            row = s.get(Device, device_id)
            assert row is not None
            row.health = text
        s.commit()
    assert _page_through(client, viewer, 100, health="degraded") == ["dev-0003"]
    assert _page_through(client, viewer, 100, health="other") == ["dev-0004"]
    assert _page_through(client, viewer, 100, health="trial") == ["dev-0005"]
    body = client.get("/api/v1/fleet/summary", headers=viewer).json()
    assert body["by_health"] == {
        "serving": DEVICES - 3,
        "idle": 0,
        "degraded": 1,
        "trial": 1,
        "offline": 0,
        "unknown": 0,
        "other": 1,
    }
