"""Crucible UI in a real browser: Debian's Chromium driven by Playwright, against `crucible
serve` as a user runs it, filled by `crucible demo`.

Each test gets a fresh browser context; at its end a screenshot goes to tests/ui/screenshots/
and the test fails on any console error, page error, failed request or HTTP error status the
test did not say it expects (`browser_page.expect_status(409, "/pause")`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, serve_processes
from tests.ui.browser_support import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, VIEWPORT

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@dataclass
class UiServer:
    url: str
    secret: str  # the admin key `crucible serve` printed
    link: str  # the one-time sign-in link it printed
    log: Path

    def demo(self, seconds: float, workers: int = 2) -> subprocess.Popen[bytes]:
        """`crucible demo` against this server, started (not waited for)."""
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "demo",
                "--url",
                self.url,
                "--key",
                self.secret,
                *_demo_size(seconds, workers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )


def _demo_size(seconds: float, workers: int) -> list[str]:
    return ["--seconds", str(seconds), "--workers", str(workers)]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp = tmp_path_factory.mktemp("ui")
    with serve_processes(tmp) as make:
        server = make(free_port()).start()
        printed = server.log.read_text() if server.log else ""
        secret = re.search(r"^\s+(crucible\.\S+)$", printed, re.MULTILINE)
        link = re.search(r"(http://\S+/sign-in/link\?token=\S+)", printed)
        assert secret and link, printed
        ui = UiServer(server.url, secret.group(1), link.group(1), tmp / "serve.log")
        # Two finished experiments of three runs each (one run fails), for the pages to show.
        for filled in [ui.demo(seconds=6, workers=3) for _ in range(2)]:
            assert filled.wait(timeout=120) == 0, filled.stdout.read() if filled.stdout else ""
        yield ui


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and the async tests of other modules need the thread's loop to themselves.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Problems:
    """What went wrong in the page, and what the test said to expect."""

    seen: list[str] = field(default_factory=list)
    expected: list[tuple[int, str]] = field(default_factory=list)

    def expect_status(self, status: int, url_part: str) -> None:
        self.expected.append((status, url_part))

    def response(self, status: int, url: str) -> None:
        if status >= 400 and not any(status == s and part in url for s, part in self.expected):
            self.seen.append(f"HTTP {status} {url}")

    def console(self, kind: str, text: str) -> None:
        # Chromium reports each error status as a console error too; those are judged above.
        if kind == "error" and "Failed to load resource: the server responded with a status of" not in text:
            self.seen.append(f"console error: {text}")


@pytest.fixture
def browser_page(browser: Any, ui_server: UiServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=ui_server.url, viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    problems = Problems()
    page.on("console", lambda message: problems.console(message.type, message.text))
    page.on("pageerror", lambda error: problems.seen.append(f"page error: {error}"))
    page.on("requestfailed", lambda failed: _failed(problems, failed))
    page.on("response", lambda answer: problems.response(answer.status, answer.url))
    page.expect_status = problems.expect_status
    yield page
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert problems.seen == [], problems.seen


def _failed(problems: Problems, failed: Any) -> None:
    # A download's request ends as "aborted" in the page once the file is handed over, and a
    # page left mid-request cancels it: neither is a failure of the service.
    if failed.failure not in ("net::ERR_ABORTED",):
        problems.seen.append(f"request failed: {failed.url} {failed.failure}")
