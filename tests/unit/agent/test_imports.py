"""The agent must import on a device without the hub's heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "fastapi", "sqlmodel", "sqlalchemy", "sklearn", "scipy", "pandas")


def test_agent_modules_load_none_of_the_hub_dependencies() -> None:
    code = (
        "import json, sys\n"
        "import edge_agent, edge_agent.agent, edge_agent.cli, edge_agent.sim, edge_agent.client\n"
        "import edge_agent.report, edge_agent.metrics, edge_agent.outbox, edge_agent.trial\n"
        # Drift sketches and label feedback: datasketches and numpy, nothing of the hub's.
        "import edge_agent.sketching, edge_agent.feedback, edge_agent.usage, model_tools.profile\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(FORBIDDEN)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
