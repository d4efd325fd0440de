"""How desired states leave the hub: an interface, and an in-memory fake for tests."""

from __future__ import annotations

import threading
from typing import Protocol

from cloud.errors import PublishError


class DesiredPublisher(Protocol):
    """Publishes a device's desired state (retained, QoS 1); raises PublishError on failure."""

    def publish_desired(self, device_id: str, payload: bytes) -> None: ...


class RecordingPublisher:
    """In-memory publisher for unit tests: keeps the latest payload per device, like a retained store."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.history: list[tuple[str, bytes]] = []
        # Commands (cmd topic, not retained) in the order they were sent.
        self.commands: list[tuple[str, bytes]] = []
        # Set to a reason string to make every publish fail, as a broker that is down would.
        self.fail_with: str | None = None
        self._lock = threading.Lock()

    def publish_desired(self, device_id: str, payload: bytes) -> None:
        with self._lock:
            if self.fail_with is not None:
                raise PublishError(self.fail_with)
            self.retained[device_id] = payload
            self.history.append((device_id, payload))

    def publish_command(self, device_id: str, payload: bytes) -> None:
        with self._lock:
            if self.fail_with is not None:
                raise PublishError(self.fail_with)
            self.commands.append((device_id, payload))
