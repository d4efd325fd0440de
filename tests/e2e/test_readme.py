"""The README's "Using it" walkthrough, run as written.

Every block marked ``<!-- walkthrough -->`` runs in order with bash, as a reader pastes it, in a
fresh folder that stands for the root of a clone (it holds only ``firmware_images/``, linked
from this checkout, since the walkthrough names a sample image by its path). Blocks marked
``background`` are what the README runs "in another terminal": they start in their own process
group and the next block waits until they are ready. The commands are not edited: the test
points them at the real Mosquitto of the ``mqtt_broker`` fixture, free ports and a temporary
data folder through the ``EDGEFLEET_*`` variables they read, and puts this environment's
``bin/`` first on PATH, which is what ``. .venv/bin/activate`` does (the ``make venv`` line
itself is not marked: it would download the dependencies this environment already has).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.doc_blocks import Background, Block, poll, run_block, shell_commands, walk_blocks

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# What the walkthrough must go through, in this order; a step dropped from the README fails here.
STEPS = (
    "fleet hub",
    "fleet train",
    "fleet models optimize",
    "fleet models ls",
    "fleet simulate",
    "fleet devices ls",
    "fleet cohorts create",
    "fleet rollouts create",
    "fleet rollouts watch",
    "fleet devices show",
    "fleet firmware push",
    "fleet firmware assign",
    "fleet rollbacks ls",
)
BLOCK_TIMEOUT_S = 420.0  # training and optimizing the MLP take about a minute on 2 busy cores
READY_DEADLINE_S = 90.0
CONVERGE_DEADLINE_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def walkthrough() -> list[Block]:
    return walk_blocks(README, "walkthrough")


def commands(blocks: list[Block]) -> list[str]:
    return [command for block in blocks for command in shell_commands(block.text)]


def test_the_walkthrough_covers_the_user_path_in_order() -> None:
    listed = commands(walkthrough())
    positions = []
    for step in STEPS:
        at = next((i for i, command in enumerate(listed) if command.startswith(step)), None)
        assert at is not None, f"the README walkthrough lost its `{step}` step"
        positions.append(at)
    assert positions == sorted(positions), f"walkthrough steps out of order: {listed}"
    background = [shell_commands(b.text) for b in walkthrough() if b.background]
    assert [cmds[0].split()[:2] for cmds in background] == [["fleet", "hub"], ["fleet", "simulate"]]
    # A value taken from an earlier command must be pinned, not guessed: no placeholders left.
    placeholder = re.compile(r"<[A-Za-z_-]+>")  # <run>, <version>: a here-doc's << is not one
    for command in listed:
        assert not placeholder.search(command.split("#")[0]), f"placeholder in {command!r}"


class Walk:
    """The reader's shell: one folder, one environment, the CLI run as a subprocess."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.hub_url = env["EDGEFLEET_HUB_URL"]
        self.background: list[Background] = []

    def fleet_json(self, *args: str) -> Any:
        done = subprocess.run(
            ["fleet", *args, "--output", "json"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"fleet {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return json.loads(done.stdout)

    def logs(self) -> str:
        return "\n".join(f"--- {b.block.where(README)} ---\n{b.output()}" for b in self.background)

    def alive(self) -> None:
        for b in self.background:
            code = b.proc.poll()
            assert code is None, f"{b.block.where(README)} exited with {code}:\n{b.output()}"


@pytest.fixture
def walk(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Walk]:
    host, port = mqtt_broker
    root = short_tmp / "clone"
    root.mkdir()
    (root / "firmware_images").symlink_to(REPO / "firmware_images")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        EDGEFLEET_MQTT_HOST=host,
        EDGEFLEET_MQTT_PORT=str(port),
        EDGEFLEET_FLEET=fleet_name,
        EDGEFLEET_API_PORT=str(api_port),
        EDGEFLEET_GRPC_PORT=str(free_port()),
        EDGEFLEET_HUB_URL=f"http://127.0.0.1:{api_port}",
        EDGEFLEET_DATA_DIR=str(short_tmp / "hub-data"),
    )
    running = Walk(root, env)
    try:
        yield running
    finally:
        # The fleet first, so that its devices say goodbye to a hub that still listens.
        for b in reversed(running.background):
            b.stop()


def wait_hub_ready(walk: Walk) -> None:
    def healthy() -> bool | None:
        walk.alive()
        try:
            return httpx.get(f"{walk.hub_url}/healthz", timeout=2).status_code == 200 or None
        except httpx.TransportError:
            return None

    poll("the hub's /healthz", healthy, deadline_s=READY_DEADLINE_S)


def simulated(block: Block) -> tuple[int, dict[str, str]]:
    """How many devices a `fleet simulate` block starts and which labels it gives all of them."""
    command = shell_commands(block.text)[0]
    count = re.search(r"--devices[ =](\d+)", command)
    labels = dict(m.split("=", 1) for m in re.findall(r"--label[ =](\S+=\S+)", command))
    return (int(count[1]) if count else 10), labels


def wait_fleet_ready(walk: Walk, count: int, labels: dict[str, str]) -> list[dict[str, Any]]:
    def online() -> list[dict[str, Any]] | None:
        walk.alive()
        rows = [
            d
            for d in walk.fleet_json("devices", "ls")
            if d["state"] == "online" and labels.items() <= d["labels"].items()
        ]
        return rows if len(rows) >= count else None

    return poll(
        f"{count} devices online with labels {labels}", online, deadline_s=READY_DEADLINE_S, every_s=1
    )


def test_readme_walkthrough_runs_as_written(walk: Walk) -> None:
    blocks = walkthrough()
    fleet_size, fleet_labels = 0, dict[str, str]()
    for block in blocks:
        if block.background:
            walk.background.append(
                Background(block, cwd=walk.root, env=walk.env, log=walk.root.parent / f"bg-{block.line}.log")
            )
            command = shell_commands(block.text)[0]
            if command.startswith("fleet hub"):
                wait_hub_ready(walk)
            elif command.startswith("fleet simulate"):
                fleet_size, fleet_labels = simulated(block)
                wait_fleet_ready(walk, fleet_size, fleet_labels)
            else:
                pytest.fail(f"{block.where(README)}: no readiness check for background command {command!r}")
            continue
        done = run_block(block, cwd=walk.root, env=walk.env, timeout=BLOCK_TIMEOUT_S)
        assert done.returncode == 0, (
            f"{block.where(README)} failed with exit code {done.returncode}:\n{block.text}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}\n{walk.logs()}"
        )
        walk.alive()

    assert fleet_size == 10 and fleet_labels == {"site": "lab"}

    # The version the walkthrough registered, under the name it assigns.
    versions = {(m["name"], m["version"]) for m in walk.fleet_json("models", "ls")}
    assert ("digits-mlp", "1.0.0") in versions, versions

    def converged() -> list[dict[str, Any]] | None:
        walk.alive()
        rows = [d for d in walk.fleet_json("devices", "ls") if d["labels"].get("site") == "lab"]
        done = [
            d
            for d in rows
            if d["state"] == "online"
            and (d.get("active_model") or {}).get("name") == "digits-mlp"
            and (d.get("active_model") or {}).get("version") == "1.0.0"
            and d.get("firmware_version") == "1.1.0"
        ]
        return rows if len(done) == fleet_size == len(rows) else None

    try:
        devices = poll(
            "every site=lab device to run digits-mlp 1.0.0 and firmware 1.1.0",
            converged,
            deadline_s=CONVERGE_DEADLINE_S,
            every_s=2,
        )
    except TimeoutError as e:
        rows = walk.fleet_json("devices", "ls")
        summary = [
            (d["id"], d["state"], d.get("active_model"), d.get("hardware_id"), d.get("firmware_version"))
            for d in rows
        ]
        pytest.fail(f"{e}: {summary}\n{walk.logs()}")
    assert sorted(d["id"] for d in devices) == [f"sim-{i:04d}" for i in range(1, fleet_size + 1)]
    assert all(d["hardware_id"] == "sim-board" for d in devices)
    # Firmware as the hub recorded it: the image the walkthrough pushed.
    images = walk.fleet_json("firmware", "ls")
    assert any(r["name"] == "edgefleet-fw" and r["version"] == "1.1.0" for r in images), images
    # A good version on trial with no traffic is kept: no device rolled anything back.
    assert walk.fleet_json("rollbacks", "ls") == []

    # A clean stop: SIGTERM ends both long-running commands with success.
    for b in reversed(walk.background):
        code = b.stop()
        assert code == 0, f"{b.block.where(README)} stopped with {code}:\n{b.output()}"
    walk.background.clear()
