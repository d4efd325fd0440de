"""What deploy/ ships for Prometheus and Grafana reads only metrics the hub exports.

The names are taken from a scrape of a unit hub's /metrics (SQLite in a temp folder). The running
parts that /metrics reads at scrape time (the MQTT transport's queue and connection, the ingestor's
counters, the broker's dropped count) are in-memory stand-ins here; the integration suite scrapes a
real hub (tests/integration/cloud/test_hub_metrics.py). promtool is not required: the expressions are
checked for the names they use and for balanced brackets, which is where a hand edit goes wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.models import Role
from cloud.services import tokens

REPO = Path(__file__).resolve().parents[3]
RULES = [
    REPO / "deploy" / "prometheus" / "edgefleet-hub-rules.yml",
    REPO / "deploy" / "prometheus" / "edgefleet-rules.yml",
]
DASHBOARD = REPO / "deploy" / "grafana" / "edgefleet-hub.json"
OPERATIONS = REPO / "docs" / "operations.md"
# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
# A metric name: the hub's (label values in quotes use hyphens, never this prefix), or Prometheus' up{...}.
_NAME = re.compile(r"\b(edgefleet_[a-z0-9_]+)\b|\b(up)\s*\{")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    from cloud.artifacts import ArtifactStore
    from cloud.db import create_all, create_db_engine
    from cloud.services.publisher import RecordingPublisher
    from cloud.settings import Settings

    tmp = tmp_path_factory.mktemp("hub")
    engine = create_db_engine(f"sqlite:///{tmp / 'hub.db'}")
    create_all(engine)
    ctx = HubContext(
        settings=Settings(data_dir=tmp, fleet="unit"),
        engine=engine,
        store=ArtifactStore(tmp / "artifacts"),
        publisher=RecordingPublisher(),
        artifact_endpoint="hub.example:50051",
        broker_dropped=lambda: 7,
    )
    ctx.metrics.bind_parts(
        ingest_stats=lambda: {"received": 1}, queue_depth=lambda: 0, mqtt_connected=lambda: True
    )
    with ctx.sessions() as s:
        _row, secret = tokens.create_token(s, "prometheus", Role.VIEWER)
    try:
        with TestClient(create_app(ctx)) as client:
            response = client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    finally:
        engine.dispose()
    assert response.status_code == 200, response.text
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(s.name for s in family.samples)
    return frozenset(names)


def referenced(expr: str) -> set[str]:
    return {ours or theirs for ours, theirs in _NAME.findall(expr)}


def balanced(expr: str) -> bool:
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            depth.append(ch)
        elif ch in pairs and (not depth or depth.pop() != pairs[ch]):
            return False
    return not depth and not in_string


def rule_entries() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in RULES:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in data["groups"]:
            found += [(f"{path.name}:{rule['alert']}", rule) for rule in group["rules"]]
    return found


def dashboard_exprs() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        found += [(panel["title"], t["expr"]) for t in panel["targets"]]
    return found


def test_the_scrape_has_the_hub_metrics(exported: frozenset[str]) -> None:
    for name in (
        "edgefleet_ingest_messages_total",
        "edgefleet_ingest_window_lag_seconds_bucket",
        "edgefleet_broker_dropped_messages",
        "edgefleet_rollouts",
        "edgefleet_http_request_duration_seconds_bucket",
        "edgefleet_scheduler_job_failures_total",
        "edgefleet_alert_firing",
    ):
        assert name in exported, f"{name} is not in /metrics; it has {sorted(exported)}"


@pytest.mark.parametrize(("where", "rule"), rule_entries(), ids=[where for where, _rule in rule_entries()])
def test_every_rule_reads_exported_metrics(
    where: str, rule: dict[str, Any], exported: frozenset[str]
) -> None:
    expr = rule["expr"]
    names = referenced(expr)
    assert names, f"{where}: expected the expression to read a metric: {expr}"
    unknown = names - exported - PROMETHEUS_OWN
    assert not unknown, f"{where}: {sorted(unknown)} not exported by the hub"
    assert balanced(expr), f"{where}: unbalanced brackets or quotes: {expr}"
    assert re.fullmatch(r"edgefleet_\w+|Edgefleet[A-Za-z]+", rule["alert"]), rule["alert"]
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert "for" not in rule or re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]


def test_every_hub_alert_has_a_runbook_section() -> None:
    doc = OPERATIONS.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for where, rule in rule_entries():
        if not where.startswith("edgefleet-hub-rules"):
            continue
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}", runbook
        assert rule["alert"].lower() in anchors, f"docs/operations.md has no section {rule['alert']}"


def test_prometheus_loads_both_rule_files() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == [path.name for path in RULES[::-1]]


@pytest.mark.parametrize(
    ("title", "expr"),
    dashboard_exprs(),
    ids=[f"{title}#{i}" for i, (title, _e) in enumerate(dashboard_exprs())],
)
def test_every_dashboard_query_reads_exported_metrics(
    title: str, expr: str, exported: frozenset[str]
) -> None:
    names = referenced(expr)
    assert names, f"panel {title!r}: expected the query to read a metric: {expr}"
    unknown = names - exported - PROMETHEUS_OWN
    assert not unknown, f"panel {title!r}: {sorted(unknown)} not exported by the hub"
    assert balanced(expr), f"panel {title!r}: unbalanced brackets or quotes: {expr}"


def test_the_dashboard_is_importable() -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in data["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    covered = " ".join(expr for _title, expr in dashboard_exprs())
    topics = ["ingest_messages", "ingest_window_lag", "broker_dropped", "rollouts", "http_request_duration",
              "scheduler_job_failures", "alert_firing"]  # fmt: skip
    for topic in topics:
        assert f"edgefleet_{topic}" in covered, f"the dashboard shows nothing of {topic}"
