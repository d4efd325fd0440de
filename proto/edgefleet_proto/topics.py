"""MQTT topic names, the one place that spells them.

    {prefix}/{fleet}/dev/{device}/{channel}

with prefix ``ef/v1``. Fleet and device ids are validated so that no id can
smuggle a wildcard or a level separator into a topic (``+``, ``#``, ``/``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "ef/v1"
# Ids become single topic levels and file names on the device: keep them boring.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class TopicError(ValueError):
    """A topic or an id that cannot be part of one."""


class Channel(enum.StrEnum):
    STATUS = "status"  # device -> hub, retained birth/death
    TELEMETRY = "telemetry"  # device -> hub, QoS 1
    SKETCH = "sketch"  # device -> hub, QoS 1
    EVENTS = "events"  # device -> hub, QoS 1
    DESIRED = "desired"  # hub -> device, retained
    CMD = "cmd"  # hub -> device, QoS 1

    @property
    def from_device(self) -> bool:
        return self in _FROM_DEVICE


_FROM_DEVICE = frozenset({Channel.STATUS, Channel.TELEMETRY, Channel.SKETCH, Channel.EVENTS})


def validate_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopicError(
            f"invalid {kind} id {value!r}: expected 1-128 characters of letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return value


def validate_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise TopicError(f"invalid topic prefix {prefix!r}: expected levels like 'ef/v1'")
    return prefix


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The topics of one device."""

    fleet: str
    device: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_id("fleet", self.fleet)
        validate_id("device", self.device)

    def topic(self, channel: Channel) -> str:
        return f"{self.prefix}/{self.fleet}/dev/{self.device}/{channel.value}"

    @property
    def status(self) -> str:
        return self.topic(Channel.STATUS)

    @property
    def telemetry(self) -> str:
        return self.topic(Channel.TELEMETRY)

    @property
    def sketch(self) -> str:
        return self.topic(Channel.SKETCH)

    @property
    def events(self) -> str:
        return self.topic(Channel.EVENTS)

    @property
    def desired(self) -> str:
        return self.topic(Channel.DESIRED)

    @property
    def cmd(self) -> str:
        return self.topic(Channel.CMD)


@dataclass(frozen=True, slots=True)
class FleetTopics:
    """Topic filters the hub subscribes to, and parsing of what arrives."""

    fleet: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_id("fleet", self.fleet)

    def device(self, device: str) -> DeviceTopics:
        return DeviceTopics(self.fleet, device, self.prefix)

    def filter(self, channel: Channel, share_group: str | None = None) -> str:
        """Filter for one channel of every device; a shared subscription when a group is given."""
        base = f"{self.prefix}/{self.fleet}/dev/+/{channel.value}"
        if share_group is None:
            return base
        validate_id("share group", share_group)
        return f"$share/{share_group}/{base}"

    def parse(self, topic: str) -> tuple[str, Channel]:
        """Split a concrete topic into (device id, channel); raise TopicError if it is not ours."""
        head = f"{self.prefix}/{self.fleet}/dev/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is outside {head}*")
        rest = topic[len(head) :].split("/")
        if len(rest) != 2:
            raise TopicError(f"topic {topic!r}: expected {head}<device>/<channel>")
        device, channel = rest
        validate_id("device", device)
        try:
            return device, Channel(channel)
        except ValueError:
            raise TopicError(f"topic {topic!r}: unknown channel {channel!r}") from None
