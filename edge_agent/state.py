"""The agent's small state file: the model slots, the update in progress, what was applied.

The file is JSON, replaced atomically (temp file in the same folder, fsync,
``os.replace``, fsync of the folder), so that after a power cut at any instant
it holds either the old state or the new one. A file that does not parse is
moved aside and the agent starts empty: a crash loop on a damaged file would
take the device off the fleet for good.

Slots: ``active`` is the committed model (what a restart serves first),
``previous`` the one committed before it (the rollback target after a commit),
``trial`` a version being judged. ``update`` is the update in progress, saved
before every risky step: the state it was about to enter, the desired state it
works on, and the counters of the loop guard. ``refused`` lists versions this
device rolled back; it will not install them again.

Sequence numbers for events and telemetry windows must never repeat (the hub
stores a QoS 1 redelivery once by its number), but saving the file for every
message would cost an fsync each. So numbers are reserved in blocks: the file
holds the first number a restarted agent may use, which runs ahead of the
numbers handed out. A crash leaves a gap, never a repeat.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from edge_agent.clock import Clock
from edge_agent.errors import StateFileError, StoreError
from edge_agent.store import check_sha256
from edgefleet_proto.v1 import common_pb2, desired_pb2
from model_tools.atomic import atomic_write

__all__ = [
    "AgentState",
    "PersistentState",
    "Refusal",
    "StateFile",
    "UpdateRecord",
    "ref_from_dict",
    "ref_to_dict",
]

log = logging.getLogger(__name__)

STATE_VERSION = 2
# Version 1 files (no trial slot, update record or refusals) are read as they are.
_READABLE_VERSIONS = (1, 2)
SEQ_BLOCK = 64
# Enough to remember every bad version a device is likely to be offered; the oldest go first.
MAX_REFUSED = 32


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """The update in progress, saved before each risky step so that a restart can resume it.

    ``state`` is the :class:`~edge_agent.update_machine.UpdateState` value the agent was
    about to enter. ``saves`` counts checkpoints of this update (the loop guard);
    ``restarts`` counts agent starts that found it unfinished, ``clean_stop`` says
    whether the last run ended on purpose (a clean stop is not a crash).
    """

    state: str
    desired: desired_pb2.DesiredState
    saves: int = 0
    restarts: int = 0
    clean_stop: bool = False
    reason: str = ""
    details: tuple[tuple[str, str], ...] = ()

    @property
    def generation(self) -> int:
        return self.desired.generation


@dataclass(frozen=True, slots=True)
class Refusal:
    """A version this device rolled back, and why; it is not installed again."""

    sha256: str
    name: str
    version: str
    generation: int
    reason: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the agent must remember across restarts. ModelRefs here are never mutated."""

    active: common_pb2.ModelRef | None = None
    previous: common_pb2.ModelRef | None = None
    trial: common_pb2.ModelRef | None = None
    applied_generation: int = 0
    next_event_seq: int = 1
    next_telemetry_seq: int = 1
    update: UpdateRecord | None = None
    refused: tuple[Refusal, ...] = field(default=())

    def refusal(self, sha256: str) -> Refusal | None:
        return next((r for r in self.refused if r.sha256 == sha256), None)


def ref_to_dict(ref: common_pb2.ModelRef) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": ref.name,
        "version": ref.version,
        "format": ref.format,
        "sha256": ref.sha256,
        "length": ref.length,
    }
    if ref.variant:
        out["variant"] = ref.variant
    if ref.precision:
        out["precision"] = ref.precision
    if ref.HasField("profile"):
        out["profile"] = {
            "sha256": ref.profile.sha256,
            "length": ref.profile.length,
            "media_type": ref.profile.media_type,
        }
    return out


def ref_from_dict(data: object, key: str) -> common_pb2.ModelRef:
    """Parse a ModelRef dict; raise ValueError naming ``key`` and the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{key}: expected an object, got {type(data).__name__}")
    for name in ("name", "version", "format", "sha256"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"{key}.{name}: expected a string, got {data.get(name)!r}")
    length = data.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"{key}.length: expected a non-negative integer, got {length!r}")
    try:
        check_sha256(data["sha256"])
    except StoreError as e:
        raise ValueError(f"{key}.sha256: {e}") from e
    ref = common_pb2.ModelRef(
        name=data["name"],
        version=data["version"],
        format=data["format"],
        sha256=data["sha256"],
        length=length,
        variant=_opt_str(data, "variant", key),
        precision=_opt_str(data, "precision", key),
    )
    profile = data.get("profile")
    if profile is not None:
        if not isinstance(profile, dict):
            raise ValueError(f"{key}.profile: expected an object, got {type(profile).__name__}")
        try:
            check_sha256(profile.get("sha256", ""))
        except StoreError as e:
            raise ValueError(f"{key}.profile.sha256: {e}") from e
        ref.profile.sha256 = profile["sha256"]
        ref.profile.length = _int_field(profile, "length", 0, f"{key}.profile.")
        ref.profile.media_type = _opt_str(profile, "media_type", f"{key}.profile")
    return ref


def _opt_str(data: dict[str, Any], name: str, key: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"{key}.{name}: expected a string, got {value!r}")
    return value


def _int_field(data: dict[str, Any], key: str, minimum: int, prefix: str = "") -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{prefix}{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _str_field(data: dict[str, Any], key: str, prefix: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{prefix}{key}: expected a string, got {value!r}")
    return value


def _update_from_dict(data: object) -> UpdateRecord:
    if not isinstance(data, dict):
        raise ValueError(f"update: expected an object, got {type(data).__name__}")
    try:
        raw = base64.b64decode(_str_field(data, "desired", "update."), validate=True)
        desired = desired_pb2.DesiredState.FromString(raw)
    except (binascii.Error, DecodeError) as e:
        raise ValueError(f"update.desired: expected a base64 DesiredState protobuf ({e})") from e
    details = data.get("details", {})
    if not isinstance(details, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in details.items()
    ):
        raise ValueError(f"update.details: expected an object of strings, got {details!r}")
    clean = data.get("clean_stop", False)
    if not isinstance(clean, bool):
        raise ValueError(f"update.clean_stop: expected true or false, got {clean!r}")
    return UpdateRecord(
        state=_str_field(data, "state", "update."),
        desired=desired,
        saves=_int_field(data, "saves", 0, "update."),
        restarts=_int_field(data, "restarts", 0, "update."),
        clean_stop=clean,
        reason=_opt_str(data, "reason", "update"),
        details=tuple(sorted(details.items())),
    )


def _update_to_dict(record: UpdateRecord) -> dict[str, Any]:
    return {
        "state": record.state,
        "generation": record.generation,
        "desired": base64.b64encode(record.desired.SerializeToString(deterministic=True)).decode(),
        "saves": record.saves,
        "restarts": record.restarts,
        "clean_stop": record.clean_stop,
        "reason": record.reason,
        "details": dict(record.details),
    }


def _refusal_from_dict(data: object, index: int) -> Refusal:
    key = f"refused[{index}]."
    if not isinstance(data, dict):
        raise ValueError(f"refused[{index}]: expected an object, got {type(data).__name__}")
    try:
        check_sha256(_str_field(data, "sha256", key))
    except StoreError as e:
        raise ValueError(f"{key}sha256: {e}") from e
    return Refusal(
        sha256=data["sha256"],
        name=_str_field(data, "name", key),
        version=_str_field(data, "version", key),
        generation=_int_field(data, "generation", 0, key),
        reason=_str_field(data, "reason", key),
        at_ms=_int_field(data, "at_ms", 0, key),
    )


def _refusal_to_dict(r: Refusal) -> dict[str, Any]:
    return {
        "sha256": r.sha256,
        "name": r.name,
        "version": r.version,
        "generation": r.generation,
        "reason": r.reason,
        "at_ms": r.at_ms,
    }


def _opt_ref(data: dict[str, Any], key: str) -> common_pb2.ModelRef | None:
    return None if data.get(key) is None else ref_from_dict(data[key], key)


def _decode(text: str) -> AgentState:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("version") not in _READABLE_VERSIONS:
        raise ValueError(f"version: expected one of {list(_READABLE_VERSIONS)}, got {data.get('version')!r}")
    refused = data.get("refused", [])
    if not isinstance(refused, list):
        raise ValueError(f"refused: expected a list, got {type(refused).__name__}")
    return AgentState(
        active=_opt_ref(data, "active"),
        previous=_opt_ref(data, "previous"),
        trial=_opt_ref(data, "trial"),
        applied_generation=_int_field(data, "applied_generation", 0),
        next_event_seq=_int_field(data, "next_event_seq", 1),
        next_telemetry_seq=_int_field(data, "next_telemetry_seq", 1),
        update=None if data.get("update") is None else _update_from_dict(data["update"]),
        refused=tuple(_refusal_from_dict(r, i) for i, r in enumerate(refused)),
    )


def _encode(state: AgentState) -> str:
    return json.dumps(
        {
            "version": STATE_VERSION,
            "active": None if state.active is None else ref_to_dict(state.active),
            "previous": None if state.previous is None else ref_to_dict(state.previous),
            "trial": None if state.trial is None else ref_to_dict(state.trial),
            "applied_generation": state.applied_generation,
            "next_event_seq": state.next_event_seq,
            "next_telemetry_seq": state.next_telemetry_seq,
            "update": None if state.update is None else _update_to_dict(state.update),
            "refused": [_refusal_to_dict(r) for r in state.refused[-MAX_REFUSED:]],
        },
        indent=2,
        sort_keys=True,
    )


class StateFile:
    """Atomic reads and writes of one JSON state file.

    ``durable``: each save is fsynced and survives a power cut (a device). The light simulator turns it
    off (edge_agent.sim_light): ten thousand devices on one disk would spend their event loop on fsyncs.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable

    def peek(self) -> AgentState | None:
        """The saved state without touching the file (for ``edgefleet-agent status``); None if absent.

        Raises ValueError or OSError when the file cannot be read or parsed.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return _decode(text)

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
        try:
            atomic_write(self.path, _encode(state), durable=self.durable)
        except OSError as e:
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
