"""An operator approves a stage gate and aborts a rollout in the dashboard, and the API and the audit
log agree with what the page shows.

The module has a hub of its own (``seeded`` is module-scoped), so the rollouts made here never touch
the rollout the other browser tests share. Each test makes its own rollout, of a model version of its
own, over the canary cohort, superseding whatever held those devices before, so the tests do not
depend on each other's order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from cloud.models import Role
from tests.browser.conftest import login, wait_ready
from tests.browser.seed import CANARY, MODEL, OFFLINE, ONLINE, Seeded
from tests.integration.cloud.mqtt_probe import wait_for
from tests.unit.cloud.helpers import tiny_onnx

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# The versions the approved and the aborted rollout offer; the seed registered 1 and 2.
GATED, ABORTED = "3", "4"


def _plan(name: str, version: str, *, approval: bool, bake: str) -> str:
    # min_reporting 0: the canary needs no reports to pass its gates, so the stage reaches its gate
    # (approval or bake) as soon as both devices were offered, without device traffic in the test.
    return f"""
name: {name}
target: {{kind: model, model: {MODEL}, version: "{version}"}}
stages:
  - {{name: canary, cohort: canary, bake: {bake}, approval: {str(approval).lower()}}}
  - {{name: everyone, percent: 100, bake: 1h}}
gates: {{min_reporting: 0}}
"""


@pytest.fixture(scope="module")
def versions(seeded: Seeded) -> None:
    with seeded.api(Role.ADMIN) as admin:
        for version in (GATED, ABORTED):
            files = {"file": ("m.onnx", tiny_onnx(float(version)))}
            response = admin.post("/api/v1/models", data={"name": MODEL, "version": version}, files=files)
            assert response.status_code == 201, response.text


def _create(seeded: Seeded, plan: str) -> str:
    """A new rollout that takes the canary over from whichever rollout held it; returns its id."""
    with seeded.api(Role.ADMIN) as admin:
        response = admin.post(
            "/api/v1/rollouts",
            params={"supersede": "true"},
            content=plan.encode(),
            headers={"Content-Type": "application/yaml"},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _view(seeded: Seeded, rollout_id: str) -> dict[str, Any]:
    with seeded.api(Role.VIEWER) as api:
        response = api.get(f"/api/v1/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait_view(
    seeded: Seeded, rollout_id: str, what: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The rollout's view once ``check`` holds for it (the hub's engine ticks on its own)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(_view(seeded, rollout_id))
        return check(seen)

    try:
        wait_for(reached, timeout=20)
    except AssertionError as e:
        raise AssertionError(
            f"expected rollout {rollout_id[:8]} {what}; it is {seen.get('state')} in stage "
            f"{seen.get('stage')} ({seen.get('next_action')})"
        ) from e
    return seen


def _wait_state(seeded: Seeded, rollout_id: str, state: str) -> dict[str, Any]:
    return _wait_view(seeded, rollout_id, f"to be {state}", lambda view: bool(view["state"] == state))


def _desired(seeded: Seeded, device_id: str) -> str | None:
    with seeded.api(Role.VIEWER) as api:
        response = api.get(f"/api/v1/devices/{device_id}")
    assert response.status_code == 200, response.text
    model = response.json()["desired_model"]
    return None if model is None else str(model["version"])


def _events(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["event"], t["actor"]) for t in view["transitions"]]


def test_an_operator_approves_a_stage_gate_and_the_api_and_audit_agree(
    page: Page, seeded: Seeded, versions: None, screenshot: Callable[[str], Path]
) -> None:
    name = f"gated-{uuid.uuid4().hex[:6]}"
    rollout_id = _create(seeded, _plan(name, GATED, approval=True, bake="0s"))
    waiting = _wait_state(seeded, rollout_id, "waiting_approval")
    assert (waiting["stage"], waiting["stage_detail"][0]["by_state"]["offered"]) == (0, len(CANARY))
    operator = seeded.names[Role.OPERATOR]

    login(page, seeded, Role.OPERATOR, f"#/rollouts/{rollout_id}")
    expect(page.locator("h1")).to_have_attribute("data-state", "waiting_approval")
    expect(page.locator("[data-stage=canary]")).to_contain_text("needs approval")
    expect(page.locator("[data-action=resume]")).to_be_disabled()
    approve = page.locator("[data-action=approve]")
    expect(approve).to_be_enabled()
    screenshot("waiting")
    page.fill("input[name=reason]", "the canary looks good")
    approve.click()

    # The stage gate opens: the rollout moves on to the second stage and offers the rest of the fleet.
    expect(page.locator("h1")).not_to_have_attribute("data-state", "waiting_approval")
    expect(approve).to_be_disabled()
    expect(page.locator("#transitions tbody tr[data-event=approve]")).to_contain_text(operator)
    expect(page.locator(".facts")).to_contain_text("everyone (2 of 2)")
    expect(page.locator("[data-stage=canary] .badge").first).to_have_text("done")
    screenshot("approved")

    # Each stage counts the devices it offered itself: the rest of the online fleet joins the second.
    rest = len(ONLINE) - len(CANARY)
    view = _wait_view(
        seeded, rollout_id, f"to offer {rest} more devices in stage 2",
        lambda v: bool(v["stage"] == 1 and v["stage_detail"][1]["by_state"]["offered"] == rest),
    )  # fmt: skip
    assert view["state"] in ("running", "baking"), view["state"]
    approvals = [t for t in view["transitions"] if t["event"] == "approve"]
    assert [(t["actor"], t["reason"], t["from_state"], t["to_state"]) for t in approvals] == [
        (operator, "the canary looks good", "waiting_approval", "promoting")
    ], approvals
    assert ("promoted", "system") in _events(view), _events(view)
    assert view["stage_detail"][1]["by_state"]["pending"] == len(OFFLINE), view["stage_detail"][1]
    assert all(_desired(seeded, device_id) == GATED for device_id in ONLINE)

    # The audit log holds the approval under the operator's token name, made through the dashboard.
    with seeded.api(Role.ADMIN) as admin:
        response = admin.get("/api/v1/audit", params={"actor": operator, "object_type": "rollout_transition"})
    assert response.status_code == 200, response.text
    rows = [
        r
        for r in response.json()["data"]
        if r["operation"] == "POST /api/v1/rollouts/{rollout_id}/approve"
        and (r["after"] or {}).get("rollout_id") == rollout_id
    ]
    assert len(rows) == 1, response.json()["data"]
    assert (rows[0]["actor_role"], rows[0]["via"], rows[0]["after"]["event"]) == (
        "operator",
        "session",
        "approve",
    ), rows[0]

    page.click("[data-nav=audit]")
    wait_ready(page)
    page.fill("input[name=q]", "approve")
    shown = page.locator("#audit-table tbody tr", has_text=rollout_id)
    expect(shown.first).to_be_visible()
    expect(shown.first).to_contain_text(operator)
    expect(shown.first).to_contain_text("/approve")


def test_an_operator_aborts_only_after_confirming_and_the_canary_is_rolled_back(
    page: Page, seeded: Seeded, versions: None, screenshot: Callable[[str], Path]
) -> None:
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    # What the canary was told to run before this rollout: 2 from the seed, or 3 after the approval.
    before = {device_id: _desired(seeded, device_id) for device_id in CANARY}
    assert ABORTED not in before.values(), before
    rollout_id = _create(seeded, _plan(name, ABORTED, approval=False, bake="1h"))
    _wait_state(seeded, rollout_id, "baking")
    assert {device_id: _desired(seeded, device_id) for device_id in CANARY} == dict.fromkeys(CANARY, ABORTED)
    operator = seeded.names[Role.OPERATOR]
    posts: list[str] = []

    def record(request: Request) -> None:
        if request.method != "GET":
            posts.append(f"{request.method} {request.url}")

    login(page, seeded, Role.OPERATOR, f"#/rollouts/{rollout_id}")
    expect(page.locator("h1")).to_have_attribute("data-state", "baking")
    page.on("request", record)
    confirm = page.locator("[data-action=abort-confirm]")
    expect(confirm).to_be_hidden()

    # The first click only asks. The page's next poll shows the hub still has it baking, and no
    # request that could change it left the browser.
    page.fill("input[name=reason]", "wrong build")
    with page.expect_response(re.compile(rf"/api/v1/rollouts/{rollout_id}$")):
        page.click("[data-action=abort]")
    expect(confirm).to_be_visible()
    expect(page.locator("#actions .confirm")).to_contain_text("roll every offered device back")
    assert posts == []
    assert _view(seeded, rollout_id)["state"] == "baking"
    expect(page.locator("h1")).to_have_attribute("data-state", "baking")
    screenshot("asked")

    # Cancel leaves it as it is; asking again and confirming aborts.
    page.locator("#actions .confirm button", has_text="Cancel").click()
    expect(confirm).to_be_hidden()
    assert posts == [] and _view(seeded, rollout_id)["state"] == "baking"
    page.click("[data-action=abort]")
    confirm.click()
    expect(page.locator("h1")).to_have_attribute("data-state", "rolled_back")
    assert posts == [f"POST {seeded.hub.api_url}/api/v1/rollouts/{rollout_id}/abort"], posts
    for action in ("pause", "resume", "approve", "abort"):
        expect(page.locator(f"[data-action={action}]")).to_be_disabled()
    canary = page.locator("[data-stage=canary]")
    expect(canary.locator(".legend")).to_contain_text(f"restored {len(CANARY)}")
    expect(page.locator("#transitions tbody tr[data-event=abort]")).to_contain_text(operator)
    expect(page.locator("#transitions tbody tr").first).to_have_attribute("data-event", "rolled_back")
    screenshot("rolled_back")

    view = _view(seeded, rollout_id)
    assert view["state"] == "rolled_back", view["state"]
    aborts = [(t["actor"], t["reason"], t["to_state"]) for t in view["transitions"] if t["event"] == "abort"]
    assert aborts == [(operator, "wrong build", "aborting")], aborts
    assert _events(view)[-1] == ("rolled_back", "system"), _events(view)
    assert view["stage_detail"][0]["by_state"]["restored"] == len(CANARY), view["stage_detail"][0]
    # Each canary device is told to run again what it was told before this rollout.
    assert {device_id: _desired(seeded, device_id) for device_id in CANARY} == before
