"""Pick, per device, the best variant of a version that the device can run (pure: no I/O).

A device reports its runtimes in its status (``"onnxruntime/1.32.0"``,
``"litert/2.3.0"``); each variant lists the runtimes that can run it, with a
minimum version. Among the variants a device can run:

1. a device label ``precision`` (``int8`` or ``fp32``) puts that precision first:
   an operator's way to say "this CPU has no fast int8" or "int8 only here";
2. then the smallest file: every published variant already passed the gates
   (accuracy within the allowed drop of fp32, and no slower than its runtime's
   fp32), so the smallest one costs the device least to download, keep and load.
   Latencies measured on the hub's CPU would rank runtimes by the hub, not by
   the device, and at microseconds they are within noise of each other;
3. then the lowest median latency at batch 1 the pipeline measured; then the
   name, so the choice is stable.

A device that reports no runtimes at all (an old agent, or one heard from only
through telemetry) gets the version's baseline, which every agent runs. A device
that reports runtimes none of the variants can use gets no variant: the
assignment is refused with what the device has and what the variants need.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.errors import InvalidInputError

__all__ = [
    "PRECISION_LABEL",
    "NoCompatibleVariantError",
    "RuntimeNeed",
    "VariantOption",
    "choose_variant",
    "device_runtimes",
    "parse_version",
]

PRECISION_LABEL = "precision"
_NUMBERS = re.compile(r"\d+")


class NoCompatibleVariantError(InvalidInputError):
    """No variant of a version runs on a device; the message says what it has and what is needed."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(sorted(reasons.items()))
        shown = "; ".join(f"{device}: {why}" for device, why in list(self.reasons.items())[:10])
        more = f" (and {len(self.reasons) - 10} more)" if len(self.reasons) > 10 else ""
        super().__init__(f"no variant runs on {len(self.reasons)} device(s): {shown}{more}")


@dataclass(frozen=True)
class RuntimeNeed:
    name: str
    min_version: str


@dataclass(frozen=True)
class VariantOption:
    """What selection needs to know about one variant."""

    id: int
    variant: str
    format: str
    precision: str
    length: int
    runtimes: tuple[RuntimeNeed, ...]
    latency_ms_b1: float | None = None
    is_baseline: bool = False

    @classmethod
    def from_row(cls, row: Any) -> VariantOption:
        """From a ModelVariant row (duck-typed, so this module needs no database import)."""
        latency = dict(row.metrics.get("latency_ms", {})).get("1") if row.metrics else None
        return cls(
            id=int(row.id),
            variant=row.variant,
            format=row.format,
            precision=row.precision,
            length=int(row.length),
            runtimes=tuple(RuntimeNeed(str(r["name"]), str(r["min_version"])) for r in row.runtimes),
            latency_ms_b1=float(latency) if latency is not None else None,
            is_baseline=bool(row.is_baseline),
        )


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.32.0"`` -> ``(1, 32, 0)``; suffixes such as ``rc1`` or ``+cpu`` are ignored."""
    core = re.split(r"[^0-9.]", text.strip(), maxsplit=1)[0]
    return tuple(int(n) for n in _NUMBERS.findall(core))


def device_runtimes(capabilities: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Runtime name -> version from a device's reported capabilities (``"name/version"`` strings)."""
    found: dict[str, tuple[int, ...]] = {}
    for item in capabilities.get("runtimes", []) or []:
        name, _, version = str(item).partition("/")
        if name:
            found[name.strip().lower()] = parse_version(version)
    return found


def why_not(option: VariantOption, runtimes: Mapping[str, tuple[int, ...]]) -> str | None:
    """None when the device can run ``option``, else what is missing."""
    for need in option.runtimes:
        have = runtimes.get(need.name)
        if have is not None and have >= parse_version(need.min_version):
            return None
    needs = " or ".join(f"{n.name}>={n.min_version}" for n in option.runtimes)
    return f"{option.variant} needs {needs}"


def choose_variant(
    options: Sequence[VariantOption],
    capabilities: Mapping[str, Any],
    labels: Mapping[str, str],
) -> VariantOption:
    """The variant for one device; NoCompatibleVariantError (keyed "device") when none fits."""
    if not options:
        raise InvalidInputError("the version has no variants: expected at least its baseline")
    runtimes = device_runtimes(capabilities)
    if not runtimes:
        return _baseline(options)
    runnable = [o for o in options if why_not(o, runtimes) is None]
    if not runnable:
        have = ", ".join(f"{k}/{'.'.join(map(str, v))}" for k, v in sorted(runtimes.items()))
        needs = "; ".join(filter(None, (why_not(o, runtimes) for o in options)))
        raise NoCompatibleVariantError({"device": f"it runs {have}, but {needs}"})
    preferred = labels.get(PRECISION_LABEL, "").strip().lower()
    return min(runnable, key=lambda o: _rank(o, preferred))


def choose_for_devices(
    options: Sequence[VariantOption],
    devices: Iterable[tuple[str, Mapping[str, Any], Mapping[str, str]]],
) -> dict[str, VariantOption]:
    """Choose for each ``(device_id, capabilities, labels)``; one error lists every device that fails."""
    chosen: dict[str, VariantOption] = {}
    failed: dict[str, str] = {}
    for device_id, capabilities, labels in devices:
        try:
            chosen[device_id] = choose_variant(options, capabilities, labels)
        except NoCompatibleVariantError as e:
            failed[device_id] = e.reasons["device"]
    if failed:
        raise NoCompatibleVariantError(failed)
    return chosen


def _rank(option: VariantOption, preferred: str) -> tuple[int, int, float, str]:
    latency = option.latency_ms_b1 if option.latency_ms_b1 is not None else math.inf
    return (0 if preferred and option.precision == preferred else 1, option.length, latency, option.variant)


def _baseline(options: Sequence[VariantOption]) -> VariantOption:
    for option in options:
        if option.is_baseline:
            return option
    return options[0]
