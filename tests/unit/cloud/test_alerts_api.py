"""The alerts API through FastAPI's TestClient: rules, alerts with history, receivers, /metrics, roles.

SQLite in a temp folder (the unit fixtures); cohort metrics are written as the scorers would, and
alerts are evaluated with the context's frozen clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.alerts.service import evaluate
from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.drift.tables import CohortMetric
from cloud.models import Role
from cloud.services import cohorts, tokens
from tests.unit.cloud.helpers import FrozenClock

Headers = dict[Role, dict[str, str]]

RULES = """
rules:
  - {name: drift, metric: drift_score, comparison: ">", threshold: 1, for: 10m, scope: cohorts}
  - {name: errors, metric: error_rate, comparison: ">", threshold: 0.05, scope: fleet, severity: critical}
"""


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> Headers:
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


def apply(client: TestClient, headers: dict[str, str], text: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/v1/alert-rules/apply",
        headers={**headers, "Content-Type": "application/yaml"},
        content=text.encode(),
    )
    return response


def seed(ctx: HubContext, clock: FrozenClock) -> int:
    """A cohort "lab" drifting in two buckets, and fleet-wide errors: evaluated until both rules fire."""
    with ctx.sessions() as s:
        lab = cohorts.create_cohort(s, fleet=ctx.settings.fleet, name="lab", selector="site=lab").id
        assert lab is not None
        for i in range(3):
            start = clock.now + timedelta(seconds=300 * i)
            for cohort_id, name, reference, value in [
                (lab, "drift_score", "baseline", 1.5 + i),
                (0, "error_rate", "", 0.2),
            ]:
                s.add(
                    CohortMetric(
                        fleet="unit",
                        cohort_id=cohort_id,
                        model_name="digits",
                        model_version="2",
                        bucket_start=start,
                        metric=name,
                        reference=reference,
                        value=value,
                    )
                )
        s.commit()
    for seconds in (10, 700):
        evaluate(ctx.sessions, fleet="unit", now=clock.now + timedelta(seconds=seconds))
    return lab


def test_rules_apply_from_yaml_then_read_change_and_delete(client: TestClient, auth: Headers) -> None:
    op, viewer = auth[Role.OPERATOR], auth[Role.VIEWER]
    r = apply(client, op, RULES)
    assert r.status_code == 200, r.text
    assert r.json() == {"created": ["drift", "errors"], "updated": [], "unchanged": []}
    again = apply(client, op, RULES)
    assert again.json()["unchanged"] == ["drift", "errors"]

    page = client.get("/api/v1/alert-rules", headers=viewer, params={"limit": 1}).json()
    assert [x["name"] for x in page["data"]] == ["drift"] and page["next_cursor"]
    rest = client.get("/api/v1/alert-rules", headers=viewer, params={"cursor": page["next_cursor"]}).json()
    assert [x["name"] for x in rest["data"]] == ["errors"] and rest["next_cursor"] is None
    drift = client.get("/api/v1/alert-rules/drift", headers=viewer).json()
    assert (drift["for"], drift["for_s"], drift["comparison"], drift["scope"]) == ("10m", 600, ">", "cohorts")

    changed = client.put("/api/v1/alert-rules/drift", headers=op, json={**_spec(drift), "threshold": 2})
    assert changed.status_code == 200 and changed.json()["threshold"] == 2
    p95 = {"metric": "p95_ms", "comparison": ">", "threshold": 250, "for": 300}
    created = client.put("/api/v1/alert-rules/p95", headers=op, json=p95)
    assert created.status_code == 201 and created.json()["for"] == "5m"
    dup = client.post("/api/v1/alert-rules", headers=op, json=_spec(drift))
    assert dup.status_code == 409 and "already has an alert rule named 'drift'" in dup.json()["detail"]

    assert client.delete("/api/v1/alert-rules/drift", headers=op).status_code == 204
    assert client.get("/api/v1/alert-rules/drift", headers=viewer).status_code == 404


def _spec(rule: dict[str, object]) -> dict[str, object]:
    keys = ("name", "metric", "feature", "reference", "comparison", "threshold", "for", "scope", "severity")
    return {k: rule[k] for k in (*keys, "enabled", "description")}


def test_invalid_rules_are_422_naming_every_field_and_nothing_is_stored(
    client: TestClient, auth: Headers
) -> None:
    op = auth[Role.OPERATOR]
    bad = "- {name: a, metric: drift_score, comparison: '>', threshold: 1}\n"
    bad += "- {name: b, metric: nope, threshold: x}"
    r = apply(client, op, bad)
    assert r.status_code == 422
    detail = r.json()["detail"]
    for field in ("rules[1].metric: expected one of", "rules[1].comparison: expected", "rules[1].threshold:"):
        assert field in detail, detail
    no_cohort = "- {name: a, metric: drift_score, comparison: '>', threshold: 1, scope: 'cohort:nowhere'}"
    r = apply(client, op, no_cohort)
    assert r.status_code == 422 and "rules[0].scope: expected a cohort of fleet 'unit'" in r.json()["detail"]
    r = client.post(
        "/api/v1/alert-rules", headers=op, json={"name": "a", "metric": "accuracy", "comparison": "<"}
    )
    assert r.status_code == 422 and "threshold: expected a number, got nothing" in r.json()["detail"]
    assert client.get("/api/v1/alert-rules", headers=op).json()["data"] == []
    r = client.post(
        "/api/v1/alert-rules/apply",
        headers={**op, "Content-Type": "application/octet-stream"},
        content=b"rules: []",
    )
    assert r.status_code == 422 and "got content type 'application/octet-stream'" in r.json()["detail"]


def test_a_cohort_a_rule_watches_cannot_be_deleted_under_it(client: TestClient, auth: Headers) -> None:
    op = auth[Role.OPERATOR]
    one_cohort = "- {name: lab, metric: drift_score, comparison: '>', threshold: 1, scope: 'cohort:lab'}"
    lab = {"name": "lab", "selector": "site=lab"}
    assert client.post("/api/v1/cohorts", headers=op, json=lab).status_code == 201
    assert apply(client, op, one_cohort).status_code == 200
    r = client.delete("/api/v1/cohorts/lab", headers=op)
    assert r.status_code == 409 and "alert rule lab watches it" in r.json()["detail"]
    assert client.delete("/api/v1/alert-rules/lab", headers=op).status_code == 204
    assert client.delete("/api/v1/cohorts/lab", headers=op).status_code == 204


def test_viewers_read_operators_write_and_strangers_get_nothing(client: TestClient, auth: Headers) -> None:
    viewer = auth[Role.VIEWER]
    for path in ("/api/v1/alerts", "/api/v1/alert-rules", "/api/v1/alert-receivers", "/metrics"):
        assert client.get(path, headers=viewer).status_code == 200, path
        assert client.get(path).status_code == 401, path
    assert apply(client, viewer, RULES).status_code == 403
    writes: list[tuple[str, str, dict[str, object] | None]] = [
        ("POST", "/api/v1/alert-rules", {}),
        ("PUT", "/api/v1/alert-rules/x", {}),
        ("DELETE", "/api/v1/alert-rules/x", None),
        ("POST", "/api/v1/alert-receivers", {"name": "x", "url": "https://a.example/"}),
        ("PATCH", "/api/v1/alert-receivers/x", {}),
        ("DELETE", "/api/v1/alert-receivers/x", None),
    ]
    for method, path, body in writes:
        r = client.request(method, path, headers=viewer, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert "needs the operator role" in r.json()["detail"]


def test_alerts_list_filter_and_show_their_history_and_deliveries(
    ctx: HubContext, client: TestClient, auth: Headers, clock: FrozenClock
) -> None:
    op, viewer = auth[Role.OPERATOR], auth[Role.VIEWER]
    client.post("/api/v1/alert-receivers", headers=op, json={"name": "ops", "url": "http://127.0.0.1:9/x"})
    apply(client, op, RULES)
    lab = seed(ctx, clock)

    listed = client.get("/api/v1/alerts", headers=viewer).json()["data"]
    # Newest first: the drift alert opened (pending) before the errors alert fired at once.
    assert [(a["rule"], a["state"], a["cohort"], a["cohort_id"]) for a in listed] == [
        ("errors", "firing", None, 0),
        ("drift", "firing", "lab", lab),
    ]
    by_rule = {a["rule"]: a for a in listed}
    assert by_rule["drift"]["model_name"] == "digits" and by_rule["drift"]["value"] == 3.5
    assert by_rule["errors"]["severity"] == "critical"

    def ids(**params: object) -> list[int]:
        return [a["id"] for a in client.get("/api/v1/alerts", headers=viewer, params=params).json()["data"]]

    assert ids(cohort="lab") == [by_rule["drift"]["id"]]
    assert ids(cohort_id=0) == [by_rule["errors"]["id"]]
    assert ids(rule="errors", state="firing") == [by_rule["errors"]["id"]]
    assert ids(state="resolved") == []
    assert client.get("/api/v1/alerts", headers=viewer, params={"cohort": "nope"}).status_code == 404
    bad_state = client.get("/api/v1/alerts", headers=viewer, params={"state": "burning"})
    assert bad_state.status_code == 422

    shown = client.get(f"/api/v1/alerts/{by_rule['drift']['id']}", headers=viewer).json()
    assert [(h["from"], h["to"], h["event"]) for h in shown["history"]] == [
        ("inactive", "pending", "breach"),
        ("pending", "firing", "held"),
    ]
    (note,) = shown["notifications"]
    assert note["state"] == "firing"
    assert note["deliveries"] == []  # handed to receivers by the next webhook pass
    assert client.get("/api/v1/alerts/9999", headers=viewer).status_code == 404


def test_receivers_show_urls_up_to_the_host_and_refuse_what_is_not_http(
    client: TestClient, auth: Headers
) -> None:
    op, viewer = auth[Role.OPERATOR], auth[Role.VIEWER]
    chat = {"name": "chat", "url": "https://hooks.example.com/T000/B000/s3cr3t-path-token"}
    r = client.post("/api/v1/alert-receivers", headers=op, json=chat)
    assert r.status_code == 201 and r.json()["url"] == "https://hooks.example.com/…"
    assert "s3cr3t-path-token" not in client.get("/api/v1/alert-receivers", headers=viewer).text
    for url, said in [("ftp://x.example/", "its scheme is 'ftp'"), ("https:///path", "it has no host"),
                      ("http://a.example:99999/", "it does not parse")]:  # fmt: skip
        r = client.post("/api/v1/alert-receivers", headers=op, json={"name": "bad", "url": url})
        assert r.status_code == 422 and r.json()["detail"].startswith("url: expected an http://"), url
        assert said in r.json()["detail"]
    assert (
        client.post(
            "/api/v1/alert-receivers", headers=op, json={"name": "chat", "url": "http://a/"}
        ).status_code
        == 409
    )
    r = client.patch("/api/v1/alert-receivers/chat", headers=op, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert client.delete("/api/v1/alert-receivers/chat", headers=op).status_code == 204
    assert client.get("/api/v1/alert-receivers/chat", headers=viewer).status_code == 404


def test_metrics_expose_the_latest_values_firing_alerts_and_broker_drops(
    ctx: HubContext, client: TestClient, auth: Headers, clock: FrozenClock
) -> None:
    apply(client, auth[Role.OPERATOR], RULES)
    seed(ctx, clock)
    clock.advance(700)
    ctx.broker_dropped = lambda: 17

    r = client.get("/metrics", headers=auth[Role.VIEWER])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    values = {tuple(sorted(s.labels.items())): s.value for s in families["edgefleet_cohort_metric"].samples}
    base = (("feature", ""), ("fleet", "unit"), ("model", "digits"), ("version", "2"))
    drift = tuple(sorted((*base, ("cohort", "lab"), ("metric", "drift_score"), ("reference", "baseline"))))
    assert values[drift] == 3.5  # the latest bucket's, not an older one
    errors = tuple(sorted((*base, ("cohort", ""), ("metric", "error_rate"), ("reference", ""))))
    assert values[errors] == 0.2 and len(values) == 2
    firing = sorted(s.labels["rule"] for s in families["edgefleet_alert_firing"].samples)
    assert firing == ["drift", "errors"]
    assert families["edgefleet_broker_dropped_messages"].samples[0].value == 17

    # Much later, with no new data, the series are stale and are no longer exported.
    clock.advance(3600)
    stale = {
        f.name: f
        for f in text_string_to_metric_families(client.get("/metrics", headers=auth[Role.VIEWER]).text)
    }
    assert stale["edgefleet_cohort_metric"].samples == []
