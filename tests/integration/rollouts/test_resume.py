"""A hub killed with SIGKILL in the middle of a rollout resumes it from the database when it starts
again: a real ``fleet hub`` process, on SQLite and on the real PostgreSQL, with the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import create_all, create_db_engine
from cloud.services.publisher import RecordingPublisher
from cloud.settings import Settings
from tests.integration.cloud.mqtt_probe import wait_for
from tests.unit.cloud.helpers import FrozenClock
from tests.unit.rollouts.world import SIX, World

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90


@pytest.fixture
def hub_world(
    db_url: str, short_tmp: Path, fleet_name: str, mqtt_broker: tuple[str, int]
) -> Iterator[tuple[World, dict[str, str]]]:
    """The fleet prepared in the hub's database before the hub runs, and the hub's environment."""
    data_dir = short_tmp / "hub"
    data_dir.mkdir()
    engine: Engine = create_db_engine(db_url)
    create_all(engine)
    settings = Settings(data_dir=data_dir, fleet=fleet_name, database_url=db_url)
    ctx = HubContext(
        settings=settings,
        engine=engine,
        store=ArtifactStore(settings.resolved_artifact_dir()),
        publisher=RecordingPublisher(),
        artifact_endpoint="unused:1",
    )
    world = World(ctx, FrozenClock(), RecordingPublisher())
    world.clock.now = world.clock.now.replace(year=2020)  # before the hub's own clock: real time
    world.models()
    world.devices(SIX)
    world.assign_old(SIX)
    world.cohort("canary", devices=["d0", "d1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(
        EDGEFLEET_DATA_DIR=str(data_dir),
        EDGEFLEET_DATABASE_URL=db_url,
        EDGEFLEET_FLEET=fleet_name,
        EDGEFLEET_MQTT_HOST=mqtt_broker[0],
        EDGEFLEET_MQTT_PORT=str(mqtt_broker[1]),
        EDGEFLEET_API_PORT="0",
        EDGEFLEET_GRPC_PORT="0",
        EDGEFLEET_ROLLOUT_TICK_S="0.5",
    )
    try:
        yield world, env
    finally:
        engine.dispose()


def _start_hub(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cloud.cli", "hub"], env=env, stdout=out, stderr=out)


def test_a_hub_killed_mid_rollout_resumes_it_from_the_database(
    hub_world: tuple[World, dict[str, str]], short_tmp: Path
) -> None:
    world, env = hub_world
    r = world.create(
        {
            "gates": {"min_reporting": 0},  # no agent runs here: nothing reports
            "stages": [
                {"name": "canary", "cohort": "canary", "bake": "8s"},
                {"name": "rest", "percent": 100, "bake": "0s"},
            ],
        }
    )
    log = short_tmp / "hub.log"
    hub = _start_hub(env, log)
    try:
        wait_for(lambda: world.state(r.id) == "baking", timeout=START_TIMEOUT_S)
        canary = {d: world.generation(d) for d in ("d0", "d1")}
        assert sorted(world.offered(r.id)) == ["d0", "d1"]
        hub.send_signal(signal.SIGKILL)
        assert hub.wait(30) == -signal.SIGKILL
        assert world.state(r.id) == "baking", "nothing moves while no hub runs"

        hub = _start_hub(env, log)
        wait_for(lambda: world.state(r.id) == "completed", timeout=START_TIMEOUT_S)
    finally:
        hub.terminate()
        hub.wait(30)
    assert world.chain(r.id) == [
        "draft", "running", "baking", "promoting", "running", "baking", "promoting", "completed",
    ], log.read_text(errors="replace")[-4000:]  # fmt: skip
    steps = world.transitions(r.id)
    assert [t.seq for t in steps] == list(range(1, len(steps) + 1))
    assert {t.actor for t in steps} == {"system"}
    # The canary was offered once, by the first hub: the second did not offer it again.
    assert {d: world.generation(d) for d in canary} == canary == dict.fromkeys(canary, 2)
    offered = world.offered(r.id)
    assert sorted(offered) == SIX
    assert {d: row.stage for d, row in offered.items()} == {d: 0 if d in canary else 1 for d in SIX}
    assert all(world.generation(d) == 2 for d in SIX)
