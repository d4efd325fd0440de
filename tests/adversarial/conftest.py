"""A world for every attack: a repository with model v1 installed on the device, and v2 on offer.

The device has installed and recorded v1 through the signed channel, so it trusts the
repository's current metadata versions; each case then stages its attack on top and
offers v2 (or something else), and asserts what the device did about it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.harness import DEVICE, FLEET, Device, Outcome
from tests.adversarial.simulator import RepoSim

V1 = b"model v1 " * 200
V2 = b"model v2 " * 300
V1_PATH = "models/m/1/v1.onnx"
V2_PATH = "models/m/2/v2.onnx"


@dataclass
class World:
    sim: RepoSim
    device: Device
    generation: int = 1

    def offer(self, path: str = V2_PATH, **kw: object) -> bytes:
        """The director's signed desired state naming ``path`` (the next generation and counter)."""
        self.generation += 1
        return self.sim.desired(DEVICE, FLEET, generation=self.generation, model_path=path, **kw)  # type: ignore[arg-type]

    def apply(self, payload: bytes) -> Outcome:
        return self.device.apply(payload)

    def assert_refused(self, outcome: Outcome, *expected: str) -> None:
        """Nothing installed, v1 still recorded and intact, and a reason that says why."""
        assert not outcome.installed, "the attack installed something"
        assert outcome.reason, "refused without a reason"
        text = f"{outcome.code}: {outcome.reason}"
        for fragment in expected:
            assert fragment in text, f"expected {fragment!r} in the reason, got {text!r}"
        active = self.device.active
        assert active is not None and active["sha256"] == sha(V1), (
            "the previous verified model is no longer active"
        )
        assert self.device.active_intact(), "the previous verified model's bytes changed"
        assert not self.device.store.has(sha(V2)), "v2 reached the store"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> World:
    sim = RepoSim()
    sim.add_target(V1_PATH, V1, {"kind": "model", "name": "m", "version": "1"})
    sim.publish()
    device = Device(tmp_path, sim)
    w = World(sim, device, generation=0)
    first = w.apply(w.offer(V1_PATH))
    assert first.installed, first
    sim.add_target(V2_PATH, V2, {"kind": "model", "name": "m", "version": "2"})
    sim.publish()
    return w
