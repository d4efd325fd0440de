"""Agent config: the example file loads, defaults are the safe ones, and bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, LocalApiConfig, load_config
from edge_agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
MINIMAL = 'device_id = "dev-1"\nfleet = "f1"\nstate_dir = "state"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_example_config_loads_with_every_section() -> None:
    cfg = load_config(REPO / "deploy" / "agent.example.toml")
    assert cfg.device_id == "cam-0042"
    assert cfg.fleet == "factory-a"
    assert dict(cfg.labels) == {"site": "plant-3", "line": "7"}
    assert cfg.mqtt.port == 8883 and cfg.mqtt.tls and cfg.mqtt.protocol == "5"
    # The shipped broker knows a device by its certificate, not a password.
    assert cfg.mqtt.password_file is None and cfg.mqtt.username is None
    assert cfg.mqtt.cert_file == Path("/etc/edgefleet/client.crt") == cfg.hub.cert_file
    assert cfg.mqtt.key_file == Path("/etc/edgefleet/client.key") == cfg.hub.key_file
    assert cfg.hub.grpc_endpoint == "hub.example.net:50051" and cfg.hub.grpc_tls
    assert cfg.local_api.socket == Path("/var/lib/edgefleet/agent.sock")
    assert cfg.limits.max_artifact_bytes == 256 * 1024 * 1024
    assert cfg.mqtt_client_id == "factory-a.cam-0042"


def test_minimal_config_gets_safe_defaults_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.state_dir == tmp_path.resolve() / "state"
    assert cfg.local_api.socket == tmp_path.resolve() / "state" / "agent.sock"
    assert cfg.local_api.tcp_port == 0
    assert cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883 and cfg.mqtt.protocol == "5"
    assert cfg.mqtt.topic_prefix == "ef/v1"
    assert cfg.hub.grpc_endpoint == "127.0.0.1:50051"
    assert cfg.telemetry.interval_s == 10.0
    assert cfg.runtime.intra_op_threads == 1
    assert cfg.limits.max_artifact_bytes == 256 * 1024 * 1024


def test_update_trial_queue_and_metrics_defaults_are_the_safe_ones(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.trial.mode == "serve" and cfg.trial.enabled
    assert (cfg.trial.window_requests, cfg.trial.window_s, cfg.trial.max_restarts) == (200, 60.0, 2)
    assert cfg.update.max_state_saves == 30
    assert (
        cfg.queue.path == tmp_path.resolve() / "state" / "queue.sqlite" and cfg.queue.max_messages == 10_000
    )
    assert cfg.metrics.port == 0
    assert cfg.limits.min_free_disk_bytes == 16 * 1024 * 1024


def test_example_config_sets_a_trial_a_queue_and_metrics() -> None:
    cfg = load_config(REPO / "deploy" / "agent.example.toml")
    assert cfg.trial.mode == "serve" and cfg.trial.window_requests == 200
    assert cfg.queue.path == Path("/var/lib/edgefleet/queue.sqlite") and cfg.queue.sync == "normal"
    assert cfg.metrics.port == 9464
    assert cfg.mqtt.ack_timeout_s == 10.0


def test_example_config_copied_as_is_runs_no_firmware_slots() -> None:
    # Slots on a board that is not set up for them would write images nowhere safe: they are opt-in.
    cfg = load_config(REPO / "deploy" / "agent.example.toml")
    assert cfg.firmware.hardware_id == "" and not cfg.firmware.enabled
    assert cfg.firmware.bootlimit == 3


def test_an_empty_queue_path_keeps_the_queue_in_memory(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + '[queue]\npath = ""\n[trial]\nmode = "shadow"\n'))
    assert cfg.queue.path is None and cfg.trial.mode == "shadow"


def test_empty_socket_disables_the_unix_listener(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + '[local_api]\nsocket = ""\ntcp_port = 7001\n'))
    assert cfg.local_api.socket is None
    assert cfg.local_api.tcp_port == 7001


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[mqtt]\nport = "1883"\n', "mqtt.port: expected an integer, got str '1883'"),
        ("[mqtt]\nport = true\n", "mqtt.port: expected an integer, got bool True"),
        ("[mqtt]\nport = 70000\n", "mqtt.port: expected a port in 1..65535, got 70000"),
        ('[mqtt]\nprotocol = "4"\n', "mqtt.protocol: expected one of ['5', '3.1.1'], got '4'"),
        ('[mqtt]\nhostt = "x"\n', "unknown key 'mqtt.hostt' in [mqtt]"),
        ('[mqtt]\ntopic_prefix = "ef/#"\n', "mqtt.topic_prefix: invalid topic prefix"),
        ("[telemetry]\ninterval_s = 0\n", "telemetry.interval_s: expected > 0 seconds, got 0.0"),
        ('[telemetry]\ninterval_s = "fast"\n', "telemetry.interval_s: expected a number, got str 'fast'"),
        ("[backoff]\ninitial_s = 5\nmax_s = 1\n", "backoff.max_s: expected >= initial_s (5.0), got 1.0"),
        ("[limits]\nmax_artifact_bytes = 0\n", "limits.max_artifact_bytes: expected >= 1, got 0"),
        ("[runtime]\nintra_op_threads = 0\n", "runtime.intra_op_threads: expected >= 1, got 0"),
        ("[labels]\nsite = 3\n", "labels.site: expected a string, got int 3"),
        ("colour = 1\n", "unknown key 'colour' in the top level"),
        ('[trial]\nmode = "canary"\n', "trial.mode: expected one of ['serve', 'shadow'], got 'canary'"),
        ("[trial]\nmax_divergence = 1.5\n", "trial.max_divergence: expected a fraction in 0..1, got 1.5"),
        (
            "[trial]\nmax_latency_ratio = 0.5\n",
            "trial.max_latency_ratio: expected >= 1, or 0 for no ratio gate, got 0.5",
        ),
        ("[trial]\nwindow_requests = -1\n", "trial.window_requests: expected >= 0, got -1"),
        ("[update]\nmax_state_saves = 2\n", "update.max_state_saves: expected >= 5"),
        ('[queue]\nsync = "sometimes"\n', "queue.sync: expected 'normal' or 'full', got 'sometimes'"),
        ("[queue]\nmax_messages = 0\n", "queue.max_messages: expected >= 1, got 0"),
        ("[metrics]\nport = 70000\n", "metrics.port: expected a port in 1..65535, got 70000"),
        ("[limits]\nmin_free_disk_bytes = -1\n", "limits.min_free_disk_bytes: expected >= 0, got -1"),
        ("mqtt = 1\n", "mqtt: expected a table, got int 1"),
        ("[mqtt]\nack_timeout_s = 0.5\n", "mqtt.ack_timeout_s: expected 1 to 600 seconds, got 0.5"),
    ],
)
def test_bad_values_name_the_key_the_expected_type_and_what_came(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + extra))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('fleet = "f"\nstate_dir = "s"\n', "device_id: required"),
        ('device_id = "a/b"\nfleet = "f"\nstate_dir = "s"\n', "device_id: invalid device id 'a/b'"),
        ('device_id = "d"\nfleet = "+"\nstate_dir = "s"\n', "fleet: invalid fleet id '+'"),
        ('device_id = "d"\nfleet = "f"\n', "state_dir: required"),
        ("device_id = \n", "is not valid TOML"),
    ],
)
def test_identity_keys_are_required_and_validated(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_socket_path_longer_than_a_sockaddr_holds_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unix socket paths hold at most 107 bytes"):
        LocalApiConfig(socket=Path("/" + "x" * 120))


def test_password_is_read_from_its_file_at_use(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = load_config(write(tmp_path, MINIMAL + '[mqtt]\npassword_file = "pw"\n'))
    assert cfg.mqtt.read_password() == "s3cret"
    secret.unlink()
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: cannot read"):
        cfg.mqtt.read_password()


def test_for_simulation_puts_the_socket_in_the_state_dir(tmp_path: Path) -> None:
    cfg = AgentConfig.for_simulation(
        device_id="sim-0001", fleet="f", state_dir=tmp_path, local_api=True, labels={"k": "v"}
    )
    assert cfg.local_api.socket == tmp_path / "agent.sock"
    assert dict(cfg.labels) == {"k": "v"}
    off = AgentConfig.for_simulation(device_id="sim-0002", fleet="f", state_dir=tmp_path)
    assert off.local_api.socket is None and off.local_api.tcp_port == 0


def test_labels_cannot_be_changed_after_load(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL + '[labels]\nsite = "a"\n'))
    with pytest.raises(TypeError):
        cfg.labels["site"] = "b"  # type: ignore[index]
