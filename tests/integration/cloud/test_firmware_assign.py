"""Firmware and model assignments share one desired state, on SQLite and the real PostgreSQL.

Assigning firmware must leave the model part as it was (the variant chosen for the device, its
artifact, the generation), and assigning a model must keep the firmware; both are signed by the
director and checked here as a device checks them. Firmware for other hardware is refused whole.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cloud.api.app import create_app
from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.models import DesiredFirmware, ModelVariant, Role
from cloud.services import assignments, firmware, registry, tokens
from cloud.services.devices import list_devices
from cloud.services.director import Director
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufSettings, ensure_initialized, open_repository
from edge_agent.trust.director import DirectorKeys, DirectorMark, verify_signed_desired
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import common_pb2, desired_pb2, device_pb2
from firmware_images.samples import SAMPLE_DIR
from tests.unit.cloud.helpers import FrozenClock, tiny_onnx

pytestmark = pytest.mark.integration

FLEET = "unit"
ENDPOINT = "hub.example:50051"
IMAGE = "edgefleet-fw-sim-board-1.0.0.efw"
TFLITE = b"tflite int8 bytes" * 8


def _status(
    device_id: str, *, runtimes: list[str], hardware_id: str, active: common_pb2.ModelRef | None = None
) -> bytes:
    msg = device_pb2.DeviceStatus(
        device_id=device_id,
        state=device_pb2.DEVICE_STATE_ONLINE,
        agent_version="1.2.3",
        labels={"site": "a"},
        capabilities=device_pb2.Capabilities(runtimes=runtimes),
        hardware_id=hardware_id,
    )
    if active is not None:
        msg.slots.add(name="active", model=active)
    return msg.SerializeToString()


@pytest.fixture
def signing(
    tmp_path: Path, sessions: SessionFactory, clock: FrozenClock, publisher: RecordingPublisher
) -> Signing:
    repo = open_repository(Settings(data_dir=tmp_path / "tuf"), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    return Signing(repo, Director(repo, clock=clock), sessions, publisher)


@pytest.fixture
def image_name(sessions: SessionFactory, store: ArtifactStore, signing: Signing, clock: FrozenClock) -> str:
    """digits 1 with its fp32 ONNX baseline and a TFLite int8 variant; firmware for sim-board; devices:

    lite (runs only LiteRT, so it gets tflite-int8, on sim-board), ort (ONNX Runtime, other-board)
    and bare (reports no hardware id).
    """
    with sessions() as s:
        model = registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()), clock=clock)
        lite = store.put_bytes(TFLITE)
        assert model.id is not None
        s.add(
            ModelVariant(
                model_version_id=model.id,
                variant="tflite-int8",
                format="tflite",
                precision="int8",
                sha256=lite.sha256,
                length=lite.length,
                runtimes=[{"name": "litert", "min_version": "1.0"}],
            )
        )
        s.commit()
        info = store.put_bytes((SAMPLE_DIR / IMAGE).read_bytes())
        rows = firmware.register_bundle(s, store, signing, info, clock=clock)
    serving = common_pb2.ModelRef(
        name="digits",
        version="1",
        format="tflite",
        sha256=hashlib.sha256(TFLITE).hexdigest(),
        variant="tflite-int8",
        precision="int8",
    )
    Ingestor(sessions, FleetTopics(FLEET), clock=clock).ingest(
        [
            InboundMessage(f"ef/v1/{FLEET}/dev/{device_id}/status", payload)
            for device_id, payload in (
                ("lite", _status("lite", runtimes=["litert/2.3"], hardware_id="sim-board", active=serving)),
                ("ort", _status("ort", runtimes=["onnxruntime/1.20"], hardware_id="other-board")),
                ("bare", _status("bare", runtimes=["onnxruntime/1.20"], hardware_id="")),
            )
        ]
    )
    return rows[0].name


def _assign_model(
    sessions: SessionFactory, publisher: RecordingPublisher, signing: Signing, **kw: object
) -> None:
    with sessions() as s:
        assignments.assign(
            s,
            publisher,
            "digits",
            "1",
            fleet=FLEET,
            artifact_endpoint=ENDPOINT,
            signing=signing,
            **kw,  # type: ignore[arg-type]
        )


def _assign_firmware(
    sessions: SessionFactory, publisher: RecordingPublisher, signing: Signing, name: str, **kw: object
) -> list[str]:
    with sessions() as s:
        return firmware.assign_firmware(
            s,
            signing,
            publisher,
            name,
            "1.0.0",
            fleet=FLEET,
            artifact_endpoint=ENDPOINT,
            **kw,  # type: ignore[arg-type]
        )


def _device_check(
    signing: Signing, payload: bytes, clock: FrozenClock, device_id: str, last: DirectorMark
) -> tuple[desired_pb2.DesiredState, DirectorMark]:
    """What the device's own director check accepts (signatures by keys of the trusted root)."""
    return verify_signed_desired(
        payload,
        DirectorKeys.from_root(signing.repo.root().signed),
        device_id=device_id,
        fleet=FLEET,
        last=last,
        now_ms=int(clock().timestamp() * 1000),
        max_bytes=16384,
    )


def test_assigning_firmware_keeps_the_model_variant_and_is_signed(
    sessions: SessionFactory,
    publisher: RecordingPublisher,
    signing: Signing,
    clock: FrozenClock,
    image_name: str,
) -> None:
    _assign_model(sessions, publisher, signing, device_ids=["lite"])
    before, mark = _device_check(signing, publisher.retained["lite"], clock, "lite", DirectorMark())
    assert before.model.variant == "tflite-int8" and before.model.format == "tflite"
    assert not before.HasField("firmware")

    clock.advance(60)
    assert _assign_firmware(sessions, publisher, signing, image_name, device_ids=["lite"]) == ["lite"]
    after, mark = _device_check(signing, publisher.retained["lite"], clock, "lite", mark)
    # The model part is what it was: same variant and artifact, same generation (no new trial).
    assert after.model == before.model
    assert (after.generation, after.model_target, after.profile_target) == (
        before.generation,
        before.model_target,
        before.profile_target,
    )
    assert after.model.sha256 == hashlib.sha256(TFLITE).hexdigest()
    assert (after.firmware.name, after.firmware.version, after.firmware.hardware_id) == (
        image_name,
        "1.0.0",
        "sim-board",
    )
    assert after.counter > before.counter

    # And the other way round: a new model assignment keeps the firmware.
    clock.advance(60)
    _assign_model(sessions, publisher, signing, device_ids=["lite"])
    again, _ = _device_check(signing, publisher.retained["lite"], clock, "lite", mark)
    assert again.generation == before.generation + 1
    assert again.model == before.model and again.firmware == after.firmware

    # A reconnecting hub republishes exactly what was published, firmware included.
    with sessions() as s:
        republished = dict(
            assignments.desired_payloads(s, fleet=FLEET, artifact_endpoint=ENDPOINT, signing=signing)
        )
        shown = {d.id: d for d in list_devices(s, fleet=FLEET)}["lite"]
    assert republished == {"lite": publisher.retained["lite"]}
    assert shown.desired_model is not None and shown.active_model is not None
    assert (shown.desired_model.variant, shown.active_model.variant) == ("tflite-int8", "tflite-int8")
    assert shown.active_model.precision == "int8" and shown.hardware_id == "sim-board"


def test_firmware_for_a_device_without_a_model_names_only_firmware(
    sessions: SessionFactory,
    publisher: RecordingPublisher,
    signing: Signing,
    clock: FrozenClock,
    image_name: str,
) -> None:
    _assign_firmware(sessions, publisher, signing, image_name, device_ids=["lite"])
    sent, _ = _device_check(signing, publisher.retained["lite"], clock, "lite", DirectorMark())
    assert not sent.HasField("model") and sent.firmware.hardware_id == "sim-board"
    with sessions() as s:
        assert dict(
            assignments.desired_payloads(s, fleet=FLEET, artifact_endpoint=ENDPOINT, signing=signing)
        ) == {"lite": publisher.retained["lite"]}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"device_ids": ["lite", "ort"]}, "device ort is 'other-board'"),
        ({"selector": {"site": "a"}}, "device bare reports no hardware id"),
    ],
)
def test_firmware_for_other_hardware_is_refused_whole(
    sessions: SessionFactory,
    publisher: RecordingPublisher,
    signing: Signing,
    image_name: str,
    target: dict[str, object],
    expected: str,
) -> None:
    with pytest.raises(firmware.HardwareMismatchError, match=expected) as info:
        _assign_firmware(sessions, publisher, signing, image_name, **target)
    assert str(info.value).startswith(f"image {image_name} 1.0.0 is for hardware 'sim-board'; ")
    assert "lite" not in info.value.mismatched
    with sessions() as s:
        assert s.exec(select(DesiredFirmware)).all() == [], "nothing is assigned, not even to lite"
    assert publisher.history == []


def test_the_api_answers_a_hardware_mismatch_with_409(
    settings: Settings,
    engine: object,
    store: ArtifactStore,
    publisher: RecordingPublisher,
    clock: FrozenClock,
    sessions: SessionFactory,
    signing: Signing,
    image_name: str,
) -> None:
    ctx = HubContext(
        settings=settings.model_copy(update={"fleet": FLEET}),
        engine=engine,  # type: ignore[arg-type]
        store=store,
        publisher=publisher,
        artifact_endpoint=ENDPOINT,
        clock=clock,
        signing=signing,
    )
    with sessions() as s:
        _row, secret = tokens.create_token(s, "operator", Role.OPERATOR)
    with TestClient(create_app(ctx)) as client:
        answer = client.post(
            "/api/v1/firmware/assignments",
            json={"name": image_name, "version": "1.0.0", "devices": ["ort"]},
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert answer.status_code == 409, answer.text
    assert "image edgefleet-fw 1.0.0 is for hardware 'sim-board'; device ort is 'other-board'" in answer.text
