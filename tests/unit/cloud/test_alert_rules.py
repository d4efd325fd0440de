"""Alert rule files: validation that names the field, and the Prometheus rules file made from them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cloud.alerts.prometheus import COHORT_METRIC, alert_name, prometheus_rules, render_rules, rule_expr
from cloud.alerts.spec import Comparison, RulesError, format_duration, parse_rules, validate_rule

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "docs" / "examples" / "alert-rules.yaml"
DEPLOYED = REPO / "deploy" / "prometheus" / "edgefleet-rules.yml"

RULE = {"name": "drift", "metric": "drift_score", "comparison": ">", "threshold": 1}


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="rules.yaml")
    return caught.value.problems


def test_the_example_file_holds_a_drift_an_accuracy_and_an_error_rate_rule() -> None:
    rules = {r.metric: r for r in parse_rules(EXAMPLE.read_text(), source=str(EXAMPLE))}
    drift = rules["drift_score"]
    assert (drift.comparison, drift.threshold, drift.for_s, drift.scope) == (
        Comparison.ABOVE,
        1,
        600,
        "cohorts",
    )
    assert rules["accuracy"].comparison is Comparison.BELOW
    assert rules["error_rate"].comparison is Comparison.ABOVE


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ({**RULE, "name": "Drift"}, 'rules[0].name: expected a rule name'),
        ({**RULE, "metric": "drift-score"}, "rules[0].metric: expected one of the cohort metrics: drift_s"),
        ({**RULE, "comparison": ">="}, "rules[0].comparison: expected '>' or '<', got \">=\""),
        ({**RULE, "threshold": "high"}, 'rules[0].threshold: expected a number, got "high"'),
        ({**RULE, "threshold": float("nan")}, "rules[0].threshold: expected a number"),
        ({**RULE, "for": "10 minutes"}, 'rules[0].for: expected a duration from 0 to 30 days'),
        ({**RULE, "for": "90d"}, "rules[0].for: expected a duration from 0 to 30 days"),
        ({**RULE, "scope": "canary"}, 'rules[0].scope: expected fleet (the fleet-wide series), cohorts'),
        ({**RULE, "scope": "cohort:Bad Name"}, "rules[0].scope: expected fleet"),
        ({**RULE, "severity": "page"}, 'rules[0].severity: expected one of critical, warning, info, got "pa'),
        ({**RULE, "treshold": 2}, "rules[0].treshold: unknown field; expected one of name, metric, feature, "
         "reference, comparison, threshold, for, scope"),
        ({**RULE, "metric": "accuracy", "feature": "pixel_3"},
         "rules[0].feature: expected null: accuracy has no per-feature values"),
        ({**RULE, "metric": "error_rate", "reference": "baseline"},
         "rules[0].reference: expected null: error_rate is not scored against a reference"),
        ({"metric": "accuracy", "comparison": "<", "threshold": 0.9}, "rules[0].name: expected a rule name"),
    ],
)  # fmt: skip
def test_each_problem_names_its_field(rule: dict[str, object], said: str) -> None:
    found = problems(yaml.safe_dump({"rules": [rule]}))
    assert any(line.startswith(said) for line in found), found


def test_every_problem_of_a_file_is_listed_at_once_and_duplicates_are_refused() -> None:
    found = problems("rules:\n  - {name: a, metric: x, comparison: '>', threshold: y}\n  - {name: b}\n")
    assert [line.split(":", 1)[0] for line in found] == [
        "rules[0].metric",
        "rules[0].threshold",
        "rules[1].metric",
        "rules[1].comparison",
        "rules[1].threshold",
    ]
    assert problems(yaml.safe_dump([RULE, RULE])) == [
        'rules[1].name: expected a name no other rule has, got "drift" (rules[0] has it)'
    ]
    assert problems("rules: [")[0].startswith(
        "rules.yaml: expected YAML or JSON, got a syntax error at line 1"
    )
    assert problems("42") == ["rules.yaml: expected a list of rules or a mapping with rules, got 42"]


def test_json_and_a_bare_list_read_the_same_and_durations_round_trip() -> None:
    from_yaml = parse_rules(
        "- {name: d, metric: drift_ks, feature: pixel_3, comparison: '>', threshold: 0.2, for: 1h30m}"
    )
    from_json = parse_rules(
        '{"rules": [{"name": "d", "metric": "drift_ks", "feature": "pixel_3", "comparison": ">", '
        '"threshold": 0.2, "for": 5400}]}'
    )
    assert from_yaml == from_json
    assert from_yaml[0].to_dict()["for"] == "1h30m" and format_duration(0) == "0s"
    assert validate_rule(from_yaml[0].to_dict()) == from_yaml[0]


# --- the Prometheus rules file ------------------------------------------------------------------


METRIC_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def test_the_rules_file_has_prometheus_structure_and_judges_the_exported_metric(tmp_path: Path) -> None:
    rules = parse_rules(EXAMPLE.read_text())
    disabled = validate_rule({**RULE, "name": "off", "enabled": False})
    text = render_rules([*rules, disabled], fleet="default")
    data = yaml.safe_load(text)
    assert list(data) == ["groups"]
    (group,) = data["groups"]
    assert group["name"] == "edgefleet-default"
    assert [r["alert"] for r in group["rules"]] == [alert_name(r.name) for r in rules]  # disabled left out
    for entry, rule in zip(group["rules"], rules, strict=True):
        assert set(entry) == {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", entry["alert"])
        assert METRIC_NAME.findall(entry["expr"]) == [COHORT_METRIC]
        assert entry["for"] == rule.for_text
        assert entry["labels"] == {"severity": rule.severity, "rule": rule.name}
        assert set(entry["annotations"]) == {"summary", "description"}
    # What promtool says, where it is installed (Debian: the prometheus package).
    promtool = shutil.which("promtool")
    if promtool is not None:
        path = tmp_path / "rules.yml"
        path.write_text(text)
        done = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: 3 rules found" in done.stdout


@pytest.mark.parametrize(
    ("rule", "expr"),
    [
        ({**RULE, "scope": "cohorts"},
         'max by (fleet, cohort, model, version) (edgefleet_cohort_metric{fleet="f", metric="drift_score", '
         'cohort!=""}) > 1'),
        ({**RULE, "metric": "accuracy", "comparison": "<", "threshold": 0.85, "scope": "fleet"},
         'min by (fleet, cohort, model, version) (edgefleet_cohort_metric{fleet="f", metric="accuracy", '
         'cohort=""}) < 0.85'),
        ({**RULE, "metric": "drift_ks", "feature": 'odd "name"\\x', "reference": "previous",
          "scope": "cohort:lab"},
         'max by (fleet, cohort, model, version) (edgefleet_cohort_metric{fleet="f", metric="drift_ks", '
         'cohort="lab", feature="odd \\"name\\"\\\\x", reference="previous"}) > 1'),
    ],
)  # fmt: skip
def test_exprs_say_what_the_rule_says(rule: dict[str, object], expr: str) -> None:
    assert rule_expr(validate_rule(rule), fleet="f") == expr


def test_the_deployed_example_is_what_the_example_rules_make() -> None:
    # deploy/prometheus/edgefleet-rules.yml is `fleet alerts prometheus` over docs/examples/alert-rules.yaml.
    assert DEPLOYED.read_text() == render_rules(parse_rules(EXAMPLE.read_text()), fleet="default")
    config = yaml.safe_load((DEPLOYED.parent / "prometheus.yml").read_text())
    # The second file watches the hub itself (tests/unit/cloud/test_deploy_observability.py).
    assert config["rule_files"] == [DEPLOYED.name, "edgefleet-hub-rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    assert prometheus_rules([], fleet="x") == {"groups": [{"name": "edgefleet-x", "rules": []}]}
