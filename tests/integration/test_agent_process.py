"""The real agent program, started from its config file as on a device.

It connects to the real Mosquitto, announces itself with a retained birth message, answers on its
local Unix socket, stops cleanly on SIGTERM with an OFFLINE status, and never loads the hub's
heavy dependencies (torch, FastAPI, SQL) while doing so.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from edgefleet_proto.topics import DeviceTopics
from edgefleet_proto.v1 import device_pb2, inference_pb2, inference_pb2_grpc
from tests.integration.cloud.mqtt_probe import Probe

pytestmark = pytest.mark.integration

FORBIDDEN = ("torch", "fastapi", "sqlmodel", "sqlalchemy", "sklearn", "starlette", "uvicorn")

# Runs the console-script entry point and records every module loaded by the time it exits.
WRAPPER = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from edge_agent.cli import main
sys.argv[0] = "edgefleet-agent"
main()
"""


def next_status(probe: Probe, topic: str) -> device_pb2.DeviceStatus:
    while True:
        msg = probe.next_message(timeout=20)
        if msg.topic == topic and msg.payload:
            return device_pb2.DeviceStatus.FromString(msg.payload)


def test_agent_process_lifecycle(mqtt_broker: tuple[str, int], fleet_name: str, short_tmp: Path) -> None:
    host, port = mqtt_broker
    state_dir = short_tmp / "state"
    config = short_tmp / "agent.toml"
    config.write_text(
        f'device_id = "proc-1"\nfleet = "{fleet_name}"\nstate_dir = "{state_dir}"\n'
        f'[labels]\nsite = "lab"\n[mqtt]\nhost = "{host}"\nport = {port}\n',
        encoding="utf-8",
    )
    modules_file = short_tmp / "modules.json"
    topics = DeviceTopics(fleet_name, "proc-1")
    probe = Probe(host, port)
    probe.subscribe(topics.status)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(modules_file), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        birth = next_status(probe, topics.status)
        assert birth.state == device_pb2.DEVICE_STATE_ONLINE
        assert birth.device_id == "proc-1"
        assert dict(birth.labels) == {"site": "lab"}
        assert any(r.startswith("onnxruntime/") for r in birth.capabilities.runtimes)
        assert birth.capabilities.disk_free_bytes > 0

        with grpc.insecure_channel(f"unix:{state_dir / 'agent.sock'}") as channel:
            info = inference_pb2_grpc.InferenceServiceStub(channel).Info(
                inference_pb2.InfoRequest(), timeout=10
            )
        assert info.device_id == "proc-1"
        assert not info.HasField("model")

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        death = next_status(probe, topics.status)
        assert death.state == device_pb2.DEVICE_STATE_OFFLINE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        probe.publish(topics.status, b"", retain=True)
        probe.close()

    loaded = json.loads(modules_file.read_text())
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert heavy == [], f"the running agent loaded hub-only modules: {heavy[:10]}"
    assert "grpc" in loaded and "aiomqtt" in loaded
