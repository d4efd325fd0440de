"""Label selectors (parse, canonical text, meaning), effective labels, ingest keeping DeviceLabel in sync,
and the operator label route. Database parts run on SQLite here; the integration twin adds PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, select

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.errors import InvalidInputError, NotFoundError
from cloud.models import Device, DeviceLabel, Role
from cloud.services import labels, tokens
from cloud.services.devices import list_devices
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.labels import Op, Requirement, SelectorError, parse_selector
from edgefleet_proto.topics import FleetTopics
from tests.unit.cloud.helpers import FrozenClock, status

FLEET = "unit"

# --- parsing ---------------------------------------------------------------------------------

GOOD = [
    ("site=lab", "site=lab", [Requirement("site", Op.EQ, ("lab",))]),
    ("site==lab", "site=lab", [Requirement("site", Op.EQ, ("lab",))]),
    (" site != lab ", "site!=lab", [Requirement("site", Op.NE, ("lab",))]),
    ("site in (b, a, a)", "site in (a,b)", [Requirement("site", Op.IN, ("a", "b"))]),
    ("site notin (x)", "site notin (x)", [Requirement("site", Op.NOTIN, ("x",))]),
    ("gpu", "gpu", [Requirement("gpu", Op.EXISTS)]),
    ("!retired", "!retired", [Requirement("retired", Op.NOT_EXISTS)]),
    ("site=", "site=", [Requirement("site", Op.EQ, ("",))]),
    ("", "", []),
    (
        "tier=edge,example.com/ring in (1,2),!retired",
        "example.com/ring in (1,2),!retired,tier=edge",
        [
            Requirement("example.com/ring", Op.IN, ("1", "2")),
            Requirement("retired", Op.NOT_EXISTS),
            Requirement("tier", Op.EQ, ("edge",)),
        ],
    ),
    (
        "a=in,in=notin",
        "a=in,in=notin",
        [Requirement("a", Op.EQ, ("in",)), Requirement("in", Op.EQ, ("notin",))],
    ),
]


@pytest.mark.parametrize(("text", "canonical", "requirements"), GOOD)
def test_good_selectors_parse_to_requirements_and_canonical_text(
    text: str, canonical: str, requirements: list[Requirement]
) -> None:
    parsed = parse_selector(text)
    assert list(parsed.requirements) == requirements
    assert str(parsed) == canonical
    assert parse_selector(canonical) == parsed


BAD = [
    ("site in lab", 8, "'(' after 'in'", "'lab'"),
    ("site in (lab", 12, "',' or ')' in the in (...) list", "the end"),
    ("site in ()", 9, "a label value inside in (...)", "')'"),
    ("site lab", 5, "'=', '==', '!=', 'in', 'notin', ',' or the end after label key 'site'", "'lab'"),
    ("site=a=b", 6, "',' or the end of the selector", "'='"),
    ("a,,b", 2, "a label key or '!'", "','"),
    ("a,", 2, "a label key or '!'", "the end"),
    ("!", 1, "a label key after '!'", "the end"),
    ("!=x", 0, "a label key or '!'", "'!='"),
    (
        "site=l@b",
        6,
        "a label key or value (letters, digits, '-', '_', '.', '/'), an operator, '(', ')' or ','",
        "'@'",
    ),
    ("k" * 129 + "=v", 0, "a label key or '!' of at most 128 characters", "129 characters"),
]


@pytest.mark.parametrize(("text", "position", "expected", "got"), BAD)
def test_bad_selectors_say_where_what_was_expected_and_what_came(
    text: str, position: int, expected: str, got: str
) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    e = info.value
    assert (e.position, e.expected, e.got) == (position, expected, got)
    assert str(e) == f"invalid label selector {text!r} at position {position}: expected {expected}, got {got}"
    assert isinstance(e, InvalidInputError)  # the API answers 422


WORDS = st.sampled_from(["a", "b", "site", "in", "x.y/z", "v-1"])
REQUIREMENTS = st.one_of(
    st.builds(lambda k, v, op: f"{k}{op}{v}", WORDS, WORDS, st.sampled_from(["=", "==", "!=", " = ", "!= "])),
    st.builds(
        lambda k, vs, op: f"{k} {op} ({', '.join(vs)})",
        WORDS,
        st.lists(WORDS, min_size=1, max_size=3),
        st.sampled_from(["in", "notin"]),
    ),
    WORDS,
    WORDS.map(lambda k: f"!{k}"),
)


@given(st.lists(REQUIREMENTS, max_size=5))
def test_canonical_text_parses_back_to_the_same_selector(parts: list[str]) -> None:
    parsed = parse_selector(",".join(parts))
    assert parse_selector(str(parsed)) == parsed
    assert str(parse_selector(str(parsed))) == str(parsed)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("site=lab", {"site": "lab"}, True),
        ("site=lab", {}, False),
        ("site!=lab", {}, True),  # as in Kubernetes: no label is "not lab"
        ("site!=lab", {"site": "lab"}, False),
        ("site notin (a,b)", {"site": "c"}, True),
        ("site notin (a,b)", {}, True),
        ("site in (a,b)", {"site": "b"}, True),
        ("site in (a,b)", {}, False),
        ("site", {"site": ""}, True),
        ("!site", {"site": ""}, False),
        ("site=", {"site": ""}, True),
        ("site=lab,tier=edge", {"site": "lab"}, False),
        ("", {}, True),
    ],
)
def test_selector_meaning(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(selector).matches(labels) is matches


def test_key_value_pairs_are_equality_requirements() -> None:
    assert str(labels.as_selector({"tier": "edge", "site": "lab"})) == "site=lab,tier=edge"


# --- effective labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "operator", "effective"),
    [
        ({"site": "a"}, {}, {"site": "a"}),
        ({"site": "a"}, {"site": "b"}, {"site": "b"}),  # the operator wins
        ({"site": "a"}, {"site": None}, {}),  # and may hide a reported label
        ({"site": "a"}, {"site": "-"}, {}),
        ({}, {"tier": "canary"}, {"tier": "canary"}),
        ({"site": "a", "x": "1"}, {"tier": "t", "x": None}, {"site": "a", "tier": "t"}),
    ],
)
def test_effective_labels(
    reported: dict[str, str], operator: dict[str, str | None], effective: dict[str, str]
) -> None:
    assert labels.effective_labels(reported, operator) == effective


# --- DeviceLabel kept in sync ----------------------------------------------------------------


def _stored(sessions: SessionFactory) -> dict[str, dict[str, str]]:
    with sessions() as s:
        rows = s.exec(select(DeviceLabel).order_by(col(DeviceLabel.device_id), col(DeviceLabel.key))).all()
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        out.setdefault(row.device_id, {})[row.key] = row.value
    return out


def _report(ingestor: Ingestor, *statuses: tuple[str, dict[str, str]]) -> None:
    ingestor.ingest(
        [
            InboundMessage(f"ef/v1/{FLEET}/dev/{d}/status", status(d, labels=lbl).SerializeToString())
            for d, lbl in statuses
        ]
    )


@pytest.fixture
def ingestor(sessions: SessionFactory, clock: FrozenClock) -> Ingestor:
    return Ingestor(sessions, FleetTopics(FLEET), clock=clock)


def test_ingest_rewrites_device_labels_only_when_they_change(
    ingestor: Ingestor, sessions: SessionFactory
) -> None:
    _report(ingestor, ("d1", {"site": "a"}), ("d2", {"site": "b", "tier": "edge"}), ("d3", {}))
    assert _stored(sessions) == {"d1": {"site": "a"}, "d2": {"site": "b", "tier": "edge"}}
    assert ingestor.stats.snapshot()["labels"] == 2  # d3 reports none: nothing to write

    _report(ingestor, ("d1", {"site": "a"}), ("d2", {"site": "b", "tier": "edge"}))
    assert ingestor.stats.snapshot()["labels"] == 2  # the same labels again: nothing rewritten

    # Changed and changed back in one batch: the end state equals the start, so no rewrite.
    _report(ingestor, ("d1", {"site": "z"}), ("d1", {"site": "a"}), ("d2", {"tier": "core"}))
    assert ingestor.stats.snapshot()["labels"] == 3
    assert _stored(sessions) == {"d1": {"site": "a"}, "d2": {"tier": "core"}}


def test_an_offline_status_keeps_the_labels(ingestor: Ingestor, sessions: SessionFactory) -> None:
    _report(ingestor, ("d1", {"site": "a"}))
    msg = status("d1", online=False)  # a last will carries no labels
    ingestor.ingest([InboundMessage(f"ef/v1/{FLEET}/dev/d1/status", msg.SerializeToString())])
    assert _stored(sessions) == {"d1": {"site": "a"}}


def test_operator_labels_win_and_removing_one_restores_the_reported_value(
    ingestor: Ingestor, sessions: SessionFactory
) -> None:
    _report(ingestor, ("d1", {"site": "a", "tier": "edge"}))
    with sessions() as s:
        device = labels.update_operator_labels(
            s, FLEET, "d1", set_labels={"site": "b", "tier": "-", "ring": "1"}
        )
        assert device.operator_labels == {"ring": "1", "site": "b", "tier": None}
    assert _stored(sessions) == {"d1": {"ring": "1", "site": "b"}}

    # The device reports a new site: the operator's still wins, so DeviceLabel is not rewritten.
    before = ingestor.stats.snapshot()["labels"]
    _report(ingestor, ("d1", {"site": "c", "tier": "edge"}))
    assert ingestor.stats.snapshot()["labels"] == before
    assert _stored(sessions) == {"d1": {"ring": "1", "site": "b"}}

    with sessions() as s:
        labels.update_operator_labels(s, FLEET, "d1", remove=["site", "tier"])
    assert _stored(sessions) == {"d1": {"ring": "1", "site": "c", "tier": "edge"}}
    with sessions() as s:
        labels.update_operator_labels(s, FLEET, "d1", replace={})
    assert _stored(sessions) == {"d1": {"site": "c", "tier": "edge"}}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"set_labels": {"si te": "a"}}, "invalid label key 'si te'"),
        ({"set_labels": {"site": "a,b"}}, "invalid label value 'a,b'"),
        ({"set_labels": {"site": "a"}, "remove": ["site"]}, "labels site are both set and removed"),
        ({"replace": {"": "a"}}, "invalid label key ''"),
    ],
)
def test_bad_operator_labels_change_nothing(
    ingestor: Ingestor, sessions: SessionFactory, change: dict[str, object], said: str
) -> None:
    _report(ingestor, ("d1", {"site": "a"}))
    with sessions() as s, pytest.raises(InvalidInputError, match=said):
        labels.update_operator_labels(s, FLEET, "d1", **change)  # type: ignore[arg-type]
    with sessions() as s:
        device = s.get(Device, "d1")
        assert device is not None and device.operator_labels == {}
    assert _stored(sessions) == {"d1": {"site": "a"}}


def test_labelling_an_unknown_device_is_not_found(sessions: SessionFactory) -> None:
    with sessions() as s, pytest.raises(NotFoundError, match="device 'ghost' is not known in fleet 'unit'"):
        labels.update_operator_labels(s, FLEET, "ghost", set_labels={"a": "b"})


def test_listing_by_selector_runs_over_effective_labels(ingestor: Ingestor, sessions: SessionFactory) -> None:
    _report(ingestor, ("d1", {"site": "a"}), ("d2", {"site": "b"}), ("d3", {}))
    with sessions() as s:
        labels.update_operator_labels(s, FLEET, "d3", set_labels={"site": "a"})
        assert [d.id for d in list_devices(s, fleet=FLEET, labels="site=a")] == ["d1", "d3"]
        assert [d.id for d in list_devices(s, fleet=FLEET, labels="site!=a")] == ["d2"]
        assert [d.id for d in list_devices(s, fleet=FLEET, labels={"site": "b"})] == ["d2"]
        shown = {d.id: d for d in list_devices(s, fleet=FLEET)}["d3"]
        assert (shown.labels, shown.reported_labels, shown.operator_labels) == (
            {"site": "a"},
            {},
            {"site": "a"},
        )


# --- the label route -------------------------------------------------------------------------


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> dict[Role, dict[str, str]]:
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


def test_label_route_sets_hides_and_drops_operator_labels(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext
) -> None:
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev"
    ingestor.ingest(
        [InboundMessage(f"{base}/cam-01/status", status("cam-01", labels={"site": "a"}).SerializeToString())]
    )
    path = "/api/v1/devices/cam/labels"  # a unique prefix names the device, as elsewhere

    denied = client.patch(path, headers=auth[Role.VIEWER], json={"set": {"tier": "canary"}})
    assert denied.status_code == 403

    r = client.patch(path, headers=auth[Role.OPERATOR], json={"set": {"tier": "canary", "site": None}})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "device_id": "cam-01",
        "labels": {"tier": "canary"},
        "reported_labels": {"site": "a"},
        "operator_labels": {"site": None, "tier": "canary"},
    }
    listed = client.get("/api/v1/devices", headers=auth[Role.VIEWER], params={"label": "tier=canary"}).json()
    assert [d["id"] for d in listed["data"]] == ["cam-01"]
    assert (
        client.get("/api/v1/devices", headers=auth[Role.VIEWER], params={"label": "site"}).json()["data"]
        == []
    )

    r = client.patch(path, headers=auth[Role.OPERATOR], json={"remove": ["site"]})
    assert r.json()["labels"] == {"site": "a", "tier": "canary"}
    r = client.put(path, headers=auth[Role.ADMIN], json={"labels": {"ring": "2"}})
    assert r.status_code == 200 and r.json()["labels"] == {"ring": "2", "site": "a"}

    bad = client.patch(path, headers=auth[Role.OPERATOR], json={"set": {"ring": "two words"}})
    assert bad.status_code == 422 and "invalid label value 'two words'" in bad.json()["detail"]
    missing = client.put("/api/v1/devices/ghost/labels", headers=auth[Role.OPERATOR], json={"labels": {}})
    assert missing.status_code == 404


def test_device_listing_takes_selectors_and_refuses_bad_ones(
    client: TestClient, auth: dict[Role, dict[str, str]], ctx: HubContext
) -> None:
    ingestor = Ingestor(ctx.sessions, FleetTopics(ctx.settings.fleet), clock=ctx.clock)
    base = f"ef/v1/{ctx.settings.fleet}/dev"
    ingestor.ingest(
        [
            InboundMessage(f"{base}/d{i}/status", status(f"d{i}", labels={"site": s}).SerializeToString())
            for i, s in enumerate(["a", "b", "c"])
        ]
    )
    viewer = auth[Role.VIEWER]

    def ids(*labels_: str) -> list[str]:
        r = client.get("/api/v1/devices", headers=viewer, params={"label": list(labels_)})
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["data"]]

    assert ids("site=a") == ["d0"]  # the old key=value form
    assert ids("site in (a,c)") == ["d0", "d2"]
    assert ids("site notin (a)", "site!=c") == ["d1"]  # repeated: all must hold
    bad = client.get("/api/v1/devices", headers=viewer, params={"label": "site in a"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        "invalid label selector 'site in a' at position 8: expected '(' after 'in', got 'a'"
    )
