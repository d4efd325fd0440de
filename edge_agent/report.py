"""``edgefleet-agent status``: what the device runs, what it is doing, and what it has said lately.

Read from the state folder (the state file and the message queue, both read-only, so it is
safe while the agent runs) and, when the agent is up, from its local API (the model that
answers right now and the health line, which names a trial in progress).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from edge_agent.outbox import read_summary
from edge_agent.state import StateFile, ref_to_dict
from edgefleet_proto.v1 import common_pb2

__all__ = ["StatusReport", "collect", "render"]


@dataclass
class StatusReport:
    device_id: str
    fleet: str
    state_dir: str
    slots: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    applied_generation: int = 0
    update: dict[str, Any] | None = None
    refused: list[dict[str, Any]] = field(default_factory=list)
    queue: dict[str, Any] = field(default_factory=dict)
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    live: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "fleet": self.fleet,
            "state_dir": self.state_dir,
            "slots": self.slots,
            "applied_generation": self.applied_generation,
            "update": self.update,
            "refused": self.refused,
            "queue": self.queue,
            "recent_events": self.recent_events,
            "live": self.live,
            "problems": self.problems,
        }


def _ref(ref: common_pb2.ModelRef | None) -> dict[str, Any] | None:
    return None if ref is None else ref_to_dict(ref)


def collect(config: AgentConfig, *, timeout_s: float = 2.0) -> StatusReport:
    """Everything ``status`` prints; problems reading a part are listed, never raised."""
    report = StatusReport(config.device_id, config.fleet, str(config.state_dir))
    try:
        saved = StateFile(config.state_dir / "state.json").peek()
    except (OSError, ValueError) as e:
        saved = None
        report.problems.append(f"state file unreadable: {e}")
    if saved is not None:
        report.slots = {
            "active": _ref(saved.active),
            "previous": _ref(saved.previous),
            "trial": _ref(saved.trial),
        }
        report.applied_generation = saved.applied_generation
        if saved.update is not None:
            u = saved.update
            report.update = {
                "state": u.state,
                "generation": u.generation,
                "model": _ref(u.desired.model) if u.desired.HasField("model") else None,
                "saves": u.saves,
                "restarts": u.restarts,
            }
        report.refused = [
            {
                "name": r.name,
                "version": r.version,
                "sha256": r.sha256,
                "generation": r.generation,
                "reason": r.reason,
            }
            for r in saved.refused
        ]
    if config.queue.path is not None:
        try:
            summary = read_summary(config.queue.path)
            report.queue = {"depth": summary.depth, "dropped": summary.dropped}
            report.recent_events = [
                {"ts_ms": e.ts_ms, "kind": e.kind, "text": e.text} for e in summary.recent
            ]
        except AgentError as e:
            report.problems.append(str(e))
    report.live = _ask_agent(config, timeout_s, report.problems)
    return report


def _ask_agent(config: AgentConfig, timeout_s: float, problems: list[str]) -> dict[str, Any] | None:
    socket = config.local_api.socket
    target = f"unix:{socket}" if socket is not None and socket.exists() else None
    if target is None and config.local_api.tcp_port:
        target = f"127.0.0.1:{config.local_api.tcp_port}"
    if target is None:
        return None
    from edge_agent.client import LocalApiError, LocalClient

    try:
        with LocalClient(target, timeout_s=timeout_s) as client:
            info = client.info()
    except LocalApiError as e:
        problems.append(f"the agent's local API at {target} did not answer: {e}")
        return None
    serving = f"{info.model_name}:{info.model_version}" if info.model_name else None
    return {"target": target, "health": info.health, "serving": serving, "sha256": info.model_sha256}


def _when(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _label(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return "-"
    return f"{ref['name']}:{ref['version']}  sha256 {ref['sha256'][:12]}…"


def render(report: StatusReport) -> str:
    """The report as text for a person."""
    lines = [f"device {report.device_id}  fleet {report.fleet}  state {report.state_dir}"]
    live = report.live
    if live is not None:
        lines.append(f"agent    running: {live['health']}; answering with {live['serving'] or 'no model'}")
    else:
        lines.append("agent    not answering on its local API (stopped, or the API is disabled)")
    for slot in ("active", "previous", "trial"):
        lines.append(f"{slot:<9}{_label(report.slots.get(slot))}")
    lines.append(f"applied generation {report.applied_generation}")
    if report.update is not None:
        u = report.update
        model = _label(u["model"]) if u["model"] else "-"
        lines.append(
            f"update   {u['state']} generation {u['generation']} {model} "
            f"(saves {u['saves']}, restarts {u['restarts']})"
        )
    else:
        lines.append("update   none in progress")
    for r in report.refused:
        lines.append(f"refused  {r['name']}:{r['version']} (generation {r['generation']}): {r['reason']}")
    if report.queue:
        lines.append(
            f"queue    {report.queue['depth']} message(s) waiting for the broker, "
            f"{report.queue['dropped']} dropped"
        )
    if report.recent_events:
        lines.append("last events:")
        lines.extend(
            f"  {_when(e['ts_ms'])}  {e['kind']:<18} {e['text']}" for e in report.recent_events[-10:]
        )
    lines.extend(f"problem: {p}" for p in report.problems)
    return "\n".join(lines)
