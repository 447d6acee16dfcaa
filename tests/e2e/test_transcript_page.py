"""The transcript page, as a person uses it: in headless Chromium (Debian's `chromium`, driven by
Playwright's async API), against the whole app on a free port and the fake managed-agents API.

The browser walk runs on SQLite only (the page sees the same JSON and SSE on both databases; the
routes themselves are tested on both in tests/dashboard/). Without Chromium or Playwright it is
skipped with the reason, except under REQUIRE_BROWSER=1 (`.ci/run` sets it), where it fails.
It keeps one screenshot of the page at `artifacts/transcript.png` (see the README).
"""

from __future__ import annotations

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
from tests.conftest import RunningApp, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

SECRET = "transcript-test-secret-long-enough-for-hs256"
API_KEY = "sk-ant-transcript-test"
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
async def fake_runtime() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


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
    session, _ = await core.create_session(actor, agent.id, text="hello there", title="Greeting")
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
    browser: Any, running: RunningApp
) -> None:
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    setup = await session_with_history(running)
    page = await open_page(browser, f"{setup.page_url}#token={setup.token}")
    timeline = page.locator("#timeline")

    # The history: the user's message and the agent's answer, in turn 1 with its cost.
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(timeline.locator(".entry-user").first).to_contain_text("hello there")
    await expect(timeline.locator(".entry-agent").first).to_contain_text("You said: hello there")
    await expect(page.locator('.turn[data-turn="1"] .turn-cost')).to_contain_text("tokens")
    await expect(page.locator('.turn[data-turn="1"] .turn-cost')).to_contain_text("$0.")
    await expect(page.locator("#title")).to_have_text("Greeting")
    assert "token=" not in page.url  # the fragment is dropped once the token is kept
    await page.evaluate("window.stillTheSamePage = true")

    # A streamed reply arrives without reloading: first as a message being written, then final.
    await send(page, "stream this [slow:0.3]")
    streaming = timeline.locator(".entry-agent.streaming")
    await expect(streaming).to_have_count(1)
    await expect(streaming.locator(".text")).to_contain_text("You said")
    await expect(page.locator("#session-status")).to_have_attribute("data-state", "running")
    final = timeline.locator('.turn[data-turn="2"] .entry-agent')
    await expect(final).to_have_text(re.compile("You said: stream this"))
    await expect(timeline.locator(".entry-agent.streaming")).to_have_count(0)
    await expect(final).to_have_count(1)  # the fragments became the final message, not a copy
    await expect(page.locator("#session-status")).to_have_attribute("data-state", "idle")
    assert await page.evaluate("window.stillTheSamePage === true")

    # A tool that needs approval: a card; Approve continues the turn.
    await send(page, "please run [tool:bash]")
    card = timeline.locator(".approval")
    await expect(card).to_have_attribute("data-state", "pending")
    await expect(card).to_contain_text("bash")
    await expect(page.locator("#session-status")).to_have_text("Waiting for approval")
    await card.get_by_role("button", name="Approve").click()
    await expect(card).to_have_attribute("data-state", "allow")
    await expect(card.locator(".outcome")).to_contain_text("Approved")
    turn3 = timeline.locator('.turn[data-turn="3"]')
    await expect(turn3.locator('[data-type="agent.tool_result"]')).to_contain_text("bash ran")
    await expect(turn3.locator(".entry-agent")).to_contain_text("I ran bash. You said: please run")
    await expect(turn3.locator(".turn-cost")).to_contain_text("$0.")
    await expect(page.locator("#total-cost")).to_contain_text("spent")

    # Readable on a phone: nothing wider than the 375 px screen; the controls take the keyboard.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.locator("#composer-text").focus()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "send"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Archived through the API: a message from the page is refused and the page says why.
    status, _ = await setup.call("POST", "/archive")
    assert status == 200
    if await page.locator("#composer-text").is_enabled():  # else the page's own poll saw it
        await send(page, "anyone there?")
    await expect(page.locator("#notice")).to_contain_text("archived")
    await expect(page.locator("#composer-text")).to_be_disabled()
    await expect(page.locator("#send")).to_be_disabled()
    await page.reload()  # the token was kept for this tab: no fragment needed any more
    await expect(page.locator("#session-status")).to_have_text("Archived")
    await expect(page.locator("#composer-text")).to_be_disabled()
    await expect(timeline.locator(".entry-user")).to_have_count(3)

    # The server goes away: the page says the connection is lost and that it keeps trying.
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await running.stop_once()  # type: ignore[attr-defined]
    await expect(page.locator("#connection")).to_have_attribute("data-state", "lost")
    await expect(page.locator("#connection")).to_contain_text("Connection lost")
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


async def send(page: Any, text: str) -> None:
    await page.locator("#composer-text").fill(text)
    await page.get_by_role("button", name="Send").click()
