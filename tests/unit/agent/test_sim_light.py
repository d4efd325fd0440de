"""Light simulation mode: devices share one onnxruntime session per artifact, and nothing else."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ModelLoadError
from edge_agent.runtime import ModelRuntime, RuntimeOptions, RuntimeRegistry
from edge_agent.serving import LoadedModel
from edge_agent.sim import LIGHT_KEEPALIVE_S, Fleet
from edge_agent.sim_light import SessionCache, SharedRuntimes, artifact_address
from edge_agent.store import ArtifactStore
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import common_pb2
from tests.unit.agent.fakes import expected_output, linear_model, ref_for

UNSIGNED = TrustConfig(require_signed=False)
X = np.ones((1, 4), dtype=np.float32)


def _install(store: ArtifactStore, data: bytes) -> common_pb2.ModelRef:
    ref = ref_for(data)
    store.path_for(ref.sha256).write_bytes(data)
    return ref


def _fleet(tmp_path: Path, *, light: bool, scales: list[float]) -> Fleet:
    """A fleet whose device i has committed linear_model(scales[i]), restored as at a start."""
    fleet = Fleet(len(scales), tmp_path, "f", light=light, trust=UNSIGNED, local_api_devices=0)
    for agent, scale in zip(fleet.agents, scales, strict=True):
        ref = _install(agent.store, linear_model(scale))
        agent.state.update(active=ref)
        asyncio.run(agent.restore())
    return fleet


def _runtime(model: LoadedModel | None) -> ModelRuntime:
    assert model is not None
    return model.runtime


def test_devices_with_the_same_artifact_share_one_session_and_another_artifact_gets_its_own(
    tmp_path: Path,
) -> None:
    fleet = _fleet(tmp_path, light=True, scales=[1.0, 1.0, 2.0])
    a, b, c = (_runtime(agent.active_model) for agent in fleet.agents)
    assert a is b
    assert c is not a
    assert fleet.sessions is not None and fleet.sessions.loads == 2 and len(fleet.sessions) == 2
    # Each answers with its own model.
    np.testing.assert_allclose(fleet.agents[0].predict({"": X}).outputs["y"], expected_output(1.0, X))
    np.testing.assert_allclose(fleet.agents[2].predict({"": X}).outputs["y"], expected_output(2.0, X))


def test_a_device_keeps_its_own_state_while_sharing_a_session(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, light=True, scales=[1.0, 1.0])
    first, second = fleet.agents
    for _ in range(3):
        first.predict({"": X})
    assert (first.telemetry.requests, second.telemetry.requests) == (3, 0)
    # A swap on one device leaves the other serving its model.
    first.serving.swap(None)
    assert first.active_model is None
    assert second.active_model is not None
    second.predict({"": X})
    assert second.telemetry.requests == 1
    assert first.state.state.active == second.state.state.active  # the same version, in two state files
    assert first.config.state_dir != second.config.state_dir
    assert first.outbox is not second.outbox and first.link is not second.link


def test_the_full_mode_shares_no_session(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, light=False, scales=[1.0, 1.0])
    assert fleet.sessions is None
    a, b = (_runtime(agent.active_model) for agent in fleet.agents)
    assert a is not b


def test_light_devices_keep_their_outbox_in_memory_and_a_longer_keepalive_and_ack_timeout(
    tmp_path: Path,
) -> None:
    light = Fleet(1, tmp_path / "light", "f", light=True, trust=UNSIGNED, local_api_devices=0)
    full = Fleet(1, tmp_path / "full", "f", light=False, trust=UNSIGNED, local_api_devices=0)
    assert light.agents[0].config.queue.path is None
    assert full.agents[0].config.queue.path is not None
    assert light.agents[0].config.mqtt.keepalive_s == LIGHT_KEEPALIVE_S
    assert full.agents[0].config.mqtt.keepalive_s < LIGHT_KEEPALIVE_S
    # A light device waits as long for the broker's acknowledgements before it takes its link for down.
    assert light.agents[0].config.mqtt.ack_timeout_s == LIGHT_KEEPALIVE_S
    assert light.agents[0].link._publish_timeout == LIGHT_KEEPALIVE_S
    assert full.agents[0].config.mqtt.ack_timeout_s == 10.0


def test_light_devices_save_their_state_without_fsync_and_full_ones_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    light = Fleet(1, tmp_path / "light", "f", light=True, trust=UNSIGNED, local_api_devices=0)
    full = Fleet(1, tmp_path / "full", "f", light=False, trust=UNSIGNED, local_api_devices=0)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    light.agents[0].state.update(applied_generation=7)
    assert synced == []
    saved = json.loads((light.agents[0].config.state_dir / "state.json").read_text(encoding="utf-8"))
    assert saved["applied_generation"] == 7
    full.agents[0].state.update(applied_generation=7)
    assert len(synced) == 2  # the file, then its folder


class CountingRegistry(RuntimeRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[tuple[str, Path]] = []

    def load(self, fmt: str, path: Path, options: RuntimeOptions) -> ModelRuntime:
        self.loaded.append((fmt, path))
        return super().load(fmt, path, options)


def test_only_store_addresses_are_shared(tmp_path: Path) -> None:
    data = linear_model(3.0)
    store = ArtifactStore(tmp_path / "store")
    ref = _install(store, data)
    loose = tmp_path / "model.onnx"
    loose.write_bytes(data)
    base = CountingRegistry()
    shared = SharedRuntimes(base, SessionCache())
    opts = RuntimeOptions()
    assert shared.load("onnx", store.path_for(ref.sha256), opts) is shared.load(
        "onnx", store.path_for(ref.sha256), opts
    )
    # A path that is not a store address is not known by its content: it loads each time.
    assert shared.load("onnx", loose, opts) is not shared.load("onnx", loose, opts)
    assert len(base.loaded) == 3
    assert artifact_address(loose) is None and artifact_address(store.path_for(ref.sha256)) == ref.sha256


def test_a_session_no_device_holds_is_freed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    ref = _install(store, linear_model(4.0))
    cache = SessionCache()
    shared = SharedRuntimes(RuntimeRegistry(), cache)
    held = shared.load("onnx", store.path_for(ref.sha256), RuntimeOptions())
    assert len(cache) == 1
    del held
    gc.collect()
    assert len(cache) == 0


def test_a_load_failure_is_not_cached(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    bad = b"not an onnx model"
    ref = _install(store, bad)
    cache = SessionCache()
    shared = SharedRuntimes(RuntimeRegistry(), cache)
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
            shared.load("onnx", store.path_for(ref.sha256), RuntimeOptions())
    assert (cache.loads, len(cache)) == (0, 0)


def test_connect_rate_spreads_the_first_connections(tmp_path: Path) -> None:
    fleet = Fleet(100, tmp_path, "f", light=True, trust=UNSIGNED, local_api_devices=0, connect_rate=50)
    delays = fleet.start_delays
    assert all(i / 50 <= d < (i + 1) / 50 for i, d in enumerate(delays))
    assert (
        Fleet(3, tmp_path / "b", "f", light=True, trust=UNSIGNED, local_api_devices=0).start_delays
        == [0.0] * 3
    )
    with pytest.raises(ValueError, match="connect_rate must be devices per second >= 0"):
        Fleet(1, tmp_path / "c", "f", trust=UNSIGNED, connect_rate=-1)
