"""The systemd units in deploy/systemd: systemd's own verifier, and the hub unit's hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.static._container_tools import ROOT

UNITS = sorted((ROOT / "deploy/systemd").glob("*.service"))
HUB_UNIT = ROOT / "deploy/systemd/edgefleet-hub.service"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}: a key may repeat (Environment=), and an empty value counts."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} before any [section]"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: expected KEY=VALUE, got {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_there_are_units_for_the_hub_and_the_agent() -> None:
    assert [u.name for u in UNITS] == ["edgefleet-agent.service", "edgefleet-hub.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_is_clean(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian: apt-get install systemd)")
    # verify checks that ExecStart's program exists: point the install path at this venv's scripts.
    copy = tmp_path / unit.name
    copy.write_text(
        unit.read_text(encoding="utf-8").replace("/opt/edgefleet/bin/", f"{Path(sys.executable).parent}/"),
        encoding="utf-8",
    )
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown or misplaced keys are only warned about (exit 0): any line on stderr fails the check.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_hub_unit_is_hardened() -> None:
    service = parse_unit(HUB_UNIT)["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["ExecStart"] == "/opt/edgefleet/bin/fleet hub"
    assert one["User"] == "edgefleet" and one["Group"] == "edgefleet"
    assert one["EnvironmentFile"] == "/etc/edgefleet/hub.env"
    assert one["Restart"] == "on-failure"
    expected = {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "PrivateDevices": "true",
        "ReadWritePaths": "/var/lib/edgefleet",
        # Empty: the hub keeps no capability at all.
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictSUIDSGID": "true",
        "SystemCallFilter": "@system-service",
    }
    for key, value in expected.items():
        assert one.get(key) == value, f"{key}: expected {value!r}, got {one.get(key)!r}"
    assert one["MemoryMax"].endswith(("G", "M")), one["MemoryMax"]
    # The data folder the unit grants is the one the hub is told to use.
    assert "EDGEFLEET_DATA_DIR=/var/lib/edgefleet" in service["Environment"]
    assert parse_unit(HUB_UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_restart_limits_sit_in_the_unit_section() -> None:
    # In [Service] systemd ignores StartLimit*; a unit that restarts for ever needs it in [Unit].
    for unit in UNITS:
        sections = parse_unit(unit)
        assert not [k for k in sections["Service"] if k.startswith("StartLimit")], unit.name
        assert sections["Unit"].get("StartLimitIntervalSec") == ["0"], unit.name
