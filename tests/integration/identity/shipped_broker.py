"""The Mosquitto configuration that edgefleet ships (deploy/mosquitto/), run as it is on a private port.

:func:`rewrite_shipped_config` is the only thing that changes the shipped file: the listener's port and
the paths of the certificates, the CRL, the ACL file and the persistence folder. Every other line is
kept as written, so the tests exercise the very configuration an operator installs; a shipped file that
stops naming one of those settings fails here rather than being silently tested in another shape.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.identity.ca import CertificateAuthority, IssuedCertificate
from tests._services.mosquitto import find_mosquitto
from tests._services.process import (
    HOST,
    as_account,
    free_port,
    port_open,
    private_dir,
    service_account,
    spawn,
    stop,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "edgefleet.conf"
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "edgefleet.acl"
TIMEOUT_S = 10.0


def rewrite_shipped_config(
    text: str, *, port: int, certs: Path, acl_file: Path, persistence: Path, crl_file: Path
) -> str:
    """The shipped config with its port and paths replaced, every other line unchanged.

    ``listener 8883`` becomes ``listener PORT``; certfile, keyfile and cafile point into ``certs``
    (server.crt, server.key, ca.crt), crlfile to ``crl_file``, acl_file and persistence_location to
    the given paths. Each of them must appear exactly once in the shipped file.
    """
    replace: dict[str, Callable[[str], str]] = {
        "listener": lambda v: str(port) if v == "8883" else _unexpected("listener", v),
        "certfile": lambda _v: str(certs / "server.crt"),
        "keyfile": lambda _v: str(certs / "server.key"),
        "cafile": lambda _v: str(certs / "ca.crt"),
        "crlfile": lambda _v: str(crl_file),
        "acl_file": lambda _v: str(acl_file),
        "persistence_location": lambda _v: f"{persistence}/",
    }
    seen: dict[str, int] = dict.fromkeys(replace, 0)
    out = []
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in replace and not line.startswith("#"):
            seen[key] += 1
            line = f"{key} {replace[key](value.strip())}"
        out.append(line)
    wrong = {k: n for k, n in seen.items() if n != 1}
    if wrong:
        raise AssertionError(f"expected each of {sorted(replace)} once in {SHIPPED_CONF}; counts {wrong}")
    return "\n".join(out) + "\n"


def _unexpected(key: str, value: str) -> str:
    raise AssertionError(f"expected `{key} 8883` in {SHIPPED_CONF}, got `{key} {value}`")


def write_pair(folder: Path, name: str, issued: IssuedCertificate) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(issued.cert_pem)
    assert issued.key_pem is not None
    key.write_bytes(issued.key_pem)
    key.chmod(0o600)
    return cert, key


class ShippedBroker:
    """Mosquitto with the shipped config, its certificates from ``ca``, on a free port of 127.0.0.1."""

    def __init__(self, ca: CertificateAuthority, crl_pem: bytes) -> None:
        self.binary = find_mosquitto()
        self.port = free_port()
        self._account = service_account("mosquitto")
        self.root = private_dir("ef-mtls-", self._account)
        self.certs = self.root / "certs"
        self.certs.mkdir()
        (self.certs / "ca.crt").write_bytes(ca.cert_pem)
        write_pair(self.certs, "server", ca.issue_server(["localhost", HOST]))
        self.crl_file = self.certs / "crl.pem"
        self.crl_file.write_bytes(crl_pem)
        self.acl = self.root / "edgefleet.acl"
        shutil.copyfile(SHIPPED_ACL, self.acl)
        self.persistence = self.root / "data"
        self.persistence.mkdir()
        self.conf = self.root / "edgefleet.conf"
        self.conf.write_text(
            rewrite_shipped_config(
                SHIPPED_CONF.read_text(),
                port=self.port,
                certs=self.certs,
                acl_file=self.acl,
                persistence=self.persistence,
                crl_file=self.crl_file,
            )
        )
        if self._account is not None:
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        self.log = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    def write_crl(self, crl_pem: bytes) -> None:
        self.crl_file.write_bytes(crl_pem)

    def start(self) -> None:
        self.proc = spawn(
            [*as_account(self._account), self.binary, "-c", str(self.conf)], self.log, self.root
        )
        wait_ready(self.proc, lambda: port_open(self.port), f"mosquitto on {HOST}:{self.port}", self.log)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its configuration again (and the CRL with it), keeping its clients."""
        assert self.proc is not None
        mark = self.log.stat().st_size
        self.proc.send_signal(signal.SIGHUP)
        # Mosquitto logs this line once it has read the configuration again.
        wait_ready(
            self.proc,
            lambda: b"Reloading config" in self.log.read_bytes()[mark:],
            "mosquitto reload",
            self.log,
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> ShippedBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def tls_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        """What a client of this broker uses: trust the fleet CA, present ``cert`` when given."""
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        return ctx


@dataclass
class Received:
    topic: str
    payload: bytes


class TlsClient:
    """A paho MQTT 5 client over TLS that records what it receives and what the broker answered."""

    def __init__(self, broker: ShippedBroker, client_id: str, ctx: ssl.SSLContext) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.tls_set_context(ctx)
        self._broker = broker
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.connect_reason: ReasonCode | None = None
        self.connect_error: BaseException | None = None
        self.disconnected = threading.Event()
        self._answered = threading.Event()
        self.acks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connect_reason = reason
        self._answered.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, _reason: ReasonCode, _p: Any) -> None:
        self.disconnected.set()
        self._answered.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self.acks[mid] = reasons
            self._cond.notify_all()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self.acks[mid] = [reason]
            self._cond.notify_all()

    def connect(self) -> bool:
        """True once the broker accepted the connection; False when TLS or the broker refused it."""
        try:
            self.client.connect(HOST, self._broker.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            self.connect_error = e
            return False
        self.client.loop_start()
        if not self._answered.wait(TIMEOUT_S):
            raise AssertionError(f"no answer from the broker within {TIMEOUT_S} s")
        return self.connect_reason is not None and not self.connect_reason.is_failure

    def _wait_ack(self, mid: int) -> list[ReasonCode]:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self.acks, TIMEOUT_S):
                raise AssertionError(f"no acknowledgement of packet {mid} within {TIMEOUT_S} s")
            return self.acks[mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _rc, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None, f"paho did not send the subscription to {topic}"
        return self._wait_ack(mid)[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._wait_ack(info.mid)[0]

    def wait_for(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(m.topic == topic and m.payload == payload for m in self.messages), TIMEOUT_S
            ):
                raise AssertionError(
                    f"expected {payload!r} on {topic} within {TIMEOUT_S} s; got {self.messages!r}"
                )

    def topics(self) -> set[str]:
        with self._cond:
            return {m.topic for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
