"""What this device can run, for the status message (the hub picks a model variant that fits)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from edgefleet_proto.v1 import device_pb2

__all__ = ["capabilities"]


@functools.cache
def _fixed() -> tuple[str, int, int, str]:
    """Facts that do not change while the agent runs (a thousand simulated agents ask often)."""
    page = _sysconf("SC_PAGE_SIZE")
    mem_total = _sysconf("SC_PHYS_PAGES") * page
    return platform.machine(), os.cpu_count() or 1, mem_total, f"{platform.system()} {platform.release()}"


def _sysconf(name: str) -> int:
    try:
        return max(0, os.sysconf(name))
    except (ValueError, OSError):  # a name this platform does not know
        return 0


def capabilities(state_dir: Path, runtimes: list[str]) -> device_pb2.Capabilities:
    arch, cpus, mem_total, os_name = _fixed()
    try:
        vfs = os.statvfs(state_dir)
        disk_free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        disk_free = 0
    return device_pb2.Capabilities(
        runtimes=runtimes,
        cpu_arch=arch,
        cpu_count=cpus,
        mem_total_bytes=mem_total,
        mem_available_bytes=_sysconf("SC_AVPHYS_PAGES") * _sysconf("SC_PAGE_SIZE"),
        disk_free_bytes=disk_free,
        os=os_name,
    )
