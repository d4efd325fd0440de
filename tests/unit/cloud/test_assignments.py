"""Assignment service: generations grow, payloads are complete, failures are explicit."""

from __future__ import annotations

import io

import pytest

from cloud.artifacts import ArtifactStore
from cloud.clock import to_ms
from cloud.db import SessionFactory
from cloud.errors import DeliveryError, InvalidInputError, NotFoundError, UnknownDevicesError
from cloud.models import DesiredState
from cloud.services import assignments, registry
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2
from tests.unit.cloud.helpers import T0, FrozenClock, status, tiny_onnx

FLEET = "unit"
ENDPOINT = "hub.example:50051"


def _assign(
    sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock, **target: object
) -> list[DesiredState]:
    with sessions() as s:
        return assignments.assign(
            s,
            publisher,
            "digits",
            "1",
            fleet=FLEET,
            artifact_endpoint=ENDPOINT,
            clock=clock,
            **target,  # type: ignore[arg-type]
        )


class TestAssignments:
    @pytest.fixture(autouse=True)
    def fleet(self, sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock) -> None:
        """Three devices (d1, d2 in site a; d3 in site b) and a registered model digits 1."""
        ingestor = Ingestor(sessions, FleetTopics(FLEET), clock=clock)
        ingestor.ingest(
            [
                InboundMessage(
                    f"ef/v1/{FLEET}/dev/{d}/status",
                    status(d, labels={"site": site}, applied_generation=gen).SerializeToString(),
                )
                for d, site, gen in (("d1", "a", 0), ("d2", "a", 0), ("d3", "b", 5))
            ]
        )
        with sessions() as s:
            registry.register_model(s, store, "digits", "1", io.BytesIO(tiny_onnx()))

    def test_assign_publishes_a_complete_desired_state(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        rows = _assign(sessions, publisher, clock, device_ids=["d1"])
        assert [(r.device_id, r.generation) for r in rows] == [("d1", 1)]
        desired = desired_pb2.DesiredState.FromString(publisher.retained["d1"])
        with sessions() as s:
            mv = registry.get_model(s, "digits", "1")
        assert (desired.device_id, desired.fleet, desired.generation) == ("d1", FLEET, 1)
        assert desired.issued_at_ms == to_ms(T0)
        assert (desired.model.name, desired.model.version, desired.model.format) == ("digits", "1", "onnx")
        assert (desired.model.sha256, desired.model.length) == (mv.sha256, mv.length)
        assert desired.artifact_endpoint == ENDPOINT

    def test_generation_only_grows(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        _assign(sessions, publisher, clock, device_ids=["d1", "d2"])
        rows = _assign(sessions, publisher, clock, device_ids=["d2", "d1", "d2"])
        assert [(r.device_id, r.generation) for r in rows] == [("d1", 2), ("d2", 2)]
        # d3 already applied generation 5 (say, from before the hub's database was rebuilt).
        assert [r.generation for r in _assign(sessions, publisher, clock, device_ids=["d3"])] == [6]

    def test_selector_picks_by_labels(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        rows = _assign(sessions, publisher, clock, selector={"site": "a"})
        assert sorted(r.device_id for r in rows) == ["d1", "d2"]
        with pytest.raises(NotFoundError, match="no device in fleet 'unit' has labels site=zz"):
            _assign(sessions, publisher, clock, selector={"site": "zz"})

    def test_unknown_devices_are_listed_and_nothing_changes(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        with pytest.raises(UnknownDevicesError, match="unknown devices: ghost-1, ghost-2") as info:
            _assign(sessions, publisher, clock, device_ids=["d1", "ghost-2", "ghost-1"])
        assert info.value.device_ids == ["ghost-1", "ghost-2"]
        assert publisher.history == []
        with sessions() as s:
            assert s.get(DesiredState, "d1") is None

    def test_bad_targets(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        with pytest.raises(InvalidInputError, match="exactly one of"):
            _assign(sessions, publisher, clock)
        with pytest.raises(InvalidInputError, match="invalid device id"):
            _assign(sessions, publisher, clock, device_ids=["a/#"])
        with sessions() as s, pytest.raises(NotFoundError, match="digits version 2 is not registered"):
            assignments.assign(
                s, publisher, "digits", "2", device_ids=["d1"], fleet=FLEET, artifact_endpoint="x:1"
            )

    def test_broker_down_still_stores_and_says_so(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        publisher.fail_with = "not connected to the MQTT broker"
        with pytest.raises(DeliveryError, match="will be republished") as info:
            _assign(sessions, publisher, clock, device_ids=["d1", "d2"])
        assert info.value.failed == ["d1", "d2"]
        with sessions() as s:
            payloads = dict(assignments.desired_payloads(s, fleet=FLEET, artifact_endpoint=ENDPOINT))
        assert sorted(payloads) == ["d1", "d2"]
        assert desired_pb2.DesiredState.FromString(payloads["d1"]).generation == 1

    def test_desired_payloads_match_what_was_published(
        self, sessions: SessionFactory, publisher: RecordingPublisher, clock: FrozenClock
    ) -> None:
        _assign(sessions, publisher, clock, device_ids=["d1", "d3"])
        with sessions() as s:
            payloads = dict(assignments.desired_payloads(s, fleet=FLEET, artifact_endpoint=ENDPOINT))
            assert assignments.desired_payloads(s, fleet="other", artifact_endpoint=ENDPOINT) == []
        assert payloads == publisher.retained
