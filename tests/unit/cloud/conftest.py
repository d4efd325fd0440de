"""Fixtures of the hub's unit tests: SQLite in a temp folder and an in-memory publisher.

``db_url`` is the seam the integration suite overrides to run the same tests on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import SessionFactory, create_all, create_db_engine, session_factory
from cloud.services.publisher import RecordingPublisher
from cloud.settings import Settings
from tests.unit.cloud.helpers import FrozenClock


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return session_factory(engine)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, fleet="unit", max_upload_bytes=64 * 1024)


@pytest.fixture
def ctx(
    settings: Settings,
    engine: Engine,
    store: ArtifactStore,
    publisher: RecordingPublisher,
    clock: FrozenClock,
) -> HubContext:
    return HubContext(
        settings=settings,
        engine=engine,
        store=store,
        publisher=publisher,
        artifact_endpoint="hub.example:50051",
        clock=clock,
    )
