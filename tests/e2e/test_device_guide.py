"""The device guide in docs/agent.md, run step by step in a throwaway root folder.

Blocks marked ``<!-- device-guide -->`` run on "the device", one command at a time, with what
only a real board has taken out, so that the rest runs as written:

- absolute paths under /opt, /etc and /var/lib move under a temporary root folder;
- ``sudo`` is dropped; ``apt-get`` is skipped (this environment has its Python);
- ``groupadd``/``useradd`` are not run: the test records the user and group they would create
  and checks that the systemd unit runs as them, in the home folder they name;
- ``install -o/-g`` is run without the owner and group (there is no edgefleet group here); the
  modes stay, and the test checks the owners the guide gives the credential files;
- ``python3 -m venv /opt/edgefleet`` and ``pip install`` are replaced by this test environment,
  linked at /opt/edgefleet: installing would download edgefleet and its wheels. The agent then
  runs from ``/opt/edgefleet/bin/edgefleet-agent`` as the unit names it;
- ``systemctl enable --now`` starts the unit's ExecStart (paths moved under the root) as a
  process of its own; ``daemon-reload`` is skipped.

The config the guide writes names a TLS broker and a hub by example host names: the test keeps
every other key and points those (and the fleet) at the real broker of the ``mqtt_broker``
fixture and a real hub, with TLS off (and so no client certificate) since the test broker speaks
plain MQTT; tests/integration/identity/ runs a provisioned agent over certificates. Blocks marked
``hub`` run the `fleet` CLI against the hub: ``fleet devices provision`` writes the device's bundle.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud.hub import Hub
from cloud.settings import Settings
from tests.e2e.doc_blocks import Block, poll, shell_commands, walk_blocks

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "agent.md"
# What `fleet devices provision` writes and the guide installs in /etc/edgefleet.
BUNDLE = ("agent.toml", "client.crt", "client.key", "ca.crt", "root.json")
UNIT_NAME = "edgefleet-agent.service"
_SYSTEM_PATH = re.compile(r"(?<![\w./-])/(?=(?:opt|etc|var/lib)(?:/|\b))")


@dataclass
class Device:
    """What the guide did to the (pretend) device, as the test saw it."""

    root: Path
    work: Path
    env: dict[str, str]
    groups: list[str] = field(default_factory=list)
    users: list[list[str]] = field(default_factory=list)
    installs: list[tuple[str | None, str | None, str | None, list[str]]] = field(default_factory=list)
    venvs: list[str] = field(default_factory=list)
    agent: subprocess.Popen[str] | None = None
    agent_log: Path | None = None

    def under_root(self, text: str) -> str:
        return _SYSTEM_PATH.sub(f"{self.root}/", text)

    def path(self, absolute: str) -> Path:
        return Path(self.under_root(absolute))

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-e", "-u", "-o", "pipefail", "-c", command],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{command!r} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        return done


def _install(device: Device, argv: list[str]) -> str:
    """``install`` without -o/-g (recorded instead); everything else as written."""
    owner = group = mode = None
    kept: list[str] = []
    operands: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg == "-o":
            owner = next(args)
        elif arg == "-g":
            group = next(args)
        elif arg == "-m":
            mode = next(args)
            kept += ["-m", mode]
        else:
            kept.append(arg)
            if not arg.startswith("-"):
                operands.append(arg)
    device.installs.append((owner, group, mode, operands))
    return shlex.join(["install", *kept])


def on_device(device: Device, command: str) -> str | None:
    """The command to run for one command of the guide, or None when it is skipped."""
    if "<<" in command:  # a here-document: nothing to take out, only paths to move
        return device.under_root(command)
    parts = []
    for part in command.split("&&"):
        argv = shlex.split(part, comments=True)
        if argv[:1] == ["sudo"]:
            argv = argv[1:]
        name = Path(argv[0]).name
        if name == "apt-get":
            continue
        if name == "groupadd":
            device.groups.append(argv[-1])
            continue
        if name == "useradd":
            device.users.append(argv[1:])
            continue
        if name == "systemctl":
            if argv[1:3] == ["enable", "--now"]:
                start_service(device, argv[3])
            continue
        if argv[:3] == ["python3", "-m", "venv"]:
            venv = device.path(argv[3])
            device.venvs.append(argv[3])
            venv.parent.mkdir(parents=True, exist_ok=True)
            venv.symlink_to(sys.prefix, target_is_directory=True)
            continue
        if name == "pip" and argv[1] == "install":
            continue
        if name == "install":
            parts.append(device.under_root(_install(device, argv)))
            continue
        parts.append(device.under_root(shlex.join(argv)))
    return " && ".join(parts) if parts else None


def unit_file(device: Device, name: str) -> configparser.ConfigParser:
    path = device.path(f"/etc/systemd/system/{name}")
    assert path.is_file(), f"the guide did not install {name} in /etc/systemd/system"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(path, encoding="utf-8")
    return unit


def start_service(device: Device, name: str) -> None:
    """What `systemctl enable --now` does here: check the unit against the guide, run its ExecStart."""
    unit = unit_file(device, name if name.endswith(".service") else f"{name}.service")
    service = unit["Service"]
    # The unit runs as the user and group the guide creates, from the venv the guide makes.
    assert device.groups == [service["Group"]]
    (user_args,) = device.users
    assert user_args[-1] == service["User"]
    assert user_args[user_args.index("--gid") + 1] == service["Group"]
    home = user_args[user_args.index("--home-dir") + 1]
    assert user_args[user_args.index("--shell") + 1] == "/usr/sbin/nologin"
    argv = shlex.split(service["ExecStart"])
    (venv,) = device.venvs
    assert argv[0] == f"{venv}/bin/edgefleet-agent"
    assert argv[1] == "--config"
    config = tomllib.loads(device.path(argv[2]).read_text(encoding="utf-8"))
    state_dir = device.under_root("/var/lib/edgefleet")
    # The state folder is the home, the one writable path, and what the config names.
    assert service["ReadWritePaths"].split() == [home] == ["/var/lib/edgefleet"]
    assert config["state_dir"] == state_dir
    assert device.path(home).is_dir()
    device.agent_log = device.work.parent / "agent.log"
    with device.agent_log.open("w", encoding="utf-8") as log:
        device.agent = subprocess.Popen(
            [device.under_root(a) for a in argv],
            env=device.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string for what configs hold


def to_toml(doc: dict[str, Any]) -> str:
    """Enough TOML for an agent config: top-level keys, then one level of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def point_at_test_services(device: Device, hub: Hub, broker: tuple[str, int]) -> dict[str, Any]:
    """Check the config the guide installed, then aim its example hosts at the real broker and hub."""
    path = device.path("/etc/edgefleet/agent.toml")
    guide = tomllib.loads(path.read_text(encoding="utf-8"))
    # The guide's own promises about the config.
    for table in ("mqtt", "hub"):
        assert guide[table]["cert_file"] == device.under_root("/etc/edgefleet/client.crt")
        assert guide[table]["key_file"] == device.under_root("/etc/edgefleet/client.key")
        assert guide[table]["ca_file"] == device.under_root("/etc/edgefleet/ca.crt")
    assert guide["trust"]["root_file"] == device.under_root("/etc/edgefleet/root.json")
    assert "firmware" not in guide, "the guide's config must not turn firmware slots on"
    for key in BUNDLE:
        assert device.path(f"/etc/edgefleet/{key}").is_file(), f"the guide did not install {key}"
    host, port = broker
    pointed = dict(guide)
    pointed["fleet"] = hub.settings.fleet
    plain = ("ca_file", "cert_file", "key_file")  # TLS only: the test broker and hub speak plaintext
    pointed["mqtt"] = {
        **{k: v for k, v in guide["mqtt"].items() if k not in plain},
        "host": host,
        "port": port,
        "tls": False,
    }
    pointed["hub"] = {
        **{k: v for k, v in guide["hub"].items() if k not in plain},
        "grpc_endpoint": hub.grpc_endpoint,
        "grpc_tls": False,
    }
    pointed["trust"] = {**guide["trust"], "http_url": f"{hub.api_url}/tuf"}
    path.write_text(to_toml(pointed), encoding="utf-8")
    return guide


@pytest.fixture
def hub(short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str) -> Iterator[Hub]:
    host, port = mqtt_broker
    settings = Settings(
        data_dir=short_tmp / "hub", fleet=fleet_name, mqtt_host=host, mqtt_port=port, api_port=0, grpc_port=0
    )
    with Hub(settings) as running:
        assert running.mqtt.wait_ready(10)
        yield running
        running.mqtt.clear_retained("cam-0042")


@pytest.fixture
def device(short_tmp: Path, hub: Hub) -> Iterator[Device]:
    root, work = short_tmp / "root", short_tmp / "work"
    # The folders any Debian system has; the guide creates the rest.
    for folder in ("etc/systemd/system", "opt", "var/lib"):
        (root / folder).mkdir(parents=True)
    work.mkdir()
    (work / "deploy").symlink_to(REPO / "deploy")  # "from a clone of this repository"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(EDGEFLEET_HUB_URL=hub.api_url, EDGEFLEET_TOKEN=hub.admin_token)
    running = Device(root, work, env)
    try:
        yield running
    finally:
        if running.agent is not None and running.agent.poll() is None:
            os.killpg(running.agent.pid, signal.SIGKILL)
            running.agent.wait(timeout=10)


def hub_devices(device: Device) -> list[dict[str, Any]]:
    done = device.run("fleet devices ls --output json")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def device_state(device: Device, device_id: str) -> dict[str, Any] | None:
    return next((d for d in hub_devices(device) if d["id"] == device_id), None)


def test_the_guide_marks_every_step_it_promises() -> None:
    blocks = walk_blocks(GUIDE, "device-guide")
    listed = [c for b in blocks for c in shell_commands(b.text)]
    text = "\n".join(listed)
    for needed in (
        "useradd --system",
        "python3 -m venv /opt/edgefleet",
        "agent.toml",
        "systemctl enable --now",
    ):
        assert needed in text, f"the device guide lost its `{needed}` step"
    assert [b.flags for b in blocks].count(frozenset({"hub"})) == 2


def test_device_guide_brings_a_device_online_with_its_labels(
    device: Device, hub: Hub, mqtt_broker: tuple[str, int]
) -> None:
    blocks: list[Block] = walk_blocks(GUIDE, "device-guide")
    guide_config: dict[str, Any] | None = None
    for block in blocks:
        for command in shell_commands(block.text):
            if "hub" in block.flags:
                if command.startswith(("fleet devices ls", "fleet devices show")):
                    assert guide_config is not None
                    wanted = guide_config["device_id"]

                    def online(wanted: str = wanted) -> dict[str, Any] | None:
                        assert device.agent is not None and device.agent.poll() is None, agent_output(device)
                        row = device_state(device, wanted)
                        return row if row is not None and row["state"] == "online" else None

                    poll(f"{wanted} online at the hub", online, deadline_s=60, every_s=1)
                done = device.run(command)
                if command.startswith(("fleet devices ls", "fleet devices show")):
                    assert guide_config is not None and guide_config["device_id"] in done.stdout
                continue
            rewritten = on_device(device, command)
            if rewritten is not None:
                device.run(rewritten)
            if guide_config is None and device.path("/etc/edgefleet/agent.toml").is_file():
                guide_config = point_at_test_services(device, hub, mqtt_broker)

    assert guide_config is not None and device.agent is not None, "the guide never started the service"
    # Who owns what: the credentials are root:edgefleet 0640, the state folder the agent's own.
    owners = {operand: (owner, group, mode) for owner, group, mode, ops in device.installs for operand in ops}
    for name in BUNDLE:
        assert owners[name] == ("root", "edgefleet", "0640"), (name, owners[name])
        assert device.path(f"/etc/edgefleet/{name}").stat().st_mode & 0o777 == 0o640
    assert owners["/etc/edgefleet"] == ("root", "edgefleet", "0750")
    assert owners["/var/lib/edgefleet"] == ("edgefleet", "edgefleet", "0750")

    row = device_state(device, guide_config["device_id"])
    assert row is not None and row["state"] == "online"
    assert row["labels"] == guide_config["labels"] == {"site": "plant-3", "line": "7"}
    assert row["fleet"] == hub.settings.fleet
    assert row["hardware_id"] == ""  # no firmware slots unless the config asks for them

    # A clean stop, as systemd stops it: exit 0, and the hub sees the device go offline.
    os.killpg(device.agent.pid, signal.SIGTERM)
    assert device.agent.wait(timeout=30) == 0, agent_output(device)

    def offline() -> bool | None:
        row = device_state(device, guide_config["device_id"])
        return True if row is not None and row["state"] == "offline" else None

    poll("the device to show offline after SIGTERM", offline, deadline_s=30)


def agent_output(device: Device) -> str:
    return device.agent_log.read_text(encoding="utf-8")[-4000:] if device.agent_log else ""
