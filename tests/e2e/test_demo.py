"""The demo path end to end: hub, real broker, training, push, a fleet of real agents, predictions.

These run the same code as `fleet demo`, against the real Mosquitto and against the embedded
amqtt broker (MQTT 3.1.1), with real onnxruntime, real files and a SQLite hub database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cloud.demo.run import run_demo
from cloud.transport.broker import BrokerHandle, start_embedded_broker

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_demo_with_mosquitto(mqtt_broker: tuple[str, int], short_tmp: Path) -> None:
    host, port = mqtt_broker
    console = Console(record=True, width=160)
    summary = run_demo(
        devices=6,
        workdir=short_tmp,
        timeout=90,
        console=console,
        broker=BrokerHandle(host, port, "5", embedded=False),
    )
    assert summary["devices"] == 6
    assert summary["in_sync"] == 6
    assert summary["test_accuracy"] >= 0.9
    text = console.export_text()
    assert "local API predictions" in text
    assert "6/6 devices serve the pushed model" in text
    # The bad version: every device that tried it rolled it back on its own, and no request failed.
    rollback = summary["rollback"]
    assert rollback["devices"] >= 1 and rollback["rolled_back"] == rollback["devices"]
    # It answers one class: the divergence gate catches it. Under the fleet's own traffic on a busy
    # 2-core machine its p95 may first pass twice the previous version's, which rolls it back as well.
    assert rollback["failed_requests"] == 0 and set(rollback["gates"]) <= {"divergence", "latency_ratio"}
    assert "rollbacks the hub recorded" in text and "does not offer" in text
    # Cohorts by label: one device of six is the canary, three are in eu.
    assert summary["cohorts"] == {"canary": 1, "eu": 3}
    good, bad = summary["rollouts"]["good"], summary["rollouts"]["bad"]
    # (a) The good version went canary -> eu -> everyone, every stage judged by the gates, to all six.
    assert good["state"] == "completed" and good["offered"] == {"canary": 1, "eu": 2, "everyone": 3}
    chain = [(t["event"], t["stage"]) for t in good["transitions"]]
    assert chain == [("start", 0), ("stage_offered", 0), ("baked", 0),
                     ("promoted", 1), ("stage_offered", 1), ("baked", 1),
                     ("promoted", 2), ("stage_offered", 2), ("baked", 2), ("promoted_last", 2)]  # fmt: skip
    assert "bake 3 s each in this demo" in text
    # (b) The bad version's gates stopped it at its canary: rolled back there, never offered to the rest.
    assert bad["state"] == "rolled_back" and bad["stage"] == "canary"
    assert bad["offered"] == {"canary": rollback["devices"], "everyone": 0}
    events = [t["event"] for t in bad["transitions"]]
    assert events == ["start", "stage_offered", "gates_failed_abort", "rolled_back"], events
    failed = bad["transitions"][2]
    assert failed["actor"] == "system"
    assert "rollbacks" in failed["reason"] and "threshold 5%" in failed["reason"]
    assert f"rollout {bad['name']}: rolled_back" in text and f"rollout {good['name']}: completed" in text
    # (c) The us cohort's inputs drifted: its alert fired, no other cohort's did, and the drift alert
    # triggered a retraining run that registered a challenger.
    drift = summary["drift"]
    assert drift["alert_cohorts"] == ["us"], drift
    assert drift["shifted_devices"] == 3
    calm = [v for k, v in drift["drift"].items() if k in ("eu", "canary") and v is not None]
    assert calm and drift["drift"]["us"] > 1 > max(calm), drift["drift"]
    run = drift["training"]
    assert run["trigger"] == "drift" and run["state"] in ("succeeded", "awaiting_approval"), run
    assert run["challenger"] not in ("-", run["champion"])
    assert "drift per cohort" in text and "cohort-drift firing for cohort(s) us" in text


def test_demo_with_embedded_broker(short_tmp: Path) -> None:
    broker = start_embedded_broker()
    try:
        summary = run_demo(
            devices=3, workdir=short_tmp, timeout=90, console=Console(quiet=True), broker=broker
        )
    finally:
        broker.stop()
    assert summary["in_sync"] == 3
    assert "embedded" in summary["broker"]
    assert summary["rollback"]["rolled_back"] == summary["rollback"]["devices"]
    assert summary["rollouts"]["good"]["state"] == "completed"
    assert summary["rollouts"]["bad"]["state"] == "rolled_back"
    assert summary["drift"]["alert_cohorts"] == ["us"]
    assert summary["drift"]["training"]["trigger"] == "drift"
