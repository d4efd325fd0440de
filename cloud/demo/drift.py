"""The demo's observability step: one cohort's inputs drift, its alert fires, and retraining follows.

The simulated fleet sends inference traffic from the held-out digits from the start, with an input
shift for the ``region=us`` devices held back (``--shift-paused``) so that the rollouts are judged
on clean traffic. Here the demo switches the shift on (SIGUSR1 to the fleet), runs the hub's observe
cycle until the drift rule fires, and shows that it fires for the ``us`` cohort only: the other
cohorts see the same model on unshifted inputs. The firing drift alert triggers a continuous
training run, which trains a challenger, evaluates it against the serving champion and registers it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from cloud.client.alerts import AlertsClient
from cloud.client.hub import HubClient
from cloud.client.training import TrainingApi

__all__ = [
    "DRIFT_RULES",
    "SHIFTED_COHORT",
    "TRAFFIC_ARGS",
    "DriftStepError",
    "run_drift_step",
]

SHIFTED_COHORT = "us"
# Every device answers a few requests a second from the held-out digits; half of them get labels
# back. The us devices' pixels move by two standard deviations once the shift is switched on.
TRAFFIC_ARGS = (
    "--traffic-rate", "4", "--feedback-rate", "0.5",
    "--shift", "region=us:2.0", "--shift-paused",
)  # fmt: skip
DRIFT_RULES = """\
rules:
  - name: cohort-drift
    metric: drift_score
    comparison: ">"
    threshold: 1
    for: 0s
    scope: cohorts
    severity: warning
    description: Input drift against the baseline profile on a cohort
"""
# Training runs end in one of these; a challenger is registered in each but "failed".
_RUN_DONE = {"succeeded", "awaiting_approval", "approved", "rolled_out", "rejected", "failed"}


class DriftStepError(RuntimeError):
    """The drift step did not end as the demo expects; the message says what was seen."""


def _wait_shift_on(lines: queue.Queue[str], timeout: float) -> int:
    """Read the fleet's stdout until it says the shift is on; returns how many devices it shifted."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and msg.get("event") == "shift" and msg.get("on"):
                return int(msg.get("devices", 0))
    raise DriftStepError(f"the simulated fleet did not switch its input shift on within {timeout:g} s")


def run_drift_step(
    *,
    client: HubClient,
    token: str,
    hub: Any,
    fleet_proc: Any,
    model: str,
    out: Console,
    timeout: float,
) -> dict[str, Any]:
    """Shift the us cohort's inputs, wait for its drift alert and the retraining it triggers."""
    created = client.create_cohort(
        SHIFTED_COHORT, selector=f"region={SHIFTED_COHORT}", description="US devices"
    )
    alerts = AlertsClient(client.base_url, token)
    training = TrainingApi(client)
    try:
        alerts.apply_rules(DRIFT_RULES)
        fleet_proc.proc.send_signal(signal.SIGUSR1)
        shifted = _wait_shift_on(fleet_proc.lines, 10.0)
        out.print(
            f"[bold]drift[/]    inputs of the {shifted} device(s) of cohort {SHIFTED_COHORT} "
            f"({created['member_count']} members) shifted by two standard deviations; rule: drift_score > 1"
        )
        t0 = time.monotonic()
        firing = _cycle_until_firing(hub, alerts, timeout)
        fired_s = time.monotonic() - t0
        report = client.drift_report(model=model)
        ours = next(a for a in firing if a["cohort"] == SHIFTED_COHORT)
        version = ours["model_version"]
        scores = _settled_scores(client, model, version, report, since=ours["since"])
        _print_report(out, report, version, scores)
        cohorts_firing = sorted({a["cohort"] or "@fleet" for a in firing})
        quiet = sorted({r["cohort"] for r in report if r["cohort"]} - set(cohorts_firing))
        out.print(
            f"[bold red]alert[/]    {ours['rule']} firing for cohort(s) {', '.join(cohorts_firing)} after "
            f"{fired_s:.1f} s (drift score {ours['value']:.2f}); quiet: {', '.join(quiet) or 'none'}"
        )
        run = _wait_training(hub, training, model, timeout)
    finally:
        alerts.close()
    challenger = run["challenger_version"] or "-"
    out.print(
        f"[bold]retrain[/]  run {run['id'][:8]} (trigger {run['trigger']}) ended {run['state']}: challenger "
        f"{model}:{challenger} registered, decision {run['decision'] or '-'} {run['error']}"
    )
    return {
        "shifted_devices": shifted,
        "alert_cohorts": cohorts_firing,
        "alert_seconds": round(fired_s, 1),
        "drift": scores,
        "training": {
            "id": run["id"],
            "trigger": run["trigger"],
            "state": run["state"],
            "challenger": challenger,
            "champion": run["champion_version"],
            "decision": run["decision"],
        },
    }


def _cycle_until_firing(hub: Any, alerts: AlertsClient, timeout: float) -> list[dict[str, Any]]:
    """Run the observe cycle until the shifted cohort's alert fires; returns every firing alert then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.observe.run_once()
        firing = list(alerts.alerts_page(state="firing")["data"])
        if any(a["cohort"] == SHIFTED_COHORT for a in firing):
            return firing
        # Fresh windows arrive every second; the hub's own cycle runs meanwhile.
        hub.observe.wait_cycles(hub.observe.cycles + 1, timeout=2.0)
    raise DriftStepError(
        f"no drift alert fired for cohort {SHIFTED_COHORT} within {timeout:g} s of the shift"
    )


def _wait_training(hub: Any, training: TrainingApi, model: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = training.runs_page(state=None, model=model, limit=5, cursor=None)["data"]
        drift_runs = [r for r in runs if r["trigger"] == "drift"]
        if drift_runs and drift_runs[0]["state"] in _RUN_DONE:
            return dict(drift_runs[0])
        hub.observe.wait_cycles(hub.observe.cycles + 1, timeout=2.0)
        if not drift_runs:
            hub.observe.run_once()
    raise DriftStepError(f"the retraining run the drift alert triggered did not end within {timeout:g} s")


def _drifted(row: dict[str, Any]) -> str:
    """'58 of 64 (f01, f02, f03, ...)': how many features' KS tests reject the baseline."""
    tested = [m for m in row["metrics"] if m["metric"] == "drift_ks" and m["reference"] == "baseline"]
    if not tested:
        return "-"
    names = row["drifted_features"]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} of {len(tested)}" + (f" ({shown})" if names else "")


def _settled_scores(
    client: HubClient, model: str, version: str, report: list[dict[str, Any]], *, since: str
) -> dict[str, float | None]:
    """Each cohort's drift score on the fullest bucket from ``since`` on (the shifted cohort's breach).

    Buckets before the breach hold traffic from before the shift, so every cohort is compared on the
    same buckets after it. The newest bucket may have begun a moment ago and hold a few windows only
    (its threshold is then wide and its score low); of those, the demo shows the one with the most
    samples.
    """
    start = _instant(since)
    scores: dict[str, float | None] = {}
    for r in report:
        if r["version"] != version:
            continue
        cohort = r["cohort"] or "@fleet"
        series = client.drift_series(
            "drift_score", model=model, cohort=cohort, version=version, reference="baseline", hours=0.5
        )
        points = [p for s in series for p in s["points"] if _instant(p["bucket_start"]) >= start]
        fullest = max(points, key=lambda p: p["n"], default=None)
        scores[cohort] = None if fullest is None else float(fullest["value"])
    return scores


def _instant(value: str) -> datetime:
    """An API timestamp as an aware datetime (the API writes UTC, with or without an offset)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_report(
    out: Console, report: list[dict[str, Any]], version: str, scores: dict[str, float | None]
) -> None:
    table = Table(
        "cohort",
        "drift score",
        "drifted features",
        "accuracy (labelled)",
        title=f"drift per cohort, version {version}",
    )
    for r in report:
        if r["version"] != version:
            continue
        settled = scores.get(r["cohort"] or "@fleet")
        score = "-" if settled is None else f"{settled:.2f}"
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.0%} ({r['labelled']})"
        table.add_row(r["cohort"] or "@fleet", score, _drifted(r), accuracy)
    out.print(table)
