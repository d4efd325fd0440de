"""An alert rule as an operator writes it (YAML, JSON, the API), validated once, here.

A rules file is a list of rules, or a mapping with a ``rules`` list::

    rules:
      - name: drift
        metric: drift_score
        comparison: ">"
        threshold: 1
        for: 10m
        scope: cohorts

Every problem is reported as ``rules[0].threshold: expected ..., got ...`` so that one round of
edits fixes them all. Unknown keys are refused: a misspelt ``treshold`` silently ignored would
leave a rule that never fires. No database here: the CLI and the API share it.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Final, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cloud.errors import InvalidInputError
from cloud.rollouts.plan import parse_duration
from cloud.rollouts.plan_errors import problems_error, render_errors, show

__all__ = [
    "FEATURE_METRICS",
    "KNOWN_METRICS",
    "REFERENCE_METRICS",
    "RULE_NAME_PATTERN",
    "Comparison",
    "RuleSpec",
    "RulesError",
    "Scope",
    "ScopeKind",
    "format_duration",
    "parse_rules",
    "parse_scope",
    "validate_rule",
    "validate_rules",
]

# The metric names of cloud.drift.tables.CohortMetric (its docstring is the list's source).
KNOWN_METRICS: Final = (
    "drift_score",
    "drift_ks",
    "drift_psi",
    "drift_js",
    "drift_wasserstein",
    "prediction_psi",
    "prediction_js",
    "confidence_p50",
    "accuracy",
    "recall",
    "labelled",
    "error_rate",
    "p95_ms",
    "requests",
)
# Metrics stored once per input feature (drift) or per class (recall); the others have feature "".
FEATURE_METRICS: Final = frozenset({"drift_ks", "drift_psi", "drift_js", "drift_wasserstein", "recall"})
# Metrics scored against a reference ("baseline" or "previous"); the others have reference "".
REFERENCE_METRICS: Final = frozenset(
    {
        "drift_score",
        "drift_ks",
        "drift_psi",
        "drift_js",
        "drift_wasserstein",
        "prediction_psi",
        "prediction_js",
    }
)
REFERENCES: Final = ("baseline", "previous")

RULE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_COHORT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # cloud.services.cohorts.COHORT_NAME_PATTERN
# Longer than any sensible "for": a rule that waits a month to fire is a mistake.
MAX_FOR_S: Final = 30 * 86_400
_UNITS: Final = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION_TEXT: Final = "seconds, or text like 30s, 10m, 1h30m"


class Comparison(enum.StrEnum):
    ABOVE = ">"
    BELOW = "<"

    def breached(self, value: float, threshold: float) -> bool:
        """Whether ``value`` breaches ``threshold``; a NaN or infinite value breaches nothing."""
        if not math.isfinite(value):
            return False
        return value > threshold if self is Comparison.ABOVE else value < threshold


class ScopeKind(enum.StrEnum):
    FLEET = "fleet"  # the fleet-wide series (cohort_id 0)
    COHORTS = "cohorts"  # every cohort's series, one alert each (not the fleet-wide one)
    COHORT = "cohort"  # one named cohort


Scope = tuple[ScopeKind, str | None]


def parse_scope(text: str) -> Scope:
    """``fleet``, ``cohorts`` or ``cohort:<name>``; ValueError otherwise."""
    if text == ScopeKind.FLEET:
        return ScopeKind.FLEET, None
    if text == ScopeKind.COHORTS:
        return ScopeKind.COHORTS, None
    prefix, sep, name = text.partition(":")
    if prefix == ScopeKind.COHORT and sep and _COHORT_NAME.fullmatch(name):
        return ScopeKind.COHORT, name
    raise ValueError(f"invalid scope {text!r}: expected fleet, cohorts, or cohort:<cohort name>")


def format_duration(seconds: int) -> str:
    """``600`` -> ``10m``, ``5400`` -> ``1h30m``, ``0`` -> ``0s`` (Prometheus reads the same text)."""
    if seconds <= 0:
        return "0s"
    parts = []
    rest = seconds
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _duration(value: object) -> int:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds != int(seconds):
        raise PydanticCustomError("duration", "expected a whole number of seconds")
    return int(seconds)


def _scope(value: object) -> object:
    if isinstance(value, str):
        try:
            parse_scope(value)
        except ValueError:
            raise PydanticCustomError("scope", "expected fleet, cohorts or cohort:<name>") from None
    return value


def _metric(value: object) -> object:
    if isinstance(value, str) and value not in KNOWN_METRICS:
        raise PydanticCustomError("metric", "expected a cohort metric")
    return value


class RuleSpec(BaseModel):
    """One alert rule; ``for`` is its duration, stored as whole seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=RULE_NAME_PATTERN)
    metric: Annotated[str, BeforeValidator(_metric)]
    feature: str | None = Field(default=None, min_length=1, max_length=128)
    reference: Literal["baseline", "previous"] | None = None
    comparison: Comparison
    threshold: float = Field(allow_inf_nan=False)
    for_s: Annotated[int, BeforeValidator(_duration)] = Field(default=0, ge=0, le=MAX_FOR_S, alias="for")
    scope: Annotated[str, BeforeValidator(_scope)] = ScopeKind.FLEET.value
    severity: Literal["critical", "warning", "info"] = "warning"
    enabled: bool = True
    description: str = Field(default="", max_length=1024)

    # What each field expects, in words (keys as the author writes them; see plan_errors).
    EXPECTED: ClassVar[Mapping[str, str]] = {
        "name": "a rule name: 1-64 lowercase letters, digits, '_', '.' or '-', starting with a letter "
        "or digit",
        "metric": "one of the cohort metrics: " + ", ".join(KNOWN_METRICS),
        "feature": "a feature (or class) name, or null for the worst of them",
        "reference": "baseline, previous, or null for the worst of them",
        "comparison": "'>' or '<'",
        "threshold": "a number",
        "for": f"a duration from 0 to 30 days ({_DURATION_TEXT}); 0 fires at once",
        "scope": "fleet (the fleet-wide series), cohorts (every cohort, one alert each), or cohort:<name>",
        "severity": "one of critical, warning, info",
        "enabled": "true or false",
        "description": "text of at most 1024 characters",
    }

    @model_validator(mode="after")
    def _filters_fit_the_metric(self) -> RuleSpec:
        found = []
        if self.feature is not None and self.metric not in FEATURE_METRICS:
            found.append(
                (
                    ".feature",
                    f"expected null: {self.metric} has no per-feature values (those that do: "
                    f"{', '.join(sorted(FEATURE_METRICS))}), got {show(self.feature)}",
                )
            )
        if self.reference is not None and self.metric not in REFERENCE_METRICS:
            found.append(
                (
                    ".reference",
                    f"expected null: {self.metric} is not scored against a reference, "
                    f"got {show(self.reference)}",
                )
            )
        if found:
            raise problems_error(found)
        return self

    @property
    def scope_parts(self) -> Scope:
        return parse_scope(self.scope)

    @property
    def for_text(self) -> str:
        return format_duration(self.for_s)

    def to_dict(self) -> dict[str, Any]:
        """The rule as a rules file spells it (``for`` as text)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["for"] = self.for_text
        return data


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RuleSpec]

    EXPECTED: ClassVar[Mapping[str, str]] = {"rules": "a list of rules"}


class RulesError(InvalidInputError):
    """Rules that cannot be stored; ``problems`` holds one ``path: expected ..., got ...`` per fault."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{source} holds invalid alert rules ({len(self.problems)} problem(s)):\n{lines}")


def _fix_alias(line: str) -> str:
    # The field is `for_s` in Python and `for` to the author.
    return line.replace(", for_s,", ", for,")


def validate_rules(data: object, *, source: str = "rules") -> list[RuleSpec]:
    """Rules from parsed data: a list of rule mappings, or a mapping with a ``rules`` list."""
    if isinstance(data, list):
        data = {"rules": data}
    if data is None:
        data = {"rules": []}
    try:
        rules = _RulesFile.model_validate(data).rules
    except ValidationError as error:
        raise RulesError(
            source, [_fix_alias(x) for x in render_errors(error, _RulesFile, source=source)]
        ) from None
    seen: dict[str, int] = {}
    problems = []
    for index, rule in enumerate(rules):
        if rule.name in seen:
            problems.append(
                f"rules[{index}].name: expected a name no other rule has, got {show(rule.name)} "
                f"(rules[{seen[rule.name]}] has it)"
            )
        seen.setdefault(rule.name, index)
    if problems:
        raise RulesError(source, problems)
    return rules


def validate_rule(data: object, *, source: str = "rule") -> RuleSpec:
    """One rule from parsed data, with the same messages as a rules file (paths without ``rules[i]``)."""
    try:
        return RuleSpec.model_validate(data)
    except ValidationError as error:
        raise RulesError(
            source, [_fix_alias(x) for x in render_errors(error, RuleSpec, source=source)]
        ) from None


def parse_rules(text: str | bytes, *, source: str = "rules") -> list[RuleSpec]:
    """The rules in ``text`` (YAML, or JSON which YAML reads too), validated.

    Raises:
        RulesError: the text is not YAML, or a rule has problems; every problem is listed.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error)
        raise RulesError(
            source, [f"{source}: expected YAML or JSON, got a syntax error{where}: {reason}"]
        ) from None
    if not isinstance(data, list | dict) and data is not None:
        raise RulesError(
            source, [f"{source}: expected a list of rules or a mapping with rules, got {show(data)}"]
        )
    return validate_rules(data, source=source)
