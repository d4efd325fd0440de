"""Plugging the signed-update channel (and firmware slots) into one agent.

:func:`attach_trust` builds, from the ``[trust]`` and ``[firmware]`` config tables, the
objects the agent hands its updater: the :class:`SignedUpdateChannel` as desired-state
decoder and as a verifier after the pinned-digest one. It installs the provisioned root
on first start, and arranges the one thing the decoder cannot do on the event loop: when
an instruction is signed by a director key the cached root does not name (a rotation),
refresh the root in a worker thread and offer the instruction once more.

Nothing here imports python-tuf or the cryptography under it: the repository is a
:class:`~edge_agent.trust.lazy.LazyRepository`, built on the first check. Only a first
start that installs the provisioned root (``trust.root_file``) loads that stack at once,
to refuse a bad root file before the agent serves. Firmware slots (and the bundle
readers under them) are imported only when ``firmware.hardware_id`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.backoff import Backoff
from edge_agent.clock import Clock
from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from edge_agent.fetcher import Fetcher, SyncChannels
from edge_agent.logs import Log
from edge_agent.trust.channel import Repository, SignedUpdateChannel
from edge_agent.trust.commands import CommandChannel, CommandSeqFile
from edge_agent.trust.errors import NotProvisionedError, TrustError
from edge_agent.trust.lazy import LazyRepository
from edge_agent.trust.state import TrustStateFile
from edge_agent.verify import PinnedDigestVerifier, VerifierChain
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2

if TYPE_CHECKING:
    # Firmware slots are imported only by a device that takes firmware (firmware.hardware_id set).
    from edge_agent.firmware.manager import FirmwareReporter
    from edge_agent.firmware.service import FirmwareService

__all__ = ["RepositoryFactory", "Trust", "TrustVerifier", "attach_trust", "trust_dir"]

log = logging.getLogger(__name__)
K = event_pb2.EventKind

# What builds a device's repository: (its trust folder, its config, the blocking channels, its clock).
RepositoryFactory = Callable[[Path, AgentConfig, SyncChannels, Callable[[], datetime]], Repository]


def own_repository(
    folder: Path, config: AgentConfig, channels: SyncChannels, now: Callable[[], datetime]
) -> Repository:
    """A device's own repository, built on its first check (a real device's, always)."""
    return LazyRepository(folder, config=config, channels=channels, now=now)


def trust_dir(config: AgentConfig) -> Path:
    return config.state_dir / "trust"


class TrustVerifier:
    """The pinned digest first (cheap, and it names the bytes), then the signed repository."""

    name = "sha256+tuf"

    def __init__(self, channel: SignedUpdateChannel) -> None:
        self._chain = VerifierChain([PinnedDigestVerifier(), channel])

    def verify(self, path: Path, ref: common_pb2.ModelRef, desired: desired_pb2.DesiredState) -> None:
        self._chain.verify(path, ref, desired)


@dataclass
class Trust:
    """What the agent holds of the signed-update channel."""

    channel: SignedUpdateChannel
    verifier: TrustVerifier
    firmware: FirmwareService | None = None
    # Signed commands (the cmd topic), checked against the same director keys as desired states.
    commands: CommandChannel | None = None
    _retried: set[str] = field(default_factory=set)

    def wire(self, submit: Callable[[bytes], None], report: FirmwareReporter, logger: Log) -> None:
        """Route refused-for-an-unknown-key instructions through a root refresh, once each."""

        def unknown_key(payload: bytes) -> None:
            digest = hashlib.sha256(payload).hexdigest()
            if digest in self._retried:
                return
            self._retried.add(digest)
            asyncio.get_running_loop().create_task(self._refresh_then(payload, submit, report, logger))

        self.channel.on_unknown_key = unknown_key
        if self.firmware is not None:
            service = self.firmware
            self.channel.on_firmware = lambda desired: service.submit(desired.firmware)

    async def _refresh_then(
        self, payload: bytes, submit: Callable[[bytes], None], report: FirmwareReporter, logger: Log
    ) -> None:
        before = self.channel.repository.root_version()
        try:
            result = await asyncio.to_thread(self.channel.refresh)
        except TrustError as e:
            logger.warning("cannot refresh the trusted root: %s", e)
            report(K.EVENT_KIND_ERROR, f"cannot refresh the trusted root: {e}", details={"check": e.code})
            return
        if result.root_version > before:
            report(
                K.EVENT_KIND_TRUST_UPDATED,
                f"trusted root v{before} -> v{result.root_version}",
                details={"root_version": str(result.root_version)},
            )
        submit(payload)

    async def watch(self, report: FirmwareReporter, interval_s: float, logger: Log) -> None:
        """Check the repository every ``interval_s`` even when no update is due; report what fails.

        A device that receives no updates would otherwise never look, and a freeze (metadata no
        longer re-signed, or withheld by whoever sits in between) would go unnoticed. Each problem
        is reported once, until it clears.
        """
        problem = ""
        while True:
            await asyncio.sleep(interval_s)  # a periodic check, not a wait for something to happen
            before = self.root_version()
            try:
                result = await asyncio.to_thread(self.channel.refresh)
            except TrustError as e:
                if str(e) != problem:
                    problem = str(e)
                    logger.warning("repository check failed: %s", e)
                    report(K.EVENT_KIND_ERROR, f"repository check failed: {e}", details={"check": e.code})
                continue
            problem = ""
            if result.root_version > before:
                report(
                    K.EVENT_KIND_TRUST_UPDATED,
                    f"trusted root v{before} -> v{result.root_version}",
                    details={"root_version": str(result.root_version)},
                )

    def root_version(self) -> int:
        try:
            return self.channel.repository.root_version()
        except AgentError:
            return 0


def attach_trust(
    config: AgentConfig,
    *,
    clock: Clock,
    fetcher: Fetcher,
    report: FirmwareReporter,
    request_restart: Callable[[], None],
    sync_channels: SyncChannels,
    agent_version: str,
    repository: RepositoryFactory = own_repository,
    logger: Log = log,
) -> Trust:
    """The signed-update channel (and firmware service) of one agent, from its config.

    ``repository`` builds the signed repository it checks against: the device's own unless the
    light simulator shares one between its devices (:mod:`edge_agent.sim_trust`).
    """
    folder = trust_dir(config)
    t = config.trust
    if not (folder / "root.json").is_file():
        if t.root_file is None:
            logger.error(
                "no trusted root installed: every desired state will be refused (set trust.root_file)"
            )
        else:
            from edge_agent.trust.repository import install_root  # provisioning: the first start only

            try:
                version = install_root(folder, t.root_file.read_bytes())
            except OSError as e:
                raise NotProvisionedError(f"trust.root_file: cannot read {t.root_file}: {e.strerror}") from e
            logger.info("installed trusted root v%d from %s", version, t.root_file)
    repo = repository(folder, config, sync_channels, lambda: _utc(clock))
    channel = SignedUpdateChannel(
        repo,
        TrustStateFile(folder / "state.json"),
        device_id=config.device_id,
        fleet=config.fleet,
        wall_ms=clock.wall_ms,
        max_desired_bytes=t.max_desired_bytes,
        logger=logger,
    )
    commands = CommandChannel(
        repo.director_keys,
        CommandSeqFile(folder / "commands.json"),
        device_id=config.device_id,
        fleet=config.fleet,
        wall_ms=clock.wall_ms,
    )
    trust = Trust(channel=channel, verifier=TrustVerifier(channel), commands=commands)
    fw = config.firmware
    if fw.enabled:
        from edge_agent.firmware.manager import FirmwareManager
        from edge_agent.firmware.service import FirmwareService

        manager = FirmwareManager(
            config.state_dir / "firmware",
            hardware_id=fw.hardware_id,
            agent_version=agent_version,
            report=report,
            request_restart=request_restart,
            bootlimit=fw.bootlimit,
            logger=logger,
        )
        if fw.factory_bundle is not None:
            manager.provision(fw.factory_bundle)
        b = config.backoff
        trust.firmware = FirmwareService(
            manager,
            channel,
            fetcher,
            report=report,
            backoff=Backoff(initial_s=b.initial_s, max_s=b.max_s, multiplier=b.multiplier),
            logger=logger,
        )
    return trust


def _utc(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.wall_ms() / 1000, tz=UTC)
