"""Fixtures of the replica tests: ``db_url`` (SQLite and the real PostgreSQL, as in tests/integration/cloud),
and ``schema_url``, the run's PostgreSQL in a schema of one test's own, for what only replicas do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.integration.cloud.conftest import db_url  # noqa: F401  (a fixture, registered by import)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def schema_url(postgres_url: str) -> Iterator[str]:
    """The test run's PostgreSQL, in a schema of this test's own (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(postgres_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
