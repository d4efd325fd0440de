"""kill -9 at random instants during updates, 200 times: every restart must serve a verified model.

    python bench/kill9.py                       # 200 runs against Mosquitto on 127.0.0.1:1883
    python bench/kill9.py --runs 50 --mqtt-port 1884

The harness is bench/_kill9.py (CI runs 10 of these in tests/fault/test_kill9.py):
the real agent process updates from a paced test artifact service, is killed with SIGKILL
at a random instant, and is started again; it must answer on its local API with its
committed model, whose artifact verifies, and then finish the update on its own. The
figures are the share of runs that did, where the kills landed (what the state file said),
and how long a restart took to answer and to finish. There is no bare baseline: a restart
is the agent's own behaviour. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._kill9 import run_harness, summary
from bench.agent import machine, versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="kills (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="k9-", dir="/tmp"))
    started = time.monotonic()
    try:
        outcome = run_harness(
            work, (args.mqtt_host, args.mqtt_port), f"k9-{os.getpid()}", runs=args.runs, seed=args.seed
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = summary(outcome) | {"seconds": round(time.monotonic() - started, 1)}
    ok = len(outcome.runs)
    targets = {
        "verified_restarts": {
            "value": ok,
            "goal": args.runs,
            "unit": f"runs of {args.runs} that restarted into a verified model and finished the update",
            "met": ok == args.runs and not outcome.failures,
        }
    }
    print(json.dumps({"machine": machine(), "versions": versions(), "results": results, "targets": targets}))
    return 0 if targets["verified_restarts"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
