"""What an operator reads: the Prometheus endpoint on loopback and ``edgefleet-agent status``.

The agent runs in-process with the in-memory hub; the metrics endpoint is a real HTTP
listener on 127.0.0.1, and ``status`` reads the real state folder (no agent running).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.metrics import MetricsServer
from tests.unit.agent.harness import run
from tests.unit.agent.test_trial import REFS, Traffic, make_agent, serve_first, start_trial


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_metrics_endpoint_serves_the_exposition_on_loopback(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = make_agent(tmp_path)
        await serve_first(agent)
        Traffic(agent).send(3)
        server = MetricsServer(agent, port=0)
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            status, body = await asyncio.to_thread(fetch, f"{url}/metrics")
            assert status == 200
            assert 'edgefleet_agent_requests_total{device="dev-1",fleet="f1"} 3.0' in body
            assert 'edgefleet_agent_queue_depth{device="dev-1",fleet="f1"}' in body
            assert 'edgefleet_agent_queue_dropped_total{device="dev-1",fleet="f1"} 0.0' in body
            assert 'slot="active",version="identity"' in body
            assert 'kind="committed"' in body
            assert (await asyncio.to_thread(fetch, f"{url}/secret"))[0] == 404
            assert (await asyncio.to_thread(fetch, f"{url}/metrics", "POST"))[0] == 405
        finally:
            await server.stop()

    run(scenario())


def test_status_prints_slots_update_queue_refusals_and_recent_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"

    async def prepare() -> None:
        agent = make_agent(state_dir)
        await serve_first(agent)
        task = await start_trial(agent, "nan")
        Traffic(agent).send(1)
        assert await task is False
        task = await start_trial(agent, "scaled", generation=3)
        Traffic(agent).send(5)  # the process stops here, mid-trial
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        agent.outbox.close()

    run(prepare())
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "dev-1"\nfleet = "f1"\nstate_dir = "{state_dir}"\n[local_api]\nsocket = ""\n'
    )
    assert main(["status", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["slots"]["active"]["sha256"] == REFS["identity"].sha256
    assert report["slots"]["trial"]["version"] == "scaled"
    assert report["update"]["state"] == "trial" and report["update"]["generation"] == 3
    assert [r["version"] for r in report["refused"]] == ["nan"]
    assert report["queue"]["depth"] > 0 and report["queue"]["dropped"] == 0
    kinds = [e["kind"] for e in report["recent_events"]]
    assert "rolled_back" in kinds and kinds[-1] == "trial_started"
    assert report["live"] is None and report["problems"] == []

    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "trial    clf:scaled" in text and "update   trial generation 3" in text
    assert "refused  clf:nan (generation 2): the new version returned NaN or inf" in text
    assert "agent    not answering on its local API" in text
