"""A real browser (Debian's Chromium driven by Playwright) against a live gateway.

The gateway fixtures (`start_gateway`, `live`, `connect`) come from the gateway
suite's conftest; Chromium is launched headless with everything that could reach
the network switched off, and every page records requests that would leave
127.0.0.1 (none may), console errors and uncaught exceptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import pytest

from moderation.policy import Policy
from moderation.scorers import load_scorer
from tests.gateway.conftest import connect, live, start_gateway  # noqa: F401 - fixtures
from workers.consumer import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from tests.gateway.conftest import Live

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium (/usr/bin/chromium) with Playwright")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright  # only once Chromium is known present

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


class Pages:
    """Opens pages in fresh contexts (own sessionStorage); collects what must not happen."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.offsite: list[str] = []
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    async def open(self, url: str, viewport: dict[str, int] | None = None,
                   on_request: Callable[[Any], object] | None = None) -> Any:
        """A page at ``url`` in a fresh context; ``on_request`` sees every request, from the first."""
        context = await self.browser.new_context(viewport=viewport or DESKTOP, service_workers="block")
        self.contexts.append(context)

        async def guard(route: Any) -> None:
            host = urlsplit(route.request.url).hostname
            if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                await route.continue_()
            else:
                self.offsite.append(route.request.url)
                await route.abort()

        await context.route("**/*", guard)
        page = await context.new_page()
        if on_request is not None:
            page.on("request", on_request)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        await page.goto(url)
        return page

    def _console(self, m: Any) -> None:
        if m.type != "error":
            return
        url = (m.location or {}).get("url", "")
        if "status of 404" in m.text and "/api/vybes/" in url:
            # The page re-read a vybe that was hidden or deleted meanwhile; it drops it (the browser
            # logs every failed request, whatever the page does with the answer).
            return
        self.errors.append(f"console: {m.text}")

    def check(self) -> None:
        assert not self.offsite, f"requests left the machine: {self.offsite}"
        assert not self.errors, f"errors in the page: {self.errors}"

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def pages(browser: Any) -> AsyncIterator[Pages]:
    p = Pages(browser)
    try:
        yield p
        p.check()
    finally:
        await p.close()


@pytest.fixture
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


async def score_all(node: Live) -> None:
    """Run the moderation worker in-process until the job stream is drained (default thresholds)."""
    gw = node.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    w = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings("flag", ""), "browser-test")
    await w.ensure_group()
    while await w.step():
        pass
