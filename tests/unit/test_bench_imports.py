"""Benchmarks run from a clone without the test suite: nothing under bench/ imports from tests/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = sorted((ROOT / "bench").glob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names, at any depth (functions included)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.append(node.module)
    return names


def from_tests(names: list[str]) -> list[str]:
    return [n for n in names if n == "tests" or n.startswith("tests.")]


def test_the_bench_folder_has_benchmarks() -> None:
    assert {p.name for p in BENCH} >= {"agent.py", "kill9.py", "_kill9.py"}


@pytest.mark.parametrize("path", BENCH, ids=[p.name for p in BENCH])
def test_no_bench_module_imports_from_tests(path: Path) -> None:
    assert from_tests(imported_modules(path)) == [], f"{path.name} imports from tests/"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from tests.fault import kill9\n    import tests\n")
    assert from_tests(imported_modules(sample)) == ["tests.fault", "tests"]


def test_the_kill9_benchmark_loads_nothing_from_tests() -> None:
    # What the modules it imports import in turn counts too.
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import bench.kill9\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd="/"
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
