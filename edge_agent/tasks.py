"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], *, nudge_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A single cancel() is not always enough on Python 3.11: ``asyncio.wait_for``
    (inside aiomqtt's publish, for one) can swallow a cancellation that races
    with its inner future, and the task carries on. So the cancel is repeated
    for whatever is still running after ``nudge_s``.
    """
    everything = list(tasks)
    pending = {t for t in everything if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=nudge_s)
    for task in everything:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"
