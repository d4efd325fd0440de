"""Two ``fleet hub`` processes on one PostgreSQL and one Mosquitto (MQTT 5, shared subscriptions).

Required: each telemetry window is stored once (delivered to one replica only), each scheduled job
runs once per period across both (on the leader; the follower's runs are skipped), and after the
leader is killed with SIGKILL the other replica takes the leadership over and keeps storing. The
killed replica, started again with its data folder (so its client id and its broker session),
stores the windows the broker kept for it meanwhile.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import device_pb2, telemetry_pb2
from tests.integration.cloud.mqtt_probe import Probe, wait_for

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 90
PERIOD_S = 1.0  # every scheduled job's interval here
RENEW_S = 0.5  # the leader's renewal, and a follower's try
DEVICES = 12
WINDOWS = 5
JOBS = ("edgefleet-observe", "edgefleet-tuf-resign")


class HubProcess:
    """A ``fleet hub`` subprocess; its output goes to a log file, and its API address is read from it."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.env = env
        self.log = folder / f"{name}.log"
        self._served = threading.Event()
        self.api_url = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.cli", "hub"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        with self.log.open("ab") as out:
            for line in stream:
                out.write(line)
                out.flush()
                match = re.search(rb"hub serving: API (http://\S+),", line)
                if match:
                    self.api_url = match.group(1).decode()
                    self._served.set()
        self._served.set()  # the process ended: wake whoever waits, who then sees no URL

    def wait_serving(self) -> None:
        if not self._served.wait(START_TIMEOUT_S) or not self.api_url:
            raise AssertionError(f"hub {self.name} did not start; its log ends with:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    @property
    def token(self) -> str:
        # The bootstrap admin token is the first replica's: it lives in the shared database, and a
        # replica that finds one there writes no file of its own.
        return (Path(self.env["EDGEFLEET_TOKEN_FROM"]) / "admin.token").read_text().strip()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = httpx.get(
            f"{self.api_url}/metrics", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        response.raise_for_status()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._reader.join(10)


def _env(name: str, folder: Path, db_url: str, fleet: str, broker: tuple[str, int]) -> dict[str, str]:
    data_dir = folder / name
    data_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(
        EDGEFLEET_DATA_DIR=str(data_dir),
        EDGEFLEET_DATABASE_URL=db_url,
        EDGEFLEET_FLEET=fleet,
        EDGEFLEET_MQTT_HOST=broker[0],
        EDGEFLEET_MQTT_PORT=str(broker[1]),
        EDGEFLEET_MQTT_PROTOCOL="5",
        EDGEFLEET_SHARE_GROUP="edgefleet-hub",
        EDGEFLEET_API_PORT="0",
        EDGEFLEET_GRPC_PORT="0",
        EDGEFLEET_OBSERVE_INTERVAL_S=str(PERIOD_S),
        EDGEFLEET_ROLLOUT_TICK_S=str(PERIOD_S),
        EDGEFLEET_TUF_RESIGN_CHECK_INTERVAL_S=str(PERIOD_S),
        EDGEFLEET_LEADER_RENEW_S=str(RENEW_S),
        # One update repository for the fleet: its keys are shared by the replicas, like its database.
        EDGEFLEET_TUF_KEYS_DIR=str(folder / "keys"),
        EDGEFLEET_TOKEN_FROM=str(folder / "a"),  # read by the test alone
    )
    return env


def _publish_windows(probe: Probe, fleet: str, seqs: range) -> None:
    topics = FleetTopics(fleet)
    start_ms = int(time.time() * 1000) - 3_600_000
    for seq in seqs:
        for d in range(DEVICES):
            device_id = f"dev-{d:02d}"
            batch = telemetry_pb2.TelemetryBatch(device_id=device_id)
            batch.windows.add(
                seq=seq,
                window_start_ms=start_ms + seq * 10_000,
                window_end_ms=start_ms + (seq + 1) * 10_000,
                model_name="digits",
                model_version="1",
                requests=10,
            )
            probe.publish(topics.device(device_id).telemetry, batch.SerializeToString())


def _stored_windows(db_url: str) -> int:
    engine = create_engine(db_url.replace("postgresql+psycopg", "postgresql+psycopg", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM telemetry_window")).scalar_one())
    finally:
        engine.dispose()


def _job_runs(hub: HubProcess, fleet: str) -> dict[str, float]:
    samples = hub.metrics()
    ids = (*JOBS, f"edgefleet-rollout-tick/{fleet}")
    return {j: samples.get(("edgefleet_scheduler_job_runs_total", (("job_id", j),)), 0.0) for j in ids}


def _skips(hub: HubProcess, fleet: str) -> dict[str, float]:
    samples = hub.metrics()
    ids = (*JOBS, f"edgefleet-rollout-tick/{fleet}")
    name = "edgefleet_scheduler_job_follower_skips_total"
    return {j: samples.get((name, (("job_id", j),)), 0.0) for j in ids}


def _stored_by(hub: HubProcess) -> float:
    return hub.value("edgefleet_ingest_records_total", outcome="telemetry_windows")


def test_two_replicas_split_the_work_and_one_carries_on_when_the_other_is_killed(
    schema_url: str, short_tmp: Path, fleet_name: str, mqtt_broker: tuple[str, int]
) -> None:
    hubs: list[HubProcess] = []
    probe = Probe(*mqtt_broker)
    try:
        # One after the other: the first builds the empty database's schema.
        a = HubProcess("a", _env("a", short_tmp, schema_url, fleet_name, mqtt_broker), short_tmp)
        hubs.append(a)
        a.wait_serving()
        wait_for(lambda: a.value("edgefleet_scheduler_leader") == 1.0, timeout=30)
        b = HubProcess("b", _env("b", short_tmp, schema_url, fleet_name, mqtt_broker), short_tmp)
        hubs.append(b)
        b.wait_serving()
        wait_for(lambda: b.value("edgefleet_mqtt_connected") == 1.0, timeout=30)
        assert b.value("edgefleet_scheduler_leader") == 0.0

        # --- each window stored once, by one replica or the other ---------------------------------
        topics = FleetTopics(fleet_name)
        for d in range(DEVICES):
            status = device_pb2.DeviceStatus(
                device_id=f"dev-{d:02d}", fleet=fleet_name, state=device_pb2.DEVICE_STATE_ONLINE
            )
            probe.publish(topics.device(f"dev-{d:02d}").status, status.SerializeToString(), retain=True)
        _publish_windows(probe, fleet_name, range(1, WINDOWS + 1))
        first = DEVICES * WINDOWS
        # Rows in another process's database: nothing to wait on but the count itself.
        wait_for(lambda: _stored_windows(schema_url) == first, timeout=60)
        wait_for(lambda: _stored_by(a) + _stored_by(b) == first, timeout=30)
        assert _stored_by(a) > 0 and _stored_by(b) > 0, "the shared subscription splits the windows"
        for hub in (a, b):
            assert hub.value("edgefleet_ingest_records_total", outcome="duplicates") == 0, hub.tail()

        # --- each scheduled job once per period, on the leader -------------------------------------
        before_a, before_b, started = _job_runs(a, fleet_name), _job_runs(b, fleet_name), time.monotonic()
        wait_for(lambda: min(_skips(b, fleet_name).values()) >= 3, timeout=30)
        after_a, after_b, elapsed = (
            _job_runs(a, fleet_name),
            _job_runs(b, fleet_name),
            time.monotonic() - started,
        )
        assert set(after_b.values()) == {0.0}, f"the follower ran scheduled jobs: {after_b}"
        for job in after_a:
            ran = after_a[job] - before_a[job] + after_b[job] - before_b[job]
            # Once per period, give or take a run at each end of the measured span.
            assert 1 <= ran <= elapsed / PERIOD_S + 2, (job, ran, elapsed)

        # --- the leader killed: the other leads and keeps storing ----------------------------------
        a.kill()
        wait_for(lambda: b.value("edgefleet_scheduler_leader") == 1.0, timeout=30)
        assert "follower -> leader" in b.tail()
        runs = _job_runs(b, fleet_name)
        wait_for(lambda: all(v > runs[j] for j, v in _job_runs(b, fleet_name).items()), timeout=30)
        stored_before = _stored_by(b)
        _publish_windows(probe, fleet_name, range(WINDOWS + 1, 2 * WINDOWS + 1))
        # Mosquitto deals the killed member of the share group its part too, kept in its session.
        wait_for(lambda: _stored_by(b) > stored_before, timeout=30)

        # --- the killed replica back with its session: every window stored, once ------------------
        a = HubProcess("a2", a.env, short_tmp)
        hubs.append(a)
        a.wait_serving()
        wait_for(lambda: _stored_windows(schema_url) == 2 * first, timeout=60)
        assert a.value("edgefleet_scheduler_leader") == 0.0, "the leader stays the one that took over"
        for hub in (a, b):
            assert hub.value("edgefleet_ingest_records_total", outcome="duplicates") == 0, hub.tail()
    finally:
        probe.close()
        for hub in hubs:
            hub.stop()
