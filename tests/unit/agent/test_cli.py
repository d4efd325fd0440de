"""The command line: help everywhere, clear errors for bad configs, exit codes a service manager can read."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent import sim
from edge_agent.cli import main


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() configures the root logger for a process; give the test session its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["simulate", "--help"], ["status", "--help"]]
)
def test_help_is_available_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: edgefleet-agent" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: edgefleet-agent" in capsys.readouterr().err


def test_a_bad_config_is_reported_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "d"\nfleet = "f"\nstate_dir = "s"\n[mqtt]\nport = "x"\n')
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "configuration error: mqtt.port: expected an integer, got str 'x'" in err


def test_simulate_checks_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--fleet", "f", "--state-root", "/tmp/x", "--devices", "0"])
    assert info.value.code == 2
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_simulate_refuses_a_bad_trial_window(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--fleet", "f", "--state-root", "/tmp/x", "--trial-window", value, "--check"])
    assert info.value.code == 2
    assert "--trial-window: expected a number of seconds >= 0" in capsys.readouterr().err


def test_the_module_runs_as_a_program() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("edgefleet-agent ")


@pytest.fixture
def fleet_kwargs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the simulate command hands run_fleet, which records it instead of running a fleet."""
    seen: dict[str, Any] = {}

    async def fake_run_fleet(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(sim, "run_fleet", fake_run_fleet)
    return seen


def test_simulate_runs_the_fleet_with_its_heap_frozen(fleet_kwargs: dict[str, Any], tmp_path: Path) -> None:
    # The simulate command's process runs nothing but the fleet: it keeps the fleet's long-lived
    # objects out of the cyclic collector (edge_agent.sim._freeze_heap).
    seen = fleet_kwargs
    assert main(["simulate", "--fleet", "f", "--state-root", str(tmp_path), "--devices", "1"]) == 0
    assert seen["freeze_heap"] is True


def test_freezing_the_heap_moves_what_is_alive_out_of_the_collector() -> None:
    # In a child process: a frozen heap in the test process would keep every test's garbage cycles.
    code = (
        "import gc\n"
        "from edge_agent.sim import _freeze_heap\n"
        "before = gc.get_freeze_count()\n"
        "_freeze_heap()\n"
        "print(before, gc.get_freeze_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 1000


def test_simulate_numbers_its_devices_from_the_first_device_asked(
    fleet_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    seen = fleet_kwargs
    root = ["simulate", "--fleet", "f", "--state-root", str(tmp_path), "--devices", "2"]
    assert main(root) == 0 and seen["first"] == 1
    assert main([*root, "--first-device", "5001"]) == 0 and seen["first"] == 5001


def test_processes_that_split_a_fleet_name_every_device_once() -> None:
    # Two processes of 5,000 each, as bench/scale.py runs 10,000 on two cores.
    first, second = sim.device_ids(5000), sim.device_ids(5000, first=5001)
    assert (first[0], first[-1], second[0], second[-1]) == ("sim-0001", "sim-5000", "sim-05001", "sim-10000")
    assert len(set(first) | set(second)) == 10_000
    with pytest.raises(ValueError, match="start at 1 or above, got 0"):
        sim.device_ids(3, first=0)
