"""Firmware inside the running agent: desired image in, A/B install out, one at a time.

The signed-update channel hands over the ``FirmwareRef`` of every verified desired state
(:meth:`FirmwareService.submit`); :meth:`run` takes the newest, refreshes the repository
metadata, resolves the full image's signed target (and the delta its custom fields name
for the running image), and lets the :class:`FirmwareManager` install it. Downloads use
the agent's resumable artifact fetcher; every byte is verified against the signed
target before the manager writes a slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.backoff import Backoff
from edge_agent.errors import AgentError
from edge_agent.fetcher import Fetcher
from edge_agent.firmware.manager import FirmwareManager, FirmwareReporter
from edge_agent.logs import Log
from edge_agent.trust.channel import SignedUpdateChannel
from edge_agent.trust.targets import SignedTarget
from edgefleet_proto.v1 import common_pb2, event_pb2

__all__ = ["FirmwareService"]

log = logging.getLogger(__name__)
K = event_pb2.EventKind


class FirmwareService:
    def __init__(
        self,
        manager: FirmwareManager,
        channel: SignedUpdateChannel,
        fetcher: Fetcher,
        *,
        report: FirmwareReporter,
        backoff: Backoff,
        healthy: Callable[[], bool] = lambda: True,
        logger: Log = log,
    ) -> None:
        self.manager = manager
        self._channel = channel
        self._fetcher = fetcher
        self._report = report
        self._backoff = backoff
        self._healthy = healthy
        self._log = logger
        self._pending: common_pb2.FirmwareRef | None = None
        self._wake = asyncio.Event()

    def submit(self, firmware: common_pb2.FirmwareRef) -> None:
        """Take the firmware a verified desired state names (the newest replaces one not started)."""
        running = self.manager.running
        if running is not None and (running.name, running.version) == (firmware.name, firmware.version):
            return
        self._pending = firmware
        self._wake.set()

    async def _download(self, target: SignedTarget, dest: Path) -> None:
        ref = common_pb2.ModelRef(
            name=target.path, format="firmware", sha256=target.sha256, length=target.length
        )
        offset = dest.stat().st_size if dest.exists() else 0
        if offset > target.length:
            dest.unlink()
            offset = 0
        async for _held in self._fetcher.fetch(ref, dest, offset):
            pass

    async def confirm_boot(self, connected: asyncio.Event, timeout_s: float) -> None:
        """On trial: commit once the agent reached the broker (and the health check passes) in time."""
        if self.manager.machine.state.value != "trial":
            return
        try:
            await asyncio.wait_for(connected.wait(), timeout_s)
        except TimeoutError:
            self._log.warning("firmware trial: no broker connection within %.0f s", timeout_s)
        await self.manager.confirm()

    async def run(self) -> None:
        """Install desired firmware as it comes; retry failures with back-off. Runs until cancelled."""
        retry: common_pb2.FirmwareRef | None = None
        while True:
            if self._pending is None:
                self._wake.clear()
                timeout = self._backoff.next_delay() if retry is not None else None
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    self._pending, retry = retry, None
                    continue
            firmware, self._pending = self._pending, None
            if firmware is None:
                continue
            try:
                await asyncio.to_thread(self._channel.refresh)
                running = self.manager.running
                offer = self._channel.firmware_offer(firmware, running.payload_sha256 if running else None)
            except AgentError as e:
                self._report(
                    K.EVENT_KIND_FIRMWARE_FAILED,
                    f"firmware {firmware.name} {firmware.version} refused: {e}",
                    details={"check": getattr(e, "code", type(e).__name__), "version": firmware.version},
                )
                retry = firmware
                continue
            if await self.manager.install(offer, self._download):
                self._backoff.reset()
                retry = None
            elif self.manager.machine.state.value == "failed":
                retry = firmware
