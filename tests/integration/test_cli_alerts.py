"""`fleet alerts` against a running hub: rules from a file, alerts listed and shown, receivers, Prometheus.

Cohort metrics are written into the hub's database as the scorers write them, and the alert
rules are evaluated at the hub's own clock, as its observe cycle does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cloud.alerts.service import evaluate
from cloud.cli import app
from cloud.clock import utcnow
from cloud.drift.tables import CohortMetric
from cloud.hub import Hub
from cloud.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "alert-rules.yaml"
runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command."""
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.stdout, result.stderr


def said(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def drift_in_lab(hub: Hub) -> None:
    """Cohort lab drifted in its last three buckets, up to now."""
    assert hub.context is not None
    code, _, err = fleet(hub, "cohorts", "create", "lab", "--selector", "site=lab")
    assert code == 0, err
    with hub.context.sessions() as s:
        from cloud.services.cohorts import get_cohort

        lab = get_cohort(s, hub.settings.fleet, "lab").id
        assert lab is not None
        now = utcnow()
        for i in range(3):
            start = now - timedelta(seconds=300 * (2 - i) + 60)
            s.add(CohortMetric(fleet=hub.settings.fleet, cohort_id=lab, model_name="digits",
                               model_version="3", bucket_start=start, metric="drift_score",
                               reference="baseline", value=1.4))  # fmt: skip
        s.commit()


def test_rules_from_the_example_file_fire_and_show_and_resolve_when_removed(hub: Hub) -> None:
    code, out, err = fleet(hub, "alerts", "rules", "apply", str(EXAMPLE))
    assert code == 0, err
    assert said(out) == "created drift, accuracy-low, error-rate-high"
    code, out, _ = fleet(hub, "alerts", "rules", "apply", str(EXAMPLE), "-o", "json")
    assert json.loads(out)["unchanged"] == ["drift", "accuracy-low", "error-rate-high"]
    code, out, _ = fleet(hub, "alerts", "rules", "ls", "-o", "json")
    rules = {r["name"]: r for r in json.loads(out)}
    assert (rules["drift"]["for"], rules["drift"]["scope"], rules["accuracy-low"]["comparison"]) == (
        "10m",
        "cohorts",
        "<",
    )
    code, out, _ = fleet(hub, "alerts", "rules", "ls")
    assert code == 0 and "3 rule(s)" in out and "error-rate-high" in out

    assert hub.context is not None
    drift_in_lab(hub)
    changes = evaluate(hub.context.sessions, fleet=hub.settings.fleet, now=utcnow())
    assert [(c.rule, c.cohort, c.state.value) for c in changes] == [("drift", "lab", "firing")]

    code, out, err = fleet(hub, "alerts", "ls", "--state", "firing", "-o", "json")
    assert code == 0, err
    (alert,) = json.loads(out)
    assert (alert["rule"], alert["cohort"], alert["model_version"], alert["value"]) == (
        "drift",
        "lab",
        "3",
        1.4,
    )
    code, out, _ = fleet(hub, "alerts", "ls", "--cohort", "lab")
    assert code == 0 and "firing" in out and "digits:3" in said(out)
    code, out, _ = fleet(hub, "alerts", "show", str(alert["id"]))
    assert code == 0
    assert "inactive -> firing (held) drift_score 1.4 (baseline) > 1 for 11m" in said(out)

    code, out, _ = fleet(hub, "alerts", "rules", "rm", "drift")
    assert code == 0 and "deleted alert rule drift" in out
    code, out, _ = fleet(hub, "alerts", "show", str(alert["id"]), "-o", "json")
    shown = json.loads(out)
    assert shown["state"] == "resolved" and shown["history"][-1]["detail"] == "the rule was deleted"
    assert [n["state"] for n in shown["notifications"]] == ["firing", "resolved"]


def test_bad_rules_files_and_unknown_names_exit_with_the_documented_codes(hub: Hub, tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {name: x, metric: drift_score, comparison: '>=', threshold: 1, for: soon}\n")
    code, _, err = fleet(hub, "alerts", "rules", "apply", str(bad))
    assert code == 4
    assert "rules[0].comparison: expected '>' or '<'" in said(
        err
    ) and "rules[0].for: expected a duration" in said(err)
    code, _, err = fleet(hub, "alerts", "rules", "apply", str(tmp_path / "missing.yaml"))
    assert code == 2 and "is not a file" in said(err)
    assert fleet(hub, "alerts", "rules", "rm", "nope")[0] == 3
    assert fleet(hub, "alerts", "show", "424242")[0] == 3
    code, _, err = fleet(hub, "alerts", "ls", "--cohort", "lab", "--fleet-scope")
    assert code == 2 and "are exclusive" in said(err)


def test_receivers_are_added_listed_without_their_secret_path_and_removed(hub: Hub) -> None:
    code, out, err = fleet(
        hub, "alerts", "receivers", "add", "ops", "https://hooks.example.com/T0/B0/XSECRET"
    )
    assert code == 0, err
    assert "https://hooks.example.com/…" in out and "XSECRET" not in out
    assert (hub.settings.data_dir / "alert-webhook.secret").stat().st_mode & 0o777 == 0o600
    code, out, _ = fleet(hub, "alerts", "receivers", "ls", "-o", "json")
    assert [(r["name"], r["url"], r["enabled"]) for r in json.loads(out)] == [
        ("ops", "https://hooks.example.com/…", True)
    ]
    assert fleet(hub, "alerts", "receivers", "add", "ops", "https://other.example/")[0] == 4  # 409
    code, _, err = fleet(hub, "alerts", "receivers", "add", "x", "ftp://files.example/")
    assert code == 2 and "expected an http:// or https:// URL" in said(err)
    assert fleet(hub, "alerts", "receivers", "add", "x", "http://")[0] == 4  # the hub: no host
    assert fleet(hub, "alerts", "receivers", "rm", "ops")[0] == 0
    assert json.loads(fleet(hub, "alerts", "receivers", "ls", "-o", "json")[1]) == []


def test_prometheus_prints_a_rules_file_with_the_stored_conditions(hub: Hub, tmp_path: Path) -> None:
    assert fleet(hub, "alerts", "rules", "apply", str(EXAMPLE))[0] == 0
    code, out, err = fleet(hub, "alerts", "prometheus")
    assert code == 0, err
    (group,) = yaml.safe_load(out)["groups"]
    exprs = {r["labels"]["rule"]: r["expr"] for r in group["rules"]}
    assert set(exprs) == {"drift", "accuracy-low", "error-rate-high"}
    assert f'fleet="{hub.settings.fleet}"' in exprs["drift"] and exprs["drift"].endswith(") > 1")
    assert {r["labels"]["rule"]: r["for"] for r in group["rules"]}["accuracy-low"] == "30m"
    promtool = shutil.which("promtool")
    if promtool is not None:
        path = tmp_path / "edgefleet.yml"
        path.write_text(out)
        done = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
