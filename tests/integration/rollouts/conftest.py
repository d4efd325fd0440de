"""Fixtures of the rollout integration tests: the rollout unit fixtures, with ``db_url`` running
each database test on a SQLite file and on the test run's PostgreSQL (see tests/integration/cloud)."""

from tests.integration.cloud.conftest import db_url  # noqa: F401  (fixtures, registered by import)
from tests.unit.cloud.conftest import (  # noqa: F401
    clock,
    ctx,
    engine,
    publisher,
    sessions,
    settings,
    store,
)
from tests.unit.rollouts.world import canary, world  # noqa: F401
