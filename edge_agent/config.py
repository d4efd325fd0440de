"""The agent's configuration: frozen dataclasses read from one TOML file.

Every default is a safe limit for a small device. :func:`load_config` refuses
unknown keys (a typo must not silently fall back to a default) and names the
key, the expected type and what came when a value is wrong.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from edge_agent.errors import ConfigError
from edge_agent.trust.config import FirmwareConfig, TrustConfig
from edgefleet_proto.topics import DEFAULT_PREFIX, TopicError, validate_id, validate_prefix
from model_tools.profile import REDUCTIONS

__all__ = [
    "AgentConfig",
    "BackoffConfig",
    "HubConfig",
    "LimitsConfig",
    "LocalApiConfig",
    "MetricsConfig",
    "MqttConfig",
    "MqttProtocol",
    "QueueConfig",
    "RuntimeConfig",
    "SketchConfig",
    "TelemetryConfig",
    "TrialConfig",
    "TrialMode",
    "UpdateConfig",
    "load_config",
]

MqttProtocol = Literal["5", "3.1.1"]
_PROTOCOLS: tuple[MqttProtocol, ...] = ("5", "3.1.1")
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
DEFAULT_SOCKET = "{state_dir}/agent.sock"
DEFAULT_QUEUE = "{state_dir}/queue.sqlite"
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: MqttProtocol = "5"
    username: str | None = None
    # The password lives in its own file (mode 0600) so that the config can be shared and logged.
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    # The device's client certificate and key (`fleet devices provision`): how the shipped broker knows it.
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    # How long a publish (or subscribe) waits for the broker's acknowledgement before the link is
    # taken for down and reconnected.
    ack_timeout_s: float = 10.0
    topic_prefix: str = DEFAULT_PREFIX
    # Empty: "{fleet}.{device_id}", unique on a broker that several fleets share.
    client_id: str = ""

    def __post_init__(self) -> None:
        _check_port("mqtt.port", self.port)
        _check_client_cert("mqtt", self.tls, self.cert_file, self.key_file)
        if self.protocol not in _PROTOCOLS:
            raise ConfigError(f"mqtt.protocol: expected one of {list(_PROTOCOLS)}, got {self.protocol!r}")
        if self.keepalive_s < 5:
            raise ConfigError(f"mqtt.keepalive_s: expected at least 5 seconds, got {self.keepalive_s}")
        if not 1 <= self.ack_timeout_s <= 600:
            raise ConfigError(f"mqtt.ack_timeout_s: expected 1 to 600 seconds, got {self.ack_timeout_s}")
        try:
            validate_prefix(self.topic_prefix)
        except TopicError as e:
            raise ConfigError(f"mqtt.topic_prefix: {e}") from e

    def read_password(self) -> str | None:
        """The password from ``password_file`` (read at each connect, so it can be rotated)."""
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {e.strerror}") from e


@dataclass(frozen=True, slots=True)
class HubConfig:
    grpc_endpoint: str = "127.0.0.1:50051"
    grpc_tls: bool = False
    ca_file: Path | None = None
    # Presented to the gRPC artifact service (mTLS): the same pair as [mqtt] as provisioned.
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.grpc_endpoint:
            raise ConfigError("hub.grpc_endpoint: expected 'host:port', got an empty string")
        _check_client_cert("hub", self.grpc_tls, self.cert_file, self.key_file, tls_key="grpc_tls")


@dataclass(frozen=True, slots=True)
class LocalApiConfig:
    # None: no Unix socket.
    socket: Path | None = None
    # 0: no TCP listener. Always bound to 127.0.0.1, never off-host.
    tcp_port: int = 0

    def __post_init__(self) -> None:
        if self.tcp_port != 0:
            _check_port("local_api.tcp_port", self.tcp_port)
        if self.socket is not None and len(str(self.socket).encode()) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"local_api.socket: Unix socket paths hold at most {_MAX_SOCKET_PATH} bytes, "
                f"got {len(str(self.socket).encode())} ({self.socket})"
            )


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    interval_s: float = 10.0
    max_samples_per_window: int = 1024

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError(f"telemetry.interval_s: expected > 0 seconds, got {self.interval_s}")
        if self.max_samples_per_window < 1:
            raise ConfigError(
                f"telemetry.max_samples_per_window: expected >= 1, got {self.max_samples_per_window}"
            )


@dataclass(frozen=True, slots=True)
class SketchConfig:
    """Drift sketches per telemetry window, and label feedback (edge_agent.sketching, edge_agent.feedback)."""

    enabled: bool = True
    # KLL accuracy: ~1.65% rank error at 200, and the hub's drift scores assume at least that.
    k: int = 200
    # "" follows the version's data profile (else "columns" for (N, F) inputs, "channel_means" for
    # (N, C, ...)); one of model_tools.profile.REDUCTIONS overrides it.
    reduction: str = ""
    # Rows copied per buffer before the buffer is sketched in bulk (fewer for large inputs).
    buffer_rows: int = 256
    # Predictions kept open to a label, and for how long.
    feedback_capacity: int = 10_000
    feedback_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 200 <= self.k <= 65535:
            raise ConfigError(f"sketch.k: expected 200..65535 (KLL's accuracy parameter), got {self.k}")
        if self.reduction and self.reduction not in REDUCTIONS:
            raise ConfigError(
                f'sketch.reduction: expected "" (the data profile\'s) or one of {list(REDUCTIONS)}, '
                f"got {self.reduction!r}"
            )
        if not 1 <= self.buffer_rows <= 65536:
            raise ConfigError(f"sketch.buffer_rows: expected 1..65536, got {self.buffer_rows}")
        if self.feedback_capacity < 1:
            raise ConfigError(f"sketch.feedback_capacity: expected >= 1, got {self.feedback_capacity}")
        if self.feedback_ttl_s <= 0:
            raise ConfigError(f"sketch.feedback_ttl_s: expected > 0 seconds, got {self.feedback_ttl_s}")


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    # One thread per session: a device runs one model and a simulator runs a thousand.
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1:
            raise ConfigError(f"runtime.intra_op_threads: expected >= 1, got {self.intra_op_threads}")


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    initial_s: float = 1.0
    max_s: float = 120.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0:
            raise ConfigError(f"backoff.initial_s: expected > 0, got {self.initial_s}")
        if self.max_s < self.initial_s:
            raise ConfigError(f"backoff.max_s: expected >= initial_s ({self.initial_s}), got {self.max_s}")
        if self.multiplier < 1:
            raise ConfigError(f"backoff.multiplier: expected >= 1, got {self.multiplier}")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_artifact_bytes: int = 256 * MiB
    download_chunk_timeout_s: float = 30.0
    # A data profile is a few KiB of sketches; anything near this is not one.
    max_profile_bytes: int = 16 * MiB
    # Left free on the state_dir's file system after a download: a full disk stops the state file too.
    min_free_disk_bytes: int = 16 * MiB
    # Loading needs about this many times the artifact's size in memory (runtime copies, arenas) ...
    load_memory_factor: float = 2.0
    # ... plus this much left for everything else on the device.
    min_free_memory_bytes: int = 32 * MiB

    def __post_init__(self) -> None:
        for key in ("max_artifact_bytes", "max_profile_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"limits.{key}: expected >= 1, got {getattr(self, key)}")
        for key in ("min_free_disk_bytes", "min_free_memory_bytes"):
            if getattr(self, key) < 0:
                raise ConfigError(f"limits.{key}: expected >= 0, got {getattr(self, key)}")
        if self.download_chunk_timeout_s <= 0:
            raise ConfigError(
                f"limits.download_chunk_timeout_s: expected > 0 seconds, got {self.download_chunk_timeout_s}"
            )
        if self.load_memory_factor < 0:
            raise ConfigError(f"limits.load_memory_factor: expected >= 0, got {self.load_memory_factor}")


class TrialMode(enum.StrEnum):
    SERVE = "serve"  # the new version answers; the previous one stays loaded to take over at once
    SHADOW = "shadow"  # the previous version answers; the new one runs on the same inputs beside it


@dataclass(frozen=True, slots=True)
class TrialConfig:
    """How a new version is judged before it is kept. Both window bounds 0: no trial, commit at once."""

    mode: TrialMode = TrialMode.SERVE
    # The trial ends after this many judged requests (0: no request bound) ...
    window_requests: int = 200
    # ... or after this many seconds, whichever comes first (0: no time bound).
    window_s: float = 60.0
    # Statistical gates (error rate, latency, divergence, disagreement) need this many requests.
    min_requests: int = 20
    max_error_rate: float = 0.02
    # p95 latency budget in ms (0: none) ...
    latency_budget_ms: float = 0.0
    # ... and against the previous version: fail above ratio x its p95 when also slack_ms slower
    # (0: no ratio gate).
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 1.0
    # Jensen-Shannon divergence (bits, 0..1) of the predicted-class distribution from the baseline.
    max_divergence: float = 0.2
    # The baseline of that divergence: "auto" (the bundle's profile, else the previous version's
    # answers), "profile", "previous" or "none".
    divergence_reference: str = "auto"
    # When a version changes architecture (another graph or input/output schema) and its trial policy
    # gives no latency budget, this p95 budget judges it: the previous model's latency says nothing
    # about a different one, and this device's own figure is what its operator knows.
    new_architecture_budget_ms: float = 1000.0
    # Shadow mode: share of requests whose predicted class differs from the previous version's.
    max_disagreement: float = 0.2
    # Serve mode: also run the previous version on the trial's inputs (the baseline when the
    # bundle has no data profile, and the latency reference). Costs a second run per trial request.
    compare_previous: bool = True
    # Agent restarts during one trial before it counts as a crash loop and rolls back.
    max_restarts: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", _trial_mode(self.mode))
        for key in ("window_requests", "min_requests", "max_restarts"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trial.{key}: expected >= 0, got {getattr(self, key)}")
        for key in ("window_s", "latency_budget_ms", "latency_slack_ms", "new_architecture_budget_ms"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trial.{key}: expected >= 0, got {getattr(self, key)}")
        for key in ("max_error_rate", "max_divergence", "max_disagreement"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ConfigError(f"trial.{key}: expected a fraction in 0..1, got {value}")
        if self.max_latency_ratio < 1 and self.max_latency_ratio != 0:
            raise ConfigError(
                "trial.max_latency_ratio: expected >= 1, or 0 for no ratio gate, "
                f"got {self.max_latency_ratio}"
            )
        if self.divergence_reference not in ("auto", "profile", "previous", "none"):
            raise ConfigError(
                "trial.divergence_reference: expected one of auto, profile, previous, none, "
                f"got {self.divergence_reference!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.window_requests > 0 or self.window_s > 0


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    # The loop guard: checkpoints saved for one update before it is rolled back as looping.
    max_state_saves: int = 30
    # Verifying and loading run in worker threads; one that hangs this long fails the step.
    step_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_state_saves < 5:
            raise ConfigError(
                f"update.max_state_saves: expected >= 5 (one update saves 5 times), "
                f"got {self.max_state_saves}"
            )
        if self.step_timeout_s <= 0:
            raise ConfigError(f"update.step_timeout_s: expected > 0 seconds, got {self.step_timeout_s}")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The on-disk queue of events and telemetry waiting for the broker."""

    # None: kept in memory only (simulations; a restart loses what was not acknowledged).
    path: Path | None = None
    max_messages: int = 10_000
    # SQLite synchronous mode: "normal" survives a crash of the agent, "full" also a power cut.
    sync: Literal["normal", "full"] = "normal"

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ConfigError(f"queue.max_messages: expected >= 1, got {self.max_messages}")
        if self.sync not in ("normal", "full"):
            raise ConfigError(f"queue.sync: expected 'normal' or 'full', got {self.sync!r}")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # Prometheus text exposition on 127.0.0.1 only; 0 disables.
    port: int = 0

    def __post_init__(self) -> None:
        if self.port != 0:
            _check_port("metrics.port", self.port)


def _frozen_labels() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device_id: str
    fleet: str
    state_dir: Path
    labels: Mapping[str, str] = field(default_factory=_frozen_labels)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    local_api: LocalApiConfig = field(default_factory=LocalApiConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    sketch: SketchConfig = field(default_factory=SketchConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # The signed-update channel and firmware slots (edge_agent.trust.config).
    trust: TrustConfig = field(default_factory=TrustConfig)
    firmware: FirmwareConfig = field(default_factory=FirmwareConfig)
    # "text" lines for people, "json" (one object a line) for a log collector (edge_agent.logs).
    log_format: Literal["text", "json"] = "text"

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: expected 'text' or 'json', got {self.log_format!r}")
        for kind, value in (("device", self.device_id), ("fleet", self.fleet)):
            try:
                validate_id(kind, value)
            except TopicError as e:
                raise ConfigError(f"{'device_id' if kind == 'device' else 'fleet'}: {e}") from e
        for key, value in self.labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(f"labels: expected string keys and values, got {key!r} = {value!r}")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"{self.fleet}.{self.device_id}"

    @classmethod
    def for_simulation(
        cls,
        *,
        device_id: str,
        fleet: str,
        state_dir: Path,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 1883,
        mqtt_protocol: MqttProtocol = "5",
        grpc_endpoint: str = "127.0.0.1:50051",
        local_api: bool = False,
        labels: Mapping[str, str] | None = None,
        telemetry_interval_s: float = 10.0,
        backoff: BackoffConfig | None = None,
        trial: TrialConfig | None = None,
        durable_queue: bool = True,
        trust: TrustConfig | None = None,
        firmware: FirmwareConfig | None = None,
    ) -> AgentConfig:
        """A config for one simulated device: plain TCP, a Unix socket under ``state_dir`` or none."""
        return cls(
            device_id=device_id,
            fleet=fleet,
            state_dir=state_dir,
            labels=dict(labels or {}),
            mqtt=MqttConfig(host=mqtt_host, port=mqtt_port, protocol=mqtt_protocol),
            hub=HubConfig(grpc_endpoint=grpc_endpoint),
            local_api=LocalApiConfig(socket=state_dir / "agent.sock" if local_api else None),
            telemetry=TelemetryConfig(interval_s=telemetry_interval_s),
            backoff=backoff or BackoffConfig(),
            trial=trial or TrialConfig(),
            queue=QueueConfig(path=state_dir / "queue.sqlite" if durable_queue else None),
            trust=trust or TrustConfig(),
            firmware=firmware or FirmwareConfig(),
        )


def _trial_mode(value: str) -> TrialMode:
    try:
        return TrialMode(value)
    except ValueError:
        raise ConfigError(
            f"trial.mode: expected one of {[m.value for m in TrialMode]}, got {value!r}"
        ) from None


def _check_port(key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: expected a port in 1..65535, got {port}")


def _check_client_cert(
    table: str, tls: bool, cert: Path | None, key: Path | None, *, tls_key: str = "tls"
) -> None:
    if (cert is None) != (key is None):
        given, missing = ("cert_file", "key_file") if key is None else ("key_file", "cert_file")
        raise ConfigError(f"{table}.{given} is set without {table}.{missing}: expected both or neither")
    if cert is not None and not tls:
        raise ConfigError(
            f"{table}.cert_file needs {table}.{tls_key} = true: a certificate is presented over TLS only"
        )


# -- TOML reading --------------------------------------------------------------------------------

_T = TypeVar("_T")


class _Table:
    """One TOML table, read key by key with errors that name the full key."""

    def __init__(self, data: Mapping[str, Any], name: str, base_dir: Path) -> None:
        self._data = data
        self._name = name
        self._base = base_dir
        self._seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._name}.{key}" if self._name else key

    def _get(self, key: str, kind: type[_T] | tuple[type, ...], expected: str) -> _T | None:
        self._seen.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        # bool is an int subclass: `port = true` must not pass as 1.
        if isinstance(value, bool) and kind is not bool:
            raise _type_error(self._key(key), expected, value)
        if not isinstance(value, kind):
            raise _type_error(self._key(key), expected, value)
        return value  # type: ignore[return-value]

    def str_(self, key: str, default: str) -> str:
        value = self._get(key, str, "a string")
        return default if value is None else value

    def opt_str(self, key: str) -> str | None:
        return self._get(key, str, "a string")

    def required_str(self, key: str) -> str:
        value = self.opt_str(key)
        if not value:
            raise ConfigError(f"{self._key(key)}: required, expected a non-empty string")
        return value

    def all_str(self) -> dict[str, str]:
        """Every key of a free-form table, each value a string."""
        return {key: self.str_(key, "") for key in list(self._data)}

    def int_(self, key: str, default: int) -> int:
        value = self._get(key, int, "an integer")
        return default if value is None else value

    def float_(self, key: str, default: float) -> float:
        value: int | float | None = self._get(key, (int, float), "a number")
        return default if value is None else float(value)

    def bool_(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false")
        return default if value is None else value

    def path(self, key: str) -> Path | None:
        value = self.opt_str(key)
        if value is None or value == "":
            return None
        return self.resolve(value)

    def resolve(self, value: str) -> Path:
        # Relative paths are relative to the config file, not to wherever the agent was started.
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base / path

    def table(self, key: str) -> _Table:
        value = self._get(key, dict, "a table")
        return _Table(value or {}, self._key(key), self._base)

    def check_unknown(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            where = f"[{self._name}]" if self._name else "the top level"
            raise ConfigError(
                f"unknown key {self._key(unknown[0])!r} in {where}; expected one of {sorted(self._seen)}"
            )


def _type_error(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {type(value).__name__} {value!r}")


def load_config(path: str | Path) -> AgentConfig:
    """Read an agent config from a TOML file; raise :class:`ConfigError` naming what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    return config_from_mapping(data, base_dir=path.resolve().parent)


def config_from_mapping(data: Mapping[str, Any], *, base_dir: Path) -> AgentConfig:
    """Build an :class:`AgentConfig` from parsed TOML; relative paths resolve against ``base_dir``."""
    top = _Table(data, "", base_dir)
    device_id = top.required_str("device_id")
    fleet = top.required_str("fleet")
    state_dir = top.resolve(top.required_str("state_dir"))
    labels = top.table("labels").all_str()
    log_format = top.str_("log_format", "text")

    m = top.table("mqtt")
    protocol = m.str_("protocol", "5")
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"mqtt.protocol: expected one of {list(_PROTOCOLS)}, got {protocol!r}")
    mqtt = MqttConfig(
        host=m.str_("host", "127.0.0.1"),
        port=m.int_("port", 1883),
        protocol=protocol,
        username=m.opt_str("username") or None,
        password_file=m.path("password_file"),
        tls=m.bool_("tls", False),
        ca_file=m.path("ca_file"),
        cert_file=m.path("cert_file"),
        key_file=m.path("key_file"),
        keepalive_s=m.int_("keepalive_s", 30),
        ack_timeout_s=m.float_("ack_timeout_s", 10.0),
        topic_prefix=m.str_("topic_prefix", DEFAULT_PREFIX),
        client_id=m.str_("client_id", ""),
    )
    h = top.table("hub")
    hub = HubConfig(
        grpc_endpoint=h.str_("grpc_endpoint", "127.0.0.1:50051"),
        grpc_tls=h.bool_("grpc_tls", False),
        ca_file=h.path("ca_file"),
        cert_file=h.path("cert_file"),
        key_file=h.path("key_file"),
    )
    la = top.table("local_api")
    socket_raw = la.str_("socket", DEFAULT_SOCKET)
    socket = None if socket_raw == "" else la.resolve(socket_raw.replace("{state_dir}", str(state_dir)))
    local_api = LocalApiConfig(socket=socket, tcp_port=la.int_("tcp_port", 0))
    t = top.table("telemetry")
    telemetry = TelemetryConfig(
        interval_s=t.float_("interval_s", 10.0),
        max_samples_per_window=t.int_("max_samples_per_window", 1024),
    )
    sk = top.table("sketch")
    d_sk = SketchConfig()
    sketch = SketchConfig(
        enabled=sk.bool_("enabled", d_sk.enabled),
        k=sk.int_("k", d_sk.k),
        reduction=sk.str_("reduction", d_sk.reduction),
        buffer_rows=sk.int_("buffer_rows", d_sk.buffer_rows),
        feedback_capacity=sk.int_("feedback_capacity", d_sk.feedback_capacity),
        feedback_ttl_s=sk.float_("feedback_ttl_s", d_sk.feedback_ttl_s),
    )
    r = top.table("runtime")
    runtime = RuntimeConfig(intra_op_threads=r.int_("intra_op_threads", 1))
    b = top.table("backoff")
    backoff = BackoffConfig(
        initial_s=b.float_("initial_s", 1.0),
        max_s=b.float_("max_s", 120.0),
        multiplier=b.float_("multiplier", 2.0),
    )
    lim = top.table("limits")
    d_lim = LimitsConfig()
    limits = LimitsConfig(
        max_artifact_bytes=lim.int_("max_artifact_bytes", d_lim.max_artifact_bytes),
        download_chunk_timeout_s=lim.float_("download_chunk_timeout_s", d_lim.download_chunk_timeout_s),
        max_profile_bytes=lim.int_("max_profile_bytes", d_lim.max_profile_bytes),
        min_free_disk_bytes=lim.int_("min_free_disk_bytes", d_lim.min_free_disk_bytes),
        load_memory_factor=lim.float_("load_memory_factor", d_lim.load_memory_factor),
        min_free_memory_bytes=lim.int_("min_free_memory_bytes", d_lim.min_free_memory_bytes),
    )
    tr = top.table("trial")
    d_tr = TrialConfig()
    trial = TrialConfig(
        mode=_trial_mode(tr.str_("mode", d_tr.mode.value)),
        window_requests=tr.int_("window_requests", d_tr.window_requests),
        window_s=tr.float_("window_s", d_tr.window_s),
        min_requests=tr.int_("min_requests", d_tr.min_requests),
        max_error_rate=tr.float_("max_error_rate", d_tr.max_error_rate),
        latency_budget_ms=tr.float_("latency_budget_ms", d_tr.latency_budget_ms),
        max_latency_ratio=tr.float_("max_latency_ratio", d_tr.max_latency_ratio),
        latency_slack_ms=tr.float_("latency_slack_ms", d_tr.latency_slack_ms),
        max_divergence=tr.float_("max_divergence", d_tr.max_divergence),
        divergence_reference=tr.str_("divergence_reference", d_tr.divergence_reference),
        new_architecture_budget_ms=tr.float_("new_architecture_budget_ms", d_tr.new_architecture_budget_ms),
        max_disagreement=tr.float_("max_disagreement", d_tr.max_disagreement),
        compare_previous=tr.bool_("compare_previous", d_tr.compare_previous),
        max_restarts=tr.int_("max_restarts", d_tr.max_restarts),
    )
    up = top.table("update")
    d_up = UpdateConfig()
    update = UpdateConfig(
        max_state_saves=up.int_("max_state_saves", d_up.max_state_saves),
        step_timeout_s=up.float_("step_timeout_s", d_up.step_timeout_s),
    )
    q = top.table("queue")
    queue_raw = q.str_("path", DEFAULT_QUEUE)
    sync = q.str_("sync", "normal")
    if sync not in ("normal", "full"):
        raise ConfigError(f"queue.sync: expected 'normal' or 'full', got {sync!r}")
    queue = QueueConfig(
        path=None if queue_raw == "" else q.resolve(queue_raw.replace("{state_dir}", str(state_dir))),
        max_messages=q.int_("max_messages", QueueConfig().max_messages),
        sync="full" if sync == "full" else "normal",
    )
    mt = top.table("metrics")
    metrics = MetricsConfig(port=mt.int_("port", 0))
    ts = top.table("trust")
    d_ts = TrustConfig()
    trust = TrustConfig(
        require_signed=ts.bool_("require_signed", d_ts.require_signed),
        root_file=ts.path("root_file"),
        http_url=ts.str_("http_url", ""),
        metadata_timeout_s=ts.float_("metadata_timeout_s", d_ts.metadata_timeout_s),
        max_root_bytes=ts.int_("max_root_bytes", d_ts.max_root_bytes),
        max_timestamp_bytes=ts.int_("max_timestamp_bytes", d_ts.max_timestamp_bytes),
        max_snapshot_bytes=ts.int_("max_snapshot_bytes", d_ts.max_snapshot_bytes),
        max_targets_bytes=ts.int_("max_targets_bytes", d_ts.max_targets_bytes),
        max_desired_bytes=ts.int_("max_desired_bytes", d_ts.max_desired_bytes),
        refresh_interval_s=ts.float_("refresh_interval_s", d_ts.refresh_interval_s),
    )
    fw = top.table("firmware")
    firmware = FirmwareConfig(
        hardware_id=fw.str_("hardware_id", ""),
        bootlimit=fw.int_("bootlimit", FirmwareConfig().bootlimit),
        factory_bundle=fw.path("factory_bundle"),
    )
    for table in (top, m, h, la, t, sk, r, b, lim, tr, up, q, mt, ts, fw):
        table.check_unknown()
    return AgentConfig(
        device_id=device_id,
        fleet=fleet,
        state_dir=state_dir,
        labels=labels,
        mqtt=mqtt,
        hub=hub,
        local_api=local_api,
        telemetry=telemetry,
        sketch=sketch,
        runtime=runtime,
        backoff=backoff,
        limits=limits,
        trial=trial,
        update=update,
        queue=queue,
        metrics=metrics,
        trust=trust,
        firmware=firmware,
        log_format=log_format,  # type: ignore[arg-type]  # checked in AgentConfig.__post_init__
    )
