"""Training the demo models on the CPU and, when one is present, on CUDA.

    python bench/train.py [--kinds mlp,cnn] [--seed 0]

Prints one JSON object (last line): for each model kind, wall time and test accuracy per device, and the
CUDA/CPU time ratio. The digits models are tiny, so CUDA mostly measures launch overhead; the point is
that the same recipe trains to the same accuracy on both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "proto")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="mlp,cnn")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args()

    import torch

    from model_tools.data import load_digits_splits
    from model_tools.train import train_classifier
    from model_tools.zoo import RECIPES, build_model

    splits = load_digits_splits(seed=ns.seed)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict[str, dict[str, object]] = {}
    for kind in ns.kinds.split(","):
        recipe = RECIPES[kind]
        per_device: dict[str, object] = {}
        for device in devices:
            model = build_model(kind, seed=ns.seed)
            t0 = time.perf_counter()
            result = train_classifier(
                model, splits, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                seed=ns.seed, device=device,
            )  # fmt: skip
            per_device[device] = {
                "seconds": round(time.perf_counter() - t0, 3),
                "device": str(result.device),
                "test_accuracy": round(result.metrics["test_accuracy"], 4),
                "epochs": recipe.epochs,
            }
        if "cuda" in per_device:
            cpu_s = per_device["cpu"]["seconds"]  # type: ignore[index]
            cuda_s = per_device["cuda"]["seconds"]  # type: ignore[index]
            per_device["cuda_over_cpu_time"] = round(cuda_s / cpu_s, 3)
        results[kind] = per_device
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {"torch": torch.__version__},
        "results": results,
        "targets": {},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
