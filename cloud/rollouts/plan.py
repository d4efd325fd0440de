"""The rollout plan an operator writes: target, stages, gates, maintenance window.

Plans arrive as YAML or JSON (``fleet rollouts create -f plan.yaml``, the API) and
are validated here, once, with every problem listed as ``path: expected ..., got
...`` so that one round of edits fixes them all. Unknown keys are refused: a
misspelt ``bake_time`` silently ignored would bake for the default instead.

A stage's ``percent`` is cumulative over the eligible devices of its cohort (no
cohort: every device of the fleet): 10, 50, 100 offers a tenth, then up to a
half, then all. Durations are seconds, or text such as ``30s``, ``10m``, ``1h30m``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cloud.errors import InvalidInputError
from cloud.rollouts import gates as gate_registry
from cloud.rollouts.plan_errors import is_number, problems_error, render_errors, show
from cloud.rollouts.windows import cron_trigger
from model_tools.trial_policy import TrialPolicy, TrialPolicyError, parse_trial_policy

__all__ = [
    "Duration",
    "FirmwareTarget",
    "Gates",
    "MaintenanceWindow",
    "ModelTarget",
    "PlanError",
    "RolloutPlan",
    "Stage",
    "parse_duration",
    "parse_plan",
]

_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")
_DURATION_TEXT: Final = "seconds, or text like 30s, 10m, 1h30m"
# A cron expression that never fires after this instant never fires at all (crontab repeats yearly).
_CRON_PROBE: Final = datetime(2000, 1, 1, tzinfo=UTC)
_NEITHER: Final = "expected a cohort, a percent or both, got neither"


class PlanError(InvalidInputError):
    """A plan that cannot be run; ``problems`` holds one ``path: expected ..., got ...`` per fault."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{source} is not a valid rollout plan ({len(self.problems)} problem(s)):\n{lines}")


def parse_duration(value: object) -> float:
    """Seconds from a number or text such as ``90``, ``30s``, ``10m``, ``1h30m``, ``2d``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            return float(text)
        except ValueError:
            pass
        match = _DURATION.fullmatch(text)
        if text and match:
            days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
            return days * 86400 + hours * 3600 + minutes * 60 + seconds
    raise PydanticCustomError("duration", "expected a duration (" + _DURATION_TEXT + ")")


def _trial_policy(value: object) -> dict[str, Any] | None:
    """A trial policy (see model_tools.trial_policy), kept as its canonical data; None: not set."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PydanticCustomError(
            "trial_policy", "expected a trial policy mapping, got {got}", {"got": show(value)}
        )
    try:
        return parse_trial_policy(value).to_dict()
    except TrialPolicyError as e:
        # The policy's own message names its field ("latency.ratio must be >= 1, got 0.5").
        text = str(e).removeprefix("trial policy: ")
        raise problems_error([("", text)]) from None


TrialPolicyField = Annotated[dict[str, Any] | None, BeforeValidator(_trial_policy)]


def _percent(value: object) -> object:
    # "10%" reads naturally in YAML; the number is what counts.
    if isinstance(value, str) and value.strip().endswith("%"):
        return value.strip()[:-1]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(allow_inf_nan=False)]


def _gate_key_problems(extra: Mapping[str, object]) -> list[tuple[str, str]]:
    """Problems with the keys under ``gates:`` that are not built-in fields."""
    known = [*Gates.model_fields, *gate_registry.custom_keys()]
    problems = []
    for key, value in extra.items():
        if key not in known:
            problems.append((f".{key}", f"unknown gate; expected one of {', '.join(known)}"))
        elif value is not None and not is_number(value):
            problems.append(
                (f".{key}", f"expected a number, or null to turn the gate off, got {show(value)}")
            )
    return problems


def _stage_problems(stages: Sequence[tuple[str, str | None, float | None]]) -> list[tuple[str, str]]:
    """Problems between stages, from each stage's (name, cohort, percent)."""
    problems: list[tuple[str, str]] = []
    first_use: dict[str, int] = {}
    reached: dict[str | None, tuple[float, str]] = {}  # cohort -> (percent so far, stage name)
    for index, (name, cohort, percent) in enumerate(stages):
        if name in first_use:
            problems.append(
                (
                    f"[{index}].name",
                    f"expected a name no earlier stage uses, got {show(name)} "
                    f"(also stages[{first_use[name]}])",
                )
            )
        first_use.setdefault(name, index)
        share = 100.0 if percent is None else percent
        before = reached.get(cohort)
        if before is not None and share < before[0]:
            where = f"cohort {cohort}" if cohort else "every device"
            problems.append(
                (
                    f"[{index}].percent",
                    f"expected at least {show(before[0])} (percents are cumulative: stage "
                    f"{before[1]} already reaches {show(before[0])}% of {where}), got {show(share)}",
                )
            )
        else:
            reached[cohort] = (share, name)
    return problems


def _raw_problems(data: object) -> list[str]:
    """The checks between fields, run on raw data: pydantic skips them when a field has an error.

    Values that are not valid themselves are left out here (pydantic reports those).
    """
    if not isinstance(data, Mapping):
        return []
    lines: list[str] = []
    gates = data.get("gates")
    if isinstance(gates, Mapping):
        extra = {key: value for key, value in gates.items() if key not in Gates.model_fields}
        lines += [f"gates{suffix}: {sentence}" for suffix, sentence in _gate_key_problems(extra)]
    stages = data.get("stages")
    if isinstance(stages, list):
        simple: list[tuple[str, str | None, float | None]] = []
        for index, stage in enumerate(stages):
            if isinstance(stage, Mapping) and stage.get("cohort") is None and stage.get("percent") is None:
                lines.append(f"stages[{index}]: {_NEITHER}")
            if not isinstance(stage, Mapping) or not isinstance(stage.get("name"), str):
                continue
            cohort, percent = stage.get("cohort"), _percent(stage.get("percent"))
            if percent is not None and (
                isinstance(percent, bool) or not isinstance(percent, int | float | str)
            ):
                continue
            try:
                share = None if percent is None else float(percent)
            except ValueError:
                continue
            if share is not None and not 0 < share <= 100:
                continue
            if (cohort is None and share is None) or not (cohort is None or isinstance(cohort, str)):
                continue
            simple.append((stage["name"], cohort, share))
        # Skipping a stage shifts the indexes: only report when every stage could be read.
        if len(simple) == len(stages):
            lines += [f"stages{suffix}: {sentence}" for suffix, sentence in _stage_problems(simple)]
    return lines


def _order(line: str) -> tuple[int, int]:
    """Sort key for problem lines: the plan's field order, then the stage index."""
    path = line.split(":", 1)[0]
    top = re.match(r"[a-z_]+", path)
    fields = list(RolloutPlan.model_fields)
    index = re.search(r"\[(\d+)\]", path)
    return (
        fields.index(top.group()) if top and top.group() in fields else -1,
        int(index.group(1)) if index else -1,
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # What each field expects, in words, for the error messages (see ``_render``).
    EXPECTED: ClassVar[Mapping[str, str]] = {}


class ModelTarget(_Model):
    kind: Literal["model"] = "model"
    model: str = Field(min_length=1)
    version: str = Field(min_length=1)

    EXPECTED = {"kind": "model", "model": "a registered model's name", "version": "a version of that model"}


class FirmwareTarget(_Model):
    kind: Literal["firmware"] = "firmware"
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)

    EXPECTED = {"kind": "firmware", "name": "an uploaded firmware's name", "version": "a version of it"}


def _target_kind(value: Any) -> str | None:
    # The kind may be left out when the keys say it: `model:` for a model, `name:` for firmware.
    if isinstance(value, Mapping):
        kind = value.get("kind")
        if kind is None:
            kind = "model" if "model" in value else "firmware" if "name" in value else None
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


Target = Annotated[
    Annotated[ModelTarget, Tag("model")] | Annotated[FirmwareTarget, Tag("firmware")],
    Discriminator(_target_kind),
]


class Stage(_Model):
    name: str = Field(min_length=1)
    cohort: str | None = Field(default=None, min_length=1)
    percent: Annotated[float | None, BeforeValidator(_percent)] = Field(default=None, gt=0, le=100)
    min_devices: int = Field(default=1, ge=0)
    bake: Duration = Field(default=300.0, ge=0)
    max_rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    approval: bool = False
    # Overrides the plan's trial policy for the devices this stage offers the version to.
    trial_policy: TrialPolicyField = None

    EXPECTED = {
        "name": "a stage name (text)",
        "cohort": "a cohort name, or null for every device",
        "percent": "a number in (0, 100]",
        "min_devices": "a whole number >= 0",
        "bake": f"a duration >= 0 ({_DURATION_TEXT})",
        "max_rate": "a number of devices per minute > 0, or null for no limit",
        "approval": "true or false",
        "trial_policy": "a trial policy mapping (see docs/rollouts.md), or null",
    }

    @model_validator(mode="after")
    def _cohort_or_percent(self) -> Stage:
        if self.cohort is None and self.percent is None:
            raise problems_error([("", _NEITHER)])
        return self


class Gates(BaseModel):
    """Thresholds per gate (None turns a gate off); other keys are gates registered in ``gates.py``."""

    # Extra keys are allowed so that registered gates (drift scores) take their thresholds from the
    # plan; `_registered_only` refuses every key that no gate is registered for.
    model_config = ConfigDict(extra="allow", frozen=True)

    min_reporting: int = Field(default=1, ge=0)
    max_update_failure_pct: float | None = Field(default=10.0, ge=0, le=100)
    max_rollback_pct: float | None = Field(default=5.0, ge=0, le=100)
    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_latency_ratio: float | None = Field(default=2.0, gt=0, allow_inf_nan=False)
    max_offline_pct: float | None = Field(default=20.0, ge=0, le=100)
    # How long a device must have been offline before the offline gate counts it. A broker that
    # restarts publishes every connected device's last will at once, and the devices reconnect within
    # seconds: without a grace period one broker restart would fail every baking stage.
    offline_grace: Duration = Field(default=120.0, ge=0)

    EXPECTED: ClassVar[Mapping[str, str]] = {
        "min_reporting": "a whole number >= 0",
        "max_update_failure_pct": "a percentage in [0, 100], or null to turn the gate off",
        "max_rollback_pct": "a percentage in [0, 100], or null to turn the gate off",
        "max_error_rate": "a fraction in [0, 1], or null to turn the gate off",
        "max_latency_ratio": "a ratio > 0, or null to turn the gate off",
        "max_offline_pct": "a percentage in [0, 100], or null to turn the gate off",
        "offline_grace": f"a duration >= 0 ({_DURATION_TEXT})",
    }

    @model_validator(mode="after")
    def _registered_only(self) -> Gates:
        found = _gate_key_problems(self.model_extra or {})
        if found:
            raise problems_error(found)
        return self

    def threshold(self, key: str) -> float | None:
        """The plan's threshold for a built-in or registered gate; None when the gate is off."""
        value = getattr(self, key) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        return None if value is None else float(value)


class MaintenanceWindow(_Model):
    cron: str
    duration: Duration = Field(gt=0)
    timezone: str = "UTC"

    EXPECTED = {
        "cron": "a crontab expression (minute hour day-of-month month day-of-week)",
        "duration": f"a duration > 0 ({_DURATION_TEXT})",
        "timezone": "an IANA time zone such as Europe/Berlin",
    }

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            cron_trigger("* * * * *", value)
        except ValueError:
            raise PydanticCustomError("time_zone", "unknown time zone") from None
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            trigger = cron_trigger(value, "UTC")
        except ValueError as error:
            raise problems_error(
                [("", f"expected {cls.EXPECTED['cron']}, got {show(value)} ({error})")]
            ) from None
        if trigger.get_next_fire_time(None, _CRON_PROBE) is None:
            raise problems_error(
                [("", f"expected a crontab expression that fires, got {show(value)} (never)")]
            )
        return value


class RolloutPlan(_Model):
    name: str = Field(min_length=1)
    target: Target
    stages: list[Stage] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    on_failure: Literal["pause", "abort"] = "abort"
    maintenance_window: MaintenanceWindow | None = None
    # How devices judge the version during their trial (a stage's own policy comes first).
    trial_policy: TrialPolicyField = None

    EXPECTED = {
        "name": "a rollout name (text)",
        "target": "a mapping with kind: model (model, version) or kind: firmware (name, version)",
        "stages": "a list of at least one stage",
        "gates": "a mapping of gate thresholds",
        "on_failure": "one of pause, abort",
        "maintenance_window": "a mapping with cron, duration and timezone, or null for always",
        "trial_policy": "a trial policy mapping (see docs/rollouts.md), or null",
    }

    @field_validator("stages")
    @classmethod
    def _stages_agree(cls, stages: list[Stage]) -> list[Stage]:
        found = _stage_problems([(stage.name, stage.cohort, stage.percent) for stage in stages])
        if found:
            raise problems_error(found)
        return stages

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data; ``RolloutPlan.model_validate(plan.to_dict()) == plan``."""
        return self.model_dump(mode="json")

    def trial_policy_for(self, stage: Stage) -> TrialPolicy | None:
        """The rollout's trial policy for the devices ``stage`` offers to: the stage's, else the plan's."""
        data = stage.trial_policy if stage.trial_policy is not None else self.trial_policy
        return parse_trial_policy(data) if data is not None else None


def parse_plan(text: str | bytes, *, source: str = "plan") -> RolloutPlan:
    """The plan in ``text`` (YAML, or JSON which YAML reads too), validated.

    Raises:
        PlanError: the text is not YAML, or the plan has problems; every problem is listed.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        raise PlanError(
            source, [f"{source}: expected YAML or JSON, got a syntax error{where}: {reason}"]
        ) from None
    try:
        return RolloutPlan.model_validate(data)
    except ValidationError as error:
        lines = render_errors(error, RolloutPlan, source=source)
        lines += [line for line in _raw_problems(data) if line not in lines]
        raise PlanError(source, sorted(lines, key=_order)) from None
