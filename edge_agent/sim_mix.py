"""A mix of device kinds for a simulated fleet: which runtimes each device has, and its precision label.

``--runtimes-mix onnxruntime+litert,litert,onnxruntime@fp32`` gives the devices,
in turn, both runtimes; only LiteRT; only onnxruntime with the label
``precision=fp32``. Each simulated device reports and runs only its own
runtimes, so the hub has to pick a variant that fits it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ConfigError
from edge_agent.runtime import RUNTIME_FORMATS, RuntimeRegistry

__all__ = ["PRECISIONS", "DeviceKind", "parse_runtimes_mix"]

PRECISIONS = ("fp32", "int8")
# The label the hub reads as a device's preferred precision (cloud.services.variants).
PRECISION_LABEL = "precision"


@dataclass(frozen=True)
class DeviceKind:
    """The runtimes one simulated device has, and the precision it prefers (None: no preference)."""

    runtimes: tuple[str, ...]
    precision: str | None = None

    def registry(self) -> RuntimeRegistry:
        return RuntimeRegistry.only(self.runtimes)

    def labels(self) -> dict[str, str]:
        return {PRECISION_LABEL: self.precision} if self.precision else {}


def parse_runtimes_mix(text: str) -> list[DeviceKind]:
    """``"onnxruntime+litert,litert,onnxruntime@fp32"`` -> one DeviceKind per comma-separated item."""
    kinds: list[DeviceKind] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(
                f"--runtimes-mix has an empty item in {text!r}: expected RUNTIME[+RUNTIME][@PRECISION]"
            )
        names, _, precision = item.partition("@")
        runtimes = tuple(n.strip() for n in names.split("+"))
        unknown = [n for n in runtimes if n not in RUNTIME_FORMATS]
        if unknown or not runtimes:
            raise ConfigError(
                f"--runtimes-mix item {item!r}: unknown runtime {unknown}: "
                f"expected some of {sorted(RUNTIME_FORMATS)}"
            )
        if precision and precision not in PRECISIONS:
            raise ConfigError(
                f"--runtimes-mix item {item!r}: precision must be one of {PRECISIONS}, got {precision!r}"
            )
        kinds.append(DeviceKind(runtimes=runtimes, precision=precision or None))
    return kinds
