"""Fixtures of the rollout engine's tests: the hub's unit fixtures (SQLite in a temp folder, a
frozen clock, an in-memory publisher) and a small fleet on them (``world``, ``canary``)."""

from tests.unit.cloud.conftest import (  # noqa: F401  (fixtures, registered by import)
    clock,
    ctx,
    db_url,
    engine,
    publisher,
    sessions,
    settings,
    store,
)
from tests.unit.rollouts.world import canary, world  # noqa: F401
