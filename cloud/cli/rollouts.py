"""`fleet rollouts`: create a staged rollout from a plan, list, show and watch it, and steer it."""

# Typer commands take their options as parameters.

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.live import Live

from cloud.cli.common import (
    Col,
    ExitCode,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    err_console,
    example,
    fail,
    hub_call,
    json_out,
    print_json,
    short_prefixes,
    table,
    usage_error,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.cli.rollout_view import FINAL_STATES, render_rollout, stage_label, target_label, when_label
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token
from model_tools.trial_policy import TrialPolicyError, read_trial_policy

__all__ = ["rollouts_app"]

rollouts_app = typer.Typer(
    cls=FriendlyGroup,
    help="Staged rollouts: stages over cohorts, baked and judged by gates, then promoted or rolled back.",
    no_args_is_help=True,
    epilog=example(
        "fleet rollouts create -f plan.yaml",
        "fleet rollouts ls --state running",
        "fleet rollouts watch 3f2a9c1d",
        "fleet rollouts abort 3f2a9c1d --reason 'error rate up in eu'",
    ),
)


class State(StrEnum):
    """The rollout states (a choice, so a typo is refused before any request)."""

    draft = "draft"
    running = "running"
    baking = "baking"
    waiting_approval = "waiting_approval"
    paused = "paused"
    promoting = "promoting"
    completed = "completed"
    aborting = "aborting"
    rolled_back = "rolled_back"
    superseded = "superseded"


RolloutId = Annotated[
    str, typer.Argument(metavar="ID", help="Rollout id, or a unique prefix of one.", show_default=False)
]
Reason = Annotated[
    str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; stored with the transition.")
]

_PLAN_EXAMPLE = """A plan (YAML or JSON):

  name: digits-1.1
  target: {kind: model, model: digits-mlp, version: 1.1.0}
  stages:
    - {name: canary, cohort: canary, percent: 10, bake: 5m}
    - {name: half, percent: 50, bake: 30m, approval: true}
    - {name: all, percent: 100, bake: 0}
  gates: {max_rollback_pct: 5, max_error_rate: 0.05}
  on_failure: abort"""


def _client(hub_url: str, token: str | None) -> HubClient:
    return HubClient(hub_url, resolve_token(token))


def _now() -> datetime:
    return datetime.now(UTC)


@rollouts_app.command(
    "create",
    epilog=_PLAN_EXAMPLE
    + "\n\n"
    + example(
        "fleet rollouts create -f plan.yaml",
        "fleet rollouts create -f plan.json --supersede -o json",
        "cat plan.yaml | fleet rollouts create -f -",
    ),
)
def rollouts_create(
    file: Annotated[
        str,
        typer.Option("--file", "-f", metavar="FILE", help="The plan: a YAML or JSON file, or - for stdin."),
    ],
    supersede: Annotated[
        bool,
        typer.Option(
            "--supersede",
            help="Take over devices another active rollout of the same kind holds (it is superseded).",
        ),
    ] = False,
    trial_policy: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|JSON",
            help="The plan's trial policy (a JSON file or inline JSON), in place of its trial_policy key.",
        ),
    ] = None,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Start a rollout from a plan; the hub checks the whole plan and stores nothing if it has errors."""
    if file == "-":
        text = sys.stdin.read()
        content_type = "application/yaml"
    else:
        path = Path(file)
        if not path.is_file():
            raise usage_error(f"--file: expected a plan file (YAML or JSON); {file!r} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise fail(f"cannot read the plan {file}: {e}") from e
        content_type = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    policy = trial_policy_option(trial_policy)
    if policy is not None:
        text, content_type = _with_trial_policy(text, policy), "application/json"
    view = hub_call(
        hub_url, token, lambda c: c.create_rollout(text, content_type=content_type, supersede=supersede)
    )
    if json_out(output, view):
        return
    console.print(
        f"created rollout {view['id']} ({view['name']}): {target_label(view)}, {view['stages']} stage(s), "
        f"state {view['state']}; follow it with: fleet rollouts watch {view['id'][:8]}",
        soft_wrap=True,
    )


def trial_policy_option(value: str | None) -> dict[str, Any] | None:
    """``--trial-policy FILE|JSON`` checked here, so that a fault names its field before any call."""
    if value is None:
        return None
    try:
        return read_trial_policy(value).to_dict()
    except TrialPolicyError as e:
        raise usage_error(f"--trial-policy: {e}") from e


def _with_trial_policy(text: str, policy: dict[str, Any]) -> str:
    """The plan with its top-level ``trial_policy`` set (the hub validates the rest of it)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise fail(f"the plan is not YAML or JSON: {e}") from e
    if not isinstance(data, dict):
        raise fail(f"the plan: expected a mapping at the top, got {type(data).__name__}")
    return json.dumps({**data, "trial_policy": policy})


@rollouts_app.command(
    "ls",
    epilog=example(
        "fleet rollouts ls", "fleet rollouts ls --state running -o json", "fleet rollouts ls --limit 20"
    ),
)
def rollouts_ls(
    state: Annotated[State | None, typer.Option(help="Only rollouts in this state.")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """List rollouts, newest first: target, state, stage and the engine's next action."""
    chosen = state.value if state else None
    try:
        with _client(hub_url, token) as c:
            rows, more = fetch_rows(
                lambda n, at: c.list_rollouts(state=chosen, limit=n, cursor=at),
                limit=limit,
                cursor=cursor,
                every=every,
            )
    except HubError as e:
        raise fail(e) from e
    if output is Output.json:
        print_json(rows)
    else:
        ids = short_prefixes(r["id"] for r in rows)
        now = _now()
        columns = [
            Col("id", typed=True),
            Col("name"),
            Col("target", typed=True),
            Col("state"),
            Col("stage"),
            Col("next action", drop=2),
            Col("by", drop=3),
            Col("updated", drop=1),
        ]
        cells = [
            [
                ids[r["id"]],
                r["name"],
                target_label(r),
                r["state"],
                stage_label(r),
                when_label(r.get("next_action_at"), now),
                r.get("created_by", "-"),
                str(r.get("updated_at", "")).replace("T", " ")[:19],
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} rollout(s)"))
    flags = f" --state {chosen}" if chosen else ""
    note_more(more, f"fleet rollouts ls{flags}" + (f" --limit {limit}" if limit else ""))


@rollouts_app.command(
    "show",
    epilog=example("fleet rollouts show 3f2a9c1d", "fleet rollouts show 3f2a -o json   # a unique prefix"),
)
def rollouts_show(
    rollout_id: RolloutId,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Show a rollout: its stages with devices per state, gate figures, next action and transitions."""
    view = hub_call(hub_url, token, lambda c: c.rollout(rollout_id))
    if json_out(output, view):
        return
    console.print(render_rollout(view, _now()))


@rollouts_app.command(
    "watch",
    epilog="Exits 0 when the rollout completes, 1 when it ends rolled back or superseded; Ctrl-C stops "
    "watching (the rollout goes on).\n\n"
    + example(
        "fleet rollouts watch 3f2a9c1d",
        "fleet rollouts watch 3f2a --interval 5",
        "fleet rollouts watch 3f2a --once",
    ),
)
def rollouts_watch(
    rollout_id: RolloutId,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", min=0.2, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Follow a rollout live until it completes, is rolled back or superseded."""
    try:
        with _client(hub_url, token) as c:
            view = c.rollout(rollout_id)
            if once:
                console.print(render_rollout(view, _now()))
                return
            view = _watch(c, view, interval)
    except HubError as e:
        raise fail(e) from e
    except KeyboardInterrupt:
        err_console.print("stopped watching; the rollout goes on")
        return
    if view["state"] != "completed":
        raise typer.Exit(int(ExitCode.ERROR))


def _watch(client: HubClient, view: dict[str, Any], interval: float) -> dict[str, Any]:
    """Redraw the rollout every ``interval`` seconds until it reaches a final state; its last view."""
    pause = threading.Event()  # never set: its wait() is the pause between polls of the hub
    with Live(render_rollout(view, _now()), console=console, auto_refresh=False) as live:
        while view["state"] not in FINAL_STATES:
            pause.wait(interval)
            # The full id from now on: a prefix typed by hand could become ambiguous meanwhile.
            view = client.rollout(view["id"])
            live.update(render_rollout(view, _now()), refresh=True)
    return view


def _action(
    action: str, rollout_id: str, reason: str, output: Output, hub_url: str, token: str | None
) -> None:
    view = hub_call(hub_url, token, lambda c: c.rollout_action(rollout_id, action, reason=reason))
    if json_out(output, view):
        return
    console.print(
        f"{action}: rollout {view['id'][:8]} ({view['name']}) is now {view['state']}, "
        f"stage {stage_label(view)}; "
        f"next: {view.get('next_action') or '-'}",
        soft_wrap=True,
    )


# The five operator actions take the same arguments and differ only in what they ask the hub to do.
_ACTIONS = {
    "pause": ("Stop offering devices and stop promoting; devices keep what they run.", "night freeze"),
    "resume": ("Carry on a paused rollout from its current stage.", "fixed"),
    "approve": ("Promote a rollout waiting for approval to its next stage.", "canary looks good"),
    "abort": ("Stop the rollout and give every device it offered its previous version back.", "errors in eu"),
    "rollback": (
        "Roll a paused or completed rollout back: every device it offered gets its previous version.",
        "accuracy dropped",
    ),
}


def _register_action(name: str, summary: str, why: str) -> None:
    def command(
        rollout_id: RolloutId,
        reason: Reason = "",
        output: OutputOpt = Output.table,
        hub_url: HubUrl = DEFAULT_HUB_URL,
        token: Token = None,
    ) -> None:
        _action(name, rollout_id, reason, output, hub_url, token)

    command.__doc__ = summary
    command.__name__ = f"rollouts_{name}"
    epilog = example(f"fleet rollouts {name} 3f2a9c1d", f"fleet rollouts {name} 3f2a --reason '{why}'")
    rollouts_app.command(name, epilog=epilog)(command)


for _name, (_summary, _why) in _ACTIONS.items():
    _register_action(_name, _summary, _why)
