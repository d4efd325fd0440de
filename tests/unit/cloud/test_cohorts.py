"""Cohorts (service and API) and keyset pagination, on SQLite; the integration twin adds PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.errors import ConflictError, InvalidInputError, NotFoundError, UnknownDevicesError
from cloud.models import Role
from cloud.services import cohorts, tokens
from cloud.services.devices import page_devices
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.pagination import decode_cursor, encode_cursor
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import T0, FrozenClock, status, tiny_onnx

FLEET = "unit"


def _report(sessions: SessionFactory, clock: FrozenClock, devices: dict[str, dict[str, str]]) -> None:
    ingestor = Ingestor(sessions, FleetTopics(FLEET), clock=clock)
    ingestor.ingest(
        [
            InboundMessage(f"ef/v1/{FLEET}/dev/{d}/status", status(d, labels=lbl).SerializeToString())
            for d, lbl in devices.items()
        ]
    )


def _members(s: Session, name: str | None) -> list[str]:
    cohort = cohorts.get_cohort(s, FLEET, name) if name else None
    return sorted(s.exec(cohorts.member_ids_query(FLEET, cohort)).all())


@pytest.fixture
def fleet(sessions: SessionFactory, clock: FrozenClock) -> SessionFactory:
    _report(
        sessions,
        clock,
        {"d1": {"site": "lab"}, "d2": {"site": "lab", "tier": "canary"}, "d3": {"site": "office"}, "d4": {}},
    )
    return sessions


def test_a_cohort_is_a_selector_a_list_or_their_union(fleet: SessionFactory, clock: FrozenClock) -> None:
    with fleet() as s:
        by_labels = cohorts.create_cohort(s, fleet=FLEET, name="lab", selector="site == lab", clock=clock)
        assert (by_labels.selector, by_labels.devices, by_labels.created_at) == ("site=lab", [], T0)
        cohorts.create_cohort(s, fleet=FLEET, name="picked", devices=["d4", "d3", "d4"])
        both = cohorts.create_cohort(
            s, fleet=FLEET, name="both", selector="tier=canary", devices=["d3"], description="first wave"
        )
        assert both.devices == ["d3"] and both.description == "first wave"
        assert _members(s, "lab") == ["d1", "d2"]
        assert _members(s, "picked") == ["d3", "d4"]
        assert _members(s, "both") == ["d2", "d3"]
        assert _members(s, None) == ["d1", "d2", "d3", "d4"]
        assert cohorts.count_members(s, FLEET, both) == 2
        assert cohorts.count_members(s, FLEET, None) == 4
        assert cohorts.count_members(s, "other-fleet", both) == 0


def test_membership_is_live(fleet: SessionFactory, clock: FrozenClock) -> None:
    with fleet() as s:
        cohorts.create_cohort(s, fleet=FLEET, name="lab", selector="site=lab")
    _report(fleet, clock, {"d9": {"site": "lab"}, "d1": {"site": "office"}})  # one joins, one moves away
    with fleet() as s:
        assert _members(s, "lab") == ["d2", "d9"]


@pytest.mark.parametrize(
    ("kwargs", "error", "said"),
    [
        ({"name": "Lab"}, InvalidInputError, "invalid cohort name 'Lab'"),
        ({"name": "lab"}, InvalidInputError, "needs a label selector with at least one requirement"),
        ({"name": "lab", "selector": ""}, InvalidInputError, "got neither"),
        ({"name": "lab", "selector": "site in lab"}, InvalidInputError, "at position 8: expected '('"),
        ({"name": "lab", "devices": ["d1", "ghost"]}, UnknownDevicesError, "unknown devices: ghost"),
        ({"name": "lab", "devices": ["bad/id"]}, InvalidInputError, "bad/id"),
        ({"name": "taken", "selector": "site=lab"}, ConflictError, "already has a cohort named 'taken'"),
    ],
)
def test_bad_cohorts_are_refused_and_nothing_is_created(
    fleet: SessionFactory, kwargs: dict[str, object], error: type[Exception], said: str
) -> None:
    with fleet() as s:
        cohorts.create_cohort(s, fleet=FLEET, name="taken", devices=["d1"])
    with fleet() as s, pytest.raises(error, match=re.escape(said)):
        cohorts.create_cohort(s, fleet=FLEET, **kwargs)  # type: ignore[arg-type]
    with fleet() as s:
        assert [c.name for c in cohorts.list_cohorts(s, FLEET).items] == ["taken"]


def test_delete_asks_the_registered_in_use_checks(fleet: SessionFactory) -> None:
    asked: list[tuple[str, str]] = []

    def held_by_a_rollout(_session: Session, fleet_name: str, name: str) -> str | None:
        asked.append((fleet_name, name))
        return "active rollout r-123 stages over it" if name == "held" else None

    with fleet() as s:
        cohorts.create_cohort(s, fleet=FLEET, name="held", selector="site=lab")
        cohorts.create_cohort(s, fleet=FLEET, name="free", selector="site=lab")
    cohorts.register_cohort_in_use(held_by_a_rollout)
    try:
        with fleet() as s:
            with pytest.raises(ConflictError, match="cohort 'held' is in use: active rollout r-123 stages"):
                cohorts.delete_cohort(s, FLEET, "held")
            cohorts.delete_cohort(s, FLEET, "free")
    finally:
        cohorts.unregister_cohort_in_use(held_by_a_rollout)
    assert asked == [(FLEET, "held"), (FLEET, "free")]
    with fleet() as s:
        assert [c.name for c in cohorts.list_cohorts(s, FLEET).items] == ["held"]
        with pytest.raises(NotFoundError, match="cohort 'free' is not known in fleet 'unit'"):
            cohorts.delete_cohort(s, FLEET, "free")


# --- pagination ------------------------------------------------------------------------------


def test_cursor_round_trip_and_refusals() -> None:
    cursor = encode_cursor("devices", ["d-7", 3, T0])
    assert decode_cursor("devices", cursor, 3) == ("d-7", 3, T0)
    for other, listing, arity in [
        (cursor, "cohorts", 3),
        (cursor, "devices", 1),
        ("not a cursor!", "devices", 3),
    ]:
        with pytest.raises(InvalidInputError, match=f"expected the next_cursor of a {listing} listing"):
            decode_cursor(listing, other, arity)


def test_pages_cover_every_row_once_even_when_rows_come_and_go(
    sessions: SessionFactory, clock: FrozenClock
) -> None:
    _report(sessions, clock, {f"d{i:02}": {"n": str(i % 3)} for i in range(10)})
    seen: list[str] = []
    cursor: str | None = None
    with sessions() as s:
        first = page_devices(s, fleet=FLEET, limit=4)
        assert [d.id for d in first.items] == ["d00", "d01", "d02", "d03"] and first.next_cursor
    # A device before the cursor joins and one after it: keyset pages neither repeat nor skip.
    _report(sessions, clock, {"d00a": {}, "d05a": {}})
    cursor = first.next_cursor
    seen = [d.id for d in first.items]
    while cursor:
        with sessions() as s:
            page = page_devices(s, fleet=FLEET, limit=4, cursor=cursor)
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
    assert seen == ["d00", "d01", "d02", "d03", "d04", "d05", "d05a", "d06", "d07", "d08", "d09"]
    with sessions() as s:
        exact = page_devices(s, fleet=FLEET, limit=12)
        assert len(exact.items) == 12 and exact.next_cursor is None  # no empty page after the last
        only = page_devices(s, fleet=FLEET, labels="n=1", limit=2)
        assert [d.id for d in only.items] == ["d01", "d04"]
        rest = page_devices(s, fleet=FLEET, labels="n=1", limit=2, cursor=only.next_cursor)
        assert [d.id for d in rest.items] == ["d07"] and rest.next_cursor is None
        with pytest.raises(InvalidInputError, match="invalid limit: expected a whole number from 1 to 1000"):
            page_devices(s, fleet=FLEET, limit=0)


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> dict[Role, dict[str, str]]:
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


def test_cohorts_api_viewers_read_operators_change(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext, clock: FrozenClock
) -> None:
    assert ctx.settings.fleet == FLEET
    _report(ctx.sessions, clock, {f"d{i}": {"site": "lab" if i % 2 else "office"} for i in range(30)})
    viewer, operator = auth[Role.VIEWER], auth[Role.OPERATOR]
    body = {"name": "lab", "selector": "site = lab", "description": "odd ones"}

    assert client.post("/api/v1/cohorts", headers=viewer, json=body).status_code == 403
    r = client.post("/api/v1/cohorts", headers=operator, json=body)
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in ("name", "selector", "devices", "member_count")} == {
        "name": "lab",
        "selector": "site=lab",
        "devices": [],
        "member_count": 15,
    }
    again = client.post("/api/v1/cohorts", headers=operator, json=body)
    assert again.status_code == 409
    bad = client.post("/api/v1/cohorts", headers=operator, json={"name": "x", "selector": "site in lab"})
    assert bad.status_code == 422 and "at position 8" in bad.json()["detail"]
    for name in ("c", "b", "a"):
        created = client.post(
            "/api/v1/cohorts", headers=auth[Role.ADMIN], json={"name": name, "devices": ["d0"]}
        )
        assert created.status_code == 201

    page = client.get("/api/v1/cohorts", headers=viewer, params={"limit": 3}).json()
    assert [c["name"] for c in page["data"]] == ["a", "b", "c"] and page["next_cursor"]
    rest = client.get("/api/v1/cohorts", headers=viewer, params={"cursor": page["next_cursor"]}).json()
    assert [(c["name"], c["member_count"]) for c in rest["data"]] == [("lab", 15)] and rest[
        "next_cursor"
    ] is None

    shown = client.get("/api/v1/cohorts/lab", headers=viewer, params={"members": 4}).json()
    assert shown["member_count"] == 15 and shown["members"]["data"] == ["d1", "d11", "d13", "d15"]
    more = client.get(
        "/api/v1/cohorts/lab/members", headers=viewer, params={"cursor": shown["members"]["next_cursor"]}
    ).json()
    assert len(more["data"]) == 11 and more["data"][0] == "d17" and more["next_cursor"] is None
    wrong = client.get("/api/v1/cohorts", headers=viewer, params={"cursor": shown["members"]["next_cursor"]})
    assert (
        wrong.status_code == 422 and "expected the next_cursor of a cohorts listing" in wrong.json()["detail"]
    )

    assert client.delete("/api/v1/cohorts/lab", headers=viewer).status_code == 403
    assert client.delete("/api/v1/cohorts/lab", headers=operator).status_code == 204
    assert client.get("/api/v1/cohorts/lab", headers=viewer).status_code == 404


def test_assignment_by_selector_text(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext, clock: FrozenClock
) -> None:
    _report(ctx.sessions, clock, {"d1": {"site": "a"}, "d2": {"site": "b"}})
    r = client.post(
        "/api/v1/assignments",
        headers=auth[Role.OPERATOR],
        json={"model": "digits", "version": "1", "selector": "site in (a,b"},
    )
    assert r.status_code == 422 and "at position 12: expected ',' or ')'" in r.json()["detail"]
    operator = auth[Role.OPERATOR]
    uploaded = client.post(
        "/api/v1/models",
        headers=operator,
        data={"name": "digits", "version": "1"},
        files={"file": ("m.onnx", tiny_onnx())},
    )
    assert uploaded.status_code == 201, uploaded.text
    r = client.post(
        "/api/v1/assignments",
        headers=operator,
        json={"model": "digits", "version": "1", "selector": "site notin (a),!retired"},
    )
    assert r.status_code == 200, r.text
    assert [a["device_id"] for a in r.json()["assigned"]] == ["d2"]
