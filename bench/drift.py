"""Drift detection on KLL sketches: power, false alarms, bytes on the wire, and the agent's cost.

    python bench/drift.py                         # 1,000 trials each, n = m = 100,000
    python bench/drift.py --trials 100            # quicker
    python bench/drift.py --skip-agent            # the statistics only

Figures, each beside its baseline in the same run:

(a) power: a window's inputs drawn from N(0.1, 1) (a tenth of a sigma), sketched the way the
    hub sees them (``--devices`` device sketches of n / devices values each, merged with the
    hub's ``merge_windows``), tested with ``cloud.drift.stats.ks_test`` at ``--alpha`` against
    a baseline profile sketch of m values from N(0, 1). Baseline: scipy's exact two-sample KS
    test (``ks_2samp``) on the same raw values. Target: power >= 0.95.
(b) false alarms: the same with no shift. Baseline: ``ks_2samp`` on the raw values (it should
    sit near alpha). Target: <= 1%.
(c) sketch bytes per feature per window: one serialized KLL sketch (k = 200) after n values,
    for n from 100 to 1,000,000, beside the raw float32 bytes it stands for. Target: <= 3 KB
    at up to 100,000 values.
(d) agent cost: ``Agent.predict`` on the demo CNN at batch 1, in process, with
    ``[sketch] enabled`` on and off (interleaved rounds, medians, as ``bench/agent.py``
    measures predict overhead). The agent serves the CNN with a data profile (image
    summary features), so the bulk sketching does what a device does; the calls run on the
    agent's event loop, where the bulk work runs between them, so each call's cost holds the
    request path and the bulk sketching both. Rounds are paired (off-on, on-off, ...) and the
    figure is the median over pairs of on / off - 1. The target reads process CPU time: on a
    shared machine wall time also counts other processes' turns on the cores (it is reported
    beside). A cross-check: a SketchRecorder alone, fed the same rows, timed per prediction.
    Target: <= 5%.

The last line of output is one JSON object (see ../shared/DESIGN.md, "Benchmarks"); the exit
status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "proto"))

import numpy as np  # noqa: E402
from datasketches import kll_floats_sketch  # noqa: E402
from scipy.stats import ks_2samp  # noqa: E402

from bench.agent import FileFetcher, LoopThread, desired, machine  # noqa: E402
from cloud.drift.stats import ks_test, load_sketch  # noqa: E402
from cloud.telemetry.merge import merge_windows  # noqa: E402
from edgefleet_proto.v1 import common_pb2, profile_pb2, sketch_pb2  # noqa: E402

K = 200
TARGET_POWER = 0.95
TARGET_FALSE_ALARMS = 0.01
TARGET_BYTES = 3 * 1024
TARGET_AGENT_PCT = 5.0


def versions() -> dict[str, str]:
    out = {}
    for name in ("datasketches", "scipy", "numpy", "onnxruntime", "protobuf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _sketch(values: np.ndarray) -> kll_floats_sketch:
    sketch = kll_floats_sketch(K)
    sketch.update(values)
    return sketch


def _device_window(values: np.ndarray) -> sketch_pb2.SketchWindow:
    sketch = _sketch(values)
    feature = profile_pb2.FeatureSketch(name="f0", kll_floats=bytes(sketch.serialize()), count=int(sketch.n))
    return sketch_pb2.SketchWindow(model_version="1", samples=len(values), features=[feature])


def _merged(values: np.ndarray, devices: int) -> kll_floats_sketch:
    """What the hub holds for a window: the merge of each device's sketch of its share."""
    if devices <= 1:
        return _sketch(values)
    window = merge_windows(_device_window(part) for part in np.array_split(values, devices))
    return load_sketch(window.features[0].kll_floats)


# -- (a), (b): power and false alarms -------------------------------------------------------------


def detection(
    *, shift: float, trials: int, n: int, m: int, devices: int, alpha: float, seed: int
) -> dict[str, Any]:
    """How often the sketch test and scipy's exact test call drift, over ``trials`` fresh draws."""
    rng = np.random.default_rng(seed)
    sketch_hits = exact_hits = 0
    statistics_, thresholds = [], []
    sketch_s = exact_s = 0.0
    for _ in range(trials):
        observed = rng.normal(shift, 1.0, n).astype(np.float32)
        reference = rng.normal(0.0, 1.0, m).astype(np.float32)
        start = time.perf_counter()
        result = ks_test(_merged(observed, devices), _sketch(reference), alpha=alpha)
        sketch_s += time.perf_counter() - start
        start = time.perf_counter()
        exact = ks_2samp(observed, reference)
        exact_s += time.perf_counter() - start
        sketch_hits += result.drifted
        exact_hits += bool(exact.pvalue < alpha)
        statistics_.append(result.statistic)
        thresholds.append(result.threshold)
    return {
        "shift_sigma": shift,
        "trials": trials,
        "sketch_rate": round(sketch_hits / trials, 4),
        "scipy_ks_2samp_rate": round(exact_hits / trials, 4),
        "sketch_D_median": round(statistics.median(statistics_), 5),
        "sketch_D_max": round(max(statistics_), 5),
        "threshold": round(statistics.median(thresholds), 5),
        "sketch_ms_per_trial": round(1000 * sketch_s / trials, 2),
        "scipy_ms_per_trial": round(1000 * exact_s / trials, 2),
    }


# -- (c): bytes ------------------------------------------------------------------------------------


def sketch_bytes(sizes: list[int], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        sketch = _sketch(rng.normal(0.0, 1.0, n).astype(np.float32))
        size = len(sketch.serialize())
        out[str(n)] = {"sketch_bytes": size, "raw_float32_bytes": 4 * n, "ratio": round(size / (4 * n), 5)}
    return out


# -- (d): the agent's cost -------------------------------------------------------------------------


async def _per_call_us(agent: Any, rows: list[np.ndarray], calls: int) -> tuple[float, float]:
    """(wall µs, process CPU µs) per call of ``calls`` predictions made on the agent's event loop.

    Requests reach a device's agent on its event loop; yielding to the loop between calls lets
    the bulk sketching the recorder schedules there run as it would on a device, so its cost
    is in both figures (a tight loop in another thread would starve it, and rows would be dropped).
    """
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        agent.predict({"input": rows[i % len(rows)]})
        await asyncio.sleep(0)
    agent.sketches.flush()  # the round's leftover rows, so that no bulk work escapes the count
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


def _cnn_with_profile(work: Path) -> tuple[Path, Path, Any]:
    """The demo CNN as ONNX and its data profile (image summary features of 8x8 digits)."""
    from model_tools.data import load_digits_splits
    from model_tools.export import export_onnx
    from model_tools.profile import build_profile
    from model_tools.zoo import build_model

    model = build_model("cnn", seed=0)
    path = work / "cnn.onnx"
    export_onnx(model, path, example=np.zeros((2, 64), np.float32))
    splits = load_digits_splits()
    x = splits.x_test.astype(np.float32)
    profile = build_profile(
        model_name="digits",
        model_version="bench",
        dataset_hash="0" * 64,
        x=x,
        predicted=np.zeros(len(x), np.int64),
        num_classes=10,
        image_shape=(1, 8, 8),
    )
    profile_path = work / "profile.pb"
    profile_path.write_bytes(profile.SerializeToString(deterministic=True))
    return path, profile_path, x


async def _agent(state_dir: Path, model: Path, profile: Path, *, sketching: bool) -> Any:
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig, SketchConfig, TrialConfig
    from edge_agent.trust.config import TrustConfig
    from model_tools.profile import PROFILE_MEDIA_TYPE

    config = AgentConfig.for_simulation(
        device_id="bench",
        fleet="bench-drift",
        state_dir=state_dir,
        trial=TrialConfig(window_requests=0, window_s=0),
        trust=TrustConfig(require_signed=False),
    )
    config = replace(config, sketch=SketchConfig(enabled=sketching))
    agent = Agent(config, fetcher=FileFetcher([model, profile]))
    data, pdata = model.read_bytes(), profile.read_bytes()
    ref = common_pb2.ModelRef(
        name="digits",
        version="bench",
        format="onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        length=len(data),
        profile=common_pb2.ArtifactRef(
            sha256=hashlib.sha256(pdata).hexdigest(), length=len(pdata), media_type=PROFILE_MEDIA_TYPE
        ),
    )
    if not await agent.updater.apply(desired(ref, 1)):
        raise RuntimeError(f"could not install {model}: {agent.updater.last_failure}")
    return agent


def agent_cost(work: Path, *, calls: int, rounds: int) -> dict[str, Any]:
    model, profile, x = _cnn_with_profile(work)
    rows = [x[i : i + 1] for i in range(len(x))]
    loop = LoopThread()
    try:
        agents = {
            on: loop.call(_agent(work / f"agent-{on}", model, profile, sketching=on)) for on in (False, True)
        }

        for agent in agents.values():
            loop.call(_per_call_us(agent, rows, max(10, calls // 10)))  # warm up
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for index in range(rounds):
            # Off-on, then on-off: a load that drifts during a pair weighs on both sides alike.
            for on in (False, True) if index % 2 == 0 else (True, False):
                w, c = loop.call(_per_call_us(agents[on], rows, calls))
                wall[on].append(w)
                cpu[on].append(c)
        dropped = agents[True].sketches.dropped_rows
        for agent in agents.values():
            agent.outbox.close()
        direct = loop.call(_sketch_work_us(model, rows, calls))
    finally:
        loop.stop()

    def paired(figures: dict[bool, list[float]]) -> float:
        """Median over rounds of (on / off - 1), in percent."""
        return round(
            100 * statistics.median(b / a - 1 for a, b in zip(figures[False], figures[True], strict=True)), 2
        )

    off_c = statistics.median(cpu[False])
    return {
        "model": "demo CNN, batch 1, in process, one onnxruntime thread; profile: image_summary (5 features)",
        "calls_per_round": calls,
        "rounds": rounds,
        "sketch_off_us": round(statistics.median(wall[False]), 2),
        "sketch_on_us": round(statistics.median(wall[True]), 2),
        "wall_overhead_pct": paired(wall),
        "sketch_off_cpu_us": round(off_c, 2),
        "sketch_on_cpu_us": round(statistics.median(cpu[True]), 2),
        "cpu_overhead_pct": paired(cpu),
        "dropped_rows": dropped,
        # The sketching alone (copy on the request path, then bulk), timed without the model.
        "sketch_work_us_per_prediction": direct,
        "sketch_work_pct_of_predict": round(100 * direct / off_c, 2),
    }


async def _sketch_work_us(model: Path, rows: list[np.ndarray], calls: int) -> float:
    """CPU µs per prediction of a SketchRecorder alone, fed the rows and outputs of ``calls`` predictions."""
    from edge_agent.sketching import FeatureSpec, SketchRecorder

    published: list[sketch_pb2.SketchWindow] = []
    recorder = SketchRecorder(
        specs=lambda _m, _s: FeatureSpec("image_summary", (1, 8, 8)), publish=published.append
    )
    ref = common_pb2.ModelRef(
        name="digits", version="bench", sha256=hashlib.sha256(model.read_bytes()).hexdigest()
    )
    scores = np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32)
    start = time.process_time()
    for i in range(calls):
        recorder.record(ref, rows[i % len(rows)], scores)
        if i % 64 == 0:
            await asyncio.sleep(0)
    recorder.flush()
    return round((time.process_time() - start) / calls * 1e6, 3)


# -- main ------------------------------------------------------------------------------------------


def target(value: float | None, goal: float, unit: str, *, lower_is_better: bool = True) -> dict[str, Any]:
    met = None if value is None else (value <= goal if lower_is_better else value >= goal)
    return {"value": value, "goal": goal, "unit": unit, "met": met}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="draws for power and false alarms (1000)")
    parser.add_argument("--n", type=int, default=100_000, help="values per window (100,000)")
    parser.add_argument("--m", type=int, default=100_000, help="values in the baseline profile (100,000)")
    parser.add_argument("--devices", type=int, default=20, help="device sketches merged per window (20)")
    parser.add_argument("--shift", type=float, default=0.1, help="mean shift in sigmas for the power (0.1)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level (0.01)")
    parser.add_argument("--calls", type=int, default=1000, help="agent predictions per round (1000)")
    parser.add_argument("--rounds", type=int, default=21, help="paired agent timing rounds (21)")
    parser.add_argument("--skip-agent", action="store_true", help="leave out the agent's cost")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.n < 1 or args.m < 1 or args.devices < 1:
        got = f"{args.trials}, {args.n}, {args.m}, {args.devices}"
        parser.error(f"expected positive --trials, --n, --m, --devices, got {got}")
    if not 0 < args.alpha < 1:
        parser.error(f"expected --alpha in (0, 1), got {args.alpha}")

    common = {"trials": args.trials, "n": args.n, "m": args.m, "devices": args.devices, "alpha": args.alpha}
    print(f"power at {args.shift} sigma over {args.trials} trials ...", file=sys.stderr)
    power = detection(shift=args.shift, seed=args.seed, **common)
    print(f"false alarms over {args.trials} trials ...", file=sys.stderr)
    null = detection(shift=0.0, seed=args.seed + 1, **common)
    sizes = sketch_bytes([100, 1_000, 10_000, 100_000, 1_000_000], args.seed)
    bytes_at_window = max(v["sketch_bytes"] for n, v in sizes.items() if int(n) <= max(args.n, 100_000))
    agent: dict[str, Any] | None = None
    if not args.skip_agent:
        print("agent cost ...", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="efdrift-", dir="/tmp"))
        try:
            agent = agent_cost(work, calls=args.calls, rounds=args.rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    results: dict[str, Any] = {
        "setup": {"k": K, **common, "shift_sigma": args.shift},
        "power": power,
        "false_alarms": null,
        "sketch_bytes_per_feature": sizes,
        "agent": agent,
    }
    agent_pct = None if agent is None else agent["cpu_overhead_pct"]
    targets = {
        "power_0_1_sigma": target(
            power["sketch_rate"], TARGET_POWER, "share of windows flagged", lower_is_better=False
        ),
        "false_alarms": target(null["sketch_rate"], TARGET_FALSE_ALARMS, "share of windows flagged"),
        "sketch_bytes_per_feature": target(
            bytes_at_window, TARGET_BYTES, f"bytes, n <= {max(args.n, 100_000)}"
        ),
        "agent_sketch_cost": target(agent_pct, TARGET_AGENT_PCT, "% of Agent.predict, CNN batch 1"),
    }
    if agent is None:
        del targets["agent_sketch_cost"]
    print(json.dumps({"machine": machine(), "versions": versions(), "results": results, "targets": targets}))
    missed = sorted(name for name, t in targets.items() if t["met"] is False)
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
