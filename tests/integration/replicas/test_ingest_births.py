"""A reconnect storm's births stored in bulk: the same rows as one status at a time, on SQLite and on the
real PostgreSQL, and two replicas storing the same births at once without a conflict; telemetry seq gaps
judged against the database, so that replicas and restarts see the same gaps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud.clock import to_ms
from cloud.db import create_all, create_db_engine, session_factory
from cloud.models import Device, DeviceLabel, DeviceState
from cloud.services.ingest import InboundMessage, Ingestor
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import T0, FrozenClock, model_ref, status, telemetry

pytestmark = pytest.mark.integration

FLEET = "storm"
TOPICS = FleetTopics(FLEET)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _births(count: int, *, retained: bool = True) -> list[InboundMessage]:
    sent = to_ms(T0) - 60_000
    return [
        InboundMessage(
            TOPICS.device(f"d{i:04d}").status,
            status(
                f"d{i:04d}",
                labels={"site": f"s{i % 3}"},
                active=model_ref("digits", "1", "a" * 64),
                sent_at_ms=sent,
                applied_generation=i,
            ).SerializeToString(),
            retained,
        )
        for i in range(count)
    ]


def test_births_in_bulk_store_what_one_at_a_time_stores(engine: Engine) -> None:
    ingestor = Ingestor(session_factory(engine), TOPICS, clock=FrozenClock())
    known = status("d0000", labels={"site": "old"}, sent_at_ms=to_ms(T0) - 120_000)
    ingestor.ingest([InboundMessage(TOPICS.device("d0000").status, known.SerializeToString(), True)])
    # A first status that is a death: stored whole, as apply_status stores a first status.
    death = status("gone", online=False, labels={"site": "s9"}, active=model_ref("digits", "0", "b" * 64))
    batch = [*_births(300), InboundMessage(TOPICS.device("gone").status, death.SerializeToString())]
    ingestor.ingest(batch)

    assert ingestor.stats.snapshot()["statuses"] == 302
    with Session(engine) as s:
        rows = {d.id: d for d in s.exec(select(Device)).all()}
        labels = {(row.device_id, row.key): row.value for row in s.exec(select(DeviceLabel)).all()}
    assert len(rows) == 301
    d7 = rows["d0007"]
    assert (d7.fleet, d7.state, d7.agent_version, d7.applied_generation) == (
        FLEET,
        DeviceState.ONLINE,
        "1.2.3",
        7,
    )
    assert (d7.active_model_name, d7.active_model_version) == ("digits", "1")
    assert d7.capabilities["cpu_arch"] == "aarch64"
    # Retained births: alive when they were sent, not when the broker replayed them.
    assert d7.first_seen == d7.last_seen == T0 - timedelta(seconds=60)
    assert labels[("d0007", "site")] == "s1"
    # A device known before keeps its first sighting; its labels move on.
    assert rows["d0000"].first_seen < rows["d0007"].first_seen
    assert labels[("d0000", "site")] == "s0"
    gone = rows["gone"]
    assert gone.state == DeviceState.OFFLINE and gone.active_model_version == "0"
    assert labels[("gone", "site")] == "s9"


def test_two_replicas_storing_the_same_births_at_once_store_each_device_once(schema_url: str) -> None:
    engine = create_db_engine(schema_url)
    create_all(engine)
    births = _births(400)
    ingestors = [Ingestor(session_factory(engine), TOPICS, clock=FrozenClock()) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def store(ingestor: Ingestor) -> None:
        barrier.wait(10)
        try:
            ingestor.ingest(births)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=store, args=(i,)) for i in ingestors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for ingestor in ingestors:
        snap = ingestor.stats.snapshot()
        assert (snap["statuses"], snap["failed"]) == (400, 0), snap
    with Session(engine) as s:
        assert len(s.exec(select(Device.id)).all()) == 400
        assert len(s.exec(select(DeviceLabel)).all()) == 400
    engine.dispose()


def _windows(device_id: str, *seqs: int) -> InboundMessage:
    return InboundMessage(TOPICS.device(device_id).telemetry, telemetry(device_id, *seqs).SerializeToString())


def test_seq_gaps_are_judged_against_the_database_across_replicas_and_restarts(engine: Engine) -> None:
    a, b = (Ingestor(session_factory(engine), TOPICS, clock=FrozenClock()) for _ in range(2))
    a.ingest([_windows("d1", 1)])
    b.ingest([_windows("d1", 2)])  # the next window went to the other replica
    a.ingest([_windows("d1", 3)])  # looks like a gap to a alone: the database says it is none
    assert (a.stats.snapshot()["seq_gaps"], b.stats.snapshot()["seq_gaps"]) == (0, 0)

    restarted = Ingestor(session_factory(engine), TOPICS, clock=FrozenClock())
    restarted.ingest([_windows("d1", 6, 7)])  # first sight of d1 in this process: 4 and 5 are missing
    assert restarted.stats.snapshot()["seq_gaps"] == 2
    restarted.ingest([_windows("d1", 8), _windows("d1", 7)])  # in order, and a redelivery
    assert restarted.stats.snapshot()["seq_gaps"] == 2
