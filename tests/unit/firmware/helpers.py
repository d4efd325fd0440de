"""In-memory stand-ins for the firmware manager's peers: a repository of bundles and an event log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.errors import HubUnavailableError
from edge_agent.trust.targets import SignedTarget
from edgefleet_proto.v1 import event_pb2
from firmware_images.build import Bundle

K = event_pb2.EventKind


def signed(bundle: Bundle, path: str | None = None) -> SignedTarget:
    """The target a repository would sign for ``bundle``."""
    return SignedTarget(
        path=path or f"firmware/{bundle.file_name()}",
        length=bundle.length,
        sha256=bundle.sha256,
        custom=bundle.manifest.custom(),
    )


@dataclass
class Events:
    """Every event the manager reported, in order."""

    seen: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)

    def __call__(
        self,
        kind: event_pb2.EventKind.ValueType,
        reason: str = "",
        *,
        details: Mapping[str, str] | None = None,
    ) -> None:
        self.seen.append((kind, reason, dict(details or {})))

    @property
    def kinds(self) -> list[str]:
        return [K.Name(k).removeprefix("EVENT_KIND_") for k, _, _ in self.seen]

    def reasons(self, kind: event_pb2.EventKind.ValueType) -> list[str]:
        return [r for k, r, _ in self.seen if k == kind]


@dataclass
class FakeRepo:
    """Serves bundle bytes by target path; can be told to serve other bytes or to fail."""

    files: dict[str, bytes] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    fetched: list[str] = field(default_factory=list)

    def add(self, target: SignedTarget, data: bytes) -> SignedTarget:
        self.files[target.path] = data
        return target

    async def download(self, target: SignedTarget, dest: Path) -> None:
        self.fetched.append(target.path)
        if target.path in self.fail:
            raise HubUnavailableError(f"hub unreachable while fetching {target.path}")
        dest.write_bytes(self.files[target.path])


@dataclass
class Restarts:
    count: int = 0

    def __call__(self) -> None:
        self.count += 1
