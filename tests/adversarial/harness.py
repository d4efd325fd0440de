"""A device under attack: the agent's real trust pieces around a tiny install step.

``Device.apply(payload)`` does what the agent's updater does with a desired state, with
the agent's own code for every check that matters: the signed-update channel decodes
it (director signature, device, expiry, counter), the artifact comes through the
resumable fetcher interface into the store's partial file, the verifier chain (pinned
digest, then TUF: refresh, repository match, exact bytes) judges it, and only then is it
promoted into the store and recorded as active in a state file written atomically. What
it returns is what the agent would report: installed or not, and the reason.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import AgentError, StoreError, VerifyError
from edge_agent.firmware.manager import FirmwareManager
from edge_agent.store import ArtifactStore
from edge_agent.trust.channel import SignedUpdateChannel
from edge_agent.trust.repository import TrustedRepository, TrustLimits, install_root
from edge_agent.trust.state import TrustStateFile
from edge_agent.verify import PinnedDigestVerifier, VerifierChain
from edgefleet_proto.v1 import common_pb2, desired_pb2, event_pb2
from firmware_images.samples import SAMPLE_DIR
from tests.adversarial.simulator import RepoSim
from tests.unit.firmware.helpers import Events, Restarts

DEVICE = "dev-1"
FLEET = "fleet-a"


@dataclass(frozen=True)
class Outcome:
    installed: bool
    reason: str = ""
    code: str = ""


class Device:
    def __init__(self, root: Path, sim: RepoSim, *, limits: TrustLimits | None = None) -> None:
        self.root = root
        self.sim = sim
        self.trust_dir = root / "trust"
        install_root(self.trust_dir, sim.bootstrap)
        self.repository = TrustedRepository(self.trust_dir, sim, limits=limits, now=lambda: sim.now)
        self.channel = SignedUpdateChannel(
            self.repository,
            TrustStateFile(self.trust_dir / "state.json"),
            device_id=DEVICE,
            fleet=FLEET,
            wall_ms=lambda: int(sim.now.timestamp() * 1000),
        )
        self.verifiers = VerifierChain([PinnedDigestVerifier(), self.channel])
        self.store = ArtifactStore(root / "artifacts")
        self.state_file = root / "state.json"
        self.reports: list[Outcome] = []
        self.events = Events()
        self.restarts = Restarts()
        self.firmware = FirmwareManager(
            root / "firmware",
            hardware_id="sim-board",
            agent_version="0.1.0",
            report=self.events,
            request_restart=self.restarts,
        )
        self.firmware.provision(SAMPLE_DIR / "edgefleet-fw-sim-board-1.0.0.efw")
        self.firmware.boot()

    # -- what the device runs ------------------------------------------------------------------

    @property
    def active(self) -> dict[str, object] | None:
        if not self.state_file.exists():
            return None
        data = json.loads(self.state_file.read_text())
        return data["active"]

    def active_intact(self) -> bool:
        """The recorded active artifact is still in the store with exactly its bytes."""
        active = self.active
        if active is None:
            return True
        ref = common_pb2.ModelRef(sha256=str(active["sha256"]), length=int(str(active["length"])))
        try:
            self.store.verified_path(ref)
        except StoreError:
            return False
        return True

    def _record(self, ref: common_pb2.ModelRef) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"active": {"sha256": ref.sha256, "length": ref.length, "name": ref.name}}))
        tmp.replace(self.state_file)

    # -- one desired state -----------------------------------------------------------------------

    def apply(self, payload: bytes) -> Outcome:
        outcome = asyncio.run(self._apply(payload))
        self.reports.append(outcome)
        return outcome

    async def _apply(self, payload: bytes) -> Outcome:
        desired = desired_pb2.DesiredState()
        try:
            desired = self.channel.decode(payload)
            if desired.HasField("firmware"):
                return await self._firmware(desired.firmware)
            ref = desired.model
            part = self.store.partial_path(ref.sha256)
            # Resume from what an earlier attempt left, as the agent's updater does.
            offset = self.store.partial_size(ref.sha256)
            if offset > ref.length:
                self.store.discard_partial(ref.sha256)
                offset = 0
            async for _ in self.sim.fetch_artifact(ref, part, offset):
                pass
            await asyncio.to_thread(self.verifiers.verify, part, ref, desired)
            self.store.promote_partial(ref)
            self._record(ref)
        except VerifyError as e:
            # Bytes that failed verification are never kept for a resume (the agent does the same).
            if desired.HasField("model") and desired.model.sha256:
                self.store.discard_partial(desired.model.sha256)
            return Outcome(False, str(e), getattr(e, "code", type(e).__name__))
        except AgentError as e:
            return Outcome(False, str(e), getattr(e, "code", type(e).__name__))
        return Outcome(True)

    async def _firmware(self, firmware: common_pb2.FirmwareRef) -> Outcome:
        await asyncio.to_thread(self.channel.refresh)
        running = self.firmware.running
        offer = self.channel.firmware_offer(firmware, running.payload_sha256 if running else None)

        async def download(target: object, dest: Path) -> None:
            from edge_agent.trust.targets import SignedTarget

            assert isinstance(target, SignedTarget)
            dest.write_bytes(self.sim.swap_artifacts.get(target.sha256, self.sim.blobs[target.sha256]))

        ok = await self.firmware.install(offer, download)
        if ok:
            return Outcome(True)
        failed = self.events.reasons(event_pb2.EVENT_KIND_FIRMWARE_FAILED)
        return Outcome(False, failed[-1] if failed else self.firmware.last_failure, "firmware")
