"""A real network partition for the fault tests: a network namespace joined to the host by a veth pair.

The simulated fleet runs inside the namespace (``ip netns exec``); everything it talks to is on
the host side of the veth pair: the broker (an extra listener on the host-side address) and the
hub's gRPC artifact service and HTTP API (through a ``tests.fault._fleet.Relay``). Setting the
host side of the pair down cuts every one of those paths at once, as a failed uplink would;
setting it up restores them. Needs root and iproute2 (``ip``): :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import uuid
from types import TracebackType

from tests._services import Mosquitto, free_port

__all__ = ["ListeningMosquitto", "Netns", "unavailable"]


def unavailable() -> str | None:
    """Why a namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add), and the tests do not run as root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip command, which is not installed"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed with status {done.returncode}: {done.stderr.strip()}")


class Netns:
    """A namespace ``ef-<8 hex digits>`` with one veth pair; the host side has ``host_addr``, the inside
    ``device_addr`` (a /30 of 10.213.0.0/16 picked at random, names unique per instance).

    close() removes the namespace and the pair, whatever state they are in; a context manager
    calls it on the way out, so a failed test leaves nothing behind.
    """

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"ef-{tag}"
        # Interface names are limited to 15 characters.
        self.host_if, self.inner_if = f"efh{tag}", f"efd{tag}"
        net = random.randrange(0, 1 << 14) * 4
        self.host_addr = f"10.213.{net >> 8}.{(net & 0xFF) + 1}"
        self.device_addr = f"10.213.{net >> 8}.{(net & 0xFF) + 2}"
        self._made = False

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> Netns:
        self._made = True
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
            _ip("link", "set", self.inner_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip(
                "netns",
                "exec",
                self.name,
                "ip",
                "addr",
                "add",
                f"{self.device_addr}/30",
                "dev",
                self.inner_if,
            )
            _ip("netns", "exec", self.name, "ip", "link", "set", self.inner_if, "up")
            _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def cut(self) -> None:
        """Take the host side of the link down: nothing crosses it either way until restore()."""
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def close(self) -> None:
        if not self._made:
            return
        # Deleting the namespace deletes the inner end, which takes its peer along; the second
        # deletion covers a pair whose inner end never moved into the namespace.
        for args in (("netns", "del", self.name), ("link", "del", self.host_if)):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip(*args)
        self._made = False

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class ListeningMosquitto(Mosquitto):
    """The tests' Mosquitto with a second listener on ``extra_host`` (the host side of a veth pair)."""

    def __init__(self, extra_host: str, *, persistence: bool = False) -> None:
        super().__init__(persistence=persistence)
        self.extra_host = extra_host
        self.extra_port = free_port()

    def _write_config(self) -> None:
        super()._write_config()
        with self.conf.open("a") as conf:
            conf.write(f"listener {self.extra_port} {self.extra_host}\n")
