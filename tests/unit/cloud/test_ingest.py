"""Ingest service: statuses, telemetry and events land in the database; bad input is counted, not fatal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from cloud.clock import to_ms
from cloud.db import SessionFactory
from cloud.models import Device, DeviceEvent, DeviceState, TelemetryWindow
from cloud.services.ingest import InboundMessage, Ingestor, event_kind
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import device_pb2, event_pb2
from tests.unit.cloud.helpers import T0, FrozenClock, event, model_ref, status, telemetry

FLEET = "unit"
TOPICS = FleetTopics(FLEET)


def _msg(device: str, channel: str, payload: bytes, *, retained: bool = False) -> InboundMessage:
    return InboundMessage(f"ef/v1/{FLEET}/dev/{device}/{channel}", payload, retained)


class TestIngest:
    @pytest.fixture
    def ingestor(self, sessions: SessionFactory, clock: FrozenClock) -> Ingestor:
        return Ingestor(sessions, TOPICS, clock=clock)

    def test_status_creates_and_updates_a_device(
        self, ingestor: Ingestor, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        ref = model_ref("digits", "1", "a" * 64)
        ingestor.ingest([_msg("d1", "status", status("d1", labels={"site": "x"}).SerializeToString())])
        clock.advance(60)
        ingestor.ingest(
            [_msg("d1", "status", status("d1", active=ref, applied_generation=3).SerializeToString())]
        )
        with sessions() as s:
            d = s.get(Device, "d1")
            assert d is not None
            assert (d.fleet, d.state, d.agent_version, d.health) == (
                FLEET,
                DeviceState.ONLINE,
                "1.2.3",
                "serving",
            )
            assert (d.active_model_name, d.active_model_version, d.active_model_sha256) == (
                "digits",
                "1",
                "a" * 64,
            )
            assert d.applied_generation == 3
            assert d.labels == {}  # the latest status is the truth
            assert d.capabilities["cpu_count"] == 4 and d.capabilities["mem_total_bytes"] == 2**33
            assert d.first_seen == T0 and d.last_seen == T0 + timedelta(seconds=60)
        assert ingestor.stats.snapshot()["statuses"] == 2

    def test_death_message_changes_only_the_state(self, ingestor: Ingestor, sessions: SessionFactory) -> None:
        ref = model_ref("digits", "1", "a" * 64)
        ingestor.ingest(
            [_msg("d1", "status", status("d1", active=ref, labels={"a": "b"}).SerializeToString())]
        )
        # A last will, composed at connect time without slots or labels.
        ingestor.ingest([_msg("d1", "status", status("d1", online=False, health="").SerializeToString())])
        with sessions() as s:
            d = s.get(Device, "d1")
            assert d is not None
            assert d.state == DeviceState.OFFLINE
            assert d.active_model_name == "digits" and d.labels == {"a": "b"} and d.health == "serving"

    def test_retained_status_does_not_claim_the_device_is_alive_now(
        self, ingestor: Ingestor, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        sent = T0 - timedelta(hours=5)
        ingestor.ingest(
            [_msg("d1", "status", status("d1", sent_at_ms=to_ms(sent)).SerializeToString(), retained=True)]
        )
        with sessions() as s:
            d = s.get(Device, "d1")
            assert d is not None and d.last_seen == sent

    def test_a_mixed_batch_moves_each_devices_last_seen_forward_never_back(
        self, ingestor: Ingestor, sessions: SessionFactory, clock: FrozenClock
    ) -> None:
        ingestor.ingest([_msg("d1", "status", status("d1").SerializeToString())])
        later = clock.advance(30)
        ingestor.ingest(
            [
                _msg("d1", "telemetry", telemetry("d1", 1).SerializeToString()),
                _msg("d2", "events", event("d2", 1).SerializeToString()),  # no status from it yet
                _msg("d3", "status", status("d3").SerializeToString()),
                _msg("d3", "telemetry", telemetry("d3", 1).SerializeToString()),
            ]
        )
        clock.advance(-10)  # a clock stepped back (another replica's, say) does not undo what was seen
        ingestor.ingest([_msg("d1", "telemetry", telemetry("d1", 2).SerializeToString())])
        with sessions() as s:
            seen = {d.id: (d.state, d.first_seen, d.last_seen) for d in s.exec(select(Device)).all()}
        assert seen == {
            "d1": (DeviceState.ONLINE, T0, later),
            "d2": (DeviceState.UNKNOWN, later, later),
            "d3": (DeviceState.ONLINE, later, later),
        }
        assert ingestor.stats.snapshot()["telemetry_windows"] == 3

    def test_telemetry_and_events_are_stored_once(self, ingestor: Ingestor, sessions: SessionFactory) -> None:
        batch = telemetry("d1", 1, 2).SerializeToString()
        ev = event("d1", 7, event_pb2.EVENT_KIND_ROLLED_BACK).SerializeToString()
        ingestor.ingest([_msg("d1", "telemetry", batch), _msg("d1", "events", ev)])
        # QoS 1 redelivery: the same messages again, in a batch of their own and within one batch.
        ingestor.ingest([_msg("d1", "telemetry", batch), _msg("d1", "events", ev), _msg("d1", "events", ev)])
        with sessions() as s:
            windows = s.exec(select(TelemetryWindow).order_by(TelemetryWindow.seq)).all()  # type: ignore[arg-type]
            events = s.exec(select(DeviceEvent)).all()
            device = s.get(Device, "d1")
        assert [w.seq for w in windows] == [1, 2]
        assert (windows[0].requests, windows[0].errors, windows[0].p95_ms) == (10, 1, 3.0)
        assert [(e.seq, e.kind, e.reason, e.details) for e in events] == [
            (7, "rolled_back", "event 7", {"k": "v"})
        ]
        assert device is not None and device.state == DeviceState.UNKNOWN  # heard of, no status yet
        snap = ingestor.stats.snapshot()
        assert (snap["telemetry_windows"], snap["events"], snap["duplicates"]) == (2, 1, 4)

    def test_malformed_payloads_are_counted_and_the_batch_goes_on(
        self, ingestor: Ingestor, sessions: SessionFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        secret_looking = b"\xff\xfe not protobuf SECRET-BYTES"
        no_state = status("d1")
        no_state.state = device_pb2.DEVICE_STATE_UNSPECIFIED
        ingestor.ingest(
            [
                _msg("d1", "telemetry", secret_looking),
                _msg("d1", "status", status("d1").SerializeToString()[:-3]),
                InboundMessage("ef/v1/other-fleet/dev/d1/status", b"x"),
                _msg("d1", "status", no_state.SerializeToString()),
                _msg("d2", "events", event("d2", 1).SerializeToString()),
            ]
        )
        snap = ingestor.stats.snapshot()
        assert snap["malformed"] == 4 and snap["events"] == 1
        assert "SECRET-BYTES" not in caplog.text
        assert "ef/v1/unit/dev/d1/telemetry" in caplog.text

    def test_a_device_cannot_write_for_another(self, ingestor: Ingestor, sessions: SessionFactory) -> None:
        ingestor.ingest(
            [
                _msg("d1", "status", status("d2").SerializeToString()),
                _msg("d1", "telemetry", telemetry("d2", 1).SerializeToString()),
                _msg("d1", "events", event("d2", 1).SerializeToString()),
                _msg("d1", "status", status("d1", fleet="elsewhere").SerializeToString()),
            ]
        )
        with sessions() as s:
            assert s.exec(select(Device)).all() == []
            assert s.exec(select(TelemetryWindow)).all() == []
        assert ingestor.stats.snapshot()["rejected"] == 4

    def test_empty_retained_payload_is_a_clear_not_an_error(self, ingestor: Ingestor) -> None:
        ingestor.ingest([_msg("d1", "status", b"", retained=True)])
        snap = ingestor.stats.snapshot()
        assert (snap["ignored"], snap["malformed"]) == (1, 0)

    def test_unknown_event_kinds_stay_readable(self) -> None:
        assert event_kind(event_pb2.EVENT_KIND_DOWNLOAD_FAILED) == "download_failed"
        assert event_kind(999) == "unknown_999"
