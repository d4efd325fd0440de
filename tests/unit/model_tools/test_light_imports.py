"""Light modules of model_tools import nothing a device cannot carry."""

from __future__ import annotations

import subprocess
import sys

LIGHT_MODULES = [
    "model_tools",
    "model_tools.errors",
    "model_tools.hashing",
    "model_tools.atomic",
    "model_tools.onnx_info",
    # The optimization pipeline's light steps: the agent and the hub's API use them without torch.
    "model_tools.validate",
    "model_tools.gates",
    "model_tools.bundle",
    "model_tools.evaluate",
    "model_tools.litert",
    "model_tools.profile",
]
HEAVY = ["torch", "sklearn", "scipy", "onnx", "onnxscript", "fastapi", "sqlmodel", "tensorflow"]


def test_light_modules_import_without_heavy_dependencies() -> None:
    # A fresh interpreter: this test process may already have torch loaded by other tests.
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in LIGHT_MODULES)
        + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
