"""The agent's small state file: which model is active, which came before, what was applied.

The file is JSON, replaced atomically (temp file in the same folder, fsync,
``os.replace``, fsync of the folder), so that after a power cut at any instant
it holds either the old state or the new one. A file that does not parse is
moved aside and the agent starts empty: a crash loop on a damaged file would
take the device off the fleet for good.

Sequence numbers for events and telemetry windows must never repeat (the hub
stores a QoS 1 redelivery once by its number), but saving the file for every
message would cost an fsync each. So numbers are reserved in blocks: the file
holds the first number a restarted agent may use, which runs ahead of the
numbers handed out. A crash leaves a gap, never a repeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.clock import Clock
from edge_agent.errors import StateFileError, StoreError
from edge_agent.store import check_sha256, fsync_dir
from edgefleet_proto.v1 import common_pb2

__all__ = ["AgentState", "PersistentState", "StateFile", "ref_from_dict", "ref_to_dict"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
SEQ_BLOCK = 64


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the agent must remember across restarts. ModelRefs here are never mutated."""

    active: common_pb2.ModelRef | None = None
    previous: common_pb2.ModelRef | None = None
    applied_generation: int = 0
    next_event_seq: int = 1
    next_telemetry_seq: int = 1


def ref_to_dict(ref: common_pb2.ModelRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "version": ref.version,
        "format": ref.format,
        "sha256": ref.sha256,
        "length": ref.length,
    }


def ref_from_dict(data: object, key: str) -> common_pb2.ModelRef:
    """Parse a ModelRef dict; raise ValueError naming ``key`` and the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{key}: expected an object, got {type(data).__name__}")
    for field in ("name", "version", "format", "sha256"):
        if not isinstance(data.get(field), str):
            raise ValueError(f"{key}.{field}: expected a string, got {data.get(field)!r}")
    length = data.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"{key}.length: expected a non-negative integer, got {length!r}")
    try:
        check_sha256(data["sha256"])
    except StoreError as e:
        raise ValueError(f"{key}.sha256: {e}") from e
    return common_pb2.ModelRef(
        name=data["name"],
        version=data["version"],
        format=data["format"],
        sha256=data["sha256"],
        length=length,
    )


def _int_field(data: dict[str, Any], key: str, minimum: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _decode(text: str) -> AgentState:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"version: expected {STATE_VERSION}, got {data.get('version')!r}")
    return AgentState(
        active=None if data.get("active") is None else ref_from_dict(data["active"], "active"),
        previous=None if data.get("previous") is None else ref_from_dict(data["previous"], "previous"),
        applied_generation=_int_field(data, "applied_generation", 0),
        next_event_seq=_int_field(data, "next_event_seq", 1),
        next_telemetry_seq=_int_field(data, "next_telemetry_seq", 1),
    )


def _encode(state: AgentState) -> str:
    return json.dumps(
        {
            "version": STATE_VERSION,
            "active": None if state.active is None else ref_to_dict(state.active),
            "previous": None if state.previous is None else ref_to_dict(state.previous),
            "applied_generation": state.applied_generation,
            "next_event_seq": state.next_event_seq,
            "next_telemetry_seq": state.next_telemetry_seq,
        },
        indent=2,
        sort_keys=True,
    )


class StateFile:
    """Atomic reads and writes of one JSON state file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[AgentState, str | None]:
        """The saved state, or an empty one and a sentence saying why the file was not usable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return AgentState(), None
        except (OSError, UnicodeDecodeError) as e:
            return AgentState(), self._set_aside(f"cannot be read ({e})")
        try:
            return _decode(text), None
        except ValueError as e:  # json.JSONDecodeError is a ValueError too
            return AgentState(), self._set_aside(f"is corrupt ({e})")

    def _set_aside(self, why: str) -> str:
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            self.path.replace(aside)
            kept = f"kept as {aside.name}"
        except OSError:
            kept = "could not be moved aside"
        return f"state file {self.path} {why}; starting with an empty state (the damaged file was {kept})"

    def save(self, state: AgentState) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=folder)
        except OSError as e:
            raise StateFileError(f"cannot write state file in {folder}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_encode(state))
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self.path)
            fsync_dir(folder)
        except OSError as e:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise StateFileError(f"cannot write state file {self.path}: {e.strerror}") from e


class PersistentState:
    """The state in memory, saved before every change is acted on."""

    def __init__(self, file: StateFile, clock: Clock) -> None:
        self._file = file
        state, problem = file.load()
        if problem is not None:
            # Numbers used before the damage are unknown; the wall clock in ms is above any
            # count a device reaches, so new numbers cannot repeat old ones.
            floor = max(1, clock.wall_ms())
            state = replace(state, next_event_seq=floor, next_telemetry_seq=floor)
        self.load_problem = problem
        self._state = state
        self._next_event = state.next_event_seq
        self._next_telemetry = state.next_telemetry_seq

    @property
    def state(self) -> AgentState:
        return self._state

    def update(self, **changes: Any) -> AgentState:
        """Save the state with ``changes`` applied; memory changes only once the file holds them."""
        new = replace(self._state, **changes)
        self._file.save(new)
        self._state = new
        return new

    def next_event_seq(self) -> int:
        seq = self._next_event
        if seq >= self._state.next_event_seq:
            self._reserve(replace(self._state, next_event_seq=seq + SEQ_BLOCK))
        self._next_event = seq + 1
        return seq

    def next_telemetry_seq(self) -> int:
        seq = self._next_telemetry
        if seq >= self._state.next_telemetry_seq:
            self._reserve(replace(self._state, next_telemetry_seq=seq + SEQ_BLOCK))
        self._next_telemetry = seq + 1
        return seq

    def _reserve(self, new: AgentState) -> None:
        try:
            self._file.save(new)
        except StateFileError as e:
            # Better a number that might repeat after a crash than no event at all.
            log.warning("cannot reserve sequence numbers: %s", e)
        self._state = new
