"""Every EDGEFLEET_* name that the deployment files set or mention is one the code reads.

A misspelt variable in a compose file or an EnvironmentFile is silently ignored (pydantic-settings
ignores unknown names), so the hub would run on a default while its operator believes otherwise.
The names the code reads: the fields of every settings class (env prefix + field name) and the
environment variables of the `fleet` CLI's options. The agent reads no environment variable: its
configuration is its TOML file.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic_settings import BaseSettings

from tests.static._container_tools import ROOT

NAME = re.compile(r"\bEDGEFLEET_[A-Z0-9_]*[A-Z0-9]\b")
DEPLOYMENT_FILES = [
    ROOT / "deploy/compose/compose.yaml",
    ROOT / "deploy/compose/init-hub.sh",
    ROOT / "deploy/compose/provision-devices.sh",
    ROOT / "deploy/docker/hub.Dockerfile",
    ROOT / "deploy/docker/agent.Dockerfile",
    ROOT / "deploy/docker/healthcheck.py",
    *sorted((ROOT / "deploy/systemd").iterdir()),
]


def _subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _cli_envvars(command: Any) -> Iterator[str]:
    # Duck-typed: typer ships its own copy of click, whose classes are not click's.
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            yield envvar
        elif envvar:
            yield from envvar
    for sub in (getattr(command, "commands", None) or {}).values():
        yield from _cli_envvars(sub)


@pytest.fixture(scope="module")
def known_names() -> frozenset[str]:
    # Importing them registers the settings classes that _subclasses walks.
    for module in ("cloud.settings", "cloud.tuf.config"):
        importlib.import_module(module)
    from cloud.cli.app import app

    names: set[str] = set()
    for cls in _subclasses(BaseSettings):
        if not cls.__module__.startswith("cloud."):
            continue
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        names |= {prefix + field.upper() for field in cls.model_fields}
    names |= {n for n in _cli_envvars(typer.main.get_command(app)) if n.startswith("EDGEFLEET_")}
    return frozenset(names)


def unknown_names(texts: Iterable[tuple[str, str]], known: frozenset[str]) -> list[str]:
    """``where: NAME`` for each EDGEFLEET_* name in the texts that the code does not read."""
    return [
        f"{where}: {name}"
        for where, text in texts
        for name in sorted(set(NAME.findall(text)))
        if name not in known
    ]


def test_the_known_names_include_the_ones_deployments_need(known_names: frozenset[str]) -> None:
    needed = {"EDGEFLEET_DATA_DIR", "EDGEFLEET_DATABASE_URL", "EDGEFLEET_MQTT_TLS_CERT", "EDGEFLEET_HUB_URL"}
    assert needed <= known_names, needed - known_names
    assert "EDGEFLEET_TUF_ONLINE_PASSPHRASE" in known_names


def test_deployment_files_use_only_settings_the_code_reads(known_names: frozenset[str]) -> None:
    texts = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in DEPLOYMENT_FILES]
    used = {name for _, text in texts for name in NAME.findall(text)}
    assert len(used) >= 15, f"expected the deployment files to set the hub's settings, found {sorted(used)}"
    assert unknown_names(texts, known_names) == []


def test_a_misspelt_setting_is_reported(known_names: frozenset[str]) -> None:
    text = "EDGEFLEET_DATA_DIR=/var/lib/edgefleet\nEDGEFLEET_DATABSE_URL=postgresql://x\n"
    assert unknown_names([("hub.env", text)], known_names) == ["hub.env: EDGEFLEET_DATABSE_URL"]


def test_deployment_files_exist() -> None:
    missing = [str(p) for p in DEPLOYMENT_FILES if not Path(p).is_file()]
    assert not missing, missing
