"""`fleet drift ls|show|series`: data drift, prediction drift and labelled accuracy per cohort."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from cloud.cli.common import (
    Col,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    example,
    hub_call,
    json_out,
    table,
)
from cloud.client.hub import DEFAULT_HUB_URL

__all__ = ["drift_app"]

drift_app = typer.Typer(
    cls=FriendlyGroup,
    help="Data drift, prediction drift and accuracy on labelled predictions, per cohort and model version.",
    no_args_is_help=True,
    epilog=example(
        "fleet drift ls", "fleet drift show eu --model digits", "fleet drift series drift_score -m digits"
    ),
)

FLEET = "@fleet"
CohortOpt = Annotated[
    str | None,
    typer.Option("--cohort", "-c", metavar="NAME", help="Only this cohort ('@fleet': the whole fleet)."),
]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME", help="Only this model.")]


def _num(value: float | None, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _scope(row: dict[str, Any]) -> str:
    return row["cohort"] or FLEET


def _when(value: Any) -> str:
    return str(value or "-").replace("T", " ")[:16]


@drift_app.command("ls", epilog=example("fleet drift ls", "fleet drift ls --cohort eu -o json"))
def drift_ls(
    cohort: CohortOpt = None,
    model: ModelOpt = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """The newest scores of every cohort and model version.

    A drift score of 1 or more means at least one feature's KS test rejects the bundle's baseline
    at the hub's significance level (EDGEFLEET_DRIFT_ALPHA).
    """
    rows = hub_call(hub_url, token, lambda c: c.drift_report(cohort=cohort, model=model))
    if json_out(output, rows):
        return
    columns = [
        Col("cohort", typed=True),
        Col("model"),
        Col("version"),
        Col("bucket", drop=3),
        Col("drift score", justify="right"),
        Col("drifted features", drop=1),
        Col("prediction PSI", justify="right", drop=2),
        Col("accuracy", justify="right"),
        Col("labelled", justify="right"),
        Col("requests", justify="right", drop=4),
    ]
    cells = []
    for r in rows:
        score = _num(r["drift_score"])
        if r["drift_score"] is not None and r["drift_score"] >= 1:
            score = f"[bold red]{score}[/]"
        cells.append(
            [
                escape(_scope(r)),
                escape(r["model"]),
                escape(r["version"]),
                _when(r["bucket_start"]),
                score,
                escape(", ".join(r["drifted_features"])) or "-",
                _num(r["prediction_psi"]),
                _num(r["accuracy"], "{:.1%}"),
                str(r["labelled"]),
                "-" if r["requests"] is None else str(r["requests"]),
            ]
        )
    console.print(table(columns, cells, title=f"drift and accuracy: {len(rows)} cohort version(s)"))
    if not rows:
        console.print("no scores yet: devices report sketches each telemetry window, scored every cycle")


@drift_app.command(
    "show", epilog=example("fleet drift show eu", "fleet drift show @fleet --model digits -o json")
)
def drift_show(
    cohort: Annotated[str, typer.Argument(metavar="COHORT", help="A cohort's name, or '@fleet'.")],
    model: ModelOpt = None,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Per feature scores against the bundle's baseline, and recall per class.

    KS statistic and its threshold, PSI, Jensen-Shannon and Wasserstein per input feature; accuracy
    and recall per class on the predictions that apps labelled.
    """
    rows = hub_call(hub_url, token, lambda c: c.drift_report(cohort=cohort, model=model))
    if json_out(output, rows):
        return
    if not rows:
        console.print(f"no scores for {escape(cohort)} yet")
    for r in rows:
        by_feature: dict[str, dict[str, Any]] = {}
        for m in r["metrics"]:
            if m["reference"] == "baseline" and m["feature"] and m["metric"].startswith("drift_"):
                by_feature.setdefault(m["feature"], {})[m["metric"]] = m
        columns = [
            Col("feature", typed=True),
            Col("KS", justify="right"),
            Col("threshold", justify="right"),
            Col("PSI", justify="right"),
            Col("JS", justify="right", drop=1),
            Col("Wasserstein", justify="right", drop=2),
            Col("drifted"),
        ]
        cells = []
        for name, found in sorted(by_feature.items()):
            ks = found.get("drift_ks", {})
            cells.append(
                [
                    escape(name),
                    _num(ks.get("value")),
                    _num(ks.get("threshold")),
                    _num(found.get("drift_psi", {}).get("value")),
                    _num(found.get("drift_js", {}).get("value")),
                    _num(found.get("drift_wasserstein", {}).get("value")),
                    "[bold red]yes[/]" if ks.get("drifted") else "no",
                ]
            )
        title = f"{_scope(r)} · {r['model']} {r['version']} · bucket {_when(r['bucket_start'])}"
        console.print(table(columns, cells, title=escape(title)))
        accuracy = _num(r["accuracy"], "{:.1%}")
        console.print(f"accuracy     {accuracy} on {r['labelled']} labelled prediction(s)")
        if r["recall"]:
            recall = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["recall"].items()))
            console.print(f"recall       {escape(recall)}", soft_wrap=True)


@drift_app.command(
    "series",
    epilog=example(
        "fleet drift series drift_score --model digits --cohort eu", "fleet drift series accuracy -m digits"
    ),
)
def drift_series(
    metric: Annotated[
        str, typer.Argument(metavar="METRIC", help="e.g. drift_score, drift_ks, accuracy, p95_ms.")
    ],
    model: Annotated[str, typer.Option("--model", "-m", metavar="NAME", help="The model.")],
    cohort: Annotated[
        str, typer.Option("--cohort", "-c", metavar="NAME", help="A cohort's name, or '@fleet'.")
    ] = FLEET,
    feature: Annotated[str | None, typer.Option(metavar="NAME", help="Only this feature.")] = None,
    hours: Annotated[float, typer.Option(metavar="N", min=0.01, help="How far back.")] = 24.0,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """One metric bucket after bucket, per version, feature and reference."""
    found = hub_call(
        hub_url,
        token,
        lambda c: c.drift_series(metric, model=model, cohort=cohort, feature=feature, hours=hours),
    )
    if json_out(output, found):
        return
    columns = [
        Col("version", typed=True),
        Col("feature"),
        Col("reference"),
        Col("bucket"),
        Col("value", justify="right"),
    ]
    cells = [
        [
            escape(s["version"]),
            escape(s["feature"]) or "-",
            s["reference"] or "-",
            _when(p["bucket_start"]),
            _num(p["value"]),
        ]
        for s in found
        for p in s["points"]
    ]
    console.print(table(columns, cells, title=f"{metric} · {cohort} · {model}"))
