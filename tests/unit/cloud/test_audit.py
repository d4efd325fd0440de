"""The audit log: the recorder's rows for ORM and bulk changes, and what the API records and shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, insert, update
from sqlmodel import col, select

from cloud.api.app import create_app
from cloud.api.requestctx import Actor
from cloud.audit import recorder
from cloud.audit.tables import AuditEntry
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.models import Cohort, DeviceLabel, Role, TufRotation
from cloud.services import tokens
from cloud.services.director import Director
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import T0, FrozenClock, status

ALICE = Actor("alice", "operator", "token")


@pytest.fixture(autouse=True)
def _installed() -> None:
    recorder.install()


def entries(sessions: SessionFactory) -> list[AuditEntry]:
    with sessions() as s:
        return list(s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())


class TestRecorder:
    def info(self, clock: FrozenClock) -> recorder.RequestInfo:
        return recorder.RequestInfo(fleet="unit", clock=clock, operation="POST /api/v1/things")

    def test_create_update_delete_each_leave_a_row(
        self, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            cohort = Cohort(fleet="unit", name="lab", selector="site=lab", description="")
            s.add(cohort)
            s.commit()
            cohort.description = "the lab's boards"
            s.add(cohort)
            s.commit()
            s.delete(cohort)
            s.commit()
        rows = entries(sessions)
        assert [(r.action, r.object_type, r.object_id) for r in rows] == [
            ("create", "cohort", str(cohort.id)),
            ("update", "cohort", str(cohort.id)),
            ("delete", "cohort", str(cohort.id)),
        ]
        created, updated, deleted = rows
        assert created.before is None and created.after is not None
        assert created.after["selector"] == "site=lab" and created.after["name"] == "lab"
        assert updated.before == {"description": ""} and updated.after == {"description": "the lab's boards"}
        assert deleted.after is None and deleted.before is not None
        assert deleted.before["description"] == "the lab's boards"
        for r in rows:
            assert (r.actor, r.actor_role, r.via, r.fleet) == ("alice", "operator", "token", "unit")
            assert r.operation == "POST /api/v1/things" and r.at == T0

    def test_nothing_is_recorded_without_an_actor(self, sessions: SessionFactory) -> None:
        with sessions() as s:
            s.add(Cohort(fleet="unit", name="quiet", selector="a=b", description=""))
            s.commit()
        assert entries(sessions) == []

    def test_rows_roll_back_with_the_change(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            s.add(Cohort(fleet="unit", name="lab", selector="site=lab", description=""))
            s.flush()
            s.rollback()
        assert entries(sessions) == []

    def test_secrets_never_reach_the_log(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            row, secret = tokens.create_token(s, "ci", Role.VIEWER, clock=clock)
            digest = row.token_sha256
            s.add(TufRotation(role="root", root_version=2, root_json=b"x" * 10, state="pending"))
            s.commit()
        rows = entries(sessions)
        text = repr([(r.before, r.after) for r in rows])
        assert digest not in text and secret not in text and "token_sha256" not in text
        token_row = next(r for r in rows if r.object_type == "api_token")
        assert token_row.after is not None and token_row.after["name"] == "ci"
        rotation = next(r for r in rows if r.object_type == "tuf_rotation")
        assert rotation.after is not None and rotation.after["root_json"] == "<10 bytes>"

    def test_a_bulk_statement_is_one_row_with_its_sql(
        self, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            s.exec(delete(DeviceLabel).where(col(DeviceLabel.device_id).in_(["d1", "d2"])))
            s.commit()
        (row,) = entries(sessions)
        assert (row.action, row.object_type, row.object_id) == ("delete", "device_label", None)
        assert row.after is not None and "DELETE FROM device_label" in row.after["sql"]
        assert sorted(row.after["parameters"]["device_id_1"]) == ["d1", "d2"]

    def test_a_bulk_update_runs_and_is_recorded(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        with sessions() as s:
            s.add(Cohort(fleet="unit", name="lab", selector="a=b", description=""))
            s.commit()
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            s.exec(update(Cohort).where(col(Cohort.name) == "lab").values(description="moved"))
            s.commit()
            assert s.exec(select(Cohort.description)).one() == "moved"
        (row,) = entries(sessions)
        assert (row.action, row.object_type) == ("update", "cohort")
        assert row.after is not None and "UPDATE cohort SET description" in row.after["sql"]
        assert "moved" in row.after["parameters"].values()

    def test_a_bulk_insert_keeps_its_rows_values(self, sessions: SessionFactory, clock: FrozenClock) -> None:
        rows = [
            {"fleet": "unit", "name": f"c{i}", "selector": "a=b", "devices": [], "description": ""}
            for i in range(3)
        ]
        with recorder.recording(ALICE, self.info(clock)), sessions() as s:
            s.execute(insert(Cohort), rows)
            s.commit()
        (row,) = entries(sessions)
        assert (row.action, row.object_type) == ("create", "cohort")
        assert row.after is not None and row.after["rows"] == 3
        assert [r["name"] for r in row.after["row_values"]] == ["c0", "c1", "c2"]


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def bearer(ctx: HubContext, name: str, role: Role) -> dict[str, str]:
    with ctx.sessions() as s:
        return {"Authorization": f"Bearer {tokens.create_token(s, name, role, clock=ctx.clock)[1]}"}


class TestThroughTheApi:
    def test_mutations_are_recorded_with_actor_operation_and_request_id(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        op = bearer(ctx, "ops", Role.OPERATOR)
        r = client.post(
            "/api/v1/cohorts",
            json={"name": "lab", "selector": "site=lab"},
            headers={**op, "X-Request-ID": "req-create-1"},
        )
        assert r.status_code == 201, r.text
        assert client.delete("/api/v1/cohorts/lab", headers=op).status_code == 204
        rows = [e for e in entries(ctx.sessions) if e.object_type == "cohort"]
        assert [(e.action, e.operation) for e in rows] == [
            ("create", "POST /api/v1/cohorts"),
            ("delete", "DELETE /api/v1/cohorts/{name}"),
        ]
        assert rows[0].request_id == "req-create-1" and rows[0].actor == "ops" and rows[0].via == "token"
        assert rows[1].before is not None and rows[1].before["name"] == "lab"
        # Reads write nothing to the log.
        before = len(entries(ctx.sessions))
        assert client.get("/api/v1/cohorts", headers=op).status_code == 200
        assert len(entries(ctx.sessions)) == before

    def test_device_labels_and_token_revocation_are_recorded(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock).ingest(
            [InboundMessage(f"ef/v1/{ctx.settings.fleet}/dev/d1/status", status("d1").SerializeToString())]
        )
        assert entries(ctx.sessions) == []  # device reports are not operator changes
        admin = bearer(ctx, "root", Role.ADMIN)
        r = client.patch("/api/v1/devices/d1/labels", json={"set": {"site": "lab"}}, headers=admin)
        assert r.status_code == 200, r.text
        labels = [e for e in entries(ctx.sessions) if e.object_type.startswith("device")]
        assert labels and all(e.operation == "PATCH /api/v1/devices/{device_id}/labels" for e in labels)
        assert any("lab" in repr(e.after) for e in labels)
        bearer(ctx, "ci", Role.VIEWER)
        assert client.delete("/api/v1/tokens/ci", headers=admin).status_code == 200
        (revoked,) = [e for e in entries(ctx.sessions) if e.object_type == "api_token"]
        assert revoked.action == "update" and revoked.before == {"revoked_at": None}
        assert revoked.after is not None and revoked.after["revoked_at"] == ctx.clock().isoformat()

    def test_dashboard_logins_are_recorded_as_sessions(self, client: TestClient, ctx: HubContext) -> None:
        with ctx.sessions() as s:
            secret = tokens.create_token(s, "dash", Role.OPERATOR)[1]
        csrf = client.post("/api/v1/session", json={"token": secret}).json()["csrf_token"]
        client.post(
            "/api/v1/cohorts", json={"name": "lab", "selector": "a=b"}, headers={"X-CSRF-Token": csrf}
        )
        rows = entries(ctx.sessions)
        assert [(e.object_type, e.action, e.via, e.actor) for e in rows] == [
            ("ui_session", "create", "session", "dash"),
            ("cohort", "create", "session", "dash"),
        ]
        assert "sha256" not in repr(rows[0].after)

    def test_key_rotations_are_recorded(
        self, client: TestClient, ctx: HubContext, tmp_path: Path, clock: FrozenClock
    ) -> None:
        repo = open_repository(Settings(data_dir=tmp_path), ctx.sessions, tuf=TufSettings(), clock=clock)
        assert ensure_initialized(repo)
        ctx.signing = Signing(repo, Director(repo, clock=clock), ctx.sessions, None)
        admin = bearer(ctx, "root", Role.ADMIN)
        r = client.post("/api/v1/keys/rotations", json={"role": "timestamp"}, headers=admin)
        assert r.status_code == 201, r.text
        rows = entries(ctx.sessions)
        assert {e.operation for e in rows} == {"POST /api/v1/keys/rotations"}
        assert {"tuf_rotation", "tuf_metadata"} <= {e.object_type for e in rows}
        # Signed metadata and key material appear only as their length.
        for e in rows:
            for value in (e.after or {}).values():
                assert not isinstance(value, str) or "BEGIN" not in value

    def test_the_log_is_read_by_operators_with_filters_and_pages(
        self, client: TestClient, ctx: HubContext
    ) -> None:
        op = bearer(ctx, "ops", Role.OPERATOR)
        viewer = bearer(ctx, "look", Role.VIEWER)
        for name in ("a", "b", "c"):
            client.post("/api/v1/cohorts", json={"name": name, "selector": "x=y"}, headers=op)
        client.delete("/api/v1/cohorts/b", headers=op)
        assert client.get("/api/v1/audit", headers=viewer).status_code == 403
        page = client.get("/api/v1/audit", params={"limit": 3}, headers=op).json()
        assert page["count"] == 3 and page["next_cursor"]
        assert page["data"][0]["action"] == "delete"
        rest = client.get(
            "/api/v1/audit", params={"limit": 3, "cursor": page["next_cursor"]}, headers=op
        ).json()
        ids = [e["id"] for e in page["data"] + rest["data"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 4 and rest["next_cursor"] is None
        deletes = client.get("/api/v1/audit", params={"action": "delete"}, headers=op).json()["data"]
        assert [e["before"]["name"] for e in deletes] == ["b"]
        assert client.get("/api/v1/audit", params={"actor": "nobody"}, headers=op).json()["data"] == []
        later = client.get("/api/v1/audit", params={"since": "2031-01-01T00:00:00Z"}, headers=op).json()
        assert later["data"] == []
        window = {"since": "2030-01-01T00:00:00Z", "until": "2031-01-01T00:00:00Z", "object_type": "cohort"}
        listed = client.get("/api/v1/audit", params=window, headers=op).json()["data"]
        assert [e["action"] for e in listed] == ["delete", "create", "create", "create"]
        first = listed[-1]
        one = {"object_type": "cohort", "object_id": first["object_id"]}
        assert [e["id"] for e in client.get("/api/v1/audit", params=one, headers=op).json()["data"]] == [
            first["id"]
        ]
        assert client.get("/api/v1/audit", params={"action": "poke"}, headers=op).status_code == 422
        cursor_of_tokens = client.get("/api/v1/audit", params={"cursor": "bm9wZQ"}, headers=op)
        assert cursor_of_tokens.status_code == 422
