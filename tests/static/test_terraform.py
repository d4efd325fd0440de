"""Static checks of terraform/: no provider can be downloaded here, so `terraform init` and
`validate` cannot run. What stands in for them: `terraform fmt -check`, a parse of every file with
python-hcl2, checkov once per module and once for the example environment, and the cross-checks
below that `validate` would otherwise make (every module argument is a declared variable, every
required variable is given, every variable is documented and used).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.static._container_tools import checkov

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is a dev dependency: pip install python-hcl2==8.1.4")

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
EXAMPLE = TERRAFORM / "environments" / "example"
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
EXPECTED_MODULES = {
    "network",
    "kubernetes_cluster",
    "hub",
    "database",
    "object_storage",
    "mqtt",
    "secrets",
    "shared_files",
    "kms_key",
    "service_role",
}
# Module call arguments that are terraform's own, not the module's variables.
META_ARGUMENTS = {"source", "version", "count", "for_each", "providers", "depends_on"}


def _module_dirs() -> list[Path]:
    return sorted(p for p in MODULES.iterdir() if p.is_dir())


def _tf_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf"))


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        parsed: dict[str, Any] = hcl2.load(f)
    return parsed


def _unquote(value: object) -> str:
    """python-hcl2 8 keeps a string's quotes and wraps expressions in ${...}: the source text back."""
    if isinstance(value, str):
        if value.startswith("${") and value.endswith("}"):
            return value[2:-1]
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_unquote(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = [k for k in value if not k.startswith("__")]
        return "{}" if not keys else json.dumps({k: value[k] for k in keys})
    return str(value)


def _string(value: object) -> str:
    text = _unquote(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    default: str | None  # None: required
    description: str
    sensitive: bool


def _blocks(parsed: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in parsed.get(kind, []):
        for name, body in block.items():
            out.append((name.strip('"'), body))
    return out


def _variables(directory: Path) -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for name, body in _blocks(_load(directory / "variables.tf"), "variable"):
        found[name] = Variable(
            name=name,
            type=_unquote(body.get("type", "any")),
            default=_unquote(body["default"]) if "default" in body else None,
            description=_string(body.get("description", "")),
            sensitive=_unquote(body.get("sensitive", "false")) == "true",
        )
    return found


def _code_without_comments(directory: Path, *, skip: tuple[str, ...] = ()) -> str:
    """The module's .tf text without whole-line comments, so a mention in a comment is no use."""
    lines = []
    for path in sorted(directory.glob("*.tf")):
        if path.name in skip:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.lstrip().startswith(("#", "//")):
                lines.append(line)
    return "\n".join(lines)


def _module_calls() -> dict[str, tuple[Path, dict[str, Any]]]:
    calls: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(EXAMPLE.glob("*.tf")):
        for name, body in _blocks(_load(path), "module"):
            source = (EXAMPLE / _string(body["source"])).resolve()
            calls[name] = (source, body)
    return calls


def _run(
    argv: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


# --- formatting and parsing ---------------------------------------------------------------------


def test_terraform_fmt_check() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.fail("terraform not found on PATH: expected terraform >= 1.6 (CI machines have 1.11)")
    done = _run([terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], timeout=120)
    assert done.returncode == 0, f"terraform fmt -check found files to reformat:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("path", _tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    parsed = _load(path)
    assert set(parsed) - {"__comments__"}, f"{path} parsed to nothing: expected at least one block"


def test_tfvars_example_parses_and_names_only_declared_variables() -> None:
    example = EXAMPLE / "terraform.tfvars.example"
    values = {k for k in _load(example) if not k.startswith("__")}
    declared = _variables(EXAMPLE)
    unknown = values - set(declared)
    assert not unknown, f"{example.name} sets variables the environment does not declare: {sorted(unknown)}"
    required = {v.name for v in declared.values() if v.default is None}
    missing = required - values
    assert not missing, f"{example.name} leaves required variables out: {sorted(missing)}"


# --- module layout and interface ----------------------------------------------------------------


def test_the_modules_are_the_expected_set_each_with_its_four_files() -> None:
    assert {p.name for p in _module_dirs()} == EXPECTED_MODULES
    for module in _module_dirs():
        missing = [f for f in MODULE_FILES if not (module / f).is_file()]
        assert not missing, f"module {module.name} lacks {missing}: expected {list(MODULE_FILES)}"


@pytest.mark.parametrize("module", _module_dirs(), ids=lambda p: p.name)
def test_module_variables_are_documented_and_used(module: Path) -> None:
    variables = _variables(module)
    assert variables, f"module {module.name} declares no variables"
    undocumented = sorted(v.name for v in variables.values() if len(v.description) < 10)
    assert not undocumented, f"module {module.name}: variables without a description: {undocumented}"
    # Outside variables.tf: a variable's own validation block names it without using it.
    code = _code_without_comments(module, skip=("variables.tf",))
    unused = sorted(n for n in variables if not re.search(rf"\bvar\.{re.escape(n)}\b", code))
    assert not unused, f"module {module.name}: variables declared and never used: {unused}"


@pytest.mark.parametrize("directory", [*_module_dirs(), EXAMPLE], ids=lambda p: p.name)
def test_outputs_are_documented_and_versions_pinned(directory: Path) -> None:
    outputs = [(n, b) for p in sorted(directory.glob("*.tf")) for n, b in _blocks(_load(p), "output")]
    undocumented = sorted(n for n, b in outputs if len(_string(b.get("description", ""))) < 10)
    assert not undocumented, f"{directory.name}: outputs without a description: {undocumented}"

    (settings,) = _load(directory / "versions.tf")["terraform"]
    assert "required_version" in settings, f"{directory.name}/versions.tf: expected required_version"
    for providers in settings.get("required_providers", []):
        for name, spec in providers.items():
            if name.startswith("__"):
                continue
            version = _string(spec.get("version", ""))
            assert version.startswith("~>"), (
                f"{directory.name}: provider {name} is pinned as {version!r}: expected a ~> constraint"
            )


def test_secrets_module_outputs_are_all_sensitive_and_never_carry_the_ca_key() -> None:
    module = MODULES / "secrets"
    outputs = _blocks(_load(module / "outputs.tf"), "output")
    assert outputs
    plain = sorted(n for n, b in outputs if _unquote(b.get("sensitive", "false")) != "true")
    assert not plain, f"secrets module outputs without sensitive = true: {plain}"
    leaking = sorted(n for n, b in outputs if "fleet_ca_key_pem" in _unquote(b["value"]))
    assert not leaking, f"secrets module outputs that carry the CA key: {leaking}"
    assert _variables(module)["fleet_ca_key_pem"].sensitive


def test_hub_settings_match_the_hub_configuration() -> None:
    """Every EDGEFLEET_* variable the hub module sets is a setting the hub reads."""
    from cloud.settings import Settings
    from cloud.tuf.config import TufSettings

    known = {f"EDGEFLEET_{name.upper()}" for name in Settings.model_fields}
    known |= {f"EDGEFLEET_TUF_{name.upper()}" for name in TufSettings.model_fields}
    used = set(re.findall(r"\bEDGEFLEET_[A-Z0-9_]+\b", _code_without_comments(MODULES / "hub")))
    assert used, "the hub module sets no EDGEFLEET_* variable"
    unknown = sorted(used - known)
    assert not unknown, f"the hub module sets variables cloud.settings does not read: {unknown}"


# --- the example environment --------------------------------------------------------------------


def _nested_module_sources(directory: Path) -> set[Path]:
    """The local modules a module calls (kms_key and service_role, from the modules that need them)."""
    return {
        (directory / _string(body["source"])).resolve()
        for path in sorted(directory.glob("*.tf"))
        for _, body in _blocks(_load(path), "module")
    }


def test_every_module_is_used_by_the_example() -> None:
    used = {source for source, _ in _module_calls().values()}
    used |= {nested for source in set(used) for nested in _nested_module_sources(source)}
    unused = sorted(p.name for p in _module_dirs() if p.resolve() not in used)
    assert not unused, f"modules the example environment never calls: {unused}"


@pytest.mark.parametrize("call", sorted(_module_calls()), ids=str)
def test_example_module_calls_match_the_module_variables(call: str) -> None:
    source, body = _module_calls()[call]
    assert (source / "variables.tf").is_file(), f"module {call}: source {source} has no variables.tf"
    declared = _variables(source)
    given = {k for k in body if not k.startswith("__")} - META_ARGUMENTS
    unknown = sorted(given - set(declared))
    assert not unknown, f"module {call} is given arguments it does not declare: {unknown}"
    required = {v.name for v in declared.values() if v.default is None}
    missing = sorted(required - given)
    assert not missing, f"module {call} is not given its required variables: {missing}"


def _readme_rows() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    row = re.compile(r"^\| `([a-z0-9_]+)` \| `([^`]+)` \| (required|`[^`]*`) \| .+ \|$")
    for line in (EXAMPLE / "README.md").read_text(encoding="utf-8").splitlines():
        if m := row.match(line):
            rows[m.group(1)] = (m.group(2), m.group(3).strip("`"))
    return rows


def test_every_example_variable_is_in_the_readme_table() -> None:
    rows = _readme_rows()
    declared = _variables(EXAMPLE)
    missing = sorted(set(declared) - set(rows))
    assert not missing, f"example variables missing from README.md's table: {missing}"
    stale = sorted(set(rows) - set(declared))
    assert not stale, f"README.md lists variables the example no longer declares: {stale}"
    for name, variable in declared.items():
        default = "required" if variable.default is None else variable.default
        assert rows[name] == (variable.type, default), (
            f"README.md row for {name}: expected type {variable.type!r} and default {default!r}, "
            f"got {rows[name]!r}"
        )
    undocumented = sorted(v.name for v in declared.values() if len(v.description) < 10)
    assert not undocumented, f"example variables without a description: {undocumented}"


# --- checkov ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [*_module_dirs(), EXAMPLE], ids=lambda p: p.name)
def test_checkov_finds_nothing_unjustified(scope: Path) -> None:
    argv = [checkov(), "--directory", str(scope), "--framework", "terraform", "--output", "json", "--compact"]
    # No network here or in CI: without this checkov spends its time failing to fetch guidelines.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    done = _run(argv, timeout=600, env=env)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    assert isinstance(report, dict) and report.get("check_type") == "terraform", (
        f"expected one terraform report from checkov, got: {str(report)[:500]}"
    )
    results = report["results"]
    assert not results["parsing_errors"], f"checkov could not parse: {results['parsing_errors']}"
    assert results["passed_checks"], f"checkov ran no checks on {scope}: expected resources to check"
    failed = [
        f"{r['check_id']} {r['resource']} ({r['file_path']}:{r['file_line_range'][0]}): {r['check_name']}"
        for r in results["failed_checks"]
    ]
    assert not failed, "checkov failed checks (fix them, or skip inline with a reason):\n" + "\n".join(failed)
    # An inline skip without a reason gets checkov's placeholder; a skip must say why.
    unjustified = [
        f"{r['check_id']} {r['resource']}"
        for r in results["skipped_checks"]
        if len(r["check_result"].get("suppress_comment") or "") < 10
        or r["check_result"].get("suppress_comment") == "No comment provided"
    ]
    assert not unjustified, f"checkov skips without a reason: {unjustified}"
