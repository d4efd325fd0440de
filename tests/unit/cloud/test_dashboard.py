"""The dashboard's files as the hub serves them: where, with which headers, and what they may contain.

TestClient over SQLite with the unit fixtures; the pages themselves are driven in Chromium in
tests/browser.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.dashboard import CSP
from cloud.dashboard.mount import static_dir

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _files() -> list[Path]:
    return sorted(p for p in static_dir().rglob("*") if p.is_file())


def test_the_dashboard_is_served_under_ui_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/ui", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (308, "/ui/")
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/app.js">' in page.text
    script = client.get("/ui/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for response in (r, page, script, client.get("/ui/js/missing.js")):
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert client.get("/ui/js/missing.js").status_code == 404
    assert "default-src 'self'" in CSP and "unsafe" not in CSP
    # The policy is the dashboard's: the API and its documentation pages keep their own headers.
    assert "content-security-policy" not in client.get("/healthz").headers
    assert not any(path.startswith("/ui") for path in client.get("/openapi.json").json()["paths"])


def test_every_file_of_the_dashboard_is_package_data() -> None:
    """A file the globs miss works from a checkout and is missing from an installed hub."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["cloud.dashboard"]
    package = static_dir().parent
    missed = [
        str(p.relative_to(package))
        for p in _files()
        if not any(fnmatch.fnmatch(str(p.relative_to(package)), g) for g in globs)
    ]
    assert missed == [], f"add these to [tool.setuptools.package-data] cloud.dashboard: {missed}"


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.problems.append("an inline <script>")
        self.problems += [f"<{tag} {n}=...>" for n in names if n.startswith("on") or n == "style"]
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"<{tag} {name}={value}> loads from another origin")


def test_the_pages_hold_no_inline_code_and_load_nothing_from_elsewhere() -> None:
    for path in _files():
        text = path.read_text()
        if path.suffix == ".html":
            parser = _Markup()
            parser.feed(text)
            assert parser.problems == [], f"{path.name}: {parser.problems}"
        if path.suffix == ".js":
            # Values from the API land as text: no markup strings, no code from strings.
            for banned in (
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "Function(",
            ):
                assert banned not in text, f"{path.name} uses {banned}"
            assert not re.search(r"""from\s+["']https?:""", text), f"{path.name} imports from another origin"
        if path.suffix == ".css":
            assert "@import" not in text and "url(http" not in text, f"{path.name} loads from elsewhere"
