"""Giving freed heap back to the operating system after loading or dropping a model.

Loading a model allocates a lot that is freed again at once (the file read, the parsed
graph, optimisation passes); glibc keeps such memory in its heap, so a long-running
agent's resident size would carry the peak of its last load. ``malloc_trim(0)`` returns
it. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> None:
    """Return free heap pages to the OS (glibc); cheap enough to call after each load."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
