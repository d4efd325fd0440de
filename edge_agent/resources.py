"""Resource guards: free disk before a download, available memory before a load.

A download that fills the disk also stops the state file and the message queue,
and a load that exhausts memory gets the whole agent killed with the serving
model in it; both are refused up front with the figures. :class:`Resources` is
the seam (tests hand in a full disk).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from edge_agent.errors import InsufficientDiskError, InsufficientMemoryError

__all__ = ["Resources", "SystemResources", "check_disk", "check_memory"]

MEMINFO = Path("/proc/meminfo")


class Resources(Protocol):
    def disk_free(self, path: Path) -> int:
        """Bytes an unprivileged process may still write on ``path``'s file system."""
        ...

    def memory_available(self) -> int:
        """Bytes of memory available to start new work without swapping."""
        ...


class SystemResources:
    def disk_free(self, path: Path) -> int:
        vfs = os.statvfs(path)
        return vfs.f_bavail * vfs.f_frsize

    def memory_available(self) -> int:
        # MemAvailable counts reclaimable page cache; the free-page count alone would
        # refuse loads on any busy machine.
        try:
            for line in MEMINFO.read_text(encoding="ascii").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 0


def _mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def check_disk(resources: Resources, path: Path, *, needed: int, reserve: int) -> None:
    """Raise :class:`InsufficientDiskError` unless ``needed + reserve`` bytes are free at ``path``."""
    try:
        free = resources.disk_free(path)
    except OSError as e:
        raise InsufficientDiskError(f"cannot read free disk space of {path}: {e.strerror}") from e
    if free < needed + reserve:
        raise InsufficientDiskError(
            f"not enough disk: the download needs {_mib(needed)} plus a reserve of {_mib(reserve)} "
            f"on {path}, {_mib(free)} free"
        )


def check_memory(resources: Resources, *, artifact_bytes: int, factor: float, reserve: int) -> None:
    """Raise :class:`InsufficientMemoryError` unless loading an artifact this big leaves ``reserve``."""
    needed = int(artifact_bytes * factor)
    available = resources.memory_available()
    if available and available < needed + reserve:
        raise InsufficientMemoryError(
            f"not enough memory: loading needs about {_mib(needed)} ({factor:g}x the "
            f"{_mib(artifact_bytes)} artifact) plus a reserve of {_mib(reserve)}, {_mib(available)} available"
        )
