"""What the hub shows of a device, from messages sent through the real broker into SQLite and PostgreSQL.

- the active variant and precision, the trial, firmware, trust and queue figures a status carries;
- "in sync" means committed: never while a trial runs;
- event figures keep their types (and an older agent's text details stay text);
- a crashed device's last will (offline, no slots) keeps the models the hub last knew.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cloud.api.app import create_app
from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.models import DeviceState, Role
from cloud.services import assignments, registry, tokens
from cloud.services.devices import get_device
from cloud.services.ingest import Ingestor
from cloud.services.publisher import RecordingPublisher
from cloud.settings import Settings
from cloud.transport.mqtt import HubMqtt
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import common_pb2, device_pb2, event_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for
from tests.unit.cloud.helpers import FrozenClock, tiny_onnx

pytestmark = pytest.mark.integration

ENDPOINT = "hub.test:50051"
STARTED_MS = 1_900_000_000_000


@pytest.fixture
def hub(mqtt_broker: tuple[str, int], fleet_name: str, sessions: SessionFactory) -> Iterator[Ingestor]:
    host, port = mqtt_broker
    ingestor = Ingestor(sessions, FleetTopics(fleet_name))
    running = HubMqtt(
        Settings(fleet=fleet_name, mqtt_host=host, mqtt_port=port, publish_timeout_s=5.0),
        on_batch=ingestor.ingest,
        desired_source=lambda: [],
    )
    running.start()
    assert running.wait_ready(10)
    yield ingestor
    running.stop()


@pytest.fixture
def device(mqtt_broker: tuple[str, int]) -> Iterator[Probe]:
    probe = Probe(*mqtt_broker)
    yield probe
    probe.close()


@pytest.fixture
def api(
    fleet_name: str,
    engine: Engine,
    store: ArtifactStore,
    publisher: RecordingPublisher,
    clock: FrozenClock,
    sessions: SessionFactory,
    settings: Settings,
) -> Iterator[TestClient]:
    ctx = HubContext(
        settings=settings.model_copy(update={"fleet": fleet_name}),
        engine=engine,
        store=store,
        publisher=publisher,
        artifact_endpoint=ENDPOINT,
        clock=clock,
    )
    with sessions() as s:
        _row, secret = tokens.create_token(s, "viewer", Role.VIEWER)
    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


def _ref(sha256: str) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(
        name="digits",
        version="1",
        format="onnx",
        sha256=sha256,
        length=1,
        variant="int8-qdq",
        precision="int8",
    )


def _status(
    device_id: str,
    *,
    state: int = device_pb2.DEVICE_STATE_ONLINE,
    slots: dict[str, common_pb2.ModelRef] | None = None,
    trial: device_pb2.TrialStatus | None = None,
    applied_generation: int = 0,
    sent_at_ms: int = 0,
) -> bytes:
    msg = device_pb2.DeviceStatus(
        device_id=device_id,
        state=state,  # type: ignore[arg-type]
        agent_version="1.2.3",
        applied_generation=applied_generation,
        health="serving" if state == device_pb2.DEVICE_STATE_ONLINE else "offline",
        capabilities=device_pb2.Capabilities(runtimes=["onnxruntime/1.20"]),
        sent_at_ms=sent_at_ms,
    )
    for name, ref in (slots or {}).items():
        msg.slots.add(name=name, model=ref)
    if trial is not None:
        msg.trial.CopyFrom(trial)
    if state == device_pb2.DEVICE_STATE_ONLINE:
        msg.hardware_id = "sim-board"
        msg.firmware_version = "1.1.0"
        msg.firmware_slot = "b"
        msg.trusted_root_version = 3
        msg.queued_messages = 7
        msg.dropped_messages = 2
    return msg.SerializeToString()


def _view(api: TestClient, device_id: str) -> dict[str, Any]:
    answer = api.get(f"/api/v1/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    listed = api.get("/api/v1/devices").json()["data"]
    row = next(d for d in listed if d["id"] == device_id)
    assert {k: row[k] for k in ("active_model", "trial", "in_sync")} == {
        k: body[k] for k in ("active_model", "trial", "in_sync")
    }, "the list and the single view agree"
    return body


def _stored(sessions: SessionFactory, device_id: str, check: Any) -> None:
    def done() -> bool:
        with sessions() as s:
            try:
                return bool(check(get_device(s, device_id)))
            except LookupError:
                return False

    wait_for(done)


def test_status_figures_trial_and_committed_sync(
    hub: Ingestor,
    device: Probe,
    api: TestClient,
    sessions: SessionFactory,
    store: ArtifactStore,
    publisher: RecordingPublisher,
    clock: FrozenClock,
    fleet_name: str,
) -> None:
    topic = FleetTopics(fleet_name).device("d1").status
    device.publish(topic, _status("d1"), retain=True)
    _stored(sessions, "d1", lambda d: d.state is DeviceState.ONLINE)
    with sessions() as s:
        sha = registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx())).sha256
        [row] = assignments.assign(
            s, publisher, "digits", "1", device_ids=["d1"], fleet=fleet_name, artifact_endpoint=ENDPOINT
        )
    wanted = _ref(sha)
    trial = device_pb2.TrialStatus(
        model=wanted,
        mode="serve",
        started_at_ms=STARTED_MS,
        requests=24,
        window_requests=100,
        window_ends_at_ms=STARTED_MS + 60_000,
    )
    # Serve mode: the new version already answers, and (to isolate the trial) the generation is applied.
    on_trial = _status("d1", slots={"active": wanted}, trial=trial, applied_generation=row.generation)
    device.publish(topic, on_trial, retain=True)
    _stored(sessions, "d1", lambda d: d.trial is not None)
    view = _view(api, "d1")
    assert view["active_model"] == {
        "name": "digits",
        "version": "1",
        "sha256": sha,
        "variant": "int8-qdq",
        "precision": "int8",
    }
    assert view["trial"] == {
        "model": view["active_model"],
        "mode": "serve",
        "requests": 24,
        "window_requests": 100,
        "started_at": "2030-03-17T17:46:40Z",
        "window_ends_at": "2030-03-17T17:47:40Z",
    }
    assert view["in_sync"] is False, "a version on trial is not committed"
    assert {k: view[k] for k in ("hardware_id", "firmware_version", "firmware_slot")} == {
        "hardware_id": "sim-board",
        "firmware_version": "1.1.0",
        "firmware_slot": "b",
    }
    assert (view["trusted_root_version"], view["queued_messages"], view["dropped_messages"]) == (3, 7, 2)

    committed = _status("d1", slots={"active": wanted}, applied_generation=row.generation)
    device.publish(topic, committed, retain=True)
    _stored(sessions, "d1", lambda d: d.trial is None)
    view = _view(api, "d1")
    assert view["trial"] is None and view["in_sync"] is True


def test_a_last_will_without_slots_keeps_the_known_models(
    hub: Ingestor, device: Probe, api: TestClient, sessions: SessionFactory, fleet_name: str
) -> None:
    topic = FleetTopics(fleet_name).device("d2").status
    serving, previous = _ref("a" * 64), _ref("b" * 64)
    trial = device_pb2.TrialStatus(model=_ref("c" * 64), mode="shadow", started_at_ms=STARTED_MS)
    birth = _status("d2", slots={"active": serving, "previous": previous}, trial=trial, applied_generation=4)
    device.publish(topic, birth, retain=True)
    _stored(sessions, "d2", lambda d: d.active_model_sha256 == "a" * 64)
    # After a crash the broker publishes the will: offline, and no slots at all.
    device.publish(topic, _status("d2", state=device_pb2.DEVICE_STATE_OFFLINE), retain=True)
    _stored(sessions, "d2", lambda d: d.state is DeviceState.OFFLINE)
    view = _view(api, "d2")
    assert view["state"] == "offline" and view["trial"] is None
    assert view["active_model"]["sha256"] == "a" * 64 and view["active_model"]["variant"] == "int8-qdq"
    assert view["previous_model"]["sha256"] == "b" * 64
    assert view["applied_generation"] == 4 and view["firmware_version"] == "1.1.0"


def test_event_figures_keep_their_types(
    hub: Ingestor, device: Probe, api: TestClient, sessions: SessionFactory, fleet_name: str
) -> None:
    topic = FleetTopics(fleet_name).device("d3").events
    device.publish(FleetTopics(fleet_name).device("d3").status, _status("d3"), retain=True)
    typed = event_pb2.Event(device_id="d3", seq=1, ts_ms=STARTED_MS, kind=event_pb2.EVENT_KIND_COMMITTED)
    figures: dict[str, Any] = {"requests": 24, "p95_ms": 1.25, "judged": True, "mode": "serve", "big": 2**62}
    for key, value in figures.items():
        typed.details[key] = str(value)
        slot = typed.data[key]
        if isinstance(value, bool):
            slot.flag = value
        elif isinstance(value, int):
            slot.integer = value
        elif isinstance(value, float):
            slot.number = value
        else:
            slot.text = value
    typed.data["ratio"].number = float("nan")  # JSON has no NaN: kept as text
    older = event_pb2.Event(
        device_id="d3",
        seq=2,
        ts_ms=STARTED_MS,
        kind=event_pb2.EVENT_KIND_COMMITTED,
        details={"requests": "24"},
    )
    # The device is known once its status is stored; its events may only arrive after that.
    _stored(sessions, "d3", lambda d: d.state is DeviceState.ONLINE)
    device.publish(topic, typed.SerializeToString())
    device.publish(topic, older.SerializeToString())
    wait_for(lambda: len(api.get("/api/v1/devices/d3/events").json().get("data", [])) == 2)
    events = {e["seq"]: e["details"] for e in api.get("/api/v1/devices/d3/events").json()["data"]}
    assert events[1] == {**figures, "ratio": "nan"}
    assert type(events[1]["requests"]) is int and type(events[1]["p95_ms"]) is float
    assert events[1]["judged"] is True
    assert events[2] == {"requests": "24"}, "an older agent's details stay text"
    detail = _view(api, "d3")
    assert detail["recent_events"][1]["details"]["requests"] == 24
