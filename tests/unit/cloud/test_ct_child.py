"""Training runs in a process of their own: its pid, its priority, its secrets, its death and its stop.

The base data of these runs is loaded through a socket the test listens on: the training process
connects, sends its pid, and waits until the test closes the connection (or kills it, or the worker
stops it). So each test knows the process is mid-run, in the step "reading the data", without
sleeping or polling.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from cloud.context import HubContext
from cloud.db import transaction
from cloud.settings import Settings
from cloud.training.continuous import service
from cloud.training.continuous.child import (
    LOG_NAME,
    NICE,
    PID_LINE,
    child_env,
    describe_exit,
    load_settings,
    log_tail,
)
from cloud.training.continuous.machine import RunEvent
from cloud.training.continuous.pipeline import PipelineConfig, TrainingWorker, run_pending, work_dir
from cloud.training.continuous.service import SYSTEM, TrainingRunRecord, lock_run, record_transition
from model_tools.data import DigitsSplits
from tests.unit.cloud.ct_helpers import FLEET, register, serve, weak_champion
from tests.unit.cloud.test_ct_pipeline import CONFIG, small_digits

OWNER = "hub-a"
# Starting a training process imports torch, onnx and the hub: slow on a busy machine.
START_S = 180.0
SECRET = "not-on-the-command-line"
STOPPED = "the hub stopped while the run was reading the data; start it again"


# --- base data loaders that run inside the training process (module level: they are pickled) -------


def _report_pid(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(f"{os.getpid()}\n".encode())
    return conn


@dataclass(frozen=True)
class HeldData:
    """Sends the process's pid to the test, then waits until the test closes the connection."""

    port: int
    ignore_sigterm: bool = False

    def __call__(self, seed: int) -> DigitsSplits:
        if self.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with _report_pid(self.port) as conn:
            conn.recv(1)
        return small_digits(seed)


@dataclass(frozen=True)
class CrashingData:
    """Sends the pid, says why on stderr and exits at once, as a native crash would: nothing recorded."""

    port: int

    def __call__(self, seed: int) -> DigitsSplits:
        with _report_pid(self.port) as conn:
            conn.recv(1)
        print("the loader lost its disk", file=sys.stderr, flush=True)
        os._exit(3)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(START_S)
        yield server


@pytest.fixture
def queued(ctx: HubContext) -> str:
    with ctx.sessions() as s:
        version = register(s, ctx.store, weak_champion(), clock=ctx.clock)
        serve(s, version, ["d1", "d2"], ctx.clock())
        return service.start_manual(s, FLEET, "digits-mlp", actor="ops", clock=ctx.clock).id


@pytest.fixture
def make_worker(ctx: HubContext) -> Iterator[Callable[..., TrainingWorker]]:
    made: list[TrainingWorker] = []

    def make(config: PipelineConfig, **kwargs: float) -> TrainingWorker:
        worker = TrainingWorker(ctx, config=config, owner=OWNER, **kwargs)
        made.append(worker)
        return worker

    yield make
    for worker in made:  # no training process outlives its test
        worker.stop(timeout=30)


def _started(worker: TrainingWorker, listener: socket.socket, run_id: str) -> tuple[int, socket.socket]:
    """Start the queued run; the pid its process reports once it is reading the data, and the link."""
    started = worker.start_pending()
    assert started is not None and started.id == run_id
    conn, _ = listener.accept()
    conn.settimeout(START_S)
    pid = int(conn.makefile().readline())
    return pid, conn


def _ended(worker: TrainingWorker) -> TrainingRunRecord:
    assert worker.wait_idle(timeout=START_S)
    (run,) = worker.finished
    assert not worker.busy and worker.pid is None
    return run


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- the process ------------------------------------------------------------------------------------


def test_a_run_trains_in_a_process_of_its_own_at_a_lower_priority_with_its_secrets_off_the_command_line(
    ctx: HubContext, queued: str, listener: socket.socket, make_worker: Callable[..., TrainingWorker]
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"mqtt_password": SecretStr(SECRET)})
    worker = make_worker(replace(CONFIG, base_data=HeldData(listener.getsockname()[1])))

    pid, conn = _started(worker, listener, queued)

    assert pid != os.getpid() and pid == worker.pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(os.getpriority(os.PRIO_PROCESS, 0) + NICE, 19)
    proc = Path(f"/proc/{pid}")
    assert SECRET.encode() not in (proc / "cmdline").read_bytes()
    assert f"EDGEFLEET_MQTT_PASSWORD={SECRET}".encode() in (proc / "environ").read_bytes().split(b"\0")
    conn.close()  # the data arrives: the run goes on to its end in that process

    run = _ended(worker)
    assert (run.state, run.decision, run.error) == ("awaiting_approval", "promote", "")
    log_text = (work_dir(ctx, run.id) / LOG_NAME).read_text("utf-8")
    assert PID_LINE.format(run=run.id, pid=pid, parent=os.getpid()) in log_text
    assert f"training run {run.id} is awaiting_approval" in log_text
    assert SECRET not in log_text
    assert _gone(pid)


def test_a_training_process_killed_mid_run_fails_the_run_naming_the_signal(
    ctx: HubContext, queued: str, listener: socket.socket, make_worker: Callable[..., TrainingWorker]
) -> None:
    worker = make_worker(replace(CONFIG, base_data=HeldData(listener.getsockname()[1])))
    pid, conn = _started(worker, listener, queued)

    os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    run = _ended(worker)
    conn.close()

    assert (run.state, run.step, run.owner) == ("failed", "", "")
    assert run.error.startswith(
        f"the training process (pid {pid}) was killed by signal SIGKILL while reading the data "
        "(the kernel sends it when memory runs out, see `dmesg`; or someone killed it); the end of its log "
    )
    assert PID_LINE.format(run=run.id, pid=pid, parent=os.getpid()) in run.error  # the log's last lines
    assert run.transitions[-1]["reason"] == run.error


def test_a_training_process_that_exits_without_saying_why_leaves_its_last_output_in_the_error(
    ctx: HubContext, queued: str, listener: socket.socket, make_worker: Callable[..., TrainingWorker]
) -> None:
    worker = make_worker(replace(CONFIG, base_data=CrashingData(listener.getsockname()[1])))
    pid, conn = _started(worker, listener, queued)
    conn.close()

    run = _ended(worker)

    assert run.state == "failed"
    log_path = work_dir(ctx, run.id) / LOG_NAME
    assert run.error.startswith(
        f"the training process (pid {pid}) exited with status 3 while reading the data without recording "
        f"why; the end of its log {log_path}:\n"
    )
    assert run.error.endswith("\nthe loader lost its disk")


def test_stop_terminates_the_training_process_and_fails_the_run(
    ctx: HubContext, queued: str, listener: socket.socket, make_worker: Callable[..., TrainingWorker]
) -> None:
    worker = make_worker(replace(CONFIG, base_data=HeldData(listener.getsockname()[1])))
    pid, conn = _started(worker, listener, queued)

    worker.stop(timeout=60)
    conn.close()

    run = _ended(worker)
    assert (run.state, run.error) == (
        "failed",
        "the hub stopped while the run was reading the data; start it again",
    )
    assert _gone(pid)
    log_text = (work_dir(ctx, run.id) / LOG_NAME).read_text("utf-8")
    assert f"training process {pid}: stopped by the hub (SIGTERM)" in log_text  # it ended on SIGTERM
    assert worker.start_pending() is None  # a stopped worker claims nothing more


def test_a_training_process_that_ignores_sigterm_is_killed_after_the_grace_period(
    ctx: HubContext, queued: str, listener: socket.socket, make_worker: Callable[..., TrainingWorker]
) -> None:
    port = listener.getsockname()[1]
    worker = make_worker(replace(CONFIG, base_data=HeldData(port, ignore_sigterm=True)), stop_grace_s=1.0)
    pid, conn = _started(worker, listener, queued)

    worker.stop(timeout=60)
    conn.close()

    run = _ended(worker)
    assert (run.state, run.error) == (
        "failed",
        "the hub stopped while the run was reading the data; start it again",
    )
    assert _gone(pid)
    assert "stopped by the hub" not in (work_dir(ctx, run.id) / LOG_NAME).read_text("utf-8")


def test_a_configuration_that_cannot_reach_the_training_process_is_refused_with_what_to_change(
    ctx: HubContext,
) -> None:
    config = replace(CONFIG, base_data=lambda seed: small_digits(seed))
    with pytest.raises(TypeError, match=r"must be picklable to reach the training process .*not lambdas"):
        TrainingWorker(ctx, config=config, owner=OWNER)


@dataclass
class FakeChild:
    """A fake of ChildProcess for settling a run without starting a process: only what _settle reads."""

    run_id: str
    pid: int = 4242

    def failure(self, returncode: int, step: str) -> str:
        return describe_exit(returncode, pid=self.pid, step=step)


def test_a_process_that_dies_between_approving_and_rolling_out_fails_the_run(
    ctx: HubContext, queued: str
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"ct_policy": "canary"})
    worker = TrainingWorker(ctx, config=CONFIG, owner=OWNER)
    assert run_pending(ctx.sessions, fleet=FLEET, now=ctx.clock(), owner=OWNER) is not None
    with transaction(ctx.sessions) as s:  # as the process leaves it when killed in that instant
        row = lock_run(s, queued)
        assert row is not None
        record_transition(s, row, RunEvent.PROMOTE, actor=SYSTEM, now=ctx.clock(), reason="it beats")

    run = worker._settle(FakeChild(queued), -signal.SIGKILL)  # type: ignore[arg-type]

    assert (run.state, run.transitions[-1]["event"]) == ("failed", "rollout_failed")
    assert run.error.startswith(
        "the training process (pid 4242) was killed by signal SIGKILL while starting the canary rollout"
    )


# --- the pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "step", "expected"),
    [
        (-signal.SIGKILL, "training", "was killed by signal SIGKILL while training (the kernel sends it "
         "when memory runs out, see `dmesg`; or someone killed it)"),
        (-signal.SIGSEGV, "optimizing", "was killed by signal SIGSEGV while optimizing"),
        (-signal.SIGTERM, "", "was killed by signal SIGTERM while starting"),
        (1, "evaluating", "exited with status 1 while evaluating without recording why"),
        (0, "registering", "ended while registering without recording the run's outcome"),
    ],
)  # fmt: skip
def test_an_exit_is_told_in_a_sentence_naming_the_status_or_signal(
    returncode: int, step: str, expected: str
) -> None:
    assert describe_exit(returncode, pid=42, step=step) == f"the training process (pid 42) {expected}"


def test_the_log_tail_is_its_last_non_empty_lines(tmp_path: Path) -> None:
    path = tmp_path / LOG_NAME
    path.write_text("".join(f"line {i}\n\n" for i in range(20)), "utf-8")
    assert log_tail(path, lines=3) == "line 17\nline 18\nline 19"
    assert log_tail(path, lines=3, chars=10) == "18\nline 19"
    assert log_tail(tmp_path / "missing.log") == ""


def test_settings_cross_as_json_with_their_secrets_in_the_environment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, fleet="north", mqtt_password=SecretStr(SECRET), ct_policy="canary")
    # The hub's own environment may name a secret its settings do not have: the child must not get it.
    env = child_env(settings, {"PATH": "/bin", "EDGEFLEET_ALERT_WEBHOOK_SECRET": "stale"})
    assert env["EDGEFLEET_MQTT_PASSWORD"] == SECRET and "EDGEFLEET_ALERT_WEBHOOK_SECRET" not in env
    assert env["PATH"] == "/bin"

    text = settings.model_dump_json()
    assert SECRET not in text
    rebuilt = load_settings(text, env)
    assert rebuilt == settings
    assert rebuilt.mqtt_password is not None and rebuilt.mqtt_password.get_secret_value() == SECRET
    assert re.fullmatch(r"\*+", str(rebuilt.mqtt_password))  # still masked when printed
