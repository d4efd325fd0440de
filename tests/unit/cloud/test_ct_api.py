"""The training and labelled-data API through FastAPI's TestClient: roles, runs, actions, uploads, pages.

SQLite in a temp folder and the in-memory RecordingPublisher (the unit fixtures); no run trains here
(the pipeline has its own tests): runs are queued by hand or left awaiting approval as the worker does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role, Rollout
from cloud.services import tokens
from cloud.training.continuous import datasets
from cloud.training.continuous.tables import LabelledDataset
from tests.unit.cloud.ct_helpers import awaiting_run, npz_bytes, register, weak_champion
from tests.unit.cloud.helpers import T0

Headers = dict[Role, dict[str, str]]
RUNS = "/api/v1/training/runs"
LABELLED = "/api/v1/datasets/labelled"
X = np.random.default_rng(1).random((30, 64)).astype(np.float32)
Y = np.arange(30) % 10


class Kicks:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def kicks(ctx: HubContext) -> Kicks:
    counter = Kicks()
    ctx.kick_rollouts = counter
    return counter


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
def models(ctx: HubContext) -> None:
    """digits-mlp 1 (the champion) and 2 (a challenger the worker registered)."""
    with ctx.sessions() as s:
        register(s, ctx.store, weak_champion(), version="1", clock=ctx.clock)
        ctx.clock.advance(1)  # type: ignore[attr-defined]
        register(s, ctx.store, weak_champion(), version="2", clock=ctx.clock)


def _ok(response: Any, code: int = 200) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_operator_starts_a_run_and_a_second_one_is_a_conflict(
    client: TestClient, auth: Headers, models: None
) -> None:
    body = {"model": "digits-mlp", "reason": "new field data"}
    assert client.post(RUNS, json=body, headers=auth[Role.VIEWER]).status_code == 403
    run = _ok(client.post(RUNS, json=body, headers=auth[Role.OPERATOR]), 201)
    assert (run["model"], run["trigger"], run["state"], run["created_by"]) == (
        "digits-mlp", "manual", "queued", "t-operator",
    )  # fmt: skip
    assert run["summary"] == "new field data" and run["allowed_actions"] == ["reject"]
    again = client.post(RUNS, json=body, headers=auth[Role.OPERATOR])
    assert again.status_code == 409
    assert f"model digits-mlp already has a training run queued: {run['id']}" in again.json()["detail"]
    missing = client.post(RUNS, json={"model": "nope"}, headers=auth[Role.OPERATOR])
    assert missing.status_code == 404 and "model nope is not registered" in missing.json()["detail"]
    assert client.post(RUNS, json={"model": "Bad Name"}, headers=auth[Role.OPERATOR]).status_code == 422


def test_runs_list_newest_first_a_page_at_a_time_and_show_takes_a_prefix(
    ctx: HubContext, client: TestClient, auth: Headers, models: None
) -> None:
    ids = []
    for minute in range(3):
        ids.append(
            awaiting_run(ctx.sessions, model=f"m{minute}", challenger="2", now=T0.replace(minute=minute))
        )
    first = _ok(client.get(RUNS, params={"limit": 2}, headers=auth[Role.VIEWER]))
    assert [r["id"] for r in first["data"]] == ids[::-1][:2] and first["next_cursor"]
    rest = _ok(
        client.get(RUNS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth[Role.VIEWER])
    )
    assert [r["id"] for r in rest["data"]] == [ids[0]] and rest["next_cursor"] is None
    only = _ok(
        client.get(RUNS, params={"model": "m1", "state": "awaiting_approval"}, headers=auth[Role.VIEWER])
    )
    assert [r["id"] for r in only["data"]] == [ids[1]]
    assert client.get(RUNS, params={"state": "done"}, headers=auth[Role.VIEWER]).status_code == 422

    shown = _ok(client.get(f"{RUNS}/{ids[1][:8]}", headers=auth[Role.VIEWER]))
    assert shown["id"] == ids[1] and shown["allowed_actions"] == ["approve", "reject"]
    assert [(t["from_state"], t["to_state"]) for t in shown["transitions"]] == [
        ("", "queued"), ("queued", "running"), ("running", "awaiting_approval"),
    ]  # fmt: skip
    assert shown["decision_reason"].startswith("the challenger scores 0.9500")
    assert client.get(f"{RUNS}/ffffffff", headers=auth[Role.VIEWER]).status_code == 404
    assert client.get(RUNS).status_code == 401


def test_approving_creates_the_canary_rollout_and_kicks_the_engine(
    ctx: HubContext, client: TestClient, auth: Headers, models: None, kicks: Kicks
) -> None:
    run_id = awaiting_run(ctx.sessions, model="digits-mlp", challenger="2", now=T0)
    assert client.post(f"{RUNS}/{run_id}/approve", headers=auth[Role.VIEWER]).status_code == 403
    view = _ok(
        client.post(f"{RUNS}/{run_id}/approve", json={"reason": "looks right"}, headers=auth[Role.OPERATOR])
    )
    assert (view["state"], view["allowed_actions"]) == ("rolled_out", [])
    assert view["transitions"][-2]["reason"] == "looks right"
    assert kicks.count == 1
    with ctx.sessions() as s:
        rollout = s.exec(select(Rollout)).one()
    assert (view["rollout_id"], rollout.target_version, rollout.created_by) == (rollout.id, "2", "t-operator")
    twice = client.post(f"{RUNS}/{run_id}/approve", headers=auth[Role.OPERATOR])
    assert twice.status_code == 409
    assert twice.json()["detail"] == (
        "a training run that is rolled_out cannot approve; expected one of: none (the run has ended)"
    )


def test_a_rollout_the_engine_refuses_leaves_the_run_awaiting_approval(
    ctx: HubContext, client: TestClient, auth: Headers, kicks: Kicks
) -> None:
    with ctx.sessions() as s:
        register(s, ctx.store, weak_champion(), version="1", clock=ctx.clock)
    run_id = awaiting_run(ctx.sessions, model="digits-mlp", challenger="9", now=T0)  # 9 was never registered
    refused = client.post(f"{RUNS}/{run_id}/approve", headers=auth[Role.OPERATOR])
    assert refused.status_code == 422
    assert (
        "target.version: expected a registered version of model digits-mlp, got '9'"
        in refused.json()["detail"]
    )
    assert _ok(client.get(f"{RUNS}/{run_id}", headers=auth[Role.VIEWER]))["state"] == "awaiting_approval"
    assert kicks.count == 0


def test_rejecting_ends_the_run_and_keeps_the_challenger_registered(
    ctx: HubContext, client: TestClient, auth: Headers, models: None
) -> None:
    run_id = awaiting_run(ctx.sessions, model="digits-mlp", challenger="2", now=T0)
    view = _ok(
        client.post(
            f"{RUNS}/{run_id}/reject", json={"reason": "labels were wrong"}, headers=auth[Role.OPERATOR]
        )
    )
    assert (view["state"], view["transitions"][-1]["reason"]) == ("rejected", "labels were wrong")
    assert client.get("/api/v1/models/digits-mlp/2", headers=auth[Role.VIEWER]).status_code == 200
    with ctx.sessions() as s:
        assert s.exec(select(Rollout)).all() == []


def _upload(client: TestClient, headers: dict[str, str], data: bytes, **fields: str) -> Any:
    return client.post(LABELLED, headers=headers, data=fields, files={"file": ("field.npz", data)})


def test_labelled_uploads_are_checked_stored_by_hash_and_listed(
    ctx: HubContext, client: TestClient, auth: Headers, models: None
) -> None:
    data = npz_bytes(X, Y)
    assert _upload(client, auth[Role.VIEWER], data).status_code == 403
    row = _ok(_upload(client, auth[Role.OPERATOR], data, model="digits-mlp"), 201)
    assert (row["samples"], row["model_name"], row["filename"], row["uploaded_by"]) == (
        30, "digits-mlp", "field.npz", "t-operator",
    )  # fmt: skip
    assert datasets.labelled_store(ctx.settings).exists(row["sha256"])
    same = _ok(_upload(client, auth[Role.OPERATOR], data), 200)  # already there: nothing new
    assert same["sha256"] == row["sha256"]
    listed = _ok(client.get(LABELLED, headers=auth[Role.VIEWER]))
    assert [r["sha256"] for r in listed["data"]] == [row["sha256"]]


@pytest.mark.parametrize(
    ("data", "fields", "code", "said"),
    [
        (npz_bytes(X * 16, Y), {}, 400, "field.npz: expected x scaled to [0, 1] as the model takes it"),
        (b"not a zip", {}, 400, "field.npz is not an .npz file"),
        (npz_bytes(X, Y), {"model": "nope"}, 404, "model nope is not registered"),
        (npz_bytes(X, Y), {"version": "1"}, 422, "unexpected form fields ['version']: expected ['model']"),
    ],
)
def test_a_refused_upload_says_why_and_keeps_nothing(
    ctx: HubContext,
    client: TestClient,
    auth: Headers,
    data: bytes,
    fields: dict[str, str],
    code: int,
    said: str,
) -> None:
    refused = _upload(client, auth[Role.OPERATOR], data, **fields)
    assert refused.status_code == code, refused.text
    assert said in refused.json()["detail"]
    store = datasets.labelled_store(ctx.settings)
    assert not any(p.is_file() for p in (store.root / "sha256").rglob("*"))
    with ctx.sessions() as s:
        assert s.exec(select(LabelledDataset)).all() == []


def test_an_upload_over_the_size_limit_is_refused(ctx: HubContext, client: TestClient, auth: Headers) -> None:
    big = npz_bytes(np.zeros((300, 64), dtype=np.float32), np.zeros(300, dtype=np.int64))
    assert len(big) > ctx.settings.max_upload_bytes  # the unit settings take 64 KiB
    refused = _upload(client, auth[Role.OPERATOR], big)
    assert refused.status_code == 413
