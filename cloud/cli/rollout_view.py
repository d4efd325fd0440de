"""One frame of a rollout as `fleet rollouts show` and `watch` draw it, from the API's view of it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.text import Text

from cloud.cli.common import Col, table

__all__ = ["FINAL_STATES", "render_rollout", "stage_label", "target_label", "when_label"]

# The states `watch` stops in: nothing more happens on its own (completed waits only for an operator).
FINAL_STATES = frozenset({"completed", "rolled_back", "superseded"})
# Devices per state, in the order a device goes through them.
_DEVICE_STATES = ("pending", "offered", "committed", "failed", "rolled_back", "restored")
_STATE_STYLE = {
    "completed": "bold green",
    "rolled_back": "bold red",
    "aborting": "bold red",
    "paused": "bold yellow",
    "waiting_approval": "bold yellow",
    "superseded": "dim",
}


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when_label(value: Any, now: datetime) -> str:
    """``12:00:03 (in 4 s)``: the wall-clock time and how far from ``now``; ``-`` when none."""
    moment = _parse(value)
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    relative = f"in {delta:.0f} s" if delta >= 0.5 else ("now" if delta > -0.5 else f"{-delta:.0f} s ago")
    return f"{moment.astimezone(UTC):%H:%M:%S} ({relative})"


def target_label(r: dict[str, Any]) -> str:
    t = r.get("target") or {}
    kind = "" if t.get("kind") == "model" else f"{t.get('kind')} "
    return f"{kind}{t.get('name')}:{t.get('version')}"


def stage_label(r: dict[str, Any]) -> str:
    return f"{int(r.get('stage', 0)) + 1}/{r.get('stages', '?')} {r.get('stage_name', '')}".strip()


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _per_state(counts: dict[str, int]) -> str:
    """``2 offered, 1 rolled back``: the states that hold any device, in the order devices pass them."""
    return ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in _DEVICE_STATES if counts.get(s)) or "-"


def _stages(view: dict[str, Any]) -> RenderableType:
    columns = [
        Col("#", justify="right"),
        Col("stage", typed=True),
        Col("cohort", drop=4),
        Col("percent", justify="right", drop=3),
        Col("bake", justify="right", drop=2),
        Col("status"),
        Col("devices", justify="right"),
        Col("per state"),
        Col("gates", drop=1),
    ]
    cells = []
    for s in view.get("stage_detail", []):
        approval = " +approval" if s.get("approval") else ""
        cells.append(
            [
                str(int(s["index"]) + 1),
                str(s["name"]),
                s.get("cohort") or "(all)",
                _number(s.get("percent") if s.get("percent") is not None else 100),
                f"{_number(s.get('bake_s'))} s{approval}",
                str(s.get("status", "")),
                str(s.get("devices", 0)),
                _per_state(s.get("by_state") or {}),
                s.get("verdict") or "-",
            ]
        )
    return table(columns, cells, title="stages")


def _gates(view: dict[str, Any]) -> RenderableType | None:
    stages = view.get("stage_detail", [])
    current = int(view.get("stage", 0))
    if not 0 <= current < len(stages) or not stages[current].get("gates"):
        return None
    stage = stages[current]
    cells = [
        [
            g["gate"],
            _number(g.get("value")),
            _number(g.get("threshold")),
            ("pass" if g.get("passed") else "FAIL") if g.get("value") is not None else "not judged",
            g.get("detail", ""),
        ]
        for g in stage["gates"]
    ]
    columns = [Col("gate", typed=True), Col("value", justify="right"), Col("threshold", justify="right"),
               Col("verdict"), Col("detail", drop=1)]  # fmt: skip
    return table(
        columns, cells, title=f"gates of stage {stage['name']} ({stage.get('verdict') or 'not judged'})"
    )


def _transitions(view: dict[str, Any]) -> RenderableType | None:
    rows = view.get("transitions") or []
    if not rows:
        return None
    cells = [
        [
            str(t.get("at", "")).replace("T", " ")[:19],
            f"{t.get('from_state')} -> {t.get('to_state')}",
            str(t.get("event", "")),
            str(t.get("actor", "")),
            str(t.get("reason", "")),
        ]
        for t in rows
    ]
    columns = [Col("when", drop=1), Col("state"), Col("event", drop=2), Col("by", drop=3), Col("reason")]
    return table(columns, cells, title="transitions")


def render_rollout(view: dict[str, Any], now: datetime) -> RenderableType:
    """The rollout's header, its stages with devices per state, the current stage's gates, what comes
    next and when, and its transitions."""
    state = str(view.get("state", "?"))
    header = Text.from_markup(
        f"[bold]rollout[/] {escape(str(view.get('id')))}  {escape(str(view.get('name')))}  "
        f"{escape(target_label(view))}\n"
        f"[bold]state[/]   [{_STATE_STYLE.get(state, 'bold')}]{escape(state)}[/]  "
        f"stage {escape(stage_label(view))}  created by {escape(str(view.get('created_by', '-')))}\n"
        f"[bold]next[/]    {escape(str(view.get('next_action') or '-'))}"
        + (f"; at {escape(when_label(view['next_action_at'], now))}" if view.get("next_action_at") else "")
    )
    parts: list[RenderableType] = [header, _stages(view)]
    for part in (_gates(view), _transitions(view)):
        if part is not None:
            parts.append(part)
    return Group(*parts)
