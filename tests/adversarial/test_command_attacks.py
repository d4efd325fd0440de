"""Attacks on the cmd topic: unsigned, forged, replayed, expired, misdirected or malformed commands.

Whoever holds the broker can publish anything on a device's cmd topic. A real agent (its
signed-update channel on, the repository simulator's root provisioned) is handed each payload
as its link would hand it over; a command counts only when a threshold of the director keys
named in the trusted root signed it for this device and fleet, it has not expired, and its seq
is above the last accepted one. A refusal is logged, counted by check (metric) and reported as
an error event; the agent acts on nothing and never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from cloud.services.commands import seal_command
from cloud.tuf.keys import generate_signer
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.metrics import render
from edge_agent.trust.commands import DEFAULT_MAX_COMMAND_BYTES, CommandSeqFile
from edge_agent.trust.config import TrustConfig
from edgefleet_proto.v1 import command_pb2, event_pb2
from tests.adversarial.harness import DEVICE, FLEET
from tests.adversarial.simulator import RepoSim
from tests.unit.agent.fakes import FakeClock, FakeFetcher


@dataclass
class CommandWorld:
    sim: RepoSim
    clock: FakeClock
    state_dir: Path
    agent: Agent = field(init=False)
    acted: list[str] = field(default_factory=list)
    seq: int = 0

    def start(self) -> None:
        """A fresh agent on the same state folder (a restart), its reactions to commands recorded."""
        root_file = self.state_dir.parent / "root.json"
        root_file.write_bytes(self.sim.bootstrap)
        config = AgentConfig.for_simulation(
            device_id=DEVICE,
            fleet=FLEET,
            state_dir=self.state_dir,
            trust=TrustConfig(root_file=root_file),
        )
        self.agent = Agent(config, clock=self.clock, fetcher=FakeFetcher())
        assert self.agent.trust is not None and self.agent.trust.commands is not None
        self.agent.link.request_status = lambda: self.acted.append("ping")  # type: ignore[method-assign]
        self.agent.link.request_resync = lambda: self.acted.append("resync")  # type: ignore[method-assign]
        self.agent.updater.retry_now = lambda: None  # type: ignore[method-assign]

    def command(
        self,
        *,
        device_id: str = DEVICE,
        fleet: str = FLEET,
        seq: int | None = None,
        expires_in: timedelta | None = timedelta(minutes=5),
    ) -> command_pb2.Command:
        """A ping as the hub builds it: the next seq unless told."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        now = self.clock.wall_ms()
        expires = 0 if expires_in is None else now + int(expires_in.total_seconds() * 1000)
        return command_pb2.Command(
            device_id=device_id,
            fleet=fleet,
            seq=seq,
            issued_at_ms=now,
            expires_at_ms=expires,
            ping=command_pb2.Ping(nonce=f"n{seq}"),
        )

    def signed(self, command: command_pb2.Command, signers: list[CryptoSigner] | None = None) -> bytes:
        return seal_command(command, self.sim.director if signers is None else signers)

    def send(self, payload: bytes) -> None:
        self.agent.on_command(payload)

    @property
    def saved_seq(self) -> int:
        return CommandSeqFile(self.state_dir / "trust" / "commands.json").load()

    def error_events(self) -> list[event_pb2.Event]:
        out: list[event_pb2.Event] = []
        while (message := self.agent.outbox.peek()) is not None:
            if message.topic == self.agent.topics.events:
                event = event_pb2.Event.FromString(message.payload)
                if event.kind == event_pb2.EVENT_KIND_ERROR:
                    out.append(event)
            self.agent.outbox.ack(message)
        return out


@pytest.fixture
def cw(tmp_path: Path) -> Iterator[CommandWorld]:
    sim = RepoSim()
    sim.publish()
    world = CommandWorld(sim, FakeClock(int(sim.now.timestamp() * 1000)), tmp_path / "state")
    world.start()
    # One accepted command first: the device has a last seq that replays must beat.
    world.send(world.signed(world.command()))
    assert world.acted == ["ping"], "a command the director signed was not acted on"
    world.acted.clear()
    world.error_events()
    yield world
    world.agent.outbox.close()


def replayed(w: CommandWorld) -> bytes:
    payload = w.signed(w.command())  # captured by whoever holds the broker...
    w.send(payload)  # ...after the device acted on it
    assert w.acted == ["ping"]
    w.acted.clear()
    w.error_events()
    return payload


def older_seq(w: CommandWorld) -> bytes:
    return w.signed(w.command(seq=w.seq))  # a fresh signature, but a seq the device has seen


def unsigned(w: CommandWorld) -> bytes:
    return w.signed(w.command(), signers=[])


def bare_command(w: CommandWorld) -> bytes:
    """The pre-signing wire form: a Command without an envelope."""
    return w.command().SerializeToString()


def forged(w: CommandWorld) -> bytes:
    return w.signed(w.command(), signers=[generate_signer()])


def tampered(w: CommandWorld) -> bytes:
    envelope = command_pb2.SignedCommand.FromString(w.signed(w.command()))
    cmd = command_pb2.Command.FromString(envelope.command)
    cmd.seq += 1000
    envelope.command = cmd.SerializeToString()
    return envelope.SerializeToString()


def expired(w: CommandWorld) -> bytes:
    payload = w.signed(w.command(expires_in=timedelta(minutes=5)))
    w.clock.advance(600)  # held back by whoever sits in between, delivered late
    return payload


def without_expiry(w: CommandWorld) -> bytes:
    return w.signed(w.command(expires_in=None))


def other_device(w: CommandWorld) -> bytes:
    return w.signed(w.command(device_id="dev-2"))


def other_fleet(w: CommandWorld) -> bytes:
    return w.signed(w.command(fleet="fleet-b"))


def truncated(w: CommandWorld) -> bytes:
    payload = w.signed(w.command())
    return payload[: len(payload) - 7]


def garbage(w: CommandWorld) -> bytes:
    return b"\xff\xfe not a protobuf at all"


def signed_garbage(w: CommandWorld) -> bytes:
    """The director's key over bytes that are no Command (a hub bug, refused all the same)."""
    envelope = command_pb2.SignedCommand(command=b"\xff\xfe\xfd")
    for signer in w.sim.director:
        sig = signer.sign(envelope.command)
        envelope.signatures.add(keyid=sig.keyid, sig=bytes.fromhex(sig.signature))
    return envelope.SerializeToString()


def oversized(w: CommandWorld) -> bytes:
    cmd = w.command()
    cmd.ping.nonce = "x" * (2 * DEFAULT_MAX_COMMAND_BYTES)
    return w.signed(cmd)


def empty(w: CommandWorld) -> bytes:
    return b""


COMMAND_ATTACKS: list[tuple[str, Callable[[CommandWorld], bytes], str, str]] = [
    ("replayed command", replayed, "replayed", "not above the last accepted"),
    ("older seq with a fresh signature", older_seq, "replayed", "not above the last accepted"),
    ("unsigned command", unsigned, "unsigned", "no director signature"),
    ("bare command without an envelope", bare_command, "unsigned", ""),
    ("signed by a key the root does not name", forged, "bad_signature", "does not name"),
    ("command changed after signing", tampered, "bad_signature", "0 valid director signature"),
    ("expired command", expired, "expired", "expired at"),
    ("command without an expiry", without_expiry, "expired", "no expiry"),
    ("command for another device", other_device, "other_device", "'dev-2'"),
    ("command for another fleet", other_fleet, "other_device", "'fleet-b'"),
    ("truncated payload", truncated, "unsigned", "SignedCommand"),
    ("garbage payload", garbage, "unsigned", "SignedCommand"),
    ("signed bytes that are no command", signed_garbage, "malformed", "not a Command"),
    ("oversized payload", oversized, "malformed", "at most"),
    ("empty payload", empty, "unsigned", "no director signature"),
]


@pytest.mark.parametrize(
    ("stage", "code", "fragment"), [c[1:] for c in COMMAND_ATTACKS], ids=[c[0] for c in COMMAND_ATTACKS]
)
def test_command_attacks(
    cw: CommandWorld, stage: Callable[[CommandWorld], bytes], code: str, fragment: str
) -> None:
    payload = stage(cw)
    seq_before = cw.saved_seq
    cw.send(payload)  # what the link does with a message on the cmd topic: it must not raise
    assert cw.acted == [], "the agent acted on a refused command"
    assert cw.saved_seq == seq_before, "a refused command moved the last accepted seq"
    assert cw.agent.command_refusals == {code: 1}
    (event,) = cw.error_events()
    assert event.details["check"] == code and event.details["channel"] == "cmd"
    assert fragment in event.reason, event.reason
    metric = f'edgefleet_agent_commands_refused_total{{check="{code}",device="{DEVICE}",fleet="{FLEET}"}} 1.0'
    assert metric in render(cw.agent).decode()


def test_a_refused_command_does_not_block_the_next_valid_one(cw: CommandWorld) -> None:
    cw.send(forged(cw))
    cw.send(cw.signed(cw.command()))
    assert cw.acted == ["ping"]
    assert cw.saved_seq == cw.seq


def test_seq_may_skip_but_never_go_back(cw: CommandWorld) -> None:
    """A lost command (QoS 1 gives up, a hub replica's number unused) leaves a gap; that is fine."""
    cw.send(cw.signed(cw.command(seq=cw.seq + 10)))
    assert cw.acted == ["ping"] and cw.saved_seq == cw.seq + 10
    cw.send(cw.signed(cw.command(seq=cw.seq + 5)))
    assert cw.acted == ["ping"] and cw.agent.command_refusals == {"replayed": 1}


def test_the_last_seq_survives_a_restart(cw: CommandWorld) -> None:
    captured = cw.signed(cw.command())
    cw.send(captured)
    assert cw.acted == ["ping"]
    cw.agent.outbox.close()
    cw.start()  # a restarted agent reads the seq back from its state folder
    cw.acted.clear()
    cw.send(captured)
    assert cw.acted == [] and cw.agent.command_refusals == {"replayed": 1}


def test_a_damaged_seq_file_refuses_commands_rather_than_reopening_replays(cw: CommandWorld) -> None:
    (cw.state_dir / "trust" / "commands.json").write_text("{not json")
    cw.agent.outbox.close()
    cw.start()
    cw.acted.clear()
    cw.send(cw.signed(cw.command()))
    assert cw.acted == []
    (event,) = cw.error_events()
    assert "damaged" in event.reason and event.details["check"] == "command"


def test_commands_from_a_rotated_director_key_are_refused(cw: CommandWorld) -> None:
    """A key rotated out of the root no longer signs commands; the new key does once the root is known."""
    old = cw.sim.director
    cw.sim.rotate("director")
    trust = cw.agent.trust
    assert trust is not None
    # The device learns the new root as its updater would (the simulator serves the repository).
    from edge_agent.trust.repository import TrustedRepository

    repo = TrustedRepository(cw.state_dir / "trust", cw.sim, now=lambda: cw.sim.now)
    repo.refresh()
    cw.agent.outbox.close()
    cw.start()
    cw.acted.clear()
    cw.send(cw.signed(cw.command(), signers=old))
    assert cw.acted == [] and cw.agent.command_refusals == {"bad_signature": 1}
    cw.send(cw.signed(cw.command()))
    assert cw.acted == ["ping"]


def test_a_command_storm_never_raises(cw: CommandWorld) -> None:
    """Every refusal stays inside on_command: the link's read loop never sees an exception."""
    for i in range(200):
        cw.send(bytes([i % 256]) * (i + 1))
    assert cw.acted == []
    assert sum(cw.agent.command_refusals.values()) == 200
