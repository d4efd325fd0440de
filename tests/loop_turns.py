"""Waiting, in a test, for what the event loop already has scheduled to run.

``await asyncio.sleep(0)`` gives the loop a turn but says nothing of what it waits for. The loop runs
its ready callbacks first in, first out: a future resolved by a callback scheduled now is done once
everything scheduled before it has run. That is the event these tests wait on, with a timeout so that
a loop that never gets there fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio

__all__ = ["scheduled_callbacks_ran"]


async def scheduled_callbacks_ran(timeout: float = 5.0) -> None:
    """Returns once every callback the loop had ready when called (and tasks' first steps) has run."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await asyncio.wait_for(done, timeout)
