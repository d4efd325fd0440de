"""Trial policies: how a device judges a new version, as data that travels with the version (light).

A policy is partial on purpose: every field left out takes the device's default, and that default
depends on whether the new version keeps the previous one's graph (a retrained model is compared
with the previous version; a new architecture with its own profile and an absolute latency budget).
So a policy says only what its author wants to differ::

    {"latency": {"budget_ms": 250}, "divergence": {"reference": "profile", "limit": 0.25}}

The hub resolves the policy in force for each device (:func:`resolve`: assignment, then the rollout
plan, then the bundle's default) and signs it into the desired state; the device reports its source
and :func:`policy_digest`. Parsing refuses unknown keys and names the field of every fault:
``trial policy: latency.ratio must be >= 1, got 0.5``. Imports only the standard library (and the
generated protobuf code when a policy is turned into its message).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from model_tools.errors import ConfigError

if TYPE_CHECKING:
    from edgefleet_proto.v1 import common_pb2

__all__ = [
    "DivergencePolicy",
    "DivergenceReference",
    "LatencyPolicy",
    "PolicySource",
    "TrialPolicy",
    "TrialPolicyError",
    "parse_trial_policy",
    "policy_digest",
    "read_trial_policy",
    "resolve",
]

_WHERE: Final = "trial policy"


class TrialPolicyError(ConfigError):
    """A trial policy that cannot be used; the message names the field, what was expected and what came."""


class PolicySource(enum.StrEnum):
    """Where the policy in force came from, highest precedence first."""

    ASSIGNMENT = "assignment"
    ROLLOUT = "rollout"
    BUNDLE = "bundle"
    # Nothing was set anywhere: the device's built-in default judges.
    DEFAULT = "default"


class DivergenceReference(enum.StrEnum):
    PROFILE = "profile"  # the bundle's data profile (its class distribution)
    PREVIOUS = "previous"  # the previous version's answers on the same inputs
    NONE = "none"  # no divergence gate


@dataclass(frozen=True, slots=True)
class LatencyPolicy:
    """Exactly the latency gates given: an absolute p95 budget, a ratio to the previous version, or both."""

    budget_ms: float | None = None
    ratio: float | None = None


@dataclass(frozen=True, slots=True)
class DivergencePolicy:
    reference: DivergenceReference
    # None: the device's default limit.
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class TrialPolicy:
    """A trial policy; None in a field means "the device's default"."""

    mode: str | None = None
    window_s: float | None = None
    window_requests: int | None = None
    min_requests: int | None = None
    max_error_rate: float | None = None
    latency: LatencyPolicy | None = None
    divergence: DivergencePolicy | None = None
    max_disagreement: float | None = None

    @property
    def empty(self) -> bool:
        return self == TrialPolicy()

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON-ready data; ``parse_trial_policy(p.to_dict()) == p``."""
        out: dict[str, Any] = {}
        for key in ("mode", "window_s", "window_requests", "min_requests", "max_error_rate"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.latency is not None:
            out["latency"] = {
                k: v for k, v in (("budget_ms", self.latency.budget_ms), ("ratio", self.latency.ratio))
                if v is not None
            }  # fmt: skip
        if self.divergence is not None:
            out["divergence"] = {"reference": self.divergence.reference.value}
            if self.divergence.limit is not None:
                out["divergence"]["limit"] = self.divergence.limit
        if self.max_disagreement is not None:
            out["max_disagreement"] = self.max_disagreement
        return out

    def to_proto(self, source: PolicySource | str) -> common_pb2.TrialPolicy:
        # Imported here: parsing stays stdlib-only for the bundle code that reads manifests.
        from edgefleet_proto.v1 import common_pb2

        msg = common_pb2.TrialPolicy(source=str(source))
        for key in ("mode", "window_s", "window_requests", "min_requests", "max_error_rate"):
            value = getattr(self, key)
            if value is not None:
                setattr(msg, key, value)
        if self.latency is not None:
            msg.latency.SetInParent()
            if self.latency.budget_ms is not None:
                msg.latency.budget_ms = self.latency.budget_ms
            if self.latency.ratio is not None:
                msg.latency.ratio = self.latency.ratio
        if self.divergence is not None:
            msg.divergence.reference = self.divergence.reference.value
            if self.divergence.limit is not None:
                msg.divergence.limit = self.divergence.limit
        if self.max_disagreement is not None:
            msg.max_disagreement = self.max_disagreement
        return msg

    @classmethod
    def from_proto(cls, msg: common_pb2.TrialPolicy) -> TrialPolicy:
        """The policy a desired state carries, validated like any other (TrialPolicyError names the field)."""
        data: dict[str, Any] = {}
        for key in (
            "mode",
            "window_s",
            "window_requests",
            "min_requests",
            "max_error_rate",
            "max_disagreement",
        ):
            if msg.HasField(key):
                data[key] = getattr(msg, key)
        if msg.HasField("latency"):
            data["latency"] = {
                k: getattr(msg.latency, k) for k in ("budget_ms", "ratio") if msg.latency.HasField(k)
            }
        if msg.HasField("divergence"):
            data["divergence"] = {"reference": msg.divergence.reference}
            if msg.divergence.HasField("limit"):
                data["divergence"]["limit"] = msg.divergence.limit
        return parse_trial_policy(data)


def policy_digest(policy: TrialPolicy) -> str:
    """sha256 of the policy's canonical JSON (sorted keys, no spaces): the same on hub and device."""
    text = json.dumps(policy.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def resolve(
    *,
    assignment: TrialPolicy | None = None,
    rollout: TrialPolicy | None = None,
    bundle: TrialPolicy | None = None,
) -> tuple[TrialPolicy, PolicySource]:
    """The policy in force and where it came from: assignment > rollout plan > bundle > built-in default.

    The first one given wins whole (policies are not merged field by field): an operator who writes
    a policy for an assignment sees exactly that policy judge, with the device's defaults for the
    fields it leaves out, whatever the bundle's author wrote.
    """
    for policy, source in (
        (assignment, PolicySource.ASSIGNMENT),
        (rollout, PolicySource.ROLLOUT),
        (bundle, PolicySource.BUNDLE),
    ):
        if policy is not None:
            return policy, source
    return TrialPolicy(), PolicySource.DEFAULT


# -- parsing ---------------------------------------------------------------------------------------

_TOP: Final = (
    "mode", "window_s", "window_requests", "min_requests", "max_error_rate",
    "latency", "divergence", "max_disagreement",
)  # fmt: skip


def _fail(field: str, expected: str, got: object) -> TrialPolicyError:
    if not field:  # the policy itself
        return TrialPolicyError(f"{_WHERE}: expected {expected}, got {_show(got)}")
    return TrialPolicyError(f"{_WHERE}: {field} must be {expected}, got {_show(got)}")


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def _number(data: Mapping[str, Any], key: str, field: str, expected: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(field, expected, value)
    return float(value)


def _count(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON writers and protobuf doubles give 200.0 for 200
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, "a whole number >= 0", value)
    return value


def _fraction(data: Mapping[str, Any], key: str, field: str) -> float | None:
    value = _number(data, key, field, "a fraction in 0..1")
    if value is not None and not 0 <= value <= 1:
        raise _fail(field, "a fraction in 0..1", value)
    return value


def _mapping(value: object, field: str, known: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(field, "a mapping", value)
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        prefix = f"{field}." if field else ""
        raise TrialPolicyError(
            f"{_WHERE}: unknown field {prefix}{unknown[0]}; expected one of {', '.join(known)}"
        )
    return value


def _latency(value: object) -> LatencyPolicy:
    data = _mapping(value, "latency", ("budget_ms", "ratio"))
    budget = _number(data, "budget_ms", "latency.budget_ms", "a number of milliseconds > 0")
    if budget is not None and budget <= 0:
        raise _fail("latency.budget_ms", "a number of milliseconds > 0", budget)
    ratio = _number(data, "ratio", "latency.ratio", "a number >= 1")
    if ratio is not None and ratio < 1:
        raise _fail("latency.ratio", ">= 1", ratio)
    if budget is None and ratio is None:
        raise TrialPolicyError(f"{_WHERE}: latency must set budget_ms, ratio or both, got neither")
    return LatencyPolicy(budget_ms=budget, ratio=ratio)


def _divergence(value: object) -> DivergencePolicy:
    data = _mapping(value, "divergence", ("reference", "limit"))
    reference = data.get("reference")
    choices = [r.value for r in DivergenceReference]
    if reference not in choices:
        raise _fail("divergence.reference", f"one of {', '.join(choices)}", reference)
    limit = _fraction(data, "limit", "divergence.limit")
    return DivergencePolicy(reference=DivergenceReference(reference), limit=limit)


def parse_trial_policy(data: Mapping[str, Any] | str | bytes) -> TrialPolicy:
    """A policy from a mapping or JSON text; raise :class:`TrialPolicyError` naming the faulty field."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise TrialPolicyError(
                f"{_WHERE}: expected a JSON object, got text that does not parse ({e})"
            ) from e
    top = _mapping(data, "", _TOP)
    mode = top.get("mode")
    if mode is not None and mode not in ("serve", "shadow"):
        raise _fail("mode", "one of serve, shadow", mode)
    window_s = _number(top, "window_s", "window_s", "a number of seconds >= 0")
    if window_s is not None and window_s < 0:
        raise _fail("window_s", "a number of seconds >= 0", window_s)
    policy = TrialPolicy(
        mode=mode,
        window_s=window_s,
        window_requests=_count(top, "window_requests"),
        min_requests=_count(top, "min_requests"),
        max_error_rate=_fraction(top, "max_error_rate", "max_error_rate"),
        latency=_latency(top["latency"]) if top.get("latency") is not None else None,
        divergence=_divergence(top["divergence"]) if top.get("divergence") is not None else None,
        max_disagreement=_fraction(top, "max_disagreement", "max_disagreement"),
    )
    if policy.window_s == 0 and policy.window_requests == 0:
        raise TrialPolicyError(
            f"{_WHERE}: window_s and window_requests are both 0: expected at least one bound on the trial"
        )
    return policy


def read_trial_policy(arg: str) -> TrialPolicy:
    """A policy from a command-line argument: inline JSON (starting with ``{``) or a JSON file's path."""
    text = arg.strip()
    if text.startswith("{"):
        return parse_trial_policy(text)
    path = Path(arg)
    try:
        content = path.read_text()
    except OSError as e:
        raise TrialPolicyError(
            f"{_WHERE}: expected inline JSON or a readable file, got {arg!r} ({e.strerror})"
        ) from e
    return parse_trial_policy(content)
