"""The rollouts API through FastAPI's TestClient: plans in, views out, roles, errors, pagination, kicks.

SQLite in a temp folder and the in-memory RecordingPublisher (the unit fixtures); the engine's
own behaviour is tested with the engine, these check what the HTTP layer promises.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cloud.api.app import create_app
from cloud.api.routes.rollouts import MAX_PLAN_BYTES
from cloud.context import HubContext
from cloud.models import Role, Rollout, RolloutTransition
from cloud.services import cohorts, tokens
from cloud.services.ingest import InboundMessage, Ingestor
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import status, tiny_onnx

Headers = dict[Role, dict[str, str]]

PLAN_YAML = """
name: tiny-2
target: {kind: model, model: tiny, version: "2"}
stages:
  - {name: canary, cohort: canary, bake: 30s}
  - {name: all, percent: 100, bake: 1m, approval: true}
gates: {max_rollback_pct: 5}
"""


class Kicks:
    """Counts the API's kicks of the engine (the hub wires HubContext.kick_rollouts to its scheduler)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def kicks(ctx: HubContext) -> Kicks:
    kicker = Kicks()
    ctx.kick_rollouts = kicker
    return kicker


@pytest.fixture
def client(ctx: HubContext, kicks: Kicks) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> Headers:
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


@pytest.fixture
def fleet(ctx: HubContext, client: TestClient, auth: Headers) -> list[str]:
    """Four online devices (d1, d2 in the canary cohort), and model tiny:2 registered."""
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev"
    ids = ["d1", "d2", "d3", "d4"]
    ingestor.ingest(
        [
            InboundMessage(
                f"{base}/{d}/status",
                status(d, labels={"ring": "canary" if d in ("d1", "d2") else "main"}).SerializeToString(),
            )
            for d in ids
        ]
    )
    with ctx.sessions() as s:
        cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="canary", selector="ring=canary")
    r = client.post(
        "/api/v1/models",
        headers=auth[Role.OPERATOR],
        data={"name": "tiny", "version": "2"},
        files={"file": ("m.onnx", tiny_onnx(2.0))},
    )
    assert r.status_code == 201, r.text
    return ids


def _create(
    client: TestClient, headers: dict[str, str], plan: str = PLAN_YAML, **params: str
) -> dict[str, Any]:
    r = client.post(
        "/api/v1/rollouts",
        headers={**headers, "Content-Type": "application/yaml"},
        content=plan.encode(),
        params=params,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _stored(ctx: HubContext) -> int:
    with ctx.sessions() as s:
        return len(s.exec(select(Rollout)).all())


def test_a_yaml_plan_creates_a_rollout_shown_in_full(
    client: TestClient, auth: Headers, fleet: list[str], kicks: Kicks
) -> None:
    view = _create(client, auth[Role.OPERATOR])
    assert kicks.count == 1  # the engine is asked to start it now, not at its next tick
    assert (view["state"], view["name"], view["stage"], view["stages"]) == ("draft", "tiny-2", 0, 2)
    assert view["target"] == {"kind": "model", "name": "tiny", "version": "2"}
    assert view["created_by"] == "t-operator"
    canary, everyone = view["stage_detail"]
    assert (canary["name"], canary["cohort"], canary["bake_s"], canary["status"]) == (
        "canary",
        "canary",
        30,
        "current",
    )
    assert (everyone["percent"], everyone["bake_s"], everyone["approval"]) == (100, 60, True)
    # The canary cohort's two devices wait to be offered; the rest belong to the last stage.
    assert canary["by_state"]["pending"] == 2 and canary["devices"] == 2
    assert everyone["by_state"]["pending"] == 2

    got = client.get(f"/api/v1/rollouts/{str(view['id'])[:6]}", headers=auth[Role.VIEWER])
    assert got.status_code == 200, got.text
    assert got.json()["id"] == view["id"] and got.json()["plan"]["stages"][0]["cohort"] == "canary"


def test_a_json_object_is_a_plan_too(client: TestClient, auth: Headers, fleet: list[str]) -> None:
    plan = {
        "name": "tiny-json",
        "target": {"kind": "model", "model": "tiny", "version": "2"},
        "stages": [{"name": "all", "percent": 100, "bake": 0}],
    }
    r = client.post("/api/v1/rollouts", headers=auth[Role.ADMIN], json=plan)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "tiny-json" and r.json()["created_by"] == "t-admin"


def test_a_plan_with_errors_is_422_with_every_problem_and_nothing_is_stored(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str], kicks: Kicks
) -> None:
    bad = PLAN_YAML.replace("bake: 30s", "bake: 30s, percent: 150").replace("max_rollback_pct", "max_rollbak")
    r = client.post(
        "/api/v1/rollouts", headers={**auth[Role.OPERATOR], "Content-Type": "text/yaml"}, content=bad.encode()
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "stages[0].percent: expected a number in (0, 100], got 150" in detail
    assert "gates.max_rollbak: unknown gate" in detail
    assert _stored(ctx) == 0 and kicks.count == 0


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (('version: "2"', 'version: "9"'), "target.version: expected a registered version of model tiny"),
        (
            ("cohort: canary", "cohort: nobody"),
            "stages[0].cohort: expected a cohort of fleet unit, got 'nobody'",
        ),
    ],
)
def test_a_plan_naming_what_the_hub_lacks_is_422_and_nothing_is_stored(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str], change: tuple[str, str], said: str
) -> None:
    r = client.post(
        "/api/v1/rollouts",
        headers={**auth[Role.OPERATOR], "Content-Type": "application/yaml"},
        content=PLAN_YAML.replace(*change).encode(),
    )
    assert r.status_code == 422 and said in r.json()["detail"]
    assert _stored(ctx) == 0


def test_a_body_that_is_not_plan_text_is_refused(ctx: HubContext, client: TestClient, auth: Headers) -> None:
    r = client.post(
        "/api/v1/rollouts",
        headers=auth[Role.OPERATOR],
        files={"file": ("plan.yaml", PLAN_YAML.encode())},
    )
    assert r.status_code == 422 and "got content type 'multipart/form-data'" in r.json()["detail"]
    huge = "# " + "x" * MAX_PLAN_BYTES + "\n" + PLAN_YAML
    r = client.post(
        "/api/v1/rollouts",
        headers={**auth[Role.OPERATOR], "Content-Type": "text/plain"},
        content=huge.encode(),
    )
    assert r.status_code == 413
    assert _stored(ctx) == 0


def test_a_viewer_reads_but_may_not_create_or_steer(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str]
) -> None:
    r = client.post(
        "/api/v1/rollouts",
        headers={**auth[Role.VIEWER], "Content-Type": "application/yaml"},
        content=PLAN_YAML.encode(),
    )
    assert r.status_code == 403 and "needs the operator role" in r.json()["detail"]
    assert _stored(ctx) == 0
    rollout_id = _create(client, auth[Role.OPERATOR])["id"]
    for action in ("approve", "abort", "pause", "resume", "rollback"):
        r = client.post(f"/api/v1/rollouts/{rollout_id}/{action}", headers=auth[Role.VIEWER], json={})
        assert r.status_code == 403, action
    assert client.get("/api/v1/rollouts", headers=auth[Role.VIEWER]).json()["data"][0]["state"] == "draft"
    assert client.post(f"/api/v1/rollouts/{rollout_id}/abort").status_code == 401


def test_an_operator_action_is_stored_with_actor_and_reason_and_kicks_the_engine(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str], kicks: Kicks
) -> None:
    rollout_id = str(_create(client, auth[Role.OPERATOR])["id"])
    r = client.post(
        f"/api/v1/rollouts/{rollout_id[:8]}/abort",
        headers=auth[Role.OPERATOR],
        json={"reason": "wrong build"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "aborting" and kicks.count == 2
    (step,) = r.json()["transitions"]
    assert (step["from_state"], step["to_state"], step["event"]) == ("draft", "aborting", "abort")
    assert (step["actor"], step["reason"]) == ("t-operator", "wrong build")
    with ctx.sessions() as s:
        assert [t.actor for t in s.exec(select(RolloutTransition)).all()] == ["t-operator"]


class WriterAfterCommit:
    """Stands in for the engine's kick, which the API calls once a change is committed: here another
    writer takes SQLite's write lock at that moment, as the engine or ingest of a busy hub does."""

    def __init__(self, db_file: Path) -> None:
        self._db_file = db_file
        self.conn: sqlite3.Connection | None = None

    def __call__(self) -> None:
        self.conn = sqlite3.connect(self._db_file, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.conn = None


def test_a_committed_create_or_action_answers_while_another_writer_holds_the_lock(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str], tmp_path: Path
) -> None:
    # The answer is read after the commit without the write lock: a create that was stored must
    # not come back 503 (a client retrying it would meet its own rollout as a 409).
    writer = WriterAfterCommit(tmp_path / "hub.db")
    ctx.kick_rollouts = writer
    try:
        view = _create(client, auth[Role.OPERATOR])
        assert view["state"] == "draft" and writer.conn is not None
    finally:
        writer.release()
    try:
        r = client.post(f"/api/v1/rollouts/{view['id']}/abort", headers=auth[Role.OPERATOR])
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "aborting" and writer.conn is not None
    finally:
        writer.release()


def test_an_action_the_state_does_not_allow_is_409_listing_the_allowed_ones(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str], kicks: Kicks
) -> None:
    rollout_id = _create(client, auth[Role.OPERATOR])["id"]
    r = client.post(f"/api/v1/rollouts/{rollout_id}/approve", headers=auth[Role.OPERATOR])
    assert r.status_code == 409
    assert "cannot approve" in r.json()["detail"] and "abort" in r.json()["detail"]
    assert client.get(f"/api/v1/rollouts/{rollout_id}", headers=auth[Role.VIEWER]).json()["transitions"] == []


def test_unknown_and_ambiguous_ids(client: TestClient, auth: Headers) -> None:
    r = client.get("/api/v1/rollouts/feedbeef", headers=auth[Role.VIEWER])
    assert r.status_code == 404 and "rollout 'feedbeef' is not known" in r.json()["detail"]
    r = client.post("/api/v1/rollouts/feedbeef/pause", headers=auth[Role.OPERATOR])
    assert r.status_code == 404


def test_a_device_held_by_an_active_rollout_is_a_conflict_unless_superseded(
    client: TestClient, auth: Headers, fleet: list[str]
) -> None:
    first = _create(client, auth[Role.OPERATOR])
    r = client.post(
        "/api/v1/rollouts",
        headers={**auth[Role.OPERATOR], "Content-Type": "application/yaml"},
        content=PLAN_YAML.replace("tiny-2", "tiny-2-again").encode(),
    )
    assert r.status_code == 409 and "d1" in r.json()["detail"]
    second = _create(
        client, auth[Role.OPERATOR], PLAN_YAML.replace("tiny-2", "tiny-2-again"), supersede="true"
    )
    old = client.get(f"/api/v1/rollouts/{first['id']}", headers=auth[Role.VIEWER]).json()
    assert old["state"] == "superseded" and old["superseded_by"] == second["id"]


def test_listing_pages_newest_first_and_filters_by_state(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str]
) -> None:
    made = []
    for i in range(3):
        plan = PLAN_YAML.replace("tiny-2", f"r{i}")
        made.append(_create(client, auth[Role.OPERATOR], plan, supersede="true")["id"])
        ctx.clock.advance(1)  # type: ignore[attr-defined]
    first = client.get("/api/v1/rollouts", headers=auth[Role.VIEWER], params={"limit": 2}).json()
    assert [r["id"] for r in first["data"]] == made[:0:-1] and first["count"] == 2 and first["next_cursor"]
    rest = client.get(
        "/api/v1/rollouts", headers=auth[Role.VIEWER], params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [r["id"] for r in rest["data"]] == [made[0]] and rest["next_cursor"] is None
    drafts = client.get("/api/v1/rollouts", headers=auth[Role.VIEWER], params={"state": "draft"}).json()
    assert [r["id"] for r in drafts["data"]] == [made[2]]  # the others were superseded
    r = client.get("/api/v1/rollouts", headers=auth[Role.VIEWER], params={"state": "bogus"})
    assert r.status_code == 422
    r = client.get("/api/v1/rollouts", headers=auth[Role.VIEWER], params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and "invalid cursor" in r.json()["detail"]


def test_the_openapi_document_describes_the_plan_body_and_the_view(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    create = spec["paths"]["/api/v1/rollouts"]["post"]
    assert {"application/json", "application/yaml", "text/plain"} <= set(create["requestBody"]["content"])
    for action in ("pause", "resume", "approve", "abort", "rollback"):
        assert "post" in spec["paths"][f"/api/v1/rollouts/{{rollout_id}}/{action}"]
    assert "stage_detail" in json.dumps(spec["components"]["schemas"]["RolloutDetailPublic"])


def test_the_view_after_the_engine_acted_counts_devices_and_lists_gates(
    ctx: HubContext, client: TestClient, auth: Headers, fleet: list[str]
) -> None:
    from cloud.rollouts.engine import tick

    rollout_id = _create(client, auth[Role.OPERATOR])["id"]
    tick(ctx)
    view = client.get(f"/api/v1/rollouts/{rollout_id}", headers=auth[Role.VIEWER]).json()
    assert view["state"] == "baking", view["transitions"]
    assert [(t["event"], t["actor"]) for t in view["transitions"]] == [
        ("start", "system"),
        ("stage_offered", "system"),
    ]
    canary, everyone = view["stage_detail"]
    assert canary["by_state"]["offered"] == 2 and canary["by_state"]["pending"] == 0
    assert everyone["status"] == "pending" and everyone["by_state"]["pending"] == 2
    gates = {g["gate"]: g for g in canary["gates"]}
    assert gates["max_rollback_pct"]["threshold"] == 5
    assert canary["verdict"] == "insufficient"  # nobody reported on the target yet
    assert view["next_action_at"] is not None and view["next_action"]
