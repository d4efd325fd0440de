"""`fleet demo` on a machine without a broker: it falls back to the embedded amqtt broker and
its whole output stays clean — no traceback from the broker while the devices connect at
once, and no exception left unretrieved by the devices' MQTT clients when they stop.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Enough devices that their first connects overlap inside the broker.
DEVICES = 8
DEMO_TIMEOUT_S = 600

UNCLEAN = ("Traceback", "Future exception was never retrieved", "Task exception was never retrieved")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_falls_back_to_the_embedded_broker_and_prints_no_tracebacks(short_tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["COLUMNS"] = "200"  # rich wraps at the terminal's width; the summary line is checked whole
    port = _closed_port()
    result = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "demo", "--devices", str(DEVICES), "--mqtt-port", str(port)],
        env=env,
        cwd=short_tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output[-4000:]
    assert "embedded amqtt broker" in output, output[-4000:]
    for bad in UNCLEAN:
        assert bad not in output, output
    lines = output.strip().splitlines()
    # The demo's summary, then only the simulated fleet's own closing line as it stops.
    last = lines[-2] if lines[-1].startswith("traffic: ") else lines[-1]
    assert last.startswith("ok ") and f"{DEVICES}/{DEVICES} devices serve the pushed model" in last, output
