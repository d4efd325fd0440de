"""A hub repository on SQLite in a temp folder, with a frozen clock and fast key derivation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.db import SessionFactory, create_all, create_db_engine, session_factory
from cloud.services.director import Director
from cloud.services.publisher import RecordingPublisher
from cloud.services.signing import Signing
from cloud.settings import Settings
from cloud.tuf import TufRepository, TufSettings, ensure_initialized, open_repository
from tests.unit.cloud.helpers import FrozenClock


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return session_factory(engine)


@pytest.fixture
def repo(tmp_path: Path, sessions: SessionFactory, clock: FrozenClock) -> TufRepository:
    repo = open_repository(Settings(data_dir=tmp_path), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    return repo


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def signing(
    repo: TufRepository, sessions: SessionFactory, clock: FrozenClock, publisher: RecordingPublisher
) -> Signing:
    return Signing(repo, Director(repo, clock=clock), sessions, publisher)
