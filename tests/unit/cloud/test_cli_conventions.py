"""`fleet` conventions that need no hub: help, examples, versions, exit codes, error sentences."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloud.cli import app
from cloud.cli.common import ExitCode, exit_code_for, short_prefixes
from cloud.client.hub import HubError, HubUnreachableError, validation_sentence

runner = CliRunner()
# <list[str]>, <dict[str, str]>, and the bare ones typer prints for an option without a value name:
# <int>, <str>, <bool>, <float>, <path>, <int range>.
PYTHON_TYPE = re.compile(r"<[^<>\s]*\[[^<>]*\]>|<(?:int|str|bool|float|path|datetime)(?: range)?>")


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group under ``command`` (typer's groups have ``commands``, as click's do)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))


def test_the_walk_finds_every_command_group() -> None:
    names = {" ".join(p) for p in COMMANDS}
    for expected in ("models show", "devices show", "experiments show", "keys init", "firmware assign",
                     "rollbacks ls", "train", "simulate", "demo", "hub", "assign", "cohorts create",
                     "rollouts watch", "devices label"):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "fleet")
def test_every_command_has_an_example_and_no_python_type_names(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert f"fleet {' '.join(path)}".strip() in result.output.split("Example:", 1)[1]
    assert not PYTHON_TYPE.search(result.output), PYTHON_TYPE.findall(result.output)


def test_fleet_help_lists_the_exit_codes() -> None:
    out = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    for code in ExitCode:
        assert re.search(rf"^\s*│?\s*{int(code)}\s+\S", out, re.MULTILINE), f"exit code {int(code)} missing"
    assert "--install-completion" in out and "--show-completion" in out


def test_fleet_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fleet {metadata.version('edgefleet')}"


def test_agent_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"edgefleet-agent {metadata.version('edgefleet')}"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["assign", "--model", "m", "--version", "1"], "give --device ID (repeatable) or --label SELECTOR"),
        (["assign", "--model", "m", "--version", "1", "-d", "a", "--label", "site=lab"], "are exclusive"),
        (["assign", "--model", "m", "--version", "1", "--label", "site in lab"],
         "--label: invalid label selector 'site in lab' at position 8: expected '(' after 'in', got 'lab'"),
        (["devices", "ls", "--label", "site=lab,,"], "at position 9: expected a label key or '!', got ','"),
        (["devices", "label", "cam-01", "site"], "expected KEY=VALUE, KEY=- or KEY-; got 'site'"),
        (["cohorts", "create", "lab"], "give --selector SELECTOR, --device ID (repeatable), or both"),
        (["cohorts", "create", "lab", "--selector", "a!b"], "at position 1: expected '=', '==', '!='"),
        (["cohorts", "ls", "--all", "--limit", "5"], "--all and --limit are exclusive"),
        (["firmware", "assign", "--name", "fw", "--version", "1"], "give --device ID (repeatable)"),
        (["firmware", "assign", "--name", "fw", "--version", "1", "--device", "a", "--label", "a=b"],
         "are exclusive"),
        (["devices", "ls", "--state", "bogus"], "'bogus' is not one of 'online', 'offline'"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_before_any_request(args: list[str], said: str) -> None:
    # No hub listens there: a request would exit 6, not 2.
    result = runner.invoke(app, [*args, "--hub-url", f"http://127.0.0.1:{_closed_port()}", "--token", "t"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert said in " ".join(result.output.replace("│", " ").split())
    assert "'loc'" not in result.output and "Input should be" not in result.output


def test_an_unreachable_hub_exits_6() -> None:
    result = runner.invoke(app, ["models", "ls", "--hub-url", f"http://127.0.0.1:{_closed_port()}"])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach the hub" in result.output


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 4), (401, 5), (403, 5), (404, 3), (409, 4), (412, 4), (413, 4), (422, 4), (500, 1), (503, 1),
     (None, 1)],
)  # fmt: skip
def test_exit_codes_follow_the_hubs_status(status: int | None, code: int) -> None:
    assert exit_code_for(HubError("x", status)) == code


def test_unreachable_is_its_own_code() -> None:
    assert exit_code_for(HubUnreachableError("down")) == ExitCode.UNREACHABLE


def test_simulate_writes_under_the_data_dir(tmp_path: Path) -> None:
    # Nothing answers for the fleet's root.json, so simulate stops after making its state folder.
    result = runner.invoke(
        app,
        ["simulate", "--devices", "1", "--hub-url", f"http://127.0.0.1:{_closed_port()}"],
        env={"EDGEFLEET_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code != 0
    assert "cannot fetch the fleet's root.json" in result.output
    assert (tmp_path / "data" / "fleet").is_dir()


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        ({"type": "enum", "loc": ["query", "state"], "msg": "Input should be 'online' or 'offline'",
          "input": "bogus"}, "--state: expected 'online' or 'offline'; got 'bogus'"),
        ({"type": "missing", "loc": ["body", "version"], "msg": "Field required", "input": {}},
         "version: field required"),
        ({"type": "value_error", "loc": ["body", "devices", 0], "msg": "Value error, bad id", "input": "x y"},
         "devices.0: bad id; got 'x y'"),
        ({"type": "int_parsing", "loc": ["query", "max_items"], "msg": "Input should be a valid integer",
          "input": "ten"}, "--max-items: expected a valid integer; got 'ten'"),
    ],
)  # fmt: skip
def test_validation_errors_read_as_sentences(error: dict[str, object], sentence: str) -> None:
    assert validation_sentence(error) == sentence


def test_short_prefixes_are_unique_and_at_least_8_long() -> None:
    ids = ["4d85aa0011", "4d85aa0022", "9f000000000000", "short"]
    shown = short_prefixes(ids)
    assert shown == {"4d85aa0011": "4d85aa001", "4d85aa0022": "4d85aa002", "9f000000000000": "9f000000",
                     "short": "short"}  # fmt: skip
    for value, prefix in shown.items():
        assert [v for v in ids if v.startswith(prefix)] == [value]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_hands_the_agent_program_its_device_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `fleet simulate` execs the agent's simulator; what it would run is recorded instead.
    ran: list[list[str]] = []

    def record(_path: str, argv: list[str]) -> None:
        ran.append(list(argv))

    monkeypatch.setattr(os, "execv", record)
    root = tmp_path / "root.json"
    root.write_bytes(b"{}")
    base = [
        "simulate",
        "--devices",
        "5000",
        "--light",
        "--state-root",
        str(tmp_path),
        "--trust-root",
        str(root),
    ]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--first-device", "5001"]).exit_code == 0
    assert "--first-device" not in ran[0]
    assert ran[1][ran[1].index("--first-device") + 1] == "5001"
    assert runner.invoke(app, [*base, "--first-device", "0"]).exit_code == 2
