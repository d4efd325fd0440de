"""The unit suite's fixtures (SQLite in a temp folder, an artifact store), reused by these tests."""

from tests.unit.cloud.conftest import (  # noqa: F401  (fixtures, registered by import)
    clock,
    db_url,
    engine,
    sessions,
    settings,
    store,
)
