"""What the private test servers share: a free port, a folder of their own, an account, a start and a stop."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HOST = "127.0.0.1"


class MissingBinary(RuntimeError):
    """A server program the tests need is not installed; the message names the package to install."""


class ServiceFailed(RuntimeError):
    """A private server did not come up; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port that nothing listens on right now (the kernel's pick, so never a well-known one)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# Below Linux's default ephemeral range (32768-60999), above the ports services usually take.
_STABLE_PORTS = range(20_000, 32_768)


def restartable_port(rng: random.Random | None = None) -> int:
    """A free TCP port that a server stopped mid-test can bind again when it restarts.

    The kernel's pick (:func:`free_port`) comes from the ephemeral range, from which it also gives
    every outgoing connection its local port: a hub killed mid-test lost its port to a client's
    connection before it restarted ("HTTP port ... is in use"). Ports below that range are never
    handed out that way, so one stays free for as long as no listener takes it.
    """
    pick = rng or random.Random()
    low = _ephemeral_low()
    ports = range(_STABLE_PORTS.start, min(_STABLE_PORTS.stop, low))
    if not ports:  # an ephemeral range moved down to ours: nothing is safe, take the kernel's pick
        return free_port()
    for _ in range(200):
        port = pick.choice(ports)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} after 200 tries")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux), or the top of ours elsewhere."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
    except OSError:
        return _STABLE_PORTS.stop
    return int(text.split()[0])


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def service_account(name: str) -> pwd.struct_passwd | None:
    """The account a server runs as when the tests run as root; None when they do not.

    initdb and postgres refuse to run as root, and mosquitto would switch to its own account by itself
    and then fail to write a folder that root made: so as root both run as their packaged accounts,
    and their folders are handed to them. As any other user they simply run as that user.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceFailed(
            f"the tests run as root, so they start the {name} server as user {name!r}, which does not exist: "
            f"run the tests as an unprivileged user, or create the account (it comes with the {name} package)"
        ) from None


def as_account(account: pwd.struct_passwd | None) -> list[str]:
    """The command prefix that runs a program as ``account``.

    setpriv (util-linux) switches the ids and then executes the program in the same process, so the
    server stays a direct child of the test run (runuser would fork and sit in between).
    """
    if account is None:
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]


def private_dir(prefix: str, account: pwd.struct_passwd | None) -> Path:
    """A new folder in /tmp owned by the server's account: short enough for Unix socket paths (~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def spawn(
    command: Sequence[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in the foreground, its output appended to ``log``.

    A session of its own keeps Ctrl-C away from it: the interrupt reaches pytest alone, which then
    stops the server in its teardown, after the tests that use it have stopped.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def wait_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log: Path, timeout: float = 30.0
) -> None:
    """Wait until ``ready()`` holds; fail at once, with the log, if the server exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceFailed(
                f"{what} was not ready within {timeout:.0f} s; its log ends with:\n{log_tail(log)}"
            )
        # The pause between two probes is a wait on the process, so that an early exit ends it at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.05)
        if proc.returncode is not None:
            raise ServiceFailed(
                f"{what} exited with status {proc.returncode} before it was ready; its log ends with:\n"
                f"{log_tail(log)}"
            )


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 30.0) -> None:
    """Ask a server to stop with ``sig`` and wait; kill it if it does not stop in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
