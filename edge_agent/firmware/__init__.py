"""Firmware on A/B slots: the boot-control file, the slots, the state machine, the manager.

Bundles are read with ``firmware_images.format`` (standard library only) and deltas
applied with ``firmware_images.delta``; what may be installed is decided by the signed
metadata the trust layer (``edge_agent.trust``) verified.
"""

from edge_agent.firmware.bootctl import BootControl, BootControlFile, SlotImage
from edge_agent.firmware.machine import FirmwareEvent, FirmwareMachine, FirmwareState
from edge_agent.firmware.manager import FirmwareManager, FirmwareOffer

__all__ = [
    "BootControl",
    "BootControlFile",
    "FirmwareEvent",
    "FirmwareMachine",
    "FirmwareManager",
    "FirmwareOffer",
    "FirmwareState",
    "SlotImage",
]
