"""Replace a file atomically: the one routine the hub and the agent use for every small file they keep.

A light module (standard library only), so the agent imports it too. The content goes to a temp file in
the same folder, is fsynced, renamed over the target, and the folder is fsynced: after a power cut at any
instant a reader finds the old content or the new one, never a mix, and never a stray temp file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so that a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o600, folder_mode: int = 0o777, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically; the file gets ``mode`` (private by default).

    Raises OSError (the temp file removed); callers wrap it in their own domain error. A missing folder
    is created with ``folder_mode`` (less the umask), so key folders can be made private from the start.
    ``durable=False`` skips both fsyncs: the write stays atomic against a crash of the process, but a
    power cut may lose it. Only a simulation of many devices on one disk asks for that.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=folder_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes the file 0600; set the mode before any byte is written so a secret is never
        # readable by others, not even for an instant.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    if durable:
        fsync_dir(folder)
