"""HTTP API through FastAPI's TestClient: auth, uploads, devices, assignments, error mapping."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2
from tests.unit.cloud.helpers import event, model_ref, status, telemetry, tiny_onnx


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> dict[Role, dict[str, str]]:
    """An Authorization header per role."""
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


def _upload(
    client: TestClient,
    headers: dict[str, str],
    data: bytes,
    name: str = "digits",
    version: str = "1",
    **extra: str,
) -> httpx.Response:
    form = {"name": name, "version": version, **extra}
    response: httpx.Response = client.post(
        "/api/v1/models", headers=headers, data=form, files={"file": ("m.onnx", data)}
    )
    return response


def _artifacts(store: ArtifactStore) -> list[str]:
    return [p.name for p in (store.root / "sha256").rglob("*") if p.is_file()] + [
        p.name for p in store.tmp_dir.iterdir()
    ]


def _seed_devices(ctx: HubContext) -> None:
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev"
    ingestor.ingest(
        [
            InboundMessage(f"{base}/d1/status", status("d1", labels={"site": "a"}).SerializeToString()),
            InboundMessage(
                f"{base}/d2/status", status("d2", labels={"site": "b"}, online=False).SerializeToString()
            ),
            InboundMessage(f"{base}/d1/telemetry", telemetry("d1", 1, 2).SerializeToString()),
            InboundMessage(f"{base}/d1/events", event("d1", 1).SerializeToString()),
            InboundMessage(f"{base}/d1/events", event("d1", 2).SerializeToString()),
        ]
    )


def test_healthz_needs_no_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "db": True, "mqtt": False}


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/devices", "/api/v1/devices/d1/events"])
def test_missing_or_invalid_token_is_401(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "expected an 'Authorization: Bearer <token>' header" in r.json()["detail"]
    r = client.get(path, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "invalid API token" in r.json()["detail"]


def test_role_too_low_is_403(client: TestClient, auth: dict[Role, dict[str, str]]) -> None:
    r = _upload(client, auth[Role.VIEWER], tiny_onnx())
    assert r.status_code == 403
    assert "needs the operator role; token 't-viewer' has viewer" in r.json()["detail"]
    r2 = client.post("/api/v1/tokens", headers=auth[Role.OPERATOR], json={"name": "x", "role": "viewer"})
    assert r2.status_code == 403


def test_upload_registers_a_model(client: TestClient, auth: dict[Role, dict[str, str]]) -> None:
    data = tiny_onnx()
    r = _upload(client, auth[Role.OPERATOR], data, format="onnx")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["format"], body["length"]) == (
        "digits",
        "1",
        "onnx",
        len(data),
    )
    assert body["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    listed = client.get("/api/v1/models", headers=auth[Role.VIEWER]).json()
    assert listed["count"] == 1 and listed["data"][0]["sha256"] == body["sha256"]
    assert (
        client.get("/api/v1/models", params={"name": "other"}, headers=auth[Role.VIEWER]).json()["count"] == 0
    )
    one = client.get("/api/v1/models/digits/1", headers=auth[Role.VIEWER])
    assert one.status_code == 200 and one.json()["sha256"] == body["sha256"]
    missing = client.get("/api/v1/models/digits/2", headers=auth[Role.VIEWER])
    assert missing.status_code == 404 and "digits version 2 is not registered" in missing.json()["detail"]


def test_upload_corrupt_is_400_and_leaves_nothing(
    client: TestClient, auth: dict[Role, dict[str, str]], store: ArtifactStore
) -> None:
    r = _upload(client, auth[Role.OPERATOR], b"this is not an onnx model")
    assert r.status_code == 400
    assert "not a loadable ONNX model" in r.json()["detail"]
    assert _artifacts(store) == []


def test_upload_too_large_is_413_and_leaves_nothing(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext, store: ArtifactStore
) -> None:
    big = b"\0" * (ctx.settings.max_upload_bytes + 1)
    r = _upload(client, auth[Role.OPERATOR], big)
    assert r.status_code == 413
    assert f"expected at most {ctx.settings.max_upload_bytes} bytes" in r.json()["detail"]
    assert _artifacts(store) == []


def test_bad_name_fails_before_the_file_is_read(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext, store: ArtifactStore
) -> None:
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nNot OK\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
        ).encode()
        for _ in range(ctx.settings.max_upload_bytes // 4096 + 2):
            yield b"\0" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**auth[Role.OPERATOR], "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/api/v1/models", headers=headers, content=body())
    # 422 for the name, not 413 for the size: the fields were checked when the file part began.
    assert r.status_code == 422 and "invalid model name 'Not OK'" in r.json()["detail"]
    assert _artifacts(store) == []


def test_upload_too_large_without_content_length_is_cut_off(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext, store: ArtifactStore
) -> None:
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ndigits\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:  # chunked: the hub cannot know the length up front
        yield head
        for _ in range(ctx.settings.max_upload_bytes // 4096 + 2):
            yield b"\0" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**auth[Role.OPERATOR], "Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/api/v1/models", headers=headers, content=body())
    assert r.status_code == 413
    assert _artifacts(store) == []


def test_upload_duplicate_is_409(client: TestClient, auth: dict[Role, dict[str, str]]) -> None:
    assert _upload(client, auth[Role.OPERATOR], tiny_onnx()).status_code == 201
    r = _upload(client, auth[Role.OPERATOR], tiny_onnx(3.0))
    assert r.status_code == 409
    assert "already registered" in r.json()["detail"]


@pytest.mark.parametrize(
    ("form", "status_code", "message"),
    [
        ({"name": "Bad Name", "version": "1"}, 422, "invalid model name"),
        ({"name": "digits", "version": "1 2"}, 422, "invalid model version"),
        ({"name": "digits"}, 422, "missing form fields ['version']"),
        ({"name": "digits", "version": "1", "colour": "red"}, 422, "unexpected form fields ['colour']"),
        ({"name": "digits", "version": "1", "format": "tflite"}, 400, "unsupported model format 'tflite'"),
    ],
)
def test_upload_bad_form(
    client: TestClient,
    auth: dict[Role, dict[str, str]],
    store: ArtifactStore,
    form: dict[str, str],
    status_code: int,
    message: str,
) -> None:
    r = client.post(
        "/api/v1/models", headers=auth[Role.OPERATOR], data=form, files={"file": ("m.onnx", tiny_onnx())}
    )
    assert r.status_code == status_code, r.text
    assert message in r.json()["detail"]
    assert _artifacts(store) == []


def test_upload_needs_a_file(client: TestClient, auth: dict[Role, dict[str, str]]) -> None:
    r = client.post("/api/v1/models", headers=auth[Role.OPERATOR], data={"name": "digits", "version": "1"})
    assert r.status_code == 422 and "multipart/form-data" in r.json()["detail"]
    r = client.post(
        "/api/v1/models",
        headers=auth[Role.OPERATOR],
        data={"name": "digits", "version": "1"},
        files={"other": ("x", b"x")},
    )
    assert r.status_code == 422 and "expected 'file'" in r.json()["detail"]


def test_devices_list_and_detail(
    ctx: HubContext, client: TestClient, auth: dict[Role, dict[str, str]]
) -> None:
    _seed_devices(ctx)
    viewer = auth[Role.VIEWER]
    listed = client.get("/api/v1/devices", headers=viewer).json()
    assert listed["count"] == 2 and [d["id"] for d in listed["data"]] == ["d1", "d2"]
    d1 = listed["data"][0]
    assert (d1["state"], d1["agent_version"], d1["labels"], d1["in_sync"]) == (
        "online",
        "1.2.3",
        {"site": "a"},
        True,
    )
    assert d1["desired_model"] is None and d1["active_model"] is None
    assert [d["id"] for d in client.get("/api/v1/devices?state=offline", headers=viewer).json()["data"]] == [
        "d2"
    ]
    assert [d["id"] for d in client.get("/api/v1/devices?label=site=a", headers=viewer).json()["data"]] == [
        "d1"
    ]
    assert client.get("/api/v1/devices?label=site in a", headers=viewer).status_code == 422

    detail = client.get("/api/v1/devices/d1", headers=viewer).json()
    assert [e["seq"] for e in detail["recent_events"]] == [2, 1]
    assert detail["last_telemetry"]["seq"] == 2
    events = client.get("/api/v1/devices/d1/events?limit=1", headers=viewer).json()
    assert events["count"] == 1 and events["data"][0]["kind"] == "activated"
    windows = client.get("/api/v1/devices/d1/telemetry", headers=viewer).json()
    assert [w["seq"] for w in windows["data"]] == [2, 1] and windows["data"][0]["p95_ms"] == 3.0
    for path in ("/api/v1/devices/ghost", "/api/v1/devices/ghost/events", "/api/v1/devices/ghost/telemetry"):
        r = client.get(path, headers=viewer)
        assert r.status_code == 404 and "'ghost' is not known" in r.json()["detail"]


def test_assignment_flow(
    ctx: HubContext, client: TestClient, auth: dict[Role, dict[str, str]], publisher: RecordingPublisher
) -> None:
    _seed_devices(ctx)
    op = auth[Role.OPERATOR]
    sha = _upload(client, op, tiny_onnx()).json()["sha256"]
    r = client.post(
        "/api/v1/assignments", headers=op, json={"model": "digits", "version": "1", "devices": ["d1"]}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"assigned": [{"device_id": "d1", "generation": 1}], "count": 1, "skipped": []}
    assert desired_pb2.DesiredState.FromString(publisher.retained["d1"]).model.sha256 == sha

    d1 = client.get("/api/v1/devices/d1", headers=auth[Role.VIEWER]).json()
    # A pushed file is a one-variant version: its variant is named by the precision read from the graph.
    assert d1["desired_model"] == {
        "name": "digits",
        "version": "1",
        "sha256": sha,
        "variant": "fp32",
        "precision": "fp32",
    }
    assert (d1["desired_generation"], d1["in_sync"]) == (1, False)
    # The device reports it now runs the model: in sync.
    Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock).ingest(
        [
            InboundMessage(
                f"ef/v1/{ctx.settings.fleet}/dev/d1/status",
                status("d1", active=model_ref("digits", "1", sha), applied_generation=1).SerializeToString(),
            )
        ]
    )
    d1 = client.get("/api/v1/devices?model=digits", headers=auth[Role.VIEWER]).json()["data"][0]
    assert (d1["id"], d1["in_sync"], d1["applied_generation"]) == ("d1", True, 1)

    r = client.post(
        "/api/v1/assignments", headers=op, json={"model": "digits", "version": "1", "selector": {"site": "b"}}
    )
    assert r.json()["assigned"] == [{"device_id": "d2", "generation": 1}]


def test_assignment_errors(
    ctx: HubContext, client: TestClient, auth: dict[Role, dict[str, str]], publisher: RecordingPublisher
) -> None:
    _seed_devices(ctx)
    op = auth[Role.OPERATOR]
    _upload(client, op, tiny_onnx())
    r = client.post(
        "/api/v1/assignments", headers=op, json={"model": "digits", "version": "1", "devices": ["d1", "nope"]}
    )
    assert r.status_code == 404 and r.json()["detail"].startswith("unknown devices: nope")
    both = {"model": "digits", "version": "1", "devices": ["d1"], "selector": {"site": "a"}}
    r = client.post("/api/v1/assignments", headers=op, json=both)
    assert r.status_code == 422 and "exactly one of 'devices'" in r.text
    r = client.post(
        "/api/v1/assignments",
        headers=auth[Role.VIEWER],
        json={"model": "digits", "version": "1", "devices": ["d1"]},
    )
    assert r.status_code == 403
    publisher.fail_with = "not connected to the MQTT broker at 127.0.0.1:1"
    r = client.post(
        "/api/v1/assignments", headers=op, json={"model": "digits", "version": "1", "devices": ["d1"]}
    )
    assert r.status_code == 503 and "republished when the hub reconnects" in r.json()["detail"]


def test_admin_creates_tokens(client: TestClient, auth: dict[Role, dict[str, str]]) -> None:
    r = client.post("/api/v1/tokens", headers=auth[Role.ADMIN], json={"name": "dash", "role": "viewer"})
    assert r.status_code == 201
    token = r.json()["token"]
    assert client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    dup = client.post("/api/v1/tokens", headers=auth[Role.ADMIN], json={"name": "dash", "role": "viewer"})
    assert dup.status_code == 409


def test_openapi_documents_the_upload_form(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/models"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["required"]) == {"file", "name", "version"}
    assert spec["paths"]["/api/v1/devices"]["get"]["security"] == [{"HTTPBearer": []}]
