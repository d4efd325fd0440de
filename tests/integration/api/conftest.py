"""Fixtures of the API suites: the hub's integration database fixtures (SQLite and the run's PostgreSQL)."""

from __future__ import annotations

from tests.integration.cloud.conftest import db_url  # noqa: F401  (fixtures, registered by import)
from tests.unit.cloud.conftest import (  # noqa: F401  (fixtures, registered by import)
    clock,
    ctx,
    engine,
    publisher,
    sessions,
    settings,
    store,
)
