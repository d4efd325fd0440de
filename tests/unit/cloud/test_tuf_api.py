"""The update repository over HTTP: targets need a token, metadata stays public, and a registration
is a signed target by the time its answer comes (FastAPI's TestClient, SQLite, a real repository)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens
from cloud.services.director import Director
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from tests.unit.cloud.helpers import FrozenClock, tiny_onnx


@pytest.fixture
def signing(ctx: HubContext, tmp_path: Path, clock: FrozenClock) -> Signing:
    repo = open_repository(Settings(data_dir=tmp_path / "tuf"), ctx.sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    ctx.signing = Signing(repo, Director(repo, clock=clock), ctx.sessions, ctx.publisher)
    return ctx.signing


@pytest.fixture
def client(ctx: HubContext, signing: Signing) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def bearer(ctx: HubContext, role: Role) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, f"t-{role.value}", role)
    return {"Authorization": f"Bearer {secret}"}


def served_targets(client: TestClient) -> dict[str, dict[str, object]]:
    """The targets as a TUF client finds them: timestamp -> snapshot -> targets, all over HTTP, no token."""
    timestamp = client.get("/tuf/metadata/timestamp.json")
    assert timestamp.status_code == 200, timestamp.text
    snap_version = json.loads(timestamp.content)["signed"]["meta"]["snapshot.json"]["version"]
    snapshot = client.get(f"/tuf/metadata/{snap_version}.snapshot.json")
    assert snapshot.status_code == 200, snapshot.text
    targets_version = json.loads(snapshot.content)["signed"]["meta"]["targets.json"]["version"]
    targets = client.get(f"/tuf/metadata/{targets_version}.targets.json")
    assert targets.status_code == 200, targets.text
    listed: dict[str, dict[str, object]] = json.loads(targets.content)["signed"]["targets"]
    return listed


def push(client: TestClient, headers: dict[str, str], data: bytes) -> str:
    r = client.post(
        "/api/v1/models",
        headers=headers,
        data={"name": "m", "version": "1"},
        files={"file": ("m.onnx", data)},
    )
    assert r.status_code == 201, r.text
    return f"models/m/1/{hashlib.sha256(data).hexdigest()}.onnx"


def test_a_pushed_model_is_a_served_target_at_once(client: TestClient, ctx: HubContext) -> None:
    data = tiny_onnx(2.0)
    assert served_targets(client) == {}
    path = push(client, bearer(ctx, Role.OPERATOR), data)
    # No scheduler tick in between: the answer to the push came after the target was published.
    listed = served_targets(client)
    assert set(listed) == {path}
    assert listed[path]["length"] == len(data)
    assert listed[path]["hashes"] == {"sha256": hashlib.sha256(data).hexdigest()}


def test_targets_need_a_token_and_metadata_does_not(client: TestClient, ctx: HubContext) -> None:
    data = tiny_onnx(3.0)
    path = push(client, bearer(ctx, Role.OPERATOR), data)
    sha = hashlib.sha256(data).hexdigest()
    urls = (f"/tuf/targets/{path}", f"/tuf/targets/models/m/1/{sha}.{sha}.onnx")  # plain, consistent-snapshot
    viewer = bearer(ctx, Role.VIEWER)
    for url in urls:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dTpw"}):
            r = client.get(url, headers=headers)
            assert r.status_code == 401, (url, headers, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "Bearer" in r.json()["detail"] or "token" in r.json()["detail"]
            assert data not in r.content
        ok = client.get(url, headers=viewer)
        assert ok.status_code == 200, ok.text
        assert ok.content == data
    # Nobody without a token learns which targets exist: an unknown one answers 401 as well.
    assert client.get("/tuf/targets/models/nope/1/x.onnx").status_code == 401
    assert client.get("/tuf/targets/models/nope/1/x.onnx", headers=viewer).status_code == 404
    with ctx.sessions() as s:
        tokens.revoke_token(s, "t-viewer", clock=ctx.clock)
    revoked = client.get(urls[0], headers=viewer)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    # Metadata stays public: it is signed and holds no weights.
    for name in ("root.json", "1.root.json", "timestamp.json"):
        assert client.get(f"/tuf/metadata/{name}").status_code == 200, name
