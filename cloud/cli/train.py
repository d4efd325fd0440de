"""`fleet train`, `fleet models optimize|show` and `fleet experiments ls|show`.

Training and optimization run on this machine (torch is imported only when one
of them runs) and report to the hub through its HTTP API: the run as an
experiment, the bundle as a version with its variants. Progress bars go to
stderr, so ``--output json`` keeps stdout to one JSON document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cloud.cli.common import (
    Col,
    FriendlyGroup,
    HubUrl,
    Output,
    OutputOpt,
    Token,
    console,
    data_dir,
    err_console,
    example,
    hub_call,
    json_out,
    short_prefixes,
    table,
)
from cloud.cli.common import fail as _fail
from cloud.cli.common import print_json as _print_json
from cloud.client.hub import DEFAULT_HUB_URL, HubClient, HubError, resolve_token

if TYPE_CHECKING:
    from model_tools.pipeline import PipelineResult, ProgressEvent

__all__ = ["experiments_app", "models_optimize", "models_show", "register", "train"]

experiments_app = typer.Typer(
    cls=FriendlyGroup,
    help="Training runs and their lineage.",
    no_args_is_help=True,
    epilog=example("fleet experiments ls", "fleet experiments show 4d85a1c2"),
)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add these commands to the `fleet` CLI."""
    app.command(
        "train", epilog=example("fleet train --model mlp", "fleet train --model cnn --epochs 5 --device cuda")
    )(train)
    app.add_typer(experiments_app, name="experiments")
    models_app.command(
        "optimize",
        epilog=example(
            "fleet models optimize .edgefleet/runs/4d85a1c2e0f94b7c8a51d2e3f4a5b6c7",
            "fleet models optimize RUN_DIR --version 1.0.0 --prune 0.5 --no-tflite",
        ),
    )(models_optimize)
    models_app.command(
        "show",
        epilog=example(
            "fleet models show digits-mlp 1.0.0",
            "fleet models show digits-mlp 20261203T0625   # a unique prefix of the version",
        ),
    )(models_show)


def _client(hub_url: str, token: str | None) -> HubClient:
    return HubClient(hub_url, resolve_token(token))


class ProgressView:
    """Turns pipeline progress events into rich progress bars (one per stage) on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.total == 0:
            self._progress.console.print(f"[yellow]{event.stage}:[/] {event.message}")
            return
        task = self._tasks.get(event.stage)
        if event.stage == "evaluate":
            # One evaluation per variant; the total is known only at the end.
            if task is None:
                task = self._tasks[event.stage] = self._progress.add_task("evaluate", total=None, note="")
            self._progress.update(task, advance=1 if event.done == event.total else 0, note=event.message)
            return
        if task is None:
            task = self._tasks[event.stage] = self._progress.add_task(event.stage, total=event.total, note="")
        self._progress.update(task, completed=event.done, total=event.total, note=event.message)


def _progress_bars() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err_console,
    )


def train(
    model: Annotated[str, typer.Option(metavar="KIND", help="Demo model: mlp or cnn.")] = "mlp",
    epochs: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Epochs (default: the model's recipe).")
    ] = None,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed for data split, initial weights and shuffling.")
    ] = 0,
    device: Annotated[
        str | None, typer.Option(metavar="DEVICE", help="cpu or cuda (default: cuda when present).")
    ] = None,
    # A factory, so EDGEFLEET_DATA_DIR is read when the command runs, not when the module is imported.
    runs_dir: Path = typer.Option(  # noqa: B008
        default_factory=lambda: data_dir() / "runs",
        metavar="DIR",
        show_default="$EDGEFLEET_DATA_DIR/runs",
        file_okay=False,
        help="Folder that holds one folder per training run.",
    ),
    register_run: Annotated[
        bool, typer.Option("--register/--no-register", help="Record the run as an experiment on the hub.")
    ] = True,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Validate the data, train a model, and record the run (torchrun-ready: DDP when WORLD_SIZE > 1)."""
    from cloud.training.runs import train_run
    from model_tools.errors import ModelToolsError
    from model_tools.pipeline import ProgressEvent
    from model_tools.train import DistributedContext, EpochProgress

    try:
        distributed = DistributedContext.from_env()
    except ModelToolsError as e:
        raise _fail(str(e), 2) from e
    main = distributed is None or distributed.is_main
    with _progress_bars() as bars:
        view = ProgressView(bars)

        def on_epoch(p: EpochProgress) -> None:
            view(
                ProgressEvent("train", p.epoch, p.epochs, f"loss {p.train_loss:.3f} val {p.val_accuracy:.3f}")
            )

        try:
            record, folder = train_run(
                model,
                runs_dir,
                epochs=epochs,
                seed=seed,
                device=device,
                progress=on_epoch if main else None,
                distributed=distributed,
            )
        except ModelToolsError as e:
            raise _fail(str(e)) from e
    if not main or folder is None:
        return  # ranks > 0 of a torchrun job: rank 0 reports
    registered = False
    if register_run:
        body = {k: v for k, v in record.to_dict().items() if k != "validation"}
        try:
            with _client(hub_url, token) as c:
                c.record_experiment(body)
            registered = True
        except HubError as e:
            raise _fail(
                e,
                message=f"run {record.run_id} is saved in {folder} but could not be recorded on the hub: "
                f"{e}; `fleet models optimize` records it with the bundle",
            ) from e
    if output is Output.json:
        _print_json({"run_dir": str(folder), "registered": registered, **record.to_dict()})
        return
    console.print(
        f"trained [bold]{record.name}[/] run [bold]{record.run_id}[/] on {record.device} "
        f"(world size {record.world_size}) in {record.duration_s:.1f} s: "
        f"test accuracy {record.metrics['test_accuracy']:.4f}"
    )
    console.print(
        f"data {record.dataset_name} sha256 {record.dataset_hash[:16]}…, code {record.code_revision[:16]}"
    )
    console.print(f"run folder {folder}" + ("; recorded on the hub" if registered else ""))
    console.print(f"next: fleet models optimize {folder}")


def models_optimize(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="A run folder written by `fleet train`.", file_okay=False),
    ],
    version: Annotated[
        str | None, typer.Option(metavar="VERSION", help="Version to register (default: time and run id).")
    ] = None,
    prune: Annotated[
        float, typer.Option(metavar="SHARE", min=0.0, max=0.9, help="Share of neurons/channels to remove.")
    ] = 0.25,
    finetune_epochs: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Fine-tuning epochs after pruning.")
    ] = None,
    gates: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Gate policy file (TOML or JSON).", dir_okay=False)
    ] = None,
    tflite: Annotated[bool, typer.Option("--tflite/--no-tflite", help="Make TFLite variants.")] = True,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Bundle folder (default: RUN_DIR/bundles/VERSION).")
    ] = None,
    register_bundle: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the bundle on the hub.")
    ] = True,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Export, prune, quantize, convert, evaluate and gate a trained model; register the bundle."""
    from cloud.training.optimize import optimize_run
    from model_tools.errors import ModelToolsError
    from model_tools.gates import GatePolicy
    from model_tools.pipeline import OptimizeOptions

    try:
        # The policy is read first: a file that does not parse stops the run before any work.
        policy = GatePolicy.load(gates) if gates is not None else GatePolicy()
        options = OptimizeOptions(
            prune_amount=prune, finetune_epochs=finetune_epochs, tflite=tflite, policy=policy
        )
        with _progress_bars() as bars:
            result = optimize_run(
                run_dir, version=version, out_dir=out, options=options, progress=ProgressView(bars)
            )
    except ModelToolsError as e:
        raise _fail(str(e)) from e
    registered: dict[str, Any] | None = None
    if register_bundle:
        try:
            with _client(hub_url, token) as c:
                registered = c.push_bundle(result.bundle_dir)
        except HubError as e:
            raise _fail(
                e, message=f"the bundle in {result.bundle_dir} was built but not registered: {e}"
            ) from e
    if output is Output.json:
        _print_json(
            {
                "bundle_dir": str(result.bundle_dir),
                "manifest": result.manifest.to_dict(),
                "skipped": list(result.skipped),
                "registered": registered,
            }
        )
        return
    _print_outcomes(result)
    for note in result.skipped:
        console.print(f"[yellow]skipped[/] {note}")
    console.print(f"bundle {result.bundle_dir}")
    if registered is not None:
        names = ", ".join(v["variant"] for v in registered["variants"])
        console.print(
            f"registered [bold]{registered['name']}:{registered['version']}[/] with variants {names}"
        )


def _print_outcomes(result: PipelineResult) -> None:
    base = next(o for o in result.outcomes if o.name == result.manifest.baseline)
    # Narrow enough for 80 columns: the variant name already says format and precision.
    table = Table(
        title=f"{result.manifest.name} {result.manifest.version}", box=None, padding=(0, 1), pad_edge=False
    )
    table.add_column("variant", no_wrap=True)
    for name in ("bytes", "x fp32", "accuracy", "Δ pts", "b1 ms", "b32 ms", "gate"):
        table.add_column(name, no_wrap=True, justify="left" if name == "gate" else "right")
    for o in result.outcomes:
        m = o.metrics
        table.add_row(
            o.name,
            str(m.bytes),
            f"{m.bytes / base.metrics.bytes:.2f}",
            f"{m.accuracy:.4f}",
            f"{(m.accuracy - base.metrics.accuracy) * 100:+.2f}",
            f"{m.latency_ms.get(1, float('nan')):.4f}",
            f"{m.latency_ms.get(32, float('nan')):.4f}",
            "[green]published[/]" if o.decision.passed else "[red]kept out[/]",
        )
    console.print(table)
    for o in result.outcomes:
        for reason in o.decision.reasons:
            console.print(f"[red]kept out[/] {o.name}: {reason}")


def models_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name.")],
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Model version, or a unique prefix of it.")
    ],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show a version's variants, the ones its gates kept out, its profile and lineage."""
    bundle = hub_call(hub_url, token, lambda c: c.bundle(name, version))
    if json_out(output, bundle):
        return
    variants = Table(
        "variant",
        "format",
        "precision",
        "bytes",
        "accuracy",
        "b1 ms",
        "runs on",
        title=f"{bundle['name']} {bundle['version']}",
    )
    for v in bundle["variants"]:
        metrics = v.get("metrics") or {}
        latency = (metrics.get("latency_ms") or {}).get("1")
        variants.add_row(
            v["variant"] + (" (baseline)" if v["is_baseline"] else ""),
            v["format"],
            v["precision"],
            str(v["length"]),
            f"{metrics['accuracy']:.4f}" if "accuracy" in metrics else "-",
            f"{latency:.4f}" if latency is not None else "-",
            " or ".join(f"{r['name']}>={r['min_version']}" for r in v["runtimes"]),
        )
    console.print(variants)
    for r in bundle["rejected"]:
        console.print(f"[red]kept out[/] {r['name']}: {'; '.join(r['reasons'])}")
    if bundle.get("experiment_run_id"):
        console.print(f"experiment {bundle['experiment_run_id']}")
    if bundle.get("profile"):
        console.print(
            f"profile sha256 {bundle['profile']['sha256'][:16]}… ({bundle['profile']['length']} bytes)"
        )


@experiments_app.command(
    "ls", epilog=example("fleet experiments ls", "fleet experiments ls --name digits-mlp --limit 10 -o json")
)
def experiments_ls(
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Only runs of this model.")] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=1000, help="At most this many, newest first.")
    ] = 50,
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """List training runs, newest first."""
    rows = hub_call(hub_url, token, lambda c: c.list_experiments(name, limit))
    if json_out(output, rows):
        return
    # Run ids as git shows hashes: the shortest unique prefix, which `experiments show` accepts.
    runs = short_prefixes(r["run_id"] for r in rows)
    columns = [
        Col("run", typed=True),
        Col("model", typed=True),
        Col("seed", justify="right", drop=3),
        Col("test acc", justify="right"),
        Col("device", drop=4),
        Col("ranks", justify="right", drop=5),
        Col("seconds", justify="right", drop=6),
        Col("data", drop=7),
        Col("code", drop=8),
        Col("finished", drop=2),
    ]
    cells = [
        [
            runs[r["run_id"]],
            r["name"],
            str(r["seed"]),
            f"{r['metrics'].get('test_accuracy', float('nan')):.4f}",
            r["device"],
            str(r["world_size"]),
            f"{r['duration_s']:.1f}",
            r["dataset_hash"][:12],
            r["code_revision"][:12],
            str(r["finished_at"]).replace("T", " ")[:16],
        ]
        for r in rows
    ]
    console.print(table(columns, cells))


@experiments_app.command(
    "show", epilog=example("fleet experiments show 4d85a1c2", "fleet experiments show 4d85a1c2 -o json")
)
def experiments_show(
    run_id: Annotated[
        str,
        typer.Argument(metavar="RUN", help="Run id, or a unique prefix (as `fleet experiments ls` shows)."),
    ],
    hub_url: HubUrl = DEFAULT_HUB_URL,
    token: Token = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show one training run: params, metrics, data set, code revision, and the versions it produced."""
    run = hub_call(hub_url, token, lambda c: c.experiment(run_id))
    if json_out(output, run):
        return
    console.print(f"[bold]{run['name']}[/] run {run['run_id']}")
    for key in (
        "kind",
        "seed",
        "device",
        "world_size",
        "duration_s",
        "code_revision",
        "started_at",
        "finished_at",
    ):
        console.print(f"  {key:<14} {run[key]}")
    console.print(
        f"  {'dataset':<14} {run['dataset_name']} sha256 {run['dataset_hash']} {run['dataset_sizes']}"
    )
    console.print(f"  {'params':<14} {json.dumps(run['params'], sort_keys=True)}")
    console.print(f"  {'metrics':<14} {json.dumps(run['metrics'], sort_keys=True)}")
    if not run["versions"]:
        console.print("  no version registered from this run yet")
    for v in run["versions"]:
        console.print(f"  version {v['name']}:{v['version']} variants {', '.join(v['variants'])}")
