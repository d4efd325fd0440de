"""Selectors compiled to SQL, cohorts and keyset pages on SQLite and on the real PostgreSQL.

A few hundred devices report mixed labels through ingest, some carry operator labels; every
selector's SQL result must equal a plain Python evaluation of the same requirements over the
effective labels computed here, independently of the hub's code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, select

from cloud.db import SessionFactory
from cloud.models import Device
from cloud.services import cohorts, labels
from cloud.services.devices import page_devices
from cloud.services.ingest import InboundMessage, Ingestor
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import FrozenClock, status

pytestmark = pytest.mark.integration

FLEET = "unit"
KEYS = ["site", "tier", "ring", "gpu"]
VALUES = ["a", "b", "c", ""]
DEVICES = 300

Requirement = tuple[str, str, tuple[str, ...]]  # (key, op, values), op in = != in notin exists !exists


def _fleet_labels() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str | None]]]:
    """Reported labels of every device, and operator labels of some (None: hide the reported one)."""
    rng = random.Random(7)
    reported = {
        f"dev-{i:04}": {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.6} for i in range(DEVICES)
    }
    operator: dict[str, dict[str, str | None]] = {}
    for device_id in rng.sample(sorted(reported), 40):
        key = rng.choice(KEYS)
        operator[device_id] = {key: None if rng.random() < 0.4 else rng.choice(VALUES[:3])}
    return reported, operator


def _effective(reported: dict[str, str], operator: dict[str, str | None]) -> dict[str, str]:
    out = dict(reported)
    for key, value in operator.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _holds(req: Requirement, device_labels: dict[str, str]) -> bool:
    key, op, values = req
    present = key in device_labels
    value = device_labels.get(key)
    if op == "exists":
        return present
    if op == "!exists":
        return not present
    if op in ("=", "in"):
        return present and value in values
    return not present or value not in values  # != and notin


def _text(req: Requirement) -> str:
    key, op, values = req
    if op == "exists":
        return key
    if op == "!exists":
        return f"!{key}"
    if op in ("in", "notin"):
        return f"{key} {op} ({','.join(values)})"
    return f"{key}{op}{values[0]}"


@pytest.fixture
def fleet(sessions: SessionFactory, clock: FrozenClock) -> dict[str, dict[str, str]]:
    """The fleet in the database; returns the effective labels the test expects per device."""
    reported, operator = _fleet_labels()
    Ingestor(sessions, FleetTopics(FLEET), clock=clock).ingest(
        [
            InboundMessage(f"ef/v1/{FLEET}/dev/{d}/status", status(d, labels=lbl).SerializeToString())
            for d, lbl in reported.items()
        ]
    )
    for device_id, theirs in operator.items():
        with sessions() as s:
            labels.update_operator_labels(s, FLEET, device_id, set_labels=theirs)
    return {d: _effective(reported[d], operator.get(d, {})) for d in reported}


REQUIREMENT = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(["=", "!="]), st.tuples(st.sampled_from(VALUES[:3]))),
    st.tuples(
        st.sampled_from(KEYS),
        st.sampled_from(["in", "notin"]),
        st.lists(st.sampled_from(VALUES[:3]), min_size=1, max_size=3, unique=True).map(tuple),
    ),
    st.tuples(st.sampled_from(KEYS), st.sampled_from(["exists", "!exists"]), st.just(())),
)


def _sql_ids(sessions: SessionFactory, text: str) -> list[str]:
    clause = labels.selector_clause(labels.parse_selector(text))
    with sessions() as s:
        query = select(Device.id).where(Device.fleet == FLEET, clause).order_by(col(Device.id))
        return list(s.exec(query).all())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requirements=st.lists(REQUIREMENT, min_size=1, max_size=3))
def test_sql_selection_equals_python_evaluation(
    sessions: SessionFactory, fleet: dict[str, dict[str, str]], requirements: Sequence[Requirement]
) -> None:
    text = ",".join(_text(r) for r in requirements)
    expected = sorted(d for d, lbl in fleet.items() if all(_holds(r, lbl) for r in requirements))
    assert _sql_ids(sessions, text) == expected, text


@pytest.mark.parametrize(
    "text",
    [
        "site=a",
        "site!=a",
        "site in (a,b)",
        "site notin (a,b)",
        "gpu",
        "!gpu",
        "site=",
        "tier=b,!ring,gpu in (c)",
    ],
)
def test_fixed_selectors_match_python_and_select_something(
    sessions: SessionFactory, fleet: dict[str, dict[str, str]], text: str
) -> None:
    parsed = labels.parse_selector(text)
    expected = sorted(d for d, lbl in fleet.items() if parsed.matches(lbl))
    got = _sql_ids(sessions, text)
    assert got == expected
    assert 0 < len(got) < DEVICES  # the fleet's mix makes each of these a real filter


def test_device_label_rows_equal_the_effective_labels(
    sessions: SessionFactory, fleet: dict[str, dict[str, str]]
) -> None:
    with sessions() as s:
        stored = labels.stored_labels(s, sorted(fleet))
    assert {d: stored.get(d, {}) for d in fleet} == fleet


def test_cohort_membership_is_live_and_pages_cover_it_once(
    sessions: SessionFactory, fleet: dict[str, dict[str, str]], clock: FrozenClock
) -> None:
    with sessions() as s:
        cohort = cohorts.create_cohort(
            s, fleet=FLEET, name="wave-1", selector="site in (a,b),!gpu", devices=["dev-0000", "dev-0001"]
        )
    parsed = labels.parse_selector(cohort.selector)
    expected = sorted(d for d, lbl in fleet.items() if parsed.matches(lbl) or d in ("dev-0000", "dev-0001"))

    seen: list[str] = []
    cursor: str | None = None
    while True:
        with sessions() as s:
            page = cohorts.list_members(
                s, FLEET, cohorts.get_cohort(s, FLEET, "wave-1"), limit=37, cursor=cursor
            )
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    with sessions() as s:
        assert cohorts.count_members(s, FLEET, cohort) == len(expected)

    # A device that joins after the cohort was made is a member at the next query.
    Ingestor(sessions, FleetTopics(FLEET), clock=clock).ingest(
        [
            InboundMessage(
                f"ef/v1/{FLEET}/dev/dev-9999/status",
                status("dev-9999", labels={"site": "b"}).SerializeToString(),
            )
        ]
    )
    with sessions() as s:
        row = cohorts.get_cohort(s, FLEET, "wave-1")
        assert cohorts.count_members(s, FLEET, row) == len(expected) + 1
        assert "dev-9999" in s.exec(cohorts.member_ids_query(FLEET, row)).all()


def test_device_pages_with_a_selector(sessions: SessionFactory, fleet: dict[str, dict[str, str]]) -> None:
    expected = sorted(d for d, lbl in fleet.items() if lbl.get("tier") != "a")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        with sessions() as s:
            page = page_devices(s, fleet=FLEET, labels="tier!=a", limit=50, cursor=cursor)
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
