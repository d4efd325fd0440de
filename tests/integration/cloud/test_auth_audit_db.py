"""Sessions, revocation and the audit log through the API, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlmodel import col, select

from cloud.api.app import create_app
from cloud.api.requestctx import Actor
from cloud.audit import recorder
from cloud.audit.tables import AuditEntry
from cloud.context import HubContext
from cloud.models import DeviceLabel, Role, UiSession
from cloud.services import tokens
from tests.unit.cloud.helpers import FrozenClock

pytestmark = pytest.mark.integration


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def test_a_dashboard_session_changes_the_fleet_and_the_log_says_so(
    client: TestClient, ctx: HubContext, clock: FrozenClock
) -> None:
    with ctx.sessions() as s:
        admin = {"Authorization": f"Bearer {tokens.create_token(s, 'root', Role.ADMIN)[1]}"}
        dash = tokens.create_token(s, "dash", Role.OPERATOR)[1]
    login = client.post("/api/v1/session", json={"token": dash}, headers={"X-Request-ID": "login-1"})
    assert login.status_code == 200, login.text
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    assert client.post("/api/v1/cohorts", json={"name": "lab", "selector": "site=lab"}).status_code == 403
    created = client.post("/api/v1/cohorts", json={"name": "lab", "selector": "site=lab"}, headers=csrf)
    assert created.status_code == 201, created.text
    assert client.delete("/api/v1/cohorts/lab", headers=csrf).status_code == 204
    # Revoking the token ends its session at once.
    assert client.delete("/api/v1/tokens/dash", headers=admin).status_code == 200
    assert client.get("/api/v1/cohorts").status_code == 401
    with ctx.sessions() as s:
        stored = s.exec(select(UiSession)).one()
        assert dash not in repr(stored.model_dump())
    client.cookies.clear()
    log = client.get("/api/v1/audit", headers=admin).json()["data"]
    assert [(e["object_type"], e["action"], e["actor"], e["via"]) for e in reversed(log)] == [
        ("ui_session", "create", "dash", "session"),
        ("cohort", "create", "dash", "session"),
        ("cohort", "delete", "dash", "session"),
        ("api_token", "update", "root", "token"),
    ]
    assert log[-1]["request_id"] == "login-1"
    assert log[0]["after"] == {"revoked_at": clock().isoformat()}
    assert "sha256" not in repr(log)


def test_a_bulk_statement_is_recorded_in_its_transaction(ctx: HubContext, clock: FrozenClock) -> None:
    recorder.install()
    info = recorder.RequestInfo(fleet=ctx.settings.fleet, clock=clock, operation="PUT /x")
    with recorder.recording(Actor("ops", "operator"), info), ctx.sessions() as s:
        s.exec(delete(DeviceLabel).where(col(DeviceLabel.device_id).in_(["d1", "d2"])))
        s.rollback()
        s.exec(delete(DeviceLabel).where(col(DeviceLabel.device_id) == "d3"))
        s.commit()
    with ctx.sessions() as s:
        (row,) = s.exec(select(AuditEntry)).all()
    assert (row.action, row.object_type, row.actor, row.operation) == (
        "delete",
        "device_label",
        "ops",
        "PUT /x",
    )
    assert row.after is not None and row.after["parameters"] == {"device_id_1": "d3"}
