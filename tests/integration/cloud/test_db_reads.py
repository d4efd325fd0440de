"""Read-only sessions: readers never wait on a held write lock; the served-artifact check caches yeses.

On SQLite and on the real PostgreSQL (``db_url``).
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import func, select

from cloud.artifacts import ArtifactStore
from cloud.db import SessionFactory, read_session_factory, read_transaction, transaction
from cloud.models import ModelVersion
from cloud.services import registry
from cloud.transport.grpc_server import start_grpc_server
from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
from tests.unit.cloud.helpers import FrozenClock, tiny_onnx

pytestmark = pytest.mark.integration

WAIT_S = 20.0


def _register(
    sessions: SessionFactory, store: ArtifactStore, version: str, scale: float = 1.0
) -> ModelVersion:
    with sessions() as s:
        return registry.register_model(
            s, store, "digits", version, io.BytesIO(tiny_onnx(scale)), clock=FrozenClock()
        )


def _count(session_factory: SessionFactory) -> int:
    with read_transaction(session_factory) as s:
        return s.exec(select(func.count()).select_from(ModelVersion)).one()


def test_readers_are_not_blocked_by_a_held_write_lock(
    engine: Engine, sessions: SessionFactory, store: ArtifactStore
) -> None:
    _register(sessions, store, "1")
    reads = read_session_factory(engine)
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        # A write transaction (BEGIN IMMEDIATE on SQLite) that has written and holds its lock.
        with transaction(sessions) as s:
            s.add(ModelVersion(name="digits", version="2", format="onnx", sha256="a" * 64, length=1))
            s.flush()
            holding.set()
            assert release.wait(WAIT_S)

    second_writer_done = threading.Event()

    def second_writer() -> None:
        with transaction(sessions) as s:
            s.exec(select(func.count()).select_from(ModelVersion)).one()
        second_writer_done.set()

    with ThreadPoolExecutor(max_workers=10) as pool:
        held = pool.submit(writer)
        assert holding.wait(WAIT_S)
        if engine.dialect.name == "sqlite":
            # A session of the write kind queues on the lock, even for a read...
            waiting = pool.submit(second_writer)
        # ...while read-only sessions, many at once, go through and see the last commit.
        counts = [f.result(WAIT_S) for f in [pool.submit(_count, reads) for _ in range(8)]]
        assert counts == [1] * 8
        if engine.dialect.name == "sqlite":
            assert not second_writer_done.is_set()
        release.set()
        held.result(WAIT_S)
        if engine.dialect.name == "sqlite":
            waiting.result(WAIT_S)
    assert _count(reads) == 2  # a new read transaction sees the commit


def test_a_read_session_refuses_to_write(engine: Engine) -> None:
    reads = read_session_factory(engine)
    with pytest.raises(SQLAlchemyError, match=r"(?i)read-?only"), read_transaction(reads) as s:
        s.add(ModelVersion(name="digits", version="1", format="onnx", sha256="b" * 64, length=1))
        s.flush()
    assert _count(reads) == 0


def test_served_artifacts_caches_yes_but_asks_again_on_no(
    engine: Engine, sessions: SessionFactory, store: ArtifactStore
) -> None:
    asked: list[str] = []

    def also(sha256: str) -> bool:
        asked.append(sha256)
        return sha256 == "f" * 64

    served = registry.ServedArtifacts(read_session_factory(engine), also=also, max_entries=2)
    first = _register(sessions, store, "1")
    assert served(first.sha256) and served(first.sha256)
    assert asked == []  # the registry said yes; the fallback is not asked

    unknown = "e" * 64
    assert not served(unknown) and not served(unknown)
    assert asked == [unknown, unknown] and len(served) == 1  # a no is not cached
    assert served("f" * 64) and served("f" * 64)
    assert asked.count("f" * 64) == 1  # the fallback's yes is cached too

    later = _register(sessions, store, "2", scale=2.0)  # registered after the cache filled
    assert served(later.sha256)
    assert len(served) == 2  # bounded: the least recently asked went out
    served.forget(later.sha256)
    assert len(served) == 1


def test_a_cached_artifact_whose_file_is_gone_is_refused(
    engine: Engine, sessions: SessionFactory, store: ArtifactStore
) -> None:
    row = _register(sessions, store, "1")
    served = registry.ServedArtifacts(read_session_factory(engine))
    server, port = start_grpc_server(store, served, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = artifact_pb2_grpc.ArtifactServiceStub(ch)
            request = artifact_pb2.FetchRequest(sha256=row.sha256)
            assert sum(len(c.data) for c in stub.Fetch(request, timeout=10)) == row.length
            assert len(served) == 1
            store.delete(row.sha256)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Fetch(request, timeout=10))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop().wait(5)
