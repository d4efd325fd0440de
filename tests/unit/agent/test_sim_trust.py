"""Light mode's shared signed-update repository: one TUF client per root and hub, and each device still
checks its own instructions and its own bytes. The repository is the in-memory TUF simulator of
tests/adversarial (real python-tuf, real signatures and files; no hub)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.errors import DigestMismatchError
from edge_agent.fetcher import SyncChannels
from edge_agent.sim import Fleet
from edge_agent.sim_trust import LIGHT_TRUST_DIR, SharedTrust
from edge_agent.trust.channel import Repository, SignedUpdateChannel
from edge_agent.trust.coalesced import CoalescedRepository
from edge_agent.trust.config import TrustConfig
from edge_agent.trust.errors import DesiredReplayError, RepositoryMismatchError
from edge_agent.trust.lazy import LazyRepository
from edge_agent.trust.repository import TrustedRepository, install_root
from edge_agent.trust.state import TrustStateFile
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.adversarial.simulator import RepoSim

FLEET = "f"
Now = Callable[[], datetime]


def _fleet(tmp_path: Path, sim: RepoSim, *, light: bool) -> Fleet:
    tmp_path.mkdir()
    root = tmp_path / "root.json"
    root.write_bytes(sim.bootstrap)
    trust = TrustConfig(require_signed=True, root_file=root)
    return Fleet(3, tmp_path / "fleet", FLEET, light=light, trust=trust, local_api_devices=0)


def test_light_devices_share_one_repository_and_full_ones_have_their_own(tmp_path: Path) -> None:
    sim = RepoSim()
    light = _fleet(tmp_path / "light", sim, light=True)
    repos = {id(a.trust.channel.repository) for a in light.agents if a.trust is not None}
    assert len(repos) == 1
    assert light.trust is not None and len(light.trust) == 1
    shared = light.agents[0].trust.channel.repository  # type: ignore[union-attr]
    assert isinstance(shared, CoalescedRepository)
    # Its trust folder holds the devices' root; each device keeps its own root and director counter.
    (folder,) = (tmp_path / "light" / "fleet" / LIGHT_TRUST_DIR).iterdir()
    assert (folder / "root.json").read_bytes() == sim.bootstrap
    for agent in light.agents:
        assert (agent.config.state_dir / "trust" / "root.json").read_bytes() == sim.bootstrap

    full = _fleet(tmp_path / "full", sim, light=False)
    assert full.trust is None
    owned = [a.trust.channel.repository for a in full.agents if a.trust is not None]
    assert len({id(r) for r in owned}) == 3 and all(isinstance(r, LazyRepository) for r in owned)


def _simulated(
    sim: RepoSim,
) -> Callable[[Path, AgentConfig, SyncChannels, Callable[[], datetime]], Repository]:
    def build(
        folder: Path, config: AgentConfig, channels: SyncChannels, now: Callable[[], datetime]
    ) -> Repository:
        return TrustedRepository(folder, sim, now=lambda: sim.now)

    return build


def _device(tmp_path: Path, name: str, root: bytes, shared: SharedTrust, sim: RepoSim) -> SignedUpdateChannel:
    folder = tmp_path / name / "trust"
    install_root(folder, root)
    config = AgentConfig.for_simulation(device_id=name, fleet=FLEET, state_dir=tmp_path / name)
    repo = shared.repository(folder, config, SyncChannels(), lambda: sim.now)
    return SignedUpdateChannel(
        repo,
        TrustStateFile(folder / "state.json"),
        device_id=name,
        fleet=FLEET,
        wall_ms=lambda: int(sim.now.timestamp() * 1000),
    )


def _desired(sim: RepoSim, device: str, path: str, generation: int) -> desired_pb2.DesiredState:
    return desired_pb2.DesiredState.FromString(
        desired_pb2.SignedDesiredState.FromString(
            sim.desired(device, FLEET, generation=generation, model_path=path)
        ).payload
    )


def _ref(desired: desired_pb2.DesiredState) -> common_pb2.ModelRef:
    return desired.model


def test_each_device_checks_its_own_instructions_and_bytes_against_metadata_fresh_for_it(
    tmp_path: Path,
) -> None:
    sim = RepoSim()
    shared = SharedTrust(tmp_path / LIGHT_TRUST_DIR, build=_simulated(sim))
    a = _device(tmp_path, "dev-a", sim.bootstrap, shared, sim)
    b = _device(tmp_path, "dev-b", sim.bootstrap, shared, sim)
    assert a.repository is b.repository

    # Director counters are each device's: a's instructions do not use up b's, and a replay is a's alone.
    first_a = sim.desired("dev-a", FLEET, generation=1)
    a.decode(first_a)
    a.decode(sim.desired("dev-a", FLEET, generation=2))
    b.decode(sim.desired("dev-b", FLEET, generation=1))
    with pytest.raises(DesiredReplayError):
        a.decode(first_a)

    # A version published now is seen by the next device to verify, through the shared client.
    good = b"model one" * 100
    sim.add_target("models/m-1.onnx", good, {"kind": "model", "name": "m", "version": "1"})
    sim.publish()
    desired = _desired(sim, "dev-a", "models/m-1.onnx", 3)
    artifact = tmp_path / "m-1.onnx"
    artifact.write_bytes(good)
    a.verify(artifact, _ref(desired), desired)
    refreshes = shared.refreshes
    # b downloaded other bytes of the same length: its own check refuses them.
    forged = tmp_path / "forged.onnx"
    forged.write_bytes(b"x" * len(good))
    with pytest.raises(DigestMismatchError):
        b.verify(forged, _ref(desired), desired)
    assert shared.refreshes == refreshes + 1, "b's check refreshed the metadata after it asked"
    # And a version the repository does not list is refused to any device.
    unlisted = desired_pb2.DesiredState()
    unlisted.CopyFrom(desired)
    unlisted.model_target = "models/m-9.onnx"
    with pytest.raises(RepositoryMismatchError):
        b.verify(artifact, _ref(unlisted), unlisted)


def test_devices_with_another_root_or_hub_get_another_repository(tmp_path: Path) -> None:
    sim, other = RepoSim(), RepoSim()
    shared = SharedTrust(tmp_path / LIGHT_TRUST_DIR, build=_simulated(sim))
    a = _device(tmp_path, "dev-a", sim.bootstrap, shared, sim)
    b = _device(tmp_path, "dev-b", other.bootstrap, shared, sim)
    assert a.repository is not b.repository
    assert len(shared) == 2
    # A device with no root installed gets its own repository, which refuses at its first check.
    config = AgentConfig.for_simulation(device_id="dev-c", fleet=FLEET, state_dir=tmp_path / "dev-c")
    own = shared.repository(tmp_path / "dev-c" / "trust", config, SyncChannels(), lambda: sim.now)
    assert isinstance(own, LazyRepository)
    assert len(shared) == 2
