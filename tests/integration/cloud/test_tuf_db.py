"""The update repository and the director on SQLite and on the real PostgreSQL.

Targets, rotations, re-signing and director counters under both databases, including two
threads signing for one device at once: counters are never handed out twice.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.db import session_factory
from cloud.services.director import Director, open_envelope
from cloud.settings import Settings
from cloud.tuf import RotationService, TargetSpec, TufSettings, ensure_initialized, open_repository
from edgefleet_proto.v1 import common_pb2, desired_pb2
from tests.unit.cloud.helpers import FrozenClock

pytestmark = pytest.mark.integration

DATA = b"artifact" * 100
SHA = hashlib.sha256(DATA).hexdigest()


def test_repository_and_director_on_each_database(engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    sessions = session_factory(engine)
    repo = open_repository(Settings(data_dir=tmp_path), sessions, tuf=TufSettings(), clock=clock)
    assert ensure_initialized(repo)
    assert repo.update_targets([TargetSpec("models/m/1/a.onnx", SHA, len(DATA), {"kind": "model"})])
    RotationService(repo).propose("snapshot")
    clock.advance(13 * 3600)
    assert repo.refresh() == ["timestamp"]
    versions = {s.role: s.version for s in repo.status()}
    assert versions == {"root": 2, "targets": 2, "snapshot": 3, "timestamp": 4, "director": 2}
    assert repo.metadata_file("2.targets.json") == repo.metadata_file("targets.json")

    director = Director(repo, clock=clock)
    counters: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def sign() -> None:
        try:
            start.wait()
            for generation in range(1, 5):
                desired = desired_pb2.DesiredState(
                    device_id="d1",
                    fleet="f",
                    generation=generation,
                    model=common_pb2.ModelRef(
                        name="m", version="1", format="onnx", sha256=SHA, length=len(DATA)
                    ),
                )
                with sessions() as session:
                    envelope = director.seal(session, desired, force=True)
                    session.commit()
                counters.append(open_envelope(envelope).counter)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=sign) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(counters) == list(range(1, 13)), "a counter was handed out twice"
