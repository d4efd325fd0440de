"""The demo's model step: train with lineage, optimize into a gated bundle, register it, and show
which variant each simulated device received.

The simulated fleet mixes device kinds (``--runtimes-mix``): some run onnxruntime
and LiteRT, some only LiteRT, some only onnxruntime, some only onnxruntime and
prefer fp32. The hub picks
each device's variant from what it reports, so one assignment hands out several
variants of the same version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cloud.client.hub import HubClient

__all__ = ["DemoBundle", "build_and_register", "runtimes_mix_for", "show_variants"]

# Device kinds in turn: both runtimes; LiteRT only; onnxruntime only; onnxruntime preferring fp32.
MIX_WITH_TFLITE = "onnxruntime+litert,litert,onnxruntime,onnxruntime@fp32"
MIX_WITHOUT_TFLITE = "onnxruntime,onnxruntime@fp32"


@dataclass
class DemoBundle:
    """What the demo needs to know about the registered version."""

    name: str
    version: str
    run_id: str
    device: str
    metrics: dict[str, float]
    variants: list[str]
    rejected: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def build_and_register(client: HubClient, kind: str, work: Path, out: Console) -> DemoBundle:
    """Train ``kind`` with lineage, record the run, build the gated bundle and register it."""
    from cloud.training.optimize import optimize_run
    from cloud.training.runs import train_run
    from model_tools.evaluate import LatencyPlan
    from model_tools.pipeline import OptimizeOptions

    started = time.monotonic()
    out.print(f"[bold]train[/]    digits {kind} (PyTorch), data validated first ...")
    record, run_dir = train_run(kind, work / "runs")
    assert run_dir is not None  # a single process is rank 0
    client.record_experiment({k: v for k, v in record.to_dict().items() if k != "validation"})
    out.print(
        f"           test accuracy {record.metrics['test_accuracy']:.3f} on {record.device}, "
        f"{record.duration_s:.1f} s; experiment {record.run_id[:12]} recorded"
    )
    out.print("[bold]optimize[/] export, prune, int8, TFLite, evaluate, gates ...")
    # Fewer timing repeats than the default keep the demo quick; medians stay stable on tiny models.
    plan = LatencyPlan(warmup=10, repeats={1: 150, 32: 50})
    result = optimize_run(run_dir, options=OptimizeOptions(latency=plan))
    registered = client.push_bundle(result.bundle_dir)
    base = next(o for o in result.outcomes if o.name == result.manifest.baseline)
    table = Table(title="bundle variants", box=None, padding=(0, 1), pad_edge=False)
    for column in ("variant", "bytes", "x fp32", "accuracy", "b1 µs", "gate"):
        table.add_column(column, no_wrap=True, justify="left" if column in ("variant", "gate") else "right")
    for o in result.outcomes:
        table.add_row(
            o.name,
            str(o.metrics.bytes),
            f"{o.metrics.bytes / base.metrics.bytes:.2f}",
            f"{o.metrics.accuracy:.3f}",
            f"{o.metrics.latency_ms.get(1, float('nan')) * 1000:.1f}",
            "[green]published[/]" if o.decision.passed else "[red]kept out[/]",
        )
    out.print(table)
    for o in result.outcomes:
        for reason in o.decision.reasons:
            out.print(f"           [red]kept out[/] {o.name}: {reason}")
    for note in result.skipped:
        out.print(f"           [yellow]skipped[/] {note}")
    variants = [v["variant"] for v in registered["variants"]]
    out.print(
        f"[bold]register[/] {registered['name']}:{registered['version']} with variants {', '.join(variants)}"
    )
    return DemoBundle(
        name=registered["name"],
        version=registered["version"],
        run_id=record.run_id,
        device=record.device,
        metrics=dict(record.metrics),
        variants=variants,
        rejected={r["name"]: list(r["reasons"]) for r in registered["rejected"]},
        seconds=time.monotonic() - started,
    )


def runtimes_mix_for(bundle: DemoBundle) -> str:
    """The fleet's device kinds: LiteRT-only devices only when the bundle has a TFLite variant."""
    return MIX_WITH_TFLITE if any(v.startswith("tflite") for v in bundle.variants) else MIX_WITHOUT_TFLITE


def show_variants(client: HubClient, out: Console) -> dict[str, str]:
    """Print which variant each kind of device was given and serves; returns device id -> variant."""
    chosen: dict[str, str] = {}
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for d in client.list_devices():
        desired: dict[str, Any] = d.get("desired_model") or {}
        runtimes = " + ".join(r.split("/")[0] for r in d.get("capabilities", {}).get("runtimes", [])) or "-"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(d.get("labels", {}).items())) or "-"
        variant = desired.get("variant") or "-"
        chosen[d["id"]] = desired.get("variant", "")
        groups.setdefault((runtimes, labels, variant, desired.get("precision") or "-"), []).append(d)
    table = Table(title="variant per device kind", box=None, padding=(0, 1), pad_edge=False)
    for column in ("runtimes", "labels", "variant", "precision", "devices", "serving it"):
        table.add_column(column, no_wrap=True)
    for (runtimes, labels, variant, precision), members in sorted(groups.items()):
        serving = sum(1 for d in members if d.get("in_sync"))
        table.add_row(runtimes, labels, variant, precision, str(len(members)), f"{serving}/{len(members)}")
    out.print(table)
    return chosen
