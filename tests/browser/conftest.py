"""Fixtures of the dashboard's browser tests: a seeded hub on the real broker, and Debian's Chromium
driven by Playwright.

Playwright is part of the dev extra; without it these tests skip. Playwright's own browser download
cannot work on these machines, so the tests launch Debian's ``chromium`` (``EDGEFLEET_CHROMIUM`` names
another executable); a missing browser is a failure that says what to install, not a skip.

Each test gets a fresh browser context (no cookies), and leaves a screenshot of its last page in
``EDGEFLEET_TEST_ARTIFACTS`` (default: ``screenshots/`` in pytest's temp folder), where CI collects them.
Every page also records Content-Security-Policy violations and script errors; a test fails on any.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cloud.hub import Hub
from cloud.models import Role
from cloud.settings import Settings
from cloud.transport.retained import clear_fleet_retained
from tests.browser.seed import Seeded, seed
from tests.integration.cloud.mqtt_probe import Probe

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")


CHROMIUM_ENV = "EDGEFLEET_CHROMIUM"
ARTIFACTS_ENV = "EDGEFLEET_TEST_ARTIFACTS"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Playwright's waits: long enough for a loaded CI machine, short enough to fail fast.
TIMEOUT_MS = 15_000

# Collected in the page before any of its scripts run; read back at the end of each test.
_WATCH = """
window.__efProblems = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__efProblems.push(`CSP: ${e.violatedDirective} blocked ${e.blockedURI || "inline code"}`);
});
window.addEventListener("error", (e) => window.__efProblems.push(`script error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => window.__efProblems.push(`unhandled: ${e.reason}`));
"""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium executable at {path}: install Debian's package (apt-get install -y chromium) "
            f"or name one with {CHROMIUM_ENV}; Playwright's own browser download is not used",
            pytrace=False,
        )
    return path


# Package scope, not session: Playwright's sync API holds an event loop as the main thread's running
# loop while it is started, and every later test that calls asyncio.run() would fail beside it.
@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    # Chromium's sandbox refuses to start as root (CI containers run as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path, headless=True, args=args)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(ARTIFACTS_ENV)
    folder = Path(configured) / "browser" if configured else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, mqtt_broker: tuple[str, int]) -> Iterator[Seeded]:
    """One hub for the module's tests: seeding it takes seconds, and the tests only read it or put back
    what they change (a paused rollout is resumed)."""
    host, port = mqtt_broker
    fleet = f"ui-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ui-hub"),
        fleet=fleet,
        mqtt_host=host,
        mqtt_port=port,
        api_port=0,
        grpc_port=0,
    )
    with Hub(settings) as hub:
        assert hub.mqtt.wait_ready(10), "the hub did not connect to the test broker"
        probe = Probe(host, port)
        try:
            yield seed(hub, probe, fleet)
        finally:
            probe.close()
            clear_fleet_retained(host, port, fleet)


@pytest.fixture
def page(browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(_WATCH)
    opened = context.new_page()
    try:
        yield opened
        problems: list[str] = opened.evaluate("window.__efProblems || []")
        assert problems == [], f"the page reported problems: {problems}"
    finally:
        if not opened.is_closed():
            opened.screenshot(path=str(artifacts_dir / f"{_safe(request.node.name)}.png"), full_page=True)
        context.close()


@pytest.fixture
def screenshot(page: Page, artifacts_dir: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Save the page as it is now: ``screenshot("paused")`` -> ``<test>-paused.png``."""

    def take(label: str) -> Path:
        path = artifacts_dir / f"{_safe(request.node.name)}-{_safe(label)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def login(page: Page, seeded: Seeded, role: Role, hash_path: str = "#/overview") -> dict[str, Any]:
    """Log in through the login form; returns the session as ``GET /api/v1/session`` shows it."""
    page.goto(seeded.url + hash_path)
    page.locator("#login-form").wait_for()
    page.fill("#token", seeded.tokens[role])
    page.click("#login-form button[type=submit]")
    page.locator("#who").wait_for(state="visible")
    wait_ready(page)
    session: dict[str, Any] = page.evaluate(
        "fetch('/api/v1/session', {credentials: 'same-origin'}).then((r) => r.json())"
    )
    return session


def wait_ready(page: Page) -> None:
    """Wait until the current page has loaded everything it shows (the router marks it ready)."""
    # A selector, not wait_for_function: the strict CSP forbids the eval that a polled predicate needs.
    page.locator("#view:not([data-state=loading])").wait_for()
    state = page.get_attribute("#view", "data-state")
    if state != "ready":
        raise AssertionError(f"the page did not load: {page.inner_text('#view')}")
