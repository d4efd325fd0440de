"""The signed-update stack loads on the first check, not at agent start; the status still names the root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.trust.lazy import peek_root_version
from edge_agent.trust.repository import TrustedRepository, install_root
from tests.adversarial.simulator import RepoSim

ROOT = Path(__file__).resolve().parents[3]

# Runs in a fresh interpreter, so that nothing this test process imported counts.
AGENT_START = """
import json, sys
from pathlib import Path
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.errors import DesiredRejectedError
from edgefleet_proto.v1 import device_pb2

STACK = ("tuf", "securesystemslib", "cryptography", "firmware_images")

def loaded():
    return sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in STACK})

state_dir = Path(sys.argv[1])
config = AgentConfig.for_simulation(device_id="d1", fleet="f", state_dir=state_dir, durable_queue=False)
assert config.trust.require_signed and not config.firmware.enabled
agent = Agent(config)
status = agent.status(device_pb2.DEVICE_STATE_ONLINE)
out = {"at_start": loaded(), "root_version": status.trusted_root_version}
try:
    agent.trust.channel.decode(b"not a signed envelope")
except DesiredRejectedError as e:
    out["refused"] = type(e).__name__
out["after_check"] = loaded()
agent.outbox.close()
print(json.dumps(out))
"""


def run_agent(state_dir: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", AGENT_START, str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_an_agent_starts_and_reports_without_the_stack_and_loads_it_to_check(tmp_path: Path) -> None:
    sim = RepoSim()
    install_root(tmp_path / "trust", sim.bootstrap)
    result = run_agent(tmp_path)
    assert result["at_start"] == [], "the signed-update stack (or firmware) was imported at start"
    assert result["root_version"] == 1
    assert result["refused"] == "UnsignedDesiredError"
    assert result["after_check"] == ["cryptography", "securesystemslib", "tuf"]


def test_an_unprovisioned_agent_reports_root_version_0_and_refuses(tmp_path: Path) -> None:
    result = run_agent(tmp_path)
    assert result["root_version"] == 0
    # No root to take director keys from: refused before the payload is looked at.
    assert result["refused"] == "DirectorRejectedError"


def test_the_peeked_root_version_follows_the_verified_chain(tmp_path: Path) -> None:
    sim = RepoSim()
    trust_dir = tmp_path / "trust"
    assert peek_root_version(trust_dir) == 0
    install_root(trust_dir, sim.bootstrap)
    assert peek_root_version(trust_dir) == 1
    sim.rotate("snapshot")
    sim.rotate("director")
    repo = TrustedRepository(trust_dir, sim, now=lambda: sim.now)
    assert repo.refresh().root_version == 3
    assert peek_root_version(trust_dir) == repo.root_version() == 3


def test_a_damaged_installed_root_peeks_as_0(tmp_path: Path) -> None:
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    for body in (b"{", b"[]", b'{"signed": {"version": "3"}}', b'{"signed": {"version": true}}'):
        (trust_dir / "root.json").write_bytes(body)
        assert peek_root_version(trust_dir) == 0, body
