"""kill -9 at random instants during updates: the real agent always restarts into a verified model.

CI runs a handful of kills; ``python bench/kill9.py`` runs the full 200 (see tests/fault/kill9.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.kill9 import run_harness, summary

pytestmark = pytest.mark.integration

RUNS = 10


def test_every_kill_restarts_into_a_verified_model_that_then_finishes_the_update(
    mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path
) -> None:
    outcome = run_harness(short_tmp, mqtt_broker, fleet_name, runs=RUNS, seed=5)
    assert outcome.failures == [], summary(outcome)
    assert len(outcome.runs) == RUNS
    # Kills landed while the update was under way, not only before or after it.
    assert set(outcome.phases) - {"idle"}, summary(outcome)
    # Serving came back within a second or so of the restart (the process's own start-up included).
    assert max(r.restart_s for r in outcome.runs) < 10
