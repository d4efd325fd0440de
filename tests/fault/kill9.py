"""The kill -9 harness for the fault suite: the one in ``bench/_kill9.py``, which bench/kill9.py also runs.

It lives under bench/ so that the benchmark runs without the test suite (bench/ never
imports tests/); tests/fault/test_kill9.py runs a few kills in CI through this module.
"""

from __future__ import annotations

from bench._kill9 import Harness, Outcome, Run, run_harness, summary

__all__ = ["Harness", "Outcome", "Run", "run_harness", "summary"]


if __name__ == "__main__":  # a quick manual run, on a broker of its own: python -m tests.fault.kill9 RUNS
    import json
    import os
    import sys
    import tempfile
    from pathlib import Path

    from tests._services import Mosquitto

    with tempfile.TemporaryDirectory(prefix="k9-", dir="/tmp") as tmp, Mosquitto() as broker:
        address = (broker.host, broker.port)
        result = run_harness(Path(tmp), address, f"k9-{os.getpid()}", runs=int(sys.argv[1]))
        print(json.dumps(summary(result), indent=2))
