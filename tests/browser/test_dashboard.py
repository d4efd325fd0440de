"""The dashboard in a real Chromium against a real hub: login, overview, a live rollout and its actions,
roles and CSRF, drift charts, alerts, device detail and the audit log."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from cloud.models import Role
from tests.browser.conftest import login, wait_ready
from tests.browser.seed import CANARY, FEATURES, MAX_ROLLBACK_PCT, MODEL, NEW, OFFLINE, OLD, ONLINE, Seeded

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _stat(page: Page, name: str) -> str:
    return page.inner_text(f"[data-stat={name}] .stat-value")


def _bar(page: Page, bars: str, label: str) -> str | None:
    row = page.locator(
        f"[data-bars={bars}] li", has=page.locator(".bar-label", has_text=re.compile(f"^{label}$"))
    )
    return row.locator(".bar-count").get_attribute("data-count")


def test_a_bad_token_is_refused_and_a_good_one_logs_in_and_out(page: Page, seeded: Seeded) -> None:
    page.goto(seeded.url)
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#nav")).to_be_hidden()

    session = login(page, seeded, Role.VIEWER)
    assert (session["name"], session["role"]) == (seeded.names[Role.VIEWER], "viewer")
    expect(page.locator("#who-role")).to_have_text("viewer")
    # The cookie is HttpOnly: the page's scripts cannot read it.
    assert "ef_session" not in page.evaluate("document.cookie")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ef_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.click("#logout")
    page.locator("#login-form").wait_for()
    status = page.evaluate("fetch('/api/v1/session').then((r) => r.status)")
    assert status == 401


def test_the_overview_counts_devices_by_state_version_and_cohort(page: Page, seeded: Seeded) -> None:
    login(page, seeded, Role.VIEWER)
    devices = len(ONLINE + OFFLINE)
    assert _stat(page, "devices") == str(devices)
    assert _stat(page, "online") == str(len(ONLINE))
    assert _stat(page, "rollouts") == "1" and _stat(page, "alerts") == "1"
    assert _bar(page, "state", "online") == str(len(ONLINE))
    assert _bar(page, "state", "offline") == str(len(OFFLINE))
    # The canary reported the old version when it connected; the new one shows as it reports again.
    assert _bar(page, "version", f"{MODEL}:{OLD}") == str(devices)
    assert _bar(page, "cohort", "canary") == str(len(CANARY))
    assert page.locator("#device-table tbody tr").count() == devices

    page.select_option("select[name=state]", "offline")
    expect(page.locator("#device-table tbody tr")).to_have_count(len(OFFLINE))
    assert page.get_attribute("#device-table tbody tr", "data-device") == OFFLINE[0]
    page.select_option("select[name=state]", "")
    page.select_option("select[name=cohort]", "canary")
    expect(page.locator("#device-table tbody tr")).to_have_count(len(CANARY))
    assert _shown(page) == sorted(CANARY)

    # A label selector is the hub's to parse: a good one filters, a bad one says why.
    page.select_option("select[name=cohort]", "")
    page.fill("input[name=label]", "region=us")
    page.press("input[name=label]", "Enter")
    expect(page.locator("#device-table tbody tr")).to_have_count(3)
    assert _shown(page) == ["d-04", "d-05", "d-06"]
    assert "label=region%3Dus" in page.url
    page.fill("input[name=label]", "region in (")
    page.press("input[name=label]", "Enter")
    expect(page.locator("#filter-error")).to_be_visible()
    assert page.locator("#device-table tbody tr").count() == 0


def _shown(page: Page) -> list[str]:
    ids: list[str] = page.locator("#device-table tbody tr").evaluate_all(
        "rows => rows.map((r) => r.dataset.device)"
    )
    return sorted(ids)


def test_the_rollout_page_shows_stages_counts_and_gates_against_thresholds(
    page: Page, seeded: Seeded
) -> None:
    login(page, seeded, Role.VIEWER, "#/rollouts")
    page.click(f"[data-rollout='{seeded.rollout_id}'] a")
    wait_ready(page)
    expect(page.locator("h1")).to_contain_text("tiny-2")
    assert page.get_attribute("h1", "data-state") == "baking"
    canary = page.locator("[data-stage=canary]")
    expect(canary.locator("[data-count=offered]")).to_have_text(f"{len(CANARY)} offered")
    expect(canary.locator("[data-count=serving]")).to_have_text(f"{len(CANARY)} serving")
    gate = canary.locator("[data-gate=max_rollback_pct]")
    cells = gate.locator("td").all_inner_texts()
    assert cells[1:4] == ["0", f"{MAX_ROLLBACK_PCT:g}", "pass"], cells
    everyone = page.locator("[data-stage=everyone]")
    expect(everyone).to_contain_text("pending")
    expect(everyone).to_contain_text("needs approval")
    assert page.locator("#transitions [data-event=stage_offered]").count() == 1
    expect(page.locator("#live")).to_contain_text("Live")


def test_an_operator_pauses_and_resumes_and_the_api_and_audit_agree(
    page: Page, seeded: Seeded, screenshot: Callable[[str], Path]
) -> None:
    login(page, seeded, Role.OPERATOR, f"#/rollouts/{seeded.rollout_id}")
    expect(page.locator("[data-action=resume]")).to_be_disabled()
    expect(page.locator("[data-action=approve]")).to_be_disabled()
    page.fill("input[name=reason]", "checking the canary by hand")
    page.click("[data-action=pause]")
    expect(page.locator("h1")).to_have_attribute("data-state", "paused")
    expect(page.locator("[data-action=resume]")).to_be_enabled()
    expect(page.locator("[data-action=pause]")).to_be_disabled()
    expect(page.locator("#transitions tbody tr").first).to_have_attribute("data-event", "pause")
    screenshot("paused")
    with seeded.api(Role.VIEWER) as api:
        view = api.get(f"/api/v1/rollouts/{seeded.rollout_id}").json()
    assert view["state"] == "paused"
    last = view["transitions"][-1]
    assert (last["event"], last["actor"], last["reason"]) == (
        "pause",
        seeded.names[Role.OPERATOR],
        "checking the canary by hand",
    )

    page.click("[data-action=resume]")
    expect(page.locator("h1")).not_to_have_attribute("data-state", "paused")
    with seeded.api(Role.VIEWER) as api:
        view = api.get(f"/api/v1/rollouts/{seeded.rollout_id}").json()
    events = [t["event"] for t in view["transitions"]]
    assert view["state"] != "paused" and events[events.index("pause") + 1] == "resume", events

    # The audit log lists the operator's pause.
    page.click("[data-nav=audit]")
    wait_ready(page)
    expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    paused = page.locator("#audit-table tbody tr", has_text=re.compile("pause"))
    expect(paused.first).to_contain_text(seeded.names[Role.OPERATOR])
    expect(paused.first).to_contain_text(seeded.rollout_id[:8])


def test_a_viewer_gets_no_actions_and_a_post_without_csrf_is_refused(page: Page, seeded: Seeded) -> None:
    login(page, seeded, Role.VIEWER, f"#/rollouts/{seeded.rollout_id}")
    expect(page.locator("#read-only")).to_contain_text("viewer")
    assert page.locator("[data-action]").count() == 0
    viewer_forced = page.evaluate(
        "async (url) => (await fetch(url, {method: 'POST', credentials: 'same-origin'})).status",
        f"/api/v1/rollouts/{seeded.rollout_id}/pause",
    )
    assert viewer_forced == 403

    # An operator's session: its cookie alone does not make a change; the CSRF token does.
    page.click("#logout")
    session = login(page, seeded, Role.OPERATOR, f"#/rollouts/{seeded.rollout_id}")
    pause = f"/api/v1/rollouts/{seeded.rollout_id}/pause"
    forced = page.evaluate(
        "async (url) => { const r = await fetch(url, {method: 'POST', credentials: 'same-origin'});"
        " return [r.status, await r.text()]; }",
        pause,
    )
    assert forced[0] == 403, forced
    wrong = page.evaluate(
        "async (url) => (await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': 'forged'}})).status",
        pause,
    )
    assert wrong == 403
    with seeded.api(Role.VIEWER) as api:
        assert api.get(f"/api/v1/rollouts/{seeded.rollout_id}").json()["state"] != "paused"
    assert session["csrf_token"]


def test_drift_charts_draw_each_cohort_and_feature_over_time(page: Page, seeded: Seeded) -> None:
    login(page, seeded, Role.VIEWER, f"#/drift?model={MODEL}&cohort=canary&hours=24")
    rows = page.locator("[data-cohort]")
    expect(rows).to_have_count(2)  # canary and eu, the newest bucket of each
    canary = page.locator("[data-cohort=canary]")
    expect(canary).to_contain_text(f"{MODEL}:{NEW}")
    expect(canary).to_contain_text("f1")
    score = page.locator("figure[data-chart^='Drift score']")
    expect(score.locator("path.series")).to_have_count(1)
    assert score.locator("circle").count() == 6
    assert score.locator("line.threshold").count() == 1
    # Points over the threshold are drawn in red: the canary's scores 1.2, 1.6, 2.0 and 2.4.
    assert score.locator("circle[fill='#c92a2a']").count() == 4
    for feature in FEATURES:
        chart = page.locator(f"figure[data-chart='KS statistic: {feature}']")
        expect(chart.locator("path.series")).to_have_count(1)
        d = chart.locator("path.series").get_attribute("d") or ""
        assert d.startswith("M") and d.count("L") == 5, d

    page.select_option("select[name=cohort]", "eu")
    wait_ready(page)
    expect(page.locator("section h2", has_text="cohort eu")).to_be_visible()
    assert page.locator("figure[data-chart^='Drift score'] circle[fill='#c92a2a']").count() == 0


def test_alerts_list_the_firing_alert_and_its_history(page: Page, seeded: Seeded) -> None:
    login(page, seeded, Role.VIEWER, "#/alerts")
    firing = page.locator("#alert-table tr[data-state=firing]")
    expect(firing).to_have_count(1)
    expect(firing).to_contain_text("canary-drift")
    expect(firing).to_contain_text("canary")
    firing.locator("a").click()
    wait_ready(page)
    expect(page.locator("h1")).to_contain_text("canary-drift")
    expect(page.locator("table.grid").first).to_contain_text("firing")


def test_device_detail_lists_slots_events_and_telemetry(page: Page, seeded: Seeded) -> None:
    login(page, seeded, Role.VIEWER)
    page.click("[data-device='d-01'] a")
    wait_ready(page)
    expect(page.locator("h1")).to_contain_text("d-01")
    expect(page.locator("[data-slot=active]")).to_contain_text(f"{MODEL}:{OLD}")
    expect(page.locator("[data-slot=desired]")).to_contain_text(f"{MODEL}:{NEW}")
    kinds = page.locator("[data-seq] .badge").all_inner_texts()
    assert {"desired_received", "activated", "committed"} <= set(kinds), kinds
    requests = page.locator("figure[data-chart='Requests per window']")
    assert requests.locator("path.series").count() == 1
    assert requests.locator("circle").count() == 3


def test_the_audit_page_says_so_when_the_hub_has_no_audit_log(page: Page, seeded: Seeded) -> None:
    # A hub of an older version answers 404 here: the browser is made to see exactly that.
    page.route(
        "**/api/v1/audit*",
        lambda route: route.fulfill(
            status=404,
            content_type="application/problem+json",
            body='{"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Not Found"}',
        ),
    )
    login(page, seeded, Role.VIEWER, "#/audit")
    expect(page.locator("#audit-unavailable")).to_contain_text("does not serve an audit log")
    assert page.get_attribute("#view", "data-state") == "ready"
