"""Rollout plans: what a good plan reads as, and what each bad one is told, problem by problem."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from cloud.errors import InvalidInputError
from cloud.rollouts.gates import StageFigures, register_gate, unregister_gate
from cloud.rollouts.plan import (
    FirmwareTarget,
    Gates,
    ModelTarget,
    PlanError,
    RolloutPlan,
    parse_duration,
    parse_plan,
)

EXAMPLE = Path(__file__).parents[3] / "docs" / "examples" / "rollout-canary.yaml"

HEAD = """\
name: r
target: {kind: model, model: digits, version: "3"}
"""
ONE_STAGE = "stages: [{name: all, percent: 100}]\n"


def test_the_example_plan_parses_into_what_it_says() -> None:
    plan = parse_plan(EXAMPLE.read_text(), source=EXAMPLE.name)
    assert plan.target == ModelTarget(model="digits", version="3")
    assert [(s.name, s.cohort, s.percent) for s in plan.stages] == [
        ("canary", "canary", 10.0),
        ("half", None, 50.0),
        ("all", None, 100.0),
    ]
    assert [s.bake for s in plan.stages] == [600.0, 1800.0, 3600.0]
    assert plan.stages[0].approval and not plan.stages[1].approval
    assert plan.on_failure == "pause"
    assert plan.gates.min_reporting == 3
    assert plan.maintenance_window is not None
    assert plan.maintenance_window.duration == 4 * 3600
    assert plan.maintenance_window.timezone == "Europe/Berlin"


def test_defaults_fill_what_a_minimal_plan_leaves_out() -> None:
    plan = parse_plan(HEAD + ONE_STAGE)
    stage = plan.stages[0]
    assert (stage.min_devices, stage.bake, stage.max_rate, stage.approval) == (1, 300.0, None, False)
    assert plan.on_failure == "abort"
    assert plan.maintenance_window is None
    assert plan.gates == Gates()
    assert (plan.gates.max_update_failure_pct, plan.gates.max_offline_pct) == (10.0, 20.0)


def test_a_plan_round_trips_through_its_dict_json_and_yaml() -> None:
    plan = parse_plan(EXAMPLE.read_text())
    data = plan.to_dict()
    assert data == plan.model_dump(mode="json")
    assert RolloutPlan.model_validate(data) == plan
    assert parse_plan(json.dumps(data)) == plan
    assert parse_plan(json.dumps(data).encode()) == plan


def test_the_target_kind_may_be_left_to_the_keys() -> None:
    model = parse_plan('name: r\ntarget: {model: digits, version: "3"}\n' + ONE_STAGE)
    firmware = parse_plan("name: r\ntarget: {name: camfw, version: 1.2.0}\n" + ONE_STAGE)
    assert model.target == ModelTarget(model="digits", version="3")
    assert firmware.target == FirmwareTarget(name="camfw", version="1.2.0")
    assert firmware.to_dict()["target"] == {"kind": "firmware", "name": "camfw", "version": "1.2.0"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("300", 300.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1h 30m 15s", 5415.0),
        ("0s", 0.0),
    ],
)
def test_durations_read_as_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10 minutes", "1m30h", "h", True, None, [1]])
def test_what_is_not_a_duration_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


BAD = {
    "a misspelt stage key": (
        HEAD + "stages: [{name: a, percent: 10, bake_time: 3}]",
        [
            "stages[0].bake_time: unknown field; expected one of name, cohort, percent, min_devices, bake, "
            "max_rate, approval"
        ],
    ),
    "a percent above 100": (
        HEAD + "stages: [{name: a, percent: 10}, {name: b, percent: 150}]",
        ["stages[1].percent: expected a number in (0, 100], got 150"],
    ),
    "a percent of zero": (
        HEAD + "stages: [{name: a, percent: 0}]",
        ["stages[0].percent: expected a number in (0, 100], got 0"],
    ),
    "a percent that is text": (
        HEAD + "stages: [{name: a, percent: most}]",
        ['stages[0].percent: expected a number in (0, 100], got "most"'],
    ),
    "a stage with neither cohort nor percent": (
        HEAD + "stages: [{name: a}]",
        ["stages[0]: expected a cohort, a percent or both, got neither"],
    ),
    "percents that shrink within a cohort": (
        HEAD
        + "stages: [{name: a, cohort: ring0, percent: 50}, {name: b, percent: 20},"
        + " {name: c, cohort: ring0, percent: 30}]",
        [
            "stages[2].percent: expected at least 50 (percents are cumulative: stage a already reaches 50% "
            "of cohort ring0), got 30"
        ],
    ),
    "a whole cohort then a part of it": (
        HEAD + "stages: [{name: a, cohort: ring0}, {name: b, cohort: ring0, percent: 10}]",
        ["stages[1].percent: expected at least 100"],
    ),
    "two stages with one name": (
        HEAD + "stages: [{name: a, percent: 10}, {name: a, percent: 20}]",
        ['stages[1].name: expected a name no earlier stage uses, got "a" (also stages[0])'],
    ),
    "no stages": (HEAD + "stages: []", ["stages: expected a list of at least one stage, got an empty list"]),
    "stages missing": (
        HEAD,
        ["stages: expected a list of at least one stage, got nothing (the field is required)"],
    ),
    "a bad bake and rate": (
        HEAD + "stages: [{name: a, percent: 5, bake: ten minutes, max_rate: 0, min_devices: -1}]",
        [
            "stages[0].bake: expected a duration >= 0 (seconds, or text like 30s, 10m, 1h30m), "
            'got "ten minutes"',
            "stages[0].max_rate: expected a number of devices per minute > 0, or null for no limit, got 0",
            "stages[0].min_devices: expected a whole number >= 0, got -1",
        ],
    ),
    "a negative bake": (
        HEAD + "stages: [{name: a, percent: 5, bake: -5}]",
        ["stages[0].bake: expected a duration >= 0"],
    ),
    "an unknown target kind": (
        'name: r\ntarget: {kind: vm, version: "1"}\n' + ONE_STAGE,
        ['target.kind: expected one of model, firmware, got "vm"'],
    ),
    "a target that says nothing of its kind": (
        'name: r\ntarget: {version: "1"}\n' + ONE_STAGE,
        [
            "target: expected a mapping with kind: model (model, version) or kind: firmware (name, version), "
            "got a mapping with keys version"
        ],
    ),
    "a model target without a version": (
        "name: r\ntarget: {model: digits}\n" + ONE_STAGE,
        ["target.version: expected a version of that model, got nothing (the field is required)"],
    ),
    "an unknown key in a target": (
        'name: r\ntarget: {name: fw, version: "1", sha: x}\n' + ONE_STAGE,
        ["target.sha: unknown field; expected one of kind, name, version"],
    ),
    "an unknown top-level key": (
        HEAD + ONE_STAGE + "owner: me\n",
        ["owner: unknown field; expected one of name, target, stages, gates, on_failure, maintenance_window"],
    ),
    "an unknown on_failure": (
        HEAD + ONE_STAGE + "on_failure: shrug\n",
        ['on_failure: expected one of pause, abort, got "shrug"'],
    ),
    "gate thresholds out of range": (
        HEAD
        + ONE_STAGE
        + "gates: {max_error_rate: 2, max_rollback_pct: -1, max_latency_ratio: 0, min_reporting: 1.5}\n",
        [
            "gates.min_reporting: expected a whole number >= 0, got 1.5",
            "gates.max_rollback_pct: expected a percentage in [0, 100], or null to turn the gate off, got -1",
            "gates.max_error_rate: expected a fraction in [0, 1], or null to turn the gate off, got 2",
            "gates.max_latency_ratio: expected a ratio > 0, or null to turn the gate off, got 0",
        ],
    ),
    "an unknown gate": (
        HEAD + ONE_STAGE + "gates: {max_error_pct: 5}\n",
        [
            "gates.max_error_pct: unknown gate; expected one of min_reporting, max_update_failure_pct, "
            "max_rollback_pct, max_error_rate, max_latency_ratio, max_offline_pct"
        ],
    ),
    "a cron expression with an hour of 25": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 25 * * *', duration: 1h}\n",
        [
            "maintenance_window.cron: expected a crontab expression (minute hour day-of-month month "
            'day-of-week), got "0 25 * * *"'
        ],
    ),
    "a cron expression with six fields": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 0 1 * * *', duration: 1h}\n",
        ["got 6)"],
    ),
    "a weekday 8": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 1 * * 8', duration: 1h}\n",
        [
            "maintenance_window.cron: expected a crontab expression (minute hour day-of-month month "
            "day-of-week), got \"0 1 * * 8\" (day of week: expected 0-7 or a name such as mon, got '8')"
        ],
    ),
    "a date that never comes": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 0 30 2 *', duration: 1h}\n",
        ['maintenance_window.cron: expected a crontab expression that fires, got "0 0 30 2 *" (never)'],
    ),
    "an unknown time zone and no duration": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 1 * * *', timezone: Europe/Atlantis}\n",
        [
            "maintenance_window.duration: expected a duration > 0 (seconds, or text like 30s, 10m, 1h30m), "
            "got nothing",
            "maintenance_window.timezone: expected an IANA time zone such as Europe/Berlin, "
            'got "Europe/Atlantis"',
        ],
    ),
    "a window of zero length": (
        HEAD + ONE_STAGE + "maintenance_window: {cron: '0 1 * * *', duration: 0s}\n",
        [
            "maintenance_window.duration: expected a duration > 0 (seconds, or text like 30s, 10m, 1h30m), "
            "got 0"
        ],
    ),
    "not a mapping": ("- just\n- a list\n", ["plan: expected a mapping, got a list of 2"]),
    "not YAML": ("name: [r\n", ["plan: expected YAML or JSON, got a syntax error at line 2, column 1"]),
    "empty text": ("", ["plan: expected a mapping, got null"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_plan_is_told_what_was_expected_and_what_came(case: str) -> None:
    text, fragments = BAD[case]
    with pytest.raises(PlanError) as caught:
        parse_plan(text)
    error = caught.value
    assert isinstance(error, InvalidInputError)  # the API answers 4xx
    message = str(error)
    assert message.startswith("plan is not a valid rollout plan")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in\n{message}"
    assert len(error.problems) == len(fragments), message


def test_every_problem_of_a_plan_is_listed_at_once_in_the_plans_order() -> None:
    text = dedent(
        """\
        name: r
        target: {kind: model, model: digits, version: "3", sha: x}
        stages:
          - {name: a, percent: 50, bake_time: 3}
          - {name: a, percent: 20}
          - {name: c, bake: soon}
        gates: {max_error_rate: 2, drift: 0.3}
        on_failure: later
        maintenance_window: {cron: "0 1 * * *", duration: 1h, timezone: Nowhere}
        """
    )
    with pytest.raises(PlanError) as caught:
        parse_plan(text, source="plan.yaml")
    paths = [problem.split(":")[0] for problem in caught.value.problems]
    assert paths == [
        "target.sha",
        "stages[0].bake_time",
        "stages[2].bake",
        "stages[2]",
        "gates.max_error_rate",
        # Checks between fields that pydantic skips once a field has failed are still run.
        "gates.drift",
        "on_failure",
        "maintenance_window.timezone",
    ]
    assert str(caught.value).startswith(
        "plan.yaml is not a valid rollout plan (8 problem(s)):\n  target.sha:"
    )


def test_cross_stage_checks_run_even_when_another_part_is_wrong() -> None:
    text = HEAD + "stages: [{name: a, percent: 50}, {name: a, percent: 20}]\non_failure: later\n"
    with pytest.raises(PlanError) as caught:
        parse_plan(text)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "stages[1].name",
        "stages[1].percent",
        "on_failure",
    ]


class _DriftGate:
    key = "max_drift_score"

    def judge(self, figures: StageFigures, threshold: float) -> object:  # never called here
        raise AssertionError


def test_a_registered_gate_is_accepted_under_gates_and_kept_on_the_round_trip() -> None:
    text = HEAD + ONE_STAGE + "gates: {max_drift_score: 0.3}\n"
    with pytest.raises(PlanError, match=r"gates\.max_drift_score: unknown gate"):
        parse_plan(text)
    register_gate("max_drift_score", _DriftGate())  # type: ignore[arg-type]
    try:
        plan = parse_plan(text)
        assert plan.gates.threshold("max_drift_score") == 0.3
        assert plan.gates.threshold("max_rollback_pct") == 5.0
        assert RolloutPlan.model_validate(plan.to_dict()) == plan
        with pytest.raises(
            PlanError,
            match=r'gates\.max_drift_score: expected a number, or null to turn the gate off, got "high"',
        ):
            parse_plan(HEAD + ONE_STAGE + "gates: {max_drift_score: high}\n")
    finally:
        unregister_gate("max_drift_score")


def test_gates_set_to_null_are_off() -> None:
    plan = parse_plan(HEAD + ONE_STAGE + "gates: {max_latency_ratio: null, max_offline_pct: ~}\n")
    assert plan.gates.threshold("max_latency_ratio") is None
    assert plan.gates.threshold("max_offline_pct") is None
    assert plan.gates.threshold("max_update_failure_pct") == 10.0


def test_a_percent_may_carry_its_sign_and_a_plan_cannot_be_changed_once_made() -> None:
    plan = parse_plan(HEAD + "stages: [{name: a, percent: 12.5%}]\n")
    assert plan.stages[0].percent == 12.5
    with pytest.raises(ValueError, match="frozen"):
        plan.stages[0].percent = 50  # type: ignore[misc]
