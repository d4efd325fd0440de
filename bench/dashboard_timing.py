"""How long the dashboard's fleet overview takes to become complete in Chromium.

``overview_complete_seconds(base_url, token)`` logs in through ``POST /api/v1/session`` (the cookie
lands in a fresh browser context), then loads ``/ui/#/overview`` and stops the clock when the page
marks itself complete: every figure and the first page of the device table drawn from the API
(``#view[data-state=ready]``). One load warms the hub's caches and the browser's module cache away;
the median of the next ``runs`` loads, each in a new page, is returned.

Debian's chromium is used (``EDGEFLEET_CHROMIUM`` names another executable): Playwright's own
browser download is not needed. bench/api.py calls this against its 10,000-device hub.
"""

from __future__ import annotations

import os
import statistics
import time

CHROMIUM_ENV = "EDGEFLEET_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000

__all__ = ["overview_complete_seconds"]


def overview_complete_seconds(base_url: str, token: str, *, runs: int = 3) -> float:
    """Median seconds from navigation to a complete overview page, over ``runs`` warm loads."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if not os.access(chromium, os.X_OK):
        raise FileNotFoundError(
            f"no Chromium executable at {chromium}: apt-get install -y chromium, or set {CHROMIUM_ENV}"
        )
    root = base_url.rstrip("/")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            login = context.request.post(f"{root}/api/v1/session", data={"token": token})
            if login.status != 200:
                raise RuntimeError(
                    f"POST /api/v1/session: expected 200 with a session, got {login.status}: {login.text()}"
                )
            seconds = []
            for _ in range(runs + 1):
                page = context.new_page()
                start = time.perf_counter()
                page.goto(f"{root}/ui/#/overview")
                page.locator("#view[data-page=overview]:not([data-state=loading])").wait_for()
                seconds.append(time.perf_counter() - start)
                state = page.get_attribute("#view", "data-state")
                if state != "ready":
                    raise RuntimeError(f"the overview did not load: {page.inner_text('#view')[:300]}")
                page.close()
            return statistics.median(seconds[1:])
        finally:
            browser.close()
