"""A private Mosquitto for the tests: its own port, its own folder, started and stopped by the test run."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType

from tests._services.process import (
    HOST,
    MissingBinary,
    ServiceFailed,
    as_account,
    port_open,
    private_dir,
    restartable_port,
    service_account,
    spawn,
    stop,
    wait_ready,
)

# Debian and most distributions install the broker in sbin, which is not on every user's PATH.
FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
# A port picked as free can be taken by someone else before the broker binds it: try a few.
START_ATTEMPTS = 3


def find_mosquitto(path: str | None = None, fallbacks: Sequence[str] | None = None) -> str:
    """The mosquitto program: from PATH (``path`` overrides it), else its usual places."""
    found = shutil.which("mosquitto", path=path)
    places = FALLBACKS if fallbacks is None else fallbacks
    if found is None:
        found = next((f for f in places if os.path.isfile(f) and os.access(f, os.X_OK)), None)
    if found is None:
        raise MissingBinary("mosquitto not found: apt-get install mosquitto")
    return found


class Mosquitto:
    """A Mosquitto broker on a free port of 127.0.0.1, anonymous, configured as edgefleet ships it.

    ``persistence`` keeps sessions and queued messages across stop() and start() (in the broker's
    folder), as a production broker does. close() stops it and removes its folder.
    """

    def __init__(self, *, persistence: bool = False) -> None:
        self.binary = find_mosquitto()
        self.host = HOST
        self.port = restartable_port()
        self.persistence = persistence
        self._account = service_account("mosquitto")
        self.root = private_dir("ef-mqtt-", self._account)
        self.conf = self.root / "mosquitto.conf"
        self.log = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        atexit.register(self.close)

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # As in deploy/mosquitto/edgefleet.conf: the default (1000) drops acknowledged QoS 1 messages
            # of a lagging subscriber, which a burst in a test can reach.
            "max_queued_messages 100000",
            "log_dest stderr",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.root}/")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker and return once it accepts connections; a restart keeps the port."""
        if self.proc is not None and self.proc.poll() is None:
            return
        attempts = 1 if self._started else START_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                self.port = restartable_port()
            self._write_config()
            self.proc = spawn(
                [*as_account(self._account), self.binary, "-c", str(self.conf)], self.log, self.root
            )
            try:
                wait_ready(
                    self.proc, lambda: port_open(self.port), f"mosquitto on {self.host}:{self.port}", self.log
                )
            except ServiceFailed:
                stop(self.proc, signal.SIGKILL)
                if attempt == attempts - 1:
                    raise
                continue
            self._started = True
            return

    def stop(self) -> None:
        """Stop the broker (SIGTERM: with persistence on, it saves its sessions first)."""
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> Mosquitto:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
