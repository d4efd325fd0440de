"""A 200 MiB model pushed to a real hub process and downloaded by 10 clients at once, with the hub's
peak resident memory read from /proc: it must stay within 64 MiB of what the idle hub holds."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.integration.cloud.hub_process import running_hub
from tests.large_model import MiB, make_large_onnx

pytestmark = pytest.mark.integration

MODEL_BYTES = 200 * MiB
CLIENTS = 10
MAX_GROWTH_KIB = 64 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_200_mib_push_and_ten_downloads_keep_the_hub_within_64_mib_of_idle(
    short_tmp: Path, mqtt_broker: tuple[str, int], fleet_name: str
) -> None:
    model = make_large_onnx(short_tmp / "large.onnx", target_bytes=MODEL_BYTES)
    sha256 = _sha256(model)
    data_dir = short_tmp / "hub"
    data_dir.mkdir()
    with running_hub(data_dir, mqtt_broker, fleet_name) as hub:
        idle_kib = hub.status_kib("VmRSS")
        hub.reset_peak()
        started = time.monotonic()
        response = hub.push(model, "large", "1.0.0")
        assert response.status_code == 201, response.text
        assert response.json()["sha256"] == sha256
        pushed_s = time.monotonic() - started
        push_peak_kib = hub.status_kib("VmHWM")
        assert hub.fetch_concurrently(sha256, CLIENTS) == [sha256] * CLIENTS
        peak_kib = hub.status_kib("VmHWM")
        total_s = time.monotonic() - started
    print(
        f"hub idle RSS {idle_kib / 1024:.0f} MiB; peak after the push {push_peak_kib / 1024:.0f} MiB "
        f"({pushed_s:.1f} s), after {CLIENTS} downloads {peak_kib / 1024:.0f} MiB ({total_s:.1f} s in all)"
    )
    assert peak_kib - idle_kib <= MAX_GROWTH_KIB, (
        f"hub peak RSS {peak_kib} KiB is {peak_kib - idle_kib} KiB above its idle {idle_kib} KiB: "
        f"expected at most {MAX_GROWTH_KIB} KiB"
    )
