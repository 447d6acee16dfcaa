"""The transcript page, as a person uses it: in headless Chromium (Debian's `chromium`, driven by
Playwright's async API), against the whole app on a free port and the fake managed-agents API.

The browser walk runs on SQLite only (the page sees the same JSON and SSE on both databases; the
routes themselves are tested on both in tests/dashboard/). Without Chromium or Playwright it is
skipped with the reason, except under REQUIRE_BROWSER=1 (`.ci/run` sets it), where it fails.
It keeps one screenshot of the page at `artifacts/transcript.png` (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import app as app_module
from dashboard_api.transcript import PAGE
from router.types import Actor
from tests.conftest import FAKE_API_KEY, RunningApp, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

SECRET = "transcript-test-secret-long-enough-for-hs256"
API_KEY = FAKE_API_KEY  # the key the shared `fake_runtime` fixture expects
WORKSPACE = "ws_transcript"
USER = "reader_1"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "transcript.png"
PHONE = {"width": 375, "height": 740}
WAIT_MS = 15_000
# Records what a reader saw between two checks (a streamed reply is gone in a second): the text
# of every message still being written, and every session state shown.
WATCH_THE_PAGE = """() => {
  window.seen = { samePage: true, partials: [], states: [] };
  const status = document.getElementById("session-status");
  new MutationObserver(() => {
    for (const el of document.querySelectorAll(".entry-agent.streaming .text")) {
      window.seen.partials.push(el.textContent);
    }
  }).observe(document.getElementById("timeline"),
             { subtree: true, childList: true, characterData: true });
  new MutationObserver(() => window.seen.states.push(status.dataset.state))
    .observe(status, { attributes: true, attributeFilter: ["data-state"] });
}"""


def browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = browser_missing()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def running(database: TestDatabase, fake_runtime: FakeAnthropic) -> AsyncIterator[RunningApp]:
    app = await start_app(
        database,
        supabase_jwt_secret=SECRET,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        turn_timeout_seconds=30,
    )
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await app.stop()

    app.stop_once = stop  # type: ignore[attr-defined]
    try:
        yield app
    finally:
        await stop()


class Proxy:
    """A loopback TCP relay in front of the app, so a test can cut the browser's connections:
    `down()` drops every open one and refuses new ones until `up()`."""

    def __init__(self, target: str) -> None:
        self.target_port = int(target.rsplit(":", 1)[1])
        self.accepting = True
        self.transports: set[asyncio.BaseTransport] = set()
        self.server: asyncio.Server | None = None
        self.base_url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.down()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def down(self) -> None:
        self.accepting = False
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()

    def up(self) -> None:
        self.accepting = True

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        pair = (writer.transport, upstream_writer.transport)
        self.transports.update(pair)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self.transports.difference_update(pair)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


@pytest.fixture
async def proxy(running: RunningApp) -> AsyncIterator[Proxy]:
    relay = Proxy(running.base_url)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


class Setup:
    """An agent that asks before running bash, a session with one finished turn, a token."""

    def __init__(self, running: RunningApp, agent_id: str, session_id: str) -> None:
        self.running = running
        self.agent_id = agent_id
        self.session_id = session_id
        self.token = app_module.make_token(running.settings, WORKSPACE, USER, 3600)
        self.api = f"{running.base_url}/dashboard/agents/{agent_id}/sessions/{session_id}"
        self.page_url = running.base_url + PAGE.format(agent_id=agent_id, session_id=session_id)

    async def call(self, method: str, path: str = "", **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.api + path, headers=headers, **kwargs) as response,
        ):
            return response.status, await response.json()


async def session_with_history(running: RunningApp) -> Setup:
    actor = Actor(WORKSPACE, USER)
    core = running.services.core
    agent = await core.deploy_agent(
        actor,
        name="Helper",
        model="claude-sonnet-4-5",
        system="Be brief.",
        approval_required_tools=["bash"],
        slack=None,
    )
    session, _ = await core.create_session(
        actor, agent.id, text="hello <b>there</b>", title="Greeting"
    )
    setup = Setup(running, agent.id, session.id)

    async def first_turn_done() -> bool:
        status, usage = await setup.call("GET", "/usage")
        return status == 200 and len(usage["turns"]) == 1

    await eventually(first_turn_done)
    return setup


async def open_page(browser: Any, url: str) -> Any:
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2)
    page = await context.new_page()
    await page.goto(url)
    return page


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_reader_follows_a_session_live_approves_a_tool_and_sends_messages(
    browser: Any, running: RunningApp, proxy: Proxy
) -> None:
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    setup = await session_with_history(running)
    url = proxy.base_url + setup.page_url.removeprefix(running.base_url)
    page = await open_page(browser, f"{url}#token={setup.token}")
    timeline = page.locator("#timeline")
    connection = page.locator("#connection")

    # The history: the user's message and the agent's answer, in turn 1 with its cost.
    await expect(connection).to_have_attribute("data-state", "live")
    await expect(timeline.locator(".entry-user .text").first).to_have_text("hello <b>there</b>")
    await expect(timeline.locator(".entry-agent").first).to_contain_text("You said: hello")
    assert await timeline.locator("b").count() == 0  # event text is text, never markup
    await expect(page.locator('.turn[data-turn="1"] .turn-cost')).to_contain_text("tokens")
    await expect(page.locator('.turn[data-turn="1"] .turn-cost')).to_contain_text("$0.")
    await expect(page.locator("#title")).to_have_text("Greeting")
    assert "token=" not in page.url  # the fragment is dropped once the token is kept
    await page.evaluate(WATCH_THE_PAGE)

    # A streamed reply arrives without reloading: first as a message being written, then final.
    await send(page, "stream this [slow:0.3]")
    final = timeline.locator('.turn[data-turn="2"] .entry-agent')
    await expect(final).to_have_text(re.compile("You said: stream this"))
    await expect(timeline.locator(".entry-agent.streaming")).to_have_count(0)
    await expect(final).to_have_count(1)  # the fragments became the final message, not a copy
    await expect(page.locator("#session-status")).to_have_attribute("data-state", "idle")
    seen = await page.evaluate("window.seen")
    assert seen["samePage"] is True
    partial = [text for text in seen["partials"] if text]
    assert partial and all("You said: stream this".startswith(text) for text in partial), seen
    assert any(len(text) < len("You said: stream this") for text in partial), seen
    assert "running" in seen["states"] and seen["states"][-1] == "idle", seen

    # A tool that needs approval: a card; Approve continues the turn.
    await send(page, "please run [tool:bash]")
    card = timeline.locator(".approval")
    await expect(card).to_have_attribute("data-state", "pending")
    await expect(card).to_contain_text("bash")
    await expect(page.locator("#session-status")).to_have_text("Waiting for approval")
    await send(page, "and then this")  # a turn is running: this one waits in the queue
    await expect(page.locator("#composer-note")).to_contain_text("Queued")
    await expect(page.locator("#queued")).to_have_text("1 queued")
    await card.get_by_role("button", name="Approve").click()
    await expect(card).to_have_attribute("data-state", "allow")
    await expect(card.locator(".outcome")).to_contain_text("Approved")
    turn3 = timeline.locator('.turn[data-turn="3"]')
    await expect(turn3.locator('[data-type="agent.tool_result"]')).to_contain_text("bash ran")
    await expect(turn3.locator(".entry-agent")).to_contain_text("I ran bash. You said: please run")
    await expect(turn3.locator(".turn-cost")).to_contain_text("$0.")
    turn4 = timeline.locator('.turn[data-turn="4"]')
    await expect(turn4.locator(".entry-agent .text")).to_have_text("You said: and then this")
    await expect(page.locator("#session-status")).to_have_attribute("data-state", "idle")
    await expect(page.locator("#queued")).to_be_hidden()
    await expect(page.locator("#composer-note")).to_have_text("Sent.")  # no longer "Queued"
    await expect(page.locator("#total-cost")).to_contain_text("spent")

    # Readable on a phone: nothing wider than the 375 px screen; the controls take the keyboard.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.locator("#composer-text").focus()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "send"
    await screenshot(page)

    # The connection drops: the page says so, and once back it catches up on what it missed.
    proxy.down()
    await expect(connection).to_have_attribute("data-state", "lost")
    await expect(connection).to_contain_text("Connection lost")
    status, _ = await setup.call("POST", "/messages", json={"text": "while you were away"})
    assert status == 202
    proxy.up()
    await page.evaluate("document.getElementById('reconnect').click()")  # no wait for backoff
    await expect(connection).to_have_attribute("data-state", "live")
    turn5 = timeline.locator('.turn[data-turn="5"]')
    await expect(turn5.locator(".entry-agent .text")).to_have_text("You said: while you were away")
    await expect(timeline.locator(".entry-user")).to_have_count(5)  # no gap, no duplicate

    # Archived through the API: the page hears it live (an `app.session_archived` event) and
    # turns read-only without a reload.
    status, _ = await setup.call("POST", "/archive")
    assert status == 200
    await expect(timeline.locator('[data-type="app.session_archived"]')).to_contain_text("Archived")
    await expect(page.locator("#notice")).to_contain_text("archived")
    await expect(page.locator("#composer-text")).to_be_disabled()
    await expect(page.locator("#send")).to_be_disabled()
    await page.reload()  # the token was kept for this tab: no fragment needed any more
    await expect(page.locator("#session-status")).to_have_text("Archived")
    await expect(page.locator("#composer-text")).to_be_disabled()
    await expect(timeline.locator(".entry-user")).to_have_count(5)

    # The server goes away: the page says the connection is lost and that it keeps trying.
    await expect(connection).to_have_attribute("data-state", "live")
    await running.stop_once()  # type: ignore[attr-defined]
    await expect(connection).to_have_attribute("data-state", "lost")
    await expect(connection).to_contain_text("Connection lost")
    await expect(page.get_by_role("button", name="Reconnect now")).to_be_visible()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_without_a_token_the_page_says_how_to_get_one(
    browser: Any, running: RunningApp
) -> None:
    from playwright.async_api import expect

    setup = await session_with_history(running)
    page = await open_page(browser, setup.page_url)
    await expect(page.locator("#notice")).to_contain_text("No access token", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    await expect(page.locator("#composer-text")).to_be_disabled()
    assert await page.locator("#timeline .entry").count() == 0


async def test_the_page_is_a_shell_served_without_a_token(running: RunningApp) -> None:
    url = running.base_url + PAGE.format(agent_id="agt_x", session_id="sess_y")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy and "connect-src 'self'" in policy
            assert response.headers["Referrer-Policy"] == "no-referrer"
            text = await response.text()
        assert 'data-agent-id="agt_x"' in text and 'data-session-id="sess_y"' in text
        bad = running.base_url + PAGE.format(agent_id="agt_x", session_id="sess%20y")
        async with http.get(bad) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"


async def screenshot(page: Any) -> None:
    """The whole page at phone width, in a viewport as tall as the page, so the sticky header and
    message box sit where a reader sees them (a full-page capture would float them mid-page)."""
    height = await page.evaluate("document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": PHONE["width"], "height": min(height, 6000)})
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))
    await page.set_viewport_size(PHONE)


async def send(page: Any, text: str) -> None:
    await page.locator("#composer-text").fill(text)
    await page.get_by_role("button", name="Send").click()
