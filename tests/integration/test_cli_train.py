"""`fleet train`, `fleet models optimize|show`, `fleet experiments ls|show` against a running hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud.cli import app
from cloud.hub import Hub
from cloud.settings import Settings

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=tmp_path / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        yield running


def fleet(hub: Hub, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--hub-url", hub.api_url, "--token", hub.admin_token])
    return result.exit_code, result.stdout, result.stderr


def test_train_optimize_and_query_lineage(hub: Hub, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, out, err = fleet(
        hub, "train", "--model", "mlp", "--epochs", "20", "--runs-dir", str(runs), "-o", "json"
    )
    assert code == 0, err
    trained = json.loads(out)
    run_id, run_dir = trained["run_id"], Path(trained["run_dir"])
    assert trained["registered"] is True and run_dir.parent == runs
    assert "train" in err  # the progress bar went to stderr, stdout is one JSON document

    code, out, _ = fleet(hub, "experiments", "ls", "-o", "json")
    assert [r["run_id"] for r in json.loads(out)] == [run_id]

    # A gate policy that does not parse stops the run before any work, and registers nothing.
    bad = tmp_path / "bad.toml"
    bad.write_text("[gates]\nmax_accuracy_drop = 2\n")
    code, out, err = fleet(hub, "models", "optimize", str(run_dir), "--gates", str(bad))
    assert code == 1 and "unknown keys ['max_accuracy_drop']" in err
    assert not (run_dir / "bundles").exists()

    gates = tmp_path / "gates.toml"
    gates.write_text("[gates]\nmax_accuracy_drop_points = 1.0\nmax_latency_increase_pct = 100000\n")
    code, out, err = fleet(
        hub,
        "models",
        "optimize",
        str(run_dir),
        "--version",
        "1.0.0",
        "--gates",
        str(gates),
        "--no-tflite",
        "-o",
        "json",
    )
    assert code == 0, err
    optimized = json.loads(out)
    assert optimized["skipped"] == ["TFLite: turned off"]
    assert [v["variant"] for v in optimized["registered"]["variants"]] == [
        "fp32",
        "fp32-pruned",
        "int8-dynamic",
    ]
    assert "calibrate" not in err and "prune fine-tune" in err and "evaluate" in err
    assert Path(optimized["bundle_dir"]) == run_dir / "bundles" / "1.0.0"

    code, out, _ = fleet(hub, "models", "show", "digits-mlp", "1.0.0", "-o", "json")
    shown = json.loads(out)
    assert shown["experiment_run_id"] == run_id and shown["profile"]["length"] > 0

    code, out, _ = fleet(hub, "experiments", "show", run_id)
    assert code == 0
    assert "version digits-mlp:1.0.0 variants fp32, fp32-pruned, int8-dynamic" in out
    assert f"run {run_id}" in out

    code, out, _ = fleet(hub, "models", "show", "digits-mlp", "1.0.0")
    assert code == 0 and "int8-dynamic" in out and "(baseline)" in out

    code, out, err = fleet(hub, "experiments", "show", "0123456789ab")
    assert code == 3 and "404" in err
