"""Trial gates: judging a new version from what it did on live traffic. Pure: no I/O, no clock.

A :class:`TrialJudge` is fed one observation per request (the new version's
latency and outputs or its error, and, when the previous version also ran on
the same inputs, its outputs and latency) and answers with a :class:`Verdict`
as soon as one is due:

- at once, on a NaN or inf in any output;
- every few requests once ``min_requests`` were seen: error rate, p95 latency
  against the budget and against the previous version, divergence of the
  predicted-class distribution from the baseline, and (shadow mode)
  disagreement with the previous version; any failure ends the trial;
- when the window is full (``window_requests``), or when the caller says the
  time is up or the trial must end early: every gate on what was seen. Gates
  that need ``min_requests`` and did not get them are not judged, and the
  verdict says so.

The baseline for the class distribution is what ``divergence_reference`` names:
"auto" takes the bundle's data profile when it has one, else the previous
version's outputs on the same inputs; "profile" and "previous" take only that
one (no gate without it); "none" turns the gate off. Divergence is
Jensen-Shannon in bits (0 for identical distributions, 1 for disjoint ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.config import TrialConfig, TrialMode
from edge_agent.details import DetailValue
from edge_agent.telemetry import percentile
from edge_agent.tensors import Array

__all__ = ["TrialJudge", "Verdict", "class_counts", "js_divergence"]

# Statistical gates are re-checked every this many requests (not on every one: it sorts latencies).
CHECK_EVERY = 8
# Latency samples kept per version; a trial window rarely needs more.
MAX_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a trial ended. ``gate`` names the deciding gate ("window" when every gate passed)."""

    passed: bool
    gate: str
    reason: str
    # Typed (a count is an int, a ratio a float): the event's typed details carry them as they are.
    figures: Mapping[str, DetailValue] = field(default_factory=dict)


def js_divergence(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen-Shannon divergence in bits of two discrete distributions (counts or shares)."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D distributions of one length, got {a.shape} and {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0 or (a < 0).any() or (b < 0).any():
        raise ValueError("expected non-negative distributions with a positive total")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: npt.NDArray[np.float64]) -> float:
        nz = x > 0  # 0 * log 0 = 0; m > 0 wherever x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return max(0.0, min(1.0, (kl(a) + kl(b)) / 2))


# One-sided normal quantile behind the sampling allowance: the gate is checked every few requests
# over a trial, so each check must almost never fail on chance alone.
_Z_ALLOWANCE = 3.09  # 99.9 %


def sampling_allowance(classes: int, n: float) -> float:
    """How far (JS bits) ``n`` answers drawn from the reference itself stray by chance (~99.9 %).

    For n draws from a distribution over ``classes`` outcomes, 8 n ln2 times the JS divergence of
    their shares from it is about chi-squared with classes - 1 degrees of freedom; the quantile comes
    from the Wilson-Hilferty approximation (no scipy on a device; loose at a few tens of answers, where
    the fixed limit added on top keeps chance failures rare). Twenty answers over ten classes
    stray by up to ~0.25 bits, so a fixed limit of 0.2 would roll back a good version on chance.
    """
    if n <= 0:
        return float("inf")
    dof = max(1, classes - 1)
    h = 2.0 / (9.0 * dof)
    quantile = dof * (1.0 - h + _Z_ALLOWANCE * math.sqrt(h)) ** 3
    return quantile / (8.0 * n * math.log(2.0))


def class_counts(outputs: Mapping[str, Array], classes: int) -> npt.NDArray[np.int64] | None:
    """Predicted-class counts (argmax of the single output, last axis), or None if not a classifier."""
    if len(outputs) != 1:
        return None
    (out,) = outputs.values()
    if out.ndim < 2 or out.shape[-1] != classes or classes < 2:
        return None
    predicted = np.asarray(out).reshape(-1, classes).argmax(axis=1)
    return np.bincount(predicted, minlength=classes)


def _classes_of(outputs: Mapping[str, Array]) -> int:
    if len(outputs) != 1:
        return 0
    (out,) = outputs.values()
    return int(out.shape[-1]) if out.ndim >= 2 and out.shape[-1] >= 2 else 0


def _nonfinite(outputs: Mapping[str, Array]) -> tuple[str, int, int] | None:
    for name, out in outputs.items():
        if out.dtype.kind in "fc" and not np.isfinite(out).all():
            return name, int(out.size - np.count_nonzero(np.isfinite(out))), int(out.size)
    return None


def _disagreeing_rows(new: Mapping[str, Array], old: Mapping[str, Array], classes: int) -> tuple[int, int]:
    """(rows whose answer differs, rows compared): classes for a classifier, values otherwise."""
    if len(new) != 1 or set(new) != set(old):
        return 0, 0
    (a,) = new.values()
    (b,) = old.values()
    if a.shape != b.shape or a.ndim == 0:
        return 0, 0
    if classes:
        pa = a.reshape(-1, classes).argmax(axis=1)
        pb = b.reshape(-1, classes).argmax(axis=1)
        return int(np.count_nonzero(pa != pb)), int(pa.size)
    close = np.isclose(a, b, rtol=1e-3, atol=1e-5).reshape(a.shape[0], -1).all(axis=1)
    return int(np.count_nonzero(~close)), int(a.shape[0])


class TrialJudge:
    """Accumulates one trial's observations and decides it; see the module docstring."""

    def __init__(
        self,
        config: TrialConfig,
        *,
        mode: TrialMode,
        profile_distribution: Sequence[float] | None = None,
        baseline_p95_ms: float | None = None,
        context: Mapping[str, DetailValue] | None = None,
    ) -> None:
        self._config = config
        # Carried into every verdict's figures (which policy judged, and what it asked for).
        self._context = dict(context or {})
        self._mode = mode
        self._profile = (
            np.asarray(profile_distribution, dtype=np.float64)
            if profile_distribution is not None and len(profile_distribution) >= 2
            else None
        )
        self._baseline_p95 = baseline_p95_ms
        self.requests = 0
        self.errors = 0
        self._latencies: list[float] = []
        self._ref_latencies: list[float] = []
        self._classes = 0
        self._counts: npt.NDArray[np.int64] | None = None
        self._ref_counts: npt.NDArray[np.int64] | None = None
        self._disagree = 0
        self._compared = 0
        self.verdict: Verdict | None = None

    # -- feeding ---------------------------------------------------------------------------------

    def observe(
        self,
        *,
        latency_ms: float,
        outputs: Mapping[str, Array] | None,
        error: str = "",
        ref_outputs: Mapping[str, Array] | None = None,
        ref_latency_ms: float | None = None,
    ) -> Verdict | None:
        """Count one request; return the verdict if this request decided the trial."""
        if self.verdict is not None:
            return None
        self.requests += 1
        if error or outputs is None:
            self.errors += 1
        else:
            bad = _nonfinite(outputs)
            if bad is not None:
                name, count, size = bad
                return self._decide(
                    False,
                    "nonfinite",
                    f"the new version returned NaN or inf: {count} of {size} values of output {name!r} "
                    f"on request {self.requests} of the trial",
                    nonfinite=str(count),
                )
            self._count(outputs, ref_outputs)
            if len(self._latencies) < MAX_SAMPLES:
                self._latencies.append(latency_ms)
        if ref_latency_ms is not None and len(self._ref_latencies) < MAX_SAMPLES:
            self._ref_latencies.append(ref_latency_ms)
        window = self._config.window_requests
        if window and self.requests >= window:
            return self.finish("window")
        if self.requests >= self._config.min_requests and self.requests % CHECK_EVERY == 0:
            failed = self._first_failure()
            if failed is not None:
                return self._decide(False, *failed)
        return None

    def _count(self, outputs: Mapping[str, Array], ref_outputs: Mapping[str, Array] | None) -> None:
        if self._counts is None:
            self._classes = _classes_of(outputs)
            if self._classes:
                self._counts = np.zeros(self._classes, dtype=np.int64)
                self._ref_counts = np.zeros(self._classes, dtype=np.int64)
        if self._counts is not None:
            counts = class_counts(outputs, self._classes)
            if counts is not None:
                self._counts += counts
        if ref_outputs is None:
            return
        if self._ref_counts is not None:
            ref = class_counts(ref_outputs, self._classes)
            if ref is not None:
                self._ref_counts += ref
        differ, rows = _disagreeing_rows(outputs, ref_outputs, self._classes)
        self._disagree += differ
        self._compared += rows

    # -- deciding --------------------------------------------------------------------------------

    def finish(self, why: str) -> Verdict:
        """End the trial now and judge every gate on what was seen (``why``: "window", "time", ...)."""
        if self.verdict is not None:
            return self.verdict
        failed = self._first_failure()
        if failed is not None:
            return self._decide(False, *failed)
        thin = self.requests < self._config.min_requests
        note = (
            f"; only {self.requests} request(s), fewer than the {self._config.min_requests} the "
            "statistical gates need, so only the NaN/inf and load checks were judged"
            if thin
            else ""
        )
        ended = {"window": "the trial window was full", "time": "the trial time was up"}.get(why, why)
        return self._decide(True, "window", f"every gate passed: {ended}{note}", judged=not thin)

    def _decide(self, passed: bool, gate: str, reason: str, **extra: DetailValue) -> Verdict:
        self.verdict = Verdict(passed, gate, reason, {**self.figures(), **extra, "gate": gate})
        return self.verdict

    def _first_failure(self) -> tuple[str, str] | None:
        """(gate, reason) of the first failing gate, judging only gates with enough samples."""
        cfg = self._config
        if self.requests < cfg.min_requests:
            return None
        rate = self.errors / self.requests
        if rate > cfg.max_error_rate:
            return "errors", (
                f"error rate {rate:.1%} ({self.errors} of {self.requests} requests) is above "
                f"the limit {cfg.max_error_rate:.1%}"
            )
        p95 = self._p95(self._latencies)
        if p95 is not None and cfg.latency_budget_ms and p95 > cfg.latency_budget_ms:
            return (
                "latency_budget",
                f"p95 latency {p95:.2f} ms is over the budget {cfg.latency_budget_ms:g} ms",
            )
        previous = self._previous_p95()
        if p95 is not None and previous is not None and cfg.max_latency_ratio:
            slower = p95 > cfg.max_latency_ratio * previous and p95 - previous > cfg.latency_slack_ms
            if slower:
                return "latency_ratio", (
                    f"p95 latency {p95:.2f} ms is {p95 / max(previous, 1e-9):.1f}x the previous version's "
                    f"{previous:.2f} ms (limit {cfg.max_latency_ratio:g}x)"
                )
        divergence = self._divergence()
        if divergence is not None and divergence[0] > cfg.max_divergence + divergence[2]:
            value, against, allowance = divergence
            limit = f"{cfg.max_divergence:g}"
            if allowance:
                answers = int(self._counts.sum()) if self._counts is not None else 0
                limit += f" + {allowance:.3f} that {answers} answers stray by chance"
            return "divergence", (
                f"predicted-class distribution diverges from the {against} (Jensen-Shannon "
                f"{value:.3f} bits, limit {limit})"
            )
        share = self._disagreement()
        if self._mode is TrialMode.SHADOW and share is not None and share > cfg.max_disagreement:
            return "disagreement", (
                f"the new version disagrees with the previous one on {share:.1%} of {self._compared} "
                f"answers (limit {cfg.max_disagreement:.1%})"
            )
        return None

    # -- figures ---------------------------------------------------------------------------------

    def _p95(self, samples: list[float]) -> float | None:
        if len(samples) < max(1, self._config.min_requests):
            return None
        return percentile(sorted(samples), 95)

    def _previous_p95(self) -> float | None:
        measured = self._p95(self._ref_latencies)
        return measured if measured is not None else self._baseline_p95

    def _divergence(self) -> tuple[float, str, float] | None:
        """(JS divergence, what it was measured against, the chance allowance at this many answers)."""
        counts = self._counts
        if counts is None or counts.sum() < max(1, self._config.min_requests):
            return None
        n = float(counts.sum())
        baseline = self._baseline()
        if baseline == "profile" and self._profile is not None:
            classes = int((self._profile > 0).sum())
            return (
                js_divergence(counts, self._profile),
                "bundle's data profile",
                sampling_allowance(classes, n),
            )
        ref = self._ref_counts
        if baseline == "previous" and ref is not None and ref.sum() >= max(1, self._config.min_requests):
            # The same inputs answered by both versions: paired, so chance adds nothing to tell apart.
            return js_divergence(counts, ref), "previous version's answers on the same inputs", 0.0
        return None

    def _baseline(self) -> str | None:
        """What the divergence is measured against now: "profile", "previous" or None (no gate)."""
        wanted = self._config.divergence_reference
        counts = self._counts
        usable = (
            counts is not None
            and self._profile is not None
            and self._profile.shape == counts.shape
            and self._profile.sum() > 0
        )
        if wanted == "profile" or (wanted == "auto" and usable):
            # An explicit "profile" never falls back to the previous version: that is the point of it.
            return "profile" if usable else None
        if wanted in ("previous", "auto"):
            return "previous" if self._ref_counts is not None and self._ref_counts.sum() > 0 else None
        return None

    def _disagreement(self) -> float | None:
        if self._compared < max(1, self._config.min_requests):
            return None
        return self._disagree / self._compared

    def figures(self) -> dict[str, DetailValue]:
        """What was measured so far, for an event's details."""
        out: dict[str, DetailValue] = {
            **self._context,
            "requests": self.requests,
            "errors": self.errors,
            "mode": self._mode.value,
        }
        p95 = percentile(sorted(self._latencies), 95) if self._latencies else None
        if p95 is not None:
            out["p95_ms"] = float(p95)
        ref = percentile(sorted(self._ref_latencies), 95) if self._ref_latencies else self._baseline_p95
        if ref is not None:
            out["previous_p95_ms"] = float(ref)
        counts = self._counts
        if counts is not None and counts.sum() > 0:
            baseline = self._baseline()
            if baseline == "profile" and self._profile is not None:
                out["js_divergence"] = js_divergence(counts, self._profile)
                out["baseline"] = "profile"
            elif baseline == "previous" and self._ref_counts is not None:
                out["js_divergence"] = js_divergence(counts, self._ref_counts)
                out["baseline"] = "previous"
            top = int(counts.argmax())
            out["top_class_share"] = float(counts[top]) / float(counts.sum())
        if self._compared:
            out["disagreement"] = self._disagree / self._compared
        return out
