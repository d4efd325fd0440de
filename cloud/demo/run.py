"""`fleet demo`: the whole path on one machine.

A hub (SQLite, local artifact folder), a broker (the local Mosquitto when it
answers, else an embedded one), a model trained and exported to ONNX, pushed
through the HTTP API, a simulated fleet of real agents in a child process with
labels and cohorts, a staged rollout of the model, predictions through the devices'
local API, the signed channel, a bad version that a rollout's gates stop at its canary, and a
cohort whose inputs drift: its alert fires and triggers the retraining of a challenger.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from cloud.client.hub import HubClient
from cloud.demo.rollout import (
    create_cohorts,
    label_mix,
    print_transitions,
    run_good_rollout,
    start_bad_rollout,
    wait_rollout,
)
from cloud.transport.broker import BrokerError, BrokerHandle, ensure_broker
from cloud.transport.retained import clear_fleet_retained
from edgefleet_proto.v1 import common_pb2, inference_pb2, inference_pb2_grpc

T = TypeVar("T")


class DemoError(RuntimeError):
    """The demo could not complete; the message says which step and why."""


@dataclass
class FleetProcess:
    proc: subprocess.Popen[str]
    sockets: dict[str, str]
    lines: queue.Queue[str]

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        event.wait(interval)  # a pause between polls of external state, not a wait for an event


# A device that takes no traffic keeps a new version once its trial window has passed without
# evidence against it; the demo shortens the window so the rollout converges in seconds. The bad
# version's devices take traffic at once and trip a gate well inside it.
DEMO_TRIAL_WINDOW_S = 8.0
# Rollup buckets and the observe cycle of the demo's hub (300 s and 30 s by default).
DEMO_BUCKET_S = 10
DEMO_OBSERVE_S = 5.0


def demo_training() -> Any:
    """Retraining small enough for the demo: a third of the epochs, no TFLite, short latency timing."""
    from cloud.training.continuous.pipeline import PipelineConfig
    from model_tools.evaluate import LatencyPlan
    from model_tools.pipeline import OptimizeOptions

    plan = LatencyPlan(warmup=5, repeats={1: 50, 32: 20})
    return PipelineConfig(epochs=20, optimize=OptimizeOptions(tflite=False, finetune_epochs=2, latency=plan))


def start_fleet(
    *,
    devices: int,
    fleet: str,
    broker: BrokerHandle,
    grpc_endpoint: str,
    state_root: Path,
    local_api_devices: int,
    telemetry_interval: float,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> FleetProcess:
    argv = [
        sys.executable, "-m", "edge_agent.cli", "simulate",
        "--devices", str(devices), "--fleet", fleet,
        "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--mqtt-protocol", broker.protocol,
        "--grpc-endpoint", grpc_endpoint, "--state-root", str(state_root),
        "--local-api-devices", str(local_api_devices), "--telemetry-interval", str(telemetry_interval),
        *extra_args,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, name="fleet-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            proc.kill()
            raise DemoError(f"the simulated fleet did not report ready (exit code {proc.poll()})")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and msg.get("event") == "ready":
                return FleetProcess(proc, dict(msg.get("sockets", {})), lines)


def predict_via_local_api(socket_path: str, x: np.ndarray, timeout: float = 10.0) -> tuple[np.ndarray, str]:
    """Call a device's local InferenceService over its Unix socket; returns (output, model version)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    tensor = common_pb2.Tensor(dtype="float32", shape=list(x.shape), data=x.tobytes())
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.Predict(inference_pb2.PredictRequest(inputs={"": tensor}), timeout=timeout)
    out = next(iter(reply.outputs.values()))
    arr = np.frombuffer(out.data, dtype=np.dtype(out.dtype)).reshape(tuple(out.shape))
    return arr, reply.model.version


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    # Short, because Unix socket paths must stay under ~100 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="efdemo-", dir="/tmp"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_demo(
    *,
    devices: int = 20,
    model_kind: str = "mlp",
    workdir: Path | None = None,
    timeout: float = 120.0,
    console: Console | None = None,
    broker: BrokerHandle | None = None,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
) -> dict[str, Any]:
    """Run the demo; returns the summary it printed. Raises DemoError on any failed step.

    ``broker``: use this one; else the broker at ``mqtt_host:mqtt_port`` when it answers MQTT,
    else an embedded one started for the demo.
    """
    from cloud.demo.bundle import build_and_register, runtimes_mix_for, show_variants
    from cloud.demo.drift import TRAFFIC_ARGS, run_drift_step
    from cloud.hub import Hub
    from cloud.settings import Settings
    from model_tools.data import write_traffic_npz

    out = console or Console()
    t0 = time.monotonic()
    fleet = f"demo-{uuid.uuid4().hex[:8]}"
    # The work folder goes last: the hub and the fleet stop before their files are removed.
    with _workdir(workdir) as work, contextlib.ExitStack() as stack:
        if broker is None:
            try:
                broker = ensure_broker(mqtt_host, mqtt_port)
            except BrokerError as e:
                raise DemoError(str(e)) from e
            stack.callback(broker.stop)
        out.print(f"[bold]broker[/]   {broker.description}")

        settings = Settings(
            data_dir=work / "hub",
            fleet=fleet,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            mqtt_protocol=broker.protocol,
            api_port=0,
            grpc_port=0,
            # Small buckets and a short cycle: the drift step shows an alert within seconds.
            rollup_bucket_s=DEMO_BUCKET_S,
            observe_interval_s=DEMO_OBSERVE_S,
        )
        hub = Hub(settings, training=demo_training())
        hub.start()
        stack.callback(hub.stop)
        out.print(f"[bold]hub[/]      API {hub.api_url}, artifacts gRPC {hub.grpc_endpoint}, fleet {fleet}")
        # Printed before the slow steps, so the rollouts can be watched live as they happen.
        from cloud.demo.dashboard import dashboard_login

        try:
            dashboard = dashboard_login(hub.api_url, hub.admin_token)
        except RuntimeError as e:
            raise DemoError(f"the dashboard's login token: {e}") from e
        out.print(
            f"[bold]dashboard[/] {dashboard.url}  log in with this {dashboard.role} token "
            f"(for a day): {dashboard.token}"
        )

        client = stack.enter_context(HubClient(hub.api_url, hub.admin_token))
        # Devices are provisioned with the fleet's root: every update they take verifies against it.
        from cloud.demo.signing import fleet_args, provision_root, run_signing_step

        assert hub.context is not None and hub.context.signing is not None
        root_file = provision_root(hub.context.signing.repo.root_bytes(), work)
        # Train with lineage, optimize into a gated bundle of variants, register it (cloud.demo.bundle).
        trained = build_and_register(client, model_kind, work, out)

        fleet_proc = start_fleet(
            devices=devices,
            fleet=fleet,
            broker=broker,
            grpc_endpoint=hub.grpc_endpoint,
            state_root=work / "fleet",
            local_api_devices=min(3, devices),
            telemetry_interval=1.0,
            extra_args=[
                "--runtimes-mix", runtimes_mix_for(trained),
                "--label-mix", label_mix(devices, min(3, devices)),
                "--trial-window", f"{DEMO_TRIAL_WINDOW_S:g}",
                "--traffic-data", str(write_traffic_npz(work / "traffic" / "digits.npz")),
                *TRAFFIC_ARGS,
                *fleet_args(root_file, hub.api_url),
            ],
        )  # fmt: skip
        stack.callback(lambda: clear_fleet_retained(broker.host, broker.port, fleet, broker.protocol))
        stack.callback(fleet_proc.stop)

        def all_online() -> list[dict[str, Any]] | None:
            ds = client.list_devices(state="online")
            return ds if len(ds) >= devices else None

        online = wait_for(f"{devices} devices online", all_online, timeout)
        out.print(f"[bold]fleet[/]    {len(online)} simulated devices online")

        ids = sorted(d["id"] for d in online)
        canary = {d["id"] for d in online if d.get("labels", {}).get("ring") == "canary"}
        cohorts = create_cohorts(client, out)

        # (a) The trained version goes out in stages: canary, eu, everyone, judged by the gates.
        t_assign = time.monotonic()
        good = run_good_rollout(
            client, trained.name, trained.version, out, cohorts=cohorts, devices=devices, timeout=timeout
        )

        def all_in_sync() -> list[dict[str, Any]] | None:
            ds = client.list_devices()
            synced = [d for d in ds if d.get("in_sync")]
            return ds if len(synced) >= devices else None

        converged = wait_for("every device to serve the model", all_in_sync, timeout)
        rollout_s = time.monotonic() - t_assign
        out.print(
            f"[bold]rollout[/]  all {devices} devices serve and committed {trained.version} after "
            f"{rollout_s:.1f} s (an idle device keeps a new version after its trial window: "
            f"{DEMO_TRIAL_WINDOW_S:g} s in this demo, 60 s by default)"
        )
        variant_of = show_variants(client, out)

        from model_tools.data import load_digits_splits

        splits = load_digits_splits(seed=0)
        samples = splits.x_test[:8]
        labels = splits.y_test[:8]
        pred_rows = []
        for device_id, sock in sorted(fleet_proc.sockets.items()):
            logits, version = predict_via_local_api(sock, samples)
            predicted = logits.argmax(axis=1)
            pred_rows.append((device_id, version, predicted, int((predicted == labels).sum())))
            if version != trained.version:
                raise DemoError(f"{device_id} answered with model {version}, expected {trained.version}")

        def telemetry_seen() -> list[dict[str, Any]] | None:
            seen = []
            for device_id, *_ in pred_rows:
                windows = client.device_telemetry(device_id, limit=50)
                served = sum(int(w.get("requests", 0)) for w in windows)
                if served <= 0:
                    return None
                seen.append({"device": device_id, "requests": served})
            return seen

        telemetry = wait_for("telemetry from the devices that served predictions", telemetry_seen, 30.0)

        table = Table(
            "device", "model version", "predicted (8 test digits)", "correct", title="local API predictions"
        )
        for device_id, version, predicted, correct in pred_rows:
            table.add_row(device_id, version, " ".join(map(str, predicted.tolist())), f"{correct}/8")
        out.print(table)
        out.print(f"           true labels: {' '.join(map(str, labels.tolist()))}")
        for t in telemetry:
            out.print(f"[bold]telemetry[/] {t['device']} reported {t['requests']} request(s) to the hub")

        # The signed channel: rotate the targets key mid-demo, refuse a forgery, ship firmware as a delta.
        signed = run_signing_step(
            client=client,
            api_url=hub.api_url,
            token=hub.admin_token,
            broker=broker,
            fleet=fleet,
            device_ids=ids,
            out=out,
            timeout=timeout,
        )

        # (b) A bad version: a rollout offers it to the canary, whose devices take traffic and roll it
        # back on their own; the rollout's gates stop it there and the engine rolls it back.
        from cloud.demo.rollback import run_rollback_step

        bad_id: list[str] = []

        def offer_bad(version: str, _targets: list[str]) -> str:
            rollout_id, line = start_bad_rollout(client, trained.name, version)
            bad_id.append(rollout_id)
            return line

        rollback = run_rollback_step(
            client=client,
            name=trained.name,
            good_version=trained.version,
            sockets=fleet_proc.sockets,
            samples=splits.x_test,
            workdir=work,
            out=out,
            timeout=timeout,
            only=canary,
            offer=offer_bad,
        )
        bad = wait_rollout(
            client,
            bad_id[0],
            out,
            until=lambda v: v["state"] == "rolled_back",
            what="rolled back by its gates",
            timeout=timeout,
        )
        offered = _offered(bad)
        out.print(
            f"[bold green]stopped[/]  rollout {bad['name']} ended {bad['state']} at its canary: "
            f"{offered} device(s) were offered it and given {trained.version} back; the other "
            f"{devices - offered} never were"
        )
        print_transitions(out, [good, bad])

        # (c) One cohort's inputs drift: its alert fires; the retraining it triggers registers a challenger.
        drift = run_drift_step(
            client=client,
            token=hub.admin_token,
            hub=hub,
            fleet_proc=fleet_proc,
            model=trained.name,
            out=out,
            timeout=timeout,
        )
        summary = {
            "fleet": fleet,
            "broker": broker.description,
            "dashboard": dashboard.url,
            "model": f"{trained.name}:{trained.version}",
            "devices": devices,
            "in_sync": sum(1 for d in converged if d.get("in_sync")),
            "rollout_seconds": round(rollout_s, 2),
            "test_accuracy": trained.metrics["test_accuracy"],
            "rollback": rollback,
            "cohorts": cohorts,
            "rollouts": {"good": _outcome(good), "bad": _outcome(bad)},
            "signing": signed,
            "variants": variant_of,
            "drift": drift,
            "total_seconds": round(time.monotonic() - t0, 1),
        }
        out.print(
            f"[bold green]ok[/]       {summary['in_sync']}/{devices} devices serve the pushed model; "
            f"demo took {summary['total_seconds']} s"
        )
        return summary


def _offered(view: dict[str, Any]) -> int:
    """How many devices a rollout offered its target to, over all its stages."""
    return sum(int(s["devices"]) - int(s["by_state"].get("pending", 0)) for s in view["stage_detail"])


def _outcome(view: dict[str, Any]) -> dict[str, Any]:
    """What the summary keeps of a rollout: how it ended, where, and every step with its reason."""
    return {
        "id": view["id"],
        "name": view["name"],
        "state": view["state"],
        "stage": view["stage_detail"][view["stage"]]["name"],
        "offered": {s["name"]: s["devices"] - s["by_state"].get("pending", 0) for s in view["stage_detail"]},
        "transitions": [
            {k: t[k] for k in ("from_state", "to_state", "event", "stage", "actor", "reason")}
            for t in view["transitions"]
        ],
    }
