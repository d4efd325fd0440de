"""The process a continuous-training run runs in: apart from the hub's, at a lower CPU priority.

Training and optimizing (torch, ONNX export, TFLite conversion) hold the GIL and the CPU for
minutes and leave torch's and tensorflow's memory behind; run on a thread of the hub, they kept its
HTTP API from answering for over 30 s. So :class:`~cloud.training.continuous.pipeline.TrainingWorker`
starts each claimed run as ``python -m cloud.training.continuous.child RUN_ID``. The child lowers its
priority (``nice`` +10) before it imports anything heavy, rebuilds what
:func:`~cloud.training.continuous.pipeline.execute_run` needs (its own engine and sessions, the
artifact store, the clock, a publisher that publishes nothing) and runs the run.

Why ``subprocess`` and not ``multiprocessing`` with the "spawn" start method:

- the child's stdout and stderr are the run's log file (:data:`LOG_NAME` in the run's work folder)
  from its first byte: an import error, a native library's warning or a crash message lands there and
  not in the hub's output, and its last lines become the run's ``error`` when it dies without saying why;
- "spawn" imports the parent's ``__main__`` again in the child (the ``fleet`` entry point, uvicorn, a
  test runner); a module run with ``-m`` imports only what the run needs;
- ``Popen`` reports the exit status as it is (a negative status names the signal), and leaves no
  resource-tracker process or named semaphores of multiprocessing's own behind.

What crosses, and how: a pickled :class:`ChildJob` on the child's stdin, never its command line
(``/proc/PID/cmdline`` is readable by every user): the run id, the owner of the claim, the hub's
settings as JSON with the database URL and artifact folder the hub actually uses, the
``PipelineConfig`` and the clock. Pickle, because ``PipelineConfig.base_data`` is a function (it must
be defined at a module's top level); the pipe joins the hub to the child it started and nothing else.
``SecretStr`` settings are masked in the JSON; their values travel in the child's environment under
their ``EDGEFLEET_*`` names.

Stopping: the hub sends SIGTERM; the child raises out of whatever it is doing (the run's ``finally``
still removes its bundle folder) and dies of that signal; the hub sends SIGKILL after its grace
period. SIGINT is ignored: a terminal's Ctrl-C reaches the hub's whole process group, and the hub
decides when its run stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from cloud.clock import Clock
from cloud.settings import Settings

if TYPE_CHECKING:
    from cloud.context import HubContext
    from cloud.training.continuous.pipeline import PipelineConfig

__all__ = [
    "LOG_NAME",
    "MODULE",
    "NICE",
    "ChildJob",
    "ChildProcess",
    "check_picklable",
    "child_env",
    "describe_exit",
    "load_settings",
    "log_tail",
    "main",
]

log = logging.getLogger(__name__)

MODULE = "cloud.training.continuous.child"
# The run's log, in its work folder ({data_dir}/training/{run id}); kept with the run's files.
LOG_NAME = "training.log"
# Below the hub's API and ingest, which run at the priority the hub was started with.
NICE = 10
# How much of the log's end goes into the error of a run whose process died without recording one.
_TAIL_LINES = 8
_TAIL_CHARS = 1500
_TAIL_READ = 16 * 1024
# The first line the child logs; tests and operators read the child's pid from it.
PID_LINE = "training run {run} runs in process {pid} (started by hub process {parent})"


# --- what crosses to the child --------------------------------------------------------------------


@dataclass(frozen=True)
class ChildJob:
    """Everything the child needs to run one claimed run; pickled onto its stdin."""

    run_id: str
    owner: str
    settings_json: str
    """The hub's ``Settings`` as JSON: SecretStr fields masked (their values are in the environment)."""
    config: PipelineConfig
    clock: Clock

    @classmethod
    def for_run(cls, ctx: HubContext, run_id: str, *, owner: str, config: PipelineConfig) -> ChildJob:
        # The engine and the store the hub runs on, which tests (and callers of the library) may point
        # elsewhere than the settings' defaults.
        live = ctx.settings.model_copy(
            update={
                "database_url": ctx.engine.url.render_as_string(hide_password=False),
                "artifact_dir": ctx.store.root,
            }
        )
        return cls(run_id, owner, live.model_dump_json(), config, ctx.clock)


def check_picklable(value: object, what: str) -> None:
    """Raise TypeError, saying what to change, when ``value`` cannot cross to the training process."""
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise TypeError(
            f"{what} must be picklable to reach the training process (functions defined at the top "
            f"level of a module, not lambdas or nested functions); got {value!r}: {e}"
        ) from e


def _secret_fields() -> list[str]:
    return [
        name
        for name, info in Settings.model_fields.items()
        if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)
    ]


def _env_name(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def child_env(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the hub's, with each secret setting's value under its ``EDGEFLEET_*``
    name (removed where the hub's settings have none, whatever the hub's own environment says)."""
    env = dict(os.environ if environ is None else environ)
    for field in _secret_fields():
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            env[_env_name(field)] = value.get_secret_value()
        else:
            env.pop(_env_name(field), None)
    # Lines reach the log as they are written: a killed process loses nothing it printed.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def load_settings(settings_json: str, environ: Mapping[str, str]) -> Settings:
    """The hub's settings as the child rebuilds them: the JSON, with the secrets from ``environ``."""
    data: dict[str, Any] = json.loads(settings_json)
    for field in _secret_fields():
        data[field] = environ.get(_env_name(field))
    return Settings.model_validate(data)


# --- the hub's side -------------------------------------------------------------------------------


def describe_exit(returncode: int, *, pid: int, step: str) -> str:
    """The sentence a run records when its process ended (``returncode`` as Popen reports it) without
    recording the run's outcome."""
    doing = step or "starting"
    who = f"the training process (pid {pid})"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        sentence = f"{who} was killed by signal {name} while {doing}"
        if -returncode == signal.SIGKILL:
            sentence += " (the kernel sends it when memory runs out, see `dmesg`; or someone killed it)"
        return sentence
    if returncode == 0:
        return f"{who} ended while {doing} without recording the run's outcome"
    return f"{who} exited with status {returncode} while {doing} without recording why"


def log_tail(path: Path, *, lines: int = _TAIL_LINES, chars: int = _TAIL_CHARS) -> str:
    """The last non-empty lines of ``path`` (at most ``chars`` characters); "" when it cannot be read."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_READ))
            data = f.read()
    except OSError:
        return ""
    kept = [line.rstrip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-chars:]


class ChildProcess:
    """One started training process, as the hub sees it: its pid, its log, its exit, how to stop it."""

    def __init__(self, job: ChildJob, *, log_path: Path, env: Mapping[str, str]) -> None:
        self.run_id = job.run_id
        self.log_path = log_path
        self._payload = pickle.dumps(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            # No preexec_fn (unsafe in a process with threads): the child lowers its own priority.
            self._popen = subprocess.Popen(
                [sys.executable, "-m", MODULE, job.run_id],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
            )

    @property
    def pid(self) -> int:
        return self._popen.pid

    def wait(self) -> int:
        """Hand the job over, then wait for the process to end; its exit status (negative: the signal)."""
        stdin = self._popen.stdin
        assert stdin is not None
        try:
            with stdin:
                stdin.write(self._payload)
        except BrokenPipeError:
            pass  # it ended before reading its job: its exit status and its log say why
        return self._popen.wait()

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended already
            self._popen.send_signal(signum)

    def failure(self, returncode: int, step: str) -> str:
        """Why the run failed when the process ended without recording it: the exit, then its log's end."""
        sentence = describe_exit(returncode, pid=self.pid, step=step)
        tail = log_tail(self.log_path)
        return f"{sentence}; the end of its log {self.log_path}:\n{tail}" if tail else sentence


# --- the child's side -----------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM: the hub is stopping. Not an Exception, so that no step records it as its own failure
    (``except Exception``); the run's ``finally`` blocks still run."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not interrupt the clean-up; SIGKILL still ends it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


def _read_job(stream: typing.BinaryIO) -> ChildJob:
    # The hub that started this process wrote it, on a pipe only the two of them hold.
    job = pickle.load(stream)  # noqa: S301
    if not isinstance(job, ChildJob):
        raise TypeError(f"expected a ChildJob on stdin from the hub, got {type(job).__name__}")
    return job


class _NoPublisher:
    """Publishes nothing: a run writes rows and artifacts; the hub's own schedulers publish."""

    def publish_desired(self, device_id: str, payload: bytes) -> None:
        log.debug("not publishing the desired state of %s from the training process", device_id)


def _context(job: ChildJob, settings: Settings) -> HubContext:
    from cloud.artifacts import ArtifactStore
    from cloud.context import HubContext
    from cloud.startup import open_database

    return HubContext(
        settings=settings,
        engine=open_database(settings.resolved_database_url()),
        store=ArtifactStore(settings.resolved_artifact_dir()),
        publisher=_NoPublisher(),
        # Devices never hear from this process.
        artifact_endpoint="",
        clock=job.clock,
    )


def _run(args: Sequence[str]) -> int:
    if len(args) != 1:
        log.error("usage: python -m %s RUN_ID (the job comes on stdin from the hub); got %s", MODULE, args)
        return 2
    job = _read_job(sys.stdin.buffer)
    if job.run_id != args[0]:
        log.error("the job on stdin is for training run %s, not %s", job.run_id, args[0])
        return 2
    log.info(PID_LINE.format(run=job.run_id, pid=os.getpid(), parent=os.getppid()))
    ctx = _context(job, load_settings(job.settings_json, os.environ))
    try:
        from cloud.training.continuous.pipeline import execute_run

        result = execute_run(ctx, job.run_id, owner=job.owner, config=job.config)
    finally:
        ctx.engine.dispose()
    log.info("training run %s is %s%s", job.run_id, result.state, f": {result.error}" if result.error else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one claimed run: ``python -m cloud.training.continuous.child RUN_ID``, its job on stdin."""
    os.nice(NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        try:
            return _run(sys.argv[1:] if argv is None else argv)
        except Exception:
            log.exception("training process %d failed", os.getpid())
            return 1
    except _Terminated:
        log.warning("training process %d: stopped by the hub (SIGTERM)", os.getpid())
        logging.shutdown()
        # Die of the signal, so that the hub reads SIGTERM in the exit status as for any other signal.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 128 + signal.SIGTERM  # not reached


if __name__ == "__main__":
    # Run the module under its own name: the job on stdin names ChildJob as ``MODULE``.ChildJob, and one
    # copy of this module (not a second one called __main__) must define it.
    from cloud.training.continuous.child import main as _main

    sys.exit(_main())
