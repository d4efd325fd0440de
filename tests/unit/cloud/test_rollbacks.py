"""Device rollbacks on the hub: recorded from ROLLED_BACK events, shown by the API, never offered again.

SQLite in a temp folder, an in-memory publisher, FastAPI's TestClient; the devices' messages go
through the real ingest path.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import registry, tokens
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import common_pb2, event_pb2
from tests.unit.cloud.helpers import status, tiny_onnx


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def headers(ctx: HubContext) -> dict[str, str]:
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "op", Role.OPERATOR)
    return {"Authorization": f"Bearer {secret}"}


def rolled_back(device: str, seq: int, version: str, *, refused: bool = True) -> event_pb2.Event:
    details = {"gate": "divergence", "js_divergence": "0.71", "requests": "32", "swap_ms": "0.004"}
    if refused:
        details["refused"] = "true"
    return event_pb2.Event(
        device_id=device,
        seq=seq,
        ts_ms=1_900_000_000_000 + seq,
        kind=event_pb2.EVENT_KIND_ROLLED_BACK,
        model=common_pb2.ModelRef(name="digits", version=version, format="onnx", sha256="ab" * 32, length=9),
        reason=f"digits:{version} rolled back: predicted-class distribution diverges",
        details=details,
        generation=4,
    )


@pytest.fixture
def fleet(ctx: HubContext) -> Ingestor:
    """d1, d2 (site a) and d3 (site b); digits 1 and 2 registered."""
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev"
    ingestor.ingest(
        [
            InboundMessage(f"{base}/{d}/status", status(d, labels={"site": site}).SerializeToString())
            for d, site in (("d1", "a"), ("d2", "a"), ("d3", "b"))
        ]
    )
    with ctx.sessions() as s:
        registry.register_model(s, ctx.store, "digits", "1", io.BytesIO(tiny_onnx(1.0)))
        registry.register_model(s, ctx.store, "digits", "2", io.BytesIO(tiny_onnx(2.0)))
    return ingestor


def send(ctx: HubContext, ingestor: Ingestor, device: str, event: event_pb2.Event) -> None:
    topic = f"ef/v1/{ctx.settings.fleet}/dev/{device}/events"
    ingestor.ingest([InboundMessage(topic, event.SerializeToString())])


def test_a_rollback_event_is_recorded_once_and_listed(
    ctx: HubContext, fleet: Ingestor, client: TestClient, headers: dict[str, str]
) -> None:
    send(ctx, fleet, "d1", rolled_back("d1", 7, "2"))
    send(ctx, fleet, "d1", rolled_back("d1", 7, "2"))  # a QoS 1 redelivery
    assert fleet.stats.snapshot()["rollbacks"] == 1
    body = client.get("/api/v1/rollbacks", headers=headers).json()
    assert body["count"] == 1
    (row,) = body["data"]
    assert (row["device_id"], row["model_version"], row["gate"], row["generation"]) == (
        "d1",
        "2",
        "divergence",
        4,
    )
    assert row["refused"] is True and row["details"]["js_divergence"] == "0.71"
    assert "distribution diverges" in row["reason"]
    assert client.get("/api/v1/rollbacks?device=d2", headers=headers).json()["count"] == 0
    assert client.get("/api/v1/rollbacks?model=digits&version=1", headers=headers).json()["count"] == 0
    detail = client.get("/api/v1/devices/d1", headers=headers).json()
    assert [r["model_version"] for r in detail["rollbacks"]] == ["2"]
    assert client.get("/api/v1/devices/d2", headers=headers).json()["rollbacks"] == []


def test_the_hub_does_not_offer_a_rolled_back_version_again(
    ctx: HubContext,
    fleet: Ingestor,
    client: TestClient,
    headers: dict[str, str],
    publisher: RecordingPublisher,
) -> None:
    send(ctx, fleet, "d1", rolled_back("d1", 3, "2"))
    # Named: refused, and the message says which device, which version and why.
    r = client.post(
        "/api/v1/assignments",
        headers=headers,
        json={"model": "digits", "version": "2", "devices": ["d1", "d2"]},
    )
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "does not offer digits:2 again" in detail and "d1 rolled back digits:2" in detail
    assert "distribution diverges" in detail
    assert publisher.history == []
    # By label: d1 is left out and listed; d2 gets it.
    r = client.post(
        "/api/v1/assignments",
        headers=headers,
        json={"model": "digits", "version": "2", "selector": {"site": "a"}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["device_id"] for a in body["assigned"]] == ["d2"]
    assert [s["device_id"] for s in body["skipped"]] == ["d1"] and "rolled back digits:2" in body["skipped"][
        0
    ]["reason"]
    assert [d for d, _ in publisher.history] == ["d2"]
    # Another version is still offered to d1.
    r = client.post(
        "/api/v1/assignments", headers=headers, json={"model": "digits", "version": "1", "devices": ["d1"]}
    )
    assert r.status_code == 200 and r.json()["count"] == 1


def test_only_devices_that_refused_it_are_left_out_and_all_of_them_is_a_conflict(
    ctx: HubContext, fleet: Ingestor, client: TestClient, headers: dict[str, str]
) -> None:
    send(ctx, fleet, "d3", rolled_back("d3", 1, "2"))
    r = client.post(
        "/api/v1/assignments",
        headers=headers,
        json={"model": "digits", "version": "2", "selector": {"site": "b"}},
    )
    assert r.status_code == 409 and "every device chosen rolled back digits:2" in r.json()["detail"]


def test_a_fallback_at_start_is_recorded_but_refuses_nothing(
    ctx: HubContext, fleet: Ingestor, client: TestClient, headers: dict[str, str]
) -> None:
    send(ctx, fleet, "d2", rolled_back("d2", 5, "2", refused=False))
    (row,) = client.get("/api/v1/rollbacks", headers=headers).json()["data"]
    assert row["refused"] is False
    r = client.post(
        "/api/v1/assignments", headers=headers, json={"model": "digits", "version": "2", "devices": ["d2"]}
    )
    assert r.status_code == 200
