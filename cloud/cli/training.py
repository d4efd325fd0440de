"""`fleet training runs ls|show|approve|reject|start` and `fleet data add|ls`: continuous training.

A run is queued by a trigger (schedule, drift alert, accuracy drop, new labelled samples) or by
hand, trains a challenger on the base data set plus the labelled uploads, judges it against the
serving champion, and either keeps the champion, waits for an operator, or starts a canary rollout.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.text import Text

from cloud.cli.common import (
    Col,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    example,
    fail,
    hub_call,
    json_out,
    short_prefixes,
    table,
)
from cloud.cli.paging import AllOpt, CursorOpt, LimitOpt, fetch_rows, note_more
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token
from cloud.client.training import TrainingApi

__all__ = ["data_app", "training_app"]

training_app = typer.Typer(
    cls=FriendlyGroup,
    help="Continuous training: runs that retrain a model when a trigger fires, and their decisions.",
    no_args_is_help=True,
    epilog=example("fleet training runs ls", "fleet training runs approve 5c0ffee1 --reason 'canary ok'"),
)
runs_app = typer.Typer(
    cls=FriendlyGroup,
    help="List and show training runs, approve or reject a challenger, start a run by hand.",
    no_args_is_help=True,
    epilog=example(
        "fleet training runs ls --state awaiting_approval",
        "fleet training runs show 5c0ffee1",
        "fleet training runs start digits-mlp --reason 'new field data'",
    ),
)
training_app.add_typer(runs_app, name="runs")
data_app = typer.Typer(
    cls=FriendlyGroup,
    help="Labelled samples that continuous training learns from (.npz files with x and y).",
    no_args_is_help=True,
    epilog=example("fleet data add labelled.npz --model digits-mlp", "fleet data ls"),
)

RunId = Annotated[
    str, typer.Argument(metavar="ID", help="Training run id, or a unique prefix of one.", show_default=False)
]
Reason = Annotated[str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; stored with the run.")]


class State(StrEnum):
    """The run states (a choice, so a typo is refused before any request)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    awaiting_approval = "awaiting_approval"
    approved = "approved"
    rolled_out = "rolled_out"
    rejected = "rejected"


_FIGURES = ("accuracy", "holdout_accuracy", "holdout_samples", "labelled_accuracy", "labelled_samples")


def _when(value: Any) -> str:
    return str(value or "-").replace("T", " ")[:19]


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


@runs_app.command(
    "ls",
    epilog=example(
        "fleet training runs ls",
        "fleet training runs ls --state awaiting_approval",
        "fleet training runs ls --model digits-mlp -o json",
    ),
)
def runs_ls(
    state: Annotated[State | None, typer.Option(help="Only runs in this state.")] = None,
    model: Annotated[str | None, typer.Option(metavar="NAME", help="Only runs of this model.")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """List training runs, newest first: model, trigger, state, champion and challenger, decision."""
    chosen = state.value if state else None
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            api = TrainingApi(c)
            rows, more = fetch_rows(
                lambda n, at: api.runs_page(state=chosen, model=model, limit=n, cursor=at),
                limit=limit,
                cursor=cursor,
                every=every,
            )
    except HubError as e:
        raise fail(e) from e
    if not json_out(output, rows):
        ids = short_prefixes(r["id"] for r in rows)
        columns = [
            Col("id", typed=True),
            Col("model", typed=True),
            Col("trigger"),
            Col("state"),
            Col("champion", typed=True, drop=3),
            Col("challenger", typed=True, drop=2),
            Col("decision", drop=1),
            Col("created", drop=4),
        ]
        cells = [
            [
                ids[r["id"]],
                r["model"],
                r["trigger"],
                r["state"] + (f" ({r['step']})" if r.get("step") else ""),
                r.get("champion_version") or "-",
                r.get("challenger_version") or "-",
                r.get("decision") or "-",
                _when(r.get("created_at")),
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} training run(s)"))
    flags = "".join(f" --{k} {v}" for k, v in (("state", chosen), ("model", model), ("limit", limit)) if v)
    note_more(more, f"fleet training runs ls{flags}")


def render_run(view: dict[str, Any]) -> RenderableType:
    """The run's header, why it ran, its data, both models' figures, the decision, and its transitions."""
    lines = [
        f"[bold]run[/]       {escape(view['id'])}  model {escape(view['model'])}  "
        f"state [bold]{escape(view['state'])}[/]"
        + (f" ({escape(view['step'])})" if view.get("step") else ""),
        f"[bold]trigger[/]   {escape(view['trigger'])}: {escape(view.get('summary') or '-')}",
        f"[bold]champion[/]  {escape(view.get('champion_version') or '-')}   "
        f"[bold]challenger[/] {escape(view.get('challenger_version') or '-')}",
    ]
    if view.get("decision"):
        lines.append(
            f"[bold]decision[/]  {escape(view['decision'])}: {escape(view.get('decision_reason', ''))}"
        )
    if view.get("error"):
        lines.append(f"[bold red]error[/]     {escape(view['error'])}")
    if view.get("rollout_id"):
        lines.append(
            f"[bold]rollout[/]   {escape(view['rollout_id'])}  (fleet rollouts show {view['rollout_id'][:8]})"
        )
    if view.get("allowed_actions"):
        actions = ", ".join(f"fleet training runs {a} {view['id'][:8]}" for a in view["allowed_actions"])
        lines.append(f"[bold]next[/]      {escape(actions)}")
    parts: list[RenderableType] = [Text.from_markup("\n".join(lines))]
    if view.get("datasets"):
        cells = [
            [d.get("role", "-"), d.get("name", "-"), d.get("hash", "-"), str(d.get("samples", "-"))]
            for d in view["datasets"]
        ]
        parts.append(
            table(
                [Col("role"), Col("name", drop=1), Col("hash", typed=True), Col("samples")],
                cells,
                title="data",
            )
        )
    champion, challenger = view.get("champion_metrics") or {}, view.get("challenger_metrics") or {}
    if champion or challenger:
        cells = [[k, _figure(champion.get(k)), _figure(challenger.get(k))] for k in _FIGURES]
        parts.append(table([Col("figure"), Col("champion"), Col("challenger")], cells, title="evaluation"))
    transitions = view.get("transitions") or []
    if transitions:
        cells = [
            [_when(t["at"]), t["from_state"] or "-", t["to_state"], t["event"], t["actor"], t["reason"]]
            for t in transitions
        ]
        columns = [Col("at"), Col("from"), Col("to"), Col("event", drop=2), Col("by", drop=1), Col("reason")]
        parts.append(table(columns, cells, title="transitions"))
    return Group(*parts)


@runs_app.command(
    "show", epilog=example("fleet training runs show 5c0ffee1", "fleet training runs show 5c0f -o json")
)
def runs_show(
    run_id: RunId, output: OutputOpt = Output.table, hub_url: HubUrl = DEFAULT_HUB_URL, token: Token = None
) -> None:
    """Show a run: what triggered it, its data by hash, champion and challenger figures, decision, history."""
    view = hub_call(hub_url, token, lambda c: TrainingApi(c).run(run_id))
    if not json_out(output, view):
        console.print(render_run(view))


@runs_app.command(
    "start",
    epilog=example(
        "fleet training runs start digits-mlp", "fleet training runs start digits-mlp --reason 'field data'"
    ),
)
def runs_start(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="The registered model to retrain.")],
    reason: Reason = "",
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Queue a run by hand; the hub starts it at its next observe cycle (exit 4 when one is queued)."""
    view = hub_call(hub_url, token, lambda c: TrainingApi(c).start(model, reason))
    if not json_out(output, view):
        console.print(
            f"queued training run {view['id']} of {view['model']}; follow it with: "
            f"fleet training runs show {view['id'][:8]}",
            soft_wrap=True,
        )


def _acted(action: str, view: dict[str, Any], output: Output) -> None:
    if json_out(output, view):
        return
    rollout = f"; rollout {view['rollout_id'][:8]}" if view.get("rollout_id") else ""
    console.print(
        f"{action}: training run {view['id'][:8]} ({view['model']}) is now {view['state']}{rollout}",
        soft_wrap=True,
    )


@runs_app.command(
    "approve",
    epilog=example(
        "fleet training runs approve 5c0ffee1",
        "fleet training runs approve 5c0f --reason 'figures look right' --supersede",
    ),
)
def runs_approve(
    run_id: RunId,
    reason: Reason = "",
    supersede: Annotated[
        bool,
        typer.Option("--supersede", help="Let the rollout take over devices another active rollout holds."),
    ] = False,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Approve a challenger awaiting approval: its canary rollout starts (operator role)."""
    body = {"reason": reason, "supersede": supersede}
    view = hub_call(hub_url, token, lambda c: TrainingApi(c).act(run_id, "approve", body))
    _acted("approve", view, output)


@runs_app.command(
    "reject",
    epilog=example(
        "fleet training runs reject 5c0ffee1", "fleet training runs reject 5c0f --reason 'labels were wrong'"
    ),
)
def runs_reject(
    run_id: RunId,
    reason: Reason = "",
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Reject a challenger awaiting approval (it stays registered), or cancel a queued run."""
    view = hub_call(hub_url, token, lambda c: TrainingApi(c).act(run_id, "reject", {"reason": reason}))
    _acted("reject", view, output)


@data_app.command(
    "add",
    epilog="The file holds x: float (N, 64) scaled to [0, 1] and y: integer labels (N,) in [0, 9], as "
    "numpy.savez('labelled.npz', x=x, y=y) writes them.\n\n"
    + example("fleet data add labelled.npz", "fleet data add field-2030-01.npz --model digits-mlp -o json"),
)
def data_add(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="An .npz file with x and y.", exists=True, dir_okay=False)
    ],
    model: Annotated[
        str | None, typer.Option(metavar="NAME", help="The model the samples are for (default: every model).")
    ] = None,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """Upload labelled samples for retraining; the hub checks them and keeps them by their sha256."""
    row = hub_call(hub_url, token, lambda c: TrainingApi(c).add_labelled(file, model))
    if not json_out(output, row):
        console.print(
            f"labelled data {row['sha256'][:12]}: {row['samples']} samples for "
            f"{row['model_name'] or 'every model'}",
            soft_wrap=True,
        )


@data_app.command("ls", epilog=example("fleet data ls", "fleet data ls --all -o json"))
def data_ls(
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = Output.table,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
) -> None:
    """List labelled uploads, newest first."""
    try:
        with HubClient(hub_url, resolve_token(token)) as c:
            api = TrainingApi(c)
            rows, more = fetch_rows(
                lambda n, at: api.labelled_page(limit=n, cursor=at), limit=limit, cursor=cursor, every=every
            )
    except HubError as e:
        raise fail(e) from e
    if not json_out(output, rows):
        digests = short_prefixes(r["sha256"] for r in rows)
        columns = [
            Col("sha256", typed=True),
            Col("samples"),
            Col("model"),
            Col("by", drop=2),
            Col("uploaded", drop=1),
        ]
        cells = [
            [
                digests[r["sha256"]],
                str(r["samples"]),
                r["model_name"] or "(every)",
                r["uploaded_by"],
                _when(r["created_at"]),
            ]
            for r in rows
        ]
        console.print(table(columns, cells, title=f"{len(rows)} labelled upload(s)"))
    note_more(more, "fleet data ls" + (f" --limit {limit}" if limit else ""))
