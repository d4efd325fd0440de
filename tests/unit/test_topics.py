from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet_proto.topics import Channel, DeviceTopics, FleetTopics, TopicError


def test_device_topics_follow_the_contract() -> None:
    t = DeviceTopics("lab", "dev-01")
    assert t.status == "ef/v1/lab/dev/dev-01/status"
    assert t.desired == "ef/v1/lab/dev/dev-01/desired"
    assert t.cmd == "ef/v1/lab/dev/dev-01/cmd"
    assert DeviceTopics("lab", "d", prefix="acme/ef").telemetry == "acme/ef/lab/dev/d/telemetry"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "dev#1", "dev+", "-lead", "x" * 129, "sp ace", "é"])
def test_ids_that_could_escape_a_topic_level_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="invalid device id"):
        DeviceTopics("lab", bad)


def test_fleet_filters_and_shared_subscriptions() -> None:
    f = FleetTopics("lab")
    assert f.filter(Channel.STATUS) == "ef/v1/lab/dev/+/status"
    assert f.filter(Channel.EVENTS, share_group="hub") == "$share/hub/ef/v1/lab/dev/+/events"


def test_parse_round_trips_and_rejects_foreign_topics() -> None:
    f = FleetTopics("lab")
    assert f.parse("ef/v1/lab/dev/d1/telemetry") == ("d1", Channel.TELEMETRY)
    for bad in ["ef/v1/other/dev/d1/status", "ef/v1/lab/dev/d1/extra/status", "ef/v1/lab/dev/d1/nope"]:
        with pytest.raises(TopicError):
            f.parse(bad)


def test_direction_of_channels() -> None:
    assert {c for c in Channel if c.from_device} == {
        Channel.STATUS,
        Channel.TELEMETRY,
        Channel.SKETCH,
        Channel.EVENTS,
    }


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True), st.sampled_from(list(Channel)))
def test_parse_inverts_topic(device: str, channel: Channel) -> None:
    f = FleetTopics("lab")
    assert f.parse(f.device(device).topic(channel)) == (device, channel)
