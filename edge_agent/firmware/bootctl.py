"""The boot-control file: which slot boots, and whether it is on trial. Like U-Boot's environment.

    {"active": "b", "upgrade_available": true, "boot_count": 1, "bootlimit": 3,
     "slots": {"a": {...image...}, "b": {...image...}}, "failed": ["1.2.0"]}

U-Boot's bootcount scheme, which this mirrors: an update writes the inactive slot, points
``active`` at it and sets ``upgrade_available``. Every boot with ``upgrade_available``
set counts one more in ``boot_count``; past ``bootlimit`` the boot loader takes the
other slot again. User space clears ``upgrade_available`` once the new image is healthy
(the commit). The file is replaced atomically (temp file, fsync, rename, fsync of the
folder), so a power cut leaves the old or the new boot decision, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edge_agent.errors import StateFileError
from model_tools.atomic import atomic_write

__all__ = ["BootControl", "BootControlFile", "SlotImage", "SlotName", "other_slot"]

SlotName = Literal["a", "b"]
_SLOTS: tuple[SlotName, SlotName] = ("a", "b")
BOOTCTL_VERSION = 1
DEFAULT_BOOTLIMIT = 3
# Versions that failed their trial; kept short, newest last.
MAX_FAILED = 16


def other_slot(slot: SlotName) -> SlotName:
    return "b" if slot == "a" else "a"


@dataclass(frozen=True, slots=True)
class SlotImage:
    """The image written to one slot, as its bundle manifest described it."""

    name: str
    version: str
    hardware_id: str
    payload_sha256: str
    payload_length: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "hardware_id": self.hardware_id,
            "payload_sha256": self.payload_sha256,
            "payload_length": self.payload_length,
        }

    @classmethod
    def from_dict(cls, data: object, key: str) -> SlotImage:
        if not isinstance(data, dict):
            raise ValueError(f"{key}: expected an object, got {type(data).__name__}")
        for name in ("name", "version", "hardware_id", "payload_sha256"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{key}.{name}: expected a string, got {data.get(name)!r}")
        length = data.get("payload_length")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError(f"{key}.payload_length: expected a non-negative integer, got {length!r}")
        return cls(data["name"], data["version"], data["hardware_id"], data["payload_sha256"], length)


def _empty_slots() -> dict[SlotName, SlotImage | None]:
    return {"a": None, "b": None}


@dataclass(frozen=True, slots=True)
class BootControl:
    active: SlotName = "a"
    upgrade_available: bool = False
    boot_count: int = 0
    bootlimit: int = DEFAULT_BOOTLIMIT
    slots: dict[SlotName, SlotImage | None] = field(default_factory=_empty_slots)
    failed: tuple[str, ...] = ()

    @property
    def inactive(self) -> SlotName:
        return other_slot(self.active)

    @property
    def running(self) -> SlotImage | None:
        return self.slots[self.active]

    def with_slot(self, slot: SlotName, image: SlotImage | None) -> BootControl:
        slots = dict(self.slots)
        slots[slot] = image
        return replace(self, slots=slots)

    def with_failed(self, version: str) -> BootControl:
        failed = (*(v for v in self.failed if v != version), version)
        return replace(self, failed=failed[-MAX_FAILED:])

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": BOOTCTL_VERSION,
                "active": self.active,
                "upgrade_available": self.upgrade_available,
                "boot_count": self.boot_count,
                "bootlimit": self.bootlimit,
                "slots": {s: (None if img is None else img.to_dict()) for s, img in self.slots.items()},
                "failed": list(self.failed),
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BootControl:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("version") != BOOTCTL_VERSION:
            raise ValueError(f"version: expected {BOOTCTL_VERSION}, got {data.get('version')!r}")
        active = data.get("active")
        if active not in _SLOTS:
            raise ValueError(f"active: expected 'a' or 'b', got {active!r}")
        ints = {}
        for key, minimum in (("boot_count", 0), ("bootlimit", 1)):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
            ints[key] = value
        if not isinstance(data.get("upgrade_available"), bool):
            raise ValueError(
                f"upgrade_available: expected true or false, got {data.get('upgrade_available')!r}"
            )
        raw_slots = data.get("slots")
        if not isinstance(raw_slots, dict) or set(raw_slots) != set(_SLOTS):
            raise ValueError("slots: expected an object with keys 'a' and 'b'")
        slots: dict[SlotName, SlotImage | None] = {
            s: None if raw_slots[s] is None else SlotImage.from_dict(raw_slots[s], f"slots.{s}")
            for s in _SLOTS
        }
        failed = data.get("failed", [])
        if not isinstance(failed, list) or not all(isinstance(v, str) for v in failed):
            raise ValueError("failed: expected a list of version strings")
        return cls(
            active=active,
            upgrade_available=data["upgrade_available"],
            boot_count=ints["boot_count"],
            bootlimit=ints["bootlimit"],
            slots=slots,
            failed=tuple(failed),
        )


class BootControlFile:
    """Atomic reads and writes of the boot-control file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, *, bootlimit: int = DEFAULT_BOOTLIMIT) -> BootControl:
        """The saved boot control; a fresh one (slot a, nothing on trial) when there is none yet.

        A damaged file raises :class:`StateFileError`: unlike the model state, guessing which
        slot to boot could boot a half-written image, so the caller decides (it boots the
        slot whose payload verifies).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return BootControl(bootlimit=bootlimit)
        except (OSError, UnicodeDecodeError) as e:
            raise StateFileError(f"cannot read boot-control file {self.path}: {e}") from e
        try:
            return BootControl.from_json(text)
        except ValueError as e:
            raise StateFileError(f"boot-control file {self.path} is corrupt: {e}") from e

    def save(self, control: BootControl) -> None:
        try:
            atomic_write(self.path, control.to_json())
        except OSError as e:
            raise StateFileError(f"cannot write boot-control file {self.path}: {e.strerror}") from e
