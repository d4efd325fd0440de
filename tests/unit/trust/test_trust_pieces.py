"""The trust layer's small parts: target-name rules, the counter file, the config tables, the watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.config import config_from_mapping
from edge_agent.errors import ConfigError
from edge_agent.trust.attach import Trust, TrustVerifier
from edge_agent.trust.channel import SignedUpdateChannel
from edge_agent.trust.director import DirectorMark
from edge_agent.trust.errors import HostileTargetError, NotProvisionedError, TrustStateError
from edge_agent.trust.repository import TrustedRepository, install_root
from edge_agent.trust.state import TrustStateFile
from edge_agent.trust.targets import check_target_path
from edgefleet_proto.v1 import event_pb2
from tests.adversarial.simulator import RepoSim

K = event_pb2.EventKind


@pytest.mark.parametrize(
    "path", ["models/m/1/a.onnx", "firmware/fw/sim-board/1.0.0-1.1.0/ab.efwd", "profiles/m/1+b/x.pb"]
)
def test_plain_target_paths_pass(path: str) -> None:
    assert check_target_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "a//b", "./a", "a/./b", "-rf", "a/.hidden", "x" * 201, "a\tb", "caf\u00e9"]
)
def test_odd_target_paths_are_refused(path: str) -> None:
    with pytest.raises(HostileTargetError):
        check_target_path(path)


def test_the_counter_file_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    f = TrustStateFile(tmp_path / "trust" / "state.json")
    assert f.load() == DirectorMark()
    f.save(DirectorMark(7, "ab" * 32))
    assert f.load() == DirectorMark(7, "ab" * 32)
    f.path.write_text('{"version": 1, "director_counter": -3, "director_payload_sha256": ""}')
    with pytest.raises(TrustStateError, match="refusing instructions until it is repaired"):
        f.load()


def test_install_root_refuses_anything_but_a_self_signed_root(tmp_path: Path) -> None:
    sim = RepoSim()
    assert install_root(tmp_path / "t", sim.bootstrap) == 1
    with pytest.raises(NotProvisionedError, match="expected root metadata"):
        install_root(tmp_path / "u", sim.files["timestamp.json"])
    with pytest.raises(NotProvisionedError, match="not TUF root metadata"):
        install_root(tmp_path / "v", b"{}")


def test_trust_and_firmware_tables(tmp_path: Path) -> None:
    base: Mapping[str, object] = {"device_id": "d1", "fleet": "f", "state_dir": "state"}
    config = config_from_mapping(
        {
            **base,
            "trust": {"root_file": "root.json", "http_url": "http://hub:8080/tuf", "max_targets_bytes": 8192},
            "firmware": {"hardware_id": "sim-board", "bootlimit": 5},
        },
        base_dir=tmp_path,
    )
    assert config.trust.require_signed, "signatures are required unless switched off"
    assert config.trust.root_file == tmp_path / "root.json"
    assert config.trust.limits().targets_max_bytes == 8192
    assert config.firmware.enabled and config.firmware.bootlimit == 5
    for bad, message in (
        ({"trust": {"http_url": "ftp://x"}}, "trust.http_url"),
        ({"trust": {"max_root_bytes": 10}}, "trust.max_root_bytes"),
        ({"trust": {"typo": 1}}, "unknown key 'trust.typo'"),
        ({"firmware": {"bootlimit": 0}}, "firmware.bootlimit"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_mapping({**base, **bad}, base_dir=tmp_path)


def test_the_watch_reports_a_freeze_once_and_a_new_root(tmp_path: Path) -> None:
    sim = RepoSim()
    install_root(tmp_path / "trust", sim.bootstrap)
    repo = TrustedRepository(tmp_path / "trust", sim, now=lambda: sim.now)
    channel = SignedUpdateChannel(
        repo, TrustStateFile(tmp_path / "trust" / "state.json"), device_id="d1", fleet="f", wall_ms=lambda: 0
    )
    trust = Trust(channel=channel, verifier=TrustVerifier(channel))
    seen: list[tuple[int, str, dict[str, str]]] = []

    async def scenario() -> None:
        arrived = asyncio.Event()

        def report(kind: int, reason: str = "", *, details: Mapping[str, str] | None = None) -> None:
            seen.append((kind, reason, dict(details or {})))
            arrived.set()

        task = asyncio.create_task(trust.watch(report, 0.001, logging.getLogger("watch")))
        sim.now += timedelta(days=2)  # the hub stopped re-signing: the timestamp expires
        await asyncio.wait_for(arrived.wait(), 10)
        arrived.clear()
        sim.publish()
        sim.rotate("snapshot")  # a new root version arrives with the fresh metadata
        await asyncio.wait_for(arrived.wait(), 10)
        task.cancel()

    asyncio.run(scenario())
    assert seen[0][0] == K.EVENT_KIND_ERROR and seen[0][2]["check"] == "metadata_expired"
    assert seen[1][0] == K.EVENT_KIND_TRUST_UPDATED and seen[1][2]["root_version"] == "2"
    assert len(seen) == 2, "a lasting problem is reported once"
