"""Metrics read from the database at each scrape, so that every hub replica answers the same."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from cloud.db import SessionFactory, read_transaction
from cloud.models import Rollout
from cloud.rollouts.machine import RolloutState

__all__ = ["ROLLOUTS", "Forward", "RolloutStateCollector"]

ROLLOUTS = "edgefleet_rollouts"


class RolloutStateCollector(Collector):
    """``edgefleet_rollouts{fleet,state}``: how many of the fleet's rollouts are in each state.

    One indexed ``GROUP BY state`` per scrape; every state is reported, zero included, so that a
    rule over ``paused`` sees 0 rather than no data.
    """

    def __init__(self, sessions: SessionFactory, *, fleet: str) -> None:
        self._sessions = sessions
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        with read_transaction(self._sessions) as session:
            counts: dict[str, int] = dict(
                session.exec(
                    select(Rollout.state, func.count())
                    .where(Rollout.fleet == self._fleet)
                    .group_by(col(Rollout.state))
                ).all()
            )
        family = GaugeMetricFamily(ROLLOUTS, "Rollouts of the fleet by state.", labels=["fleet", "state"])
        for state in RolloutState:
            family.add_metric([self._fleet, state.value], float(counts.pop(state.value, 0)))
        for other, count in sorted(counts.items()):  # a state this hub's code does not know (a newer replica)
            family.add_metric([self._fleet, other], float(count))
        yield family


class Forward(Collector):
    """Exposes another registry's metrics (the hub's in-memory ones) in a scrape's registry."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()
