"""The Slack edge under test: the real app on a free port, the fake Slack Web API and the fake
managed-agents API, with signed HTTP requests to `/slack/events`."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from router.sessions import SlackBindingRequest
from router.types import Actor, AgentView, EventRecord, SessionView
from tests.conftest import RunningApp, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack, event_envelope, sign

ACTOR = Actor("ws_test", "member_1")
_ts = itertools.count(1)


def new_ts() -> str:
    """A fresh Slack message ts (unique within the test process)."""
    return f"{int(time.time())}.{next(_ts):06d}"


def dm(text: str, *, channel: str = "D1", user: str = "U1", **extra: Any) -> dict[str, Any]:
    ts = extra.pop("ts", None) or new_ts()
    return {
        "type": "message",
        "channel": channel,
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        **extra,
    }


def channel_message(
    text: str, *, channel: str = "C1", user: str = "U1", **extra: Any
) -> dict[str, Any]:
    ts = extra.pop("ts", None) or new_ts()
    return {
        "type": "message",
        "channel": channel,
        "channel_type": "channel",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        **extra,
    }


def mention(
    text: str, *, channel: str = "C1", user: str = "U1", bot: str = "UBOT", **extra: Any
) -> dict[str, Any]:
    ts = extra.pop("ts", None) or new_ts()
    return {
        "type": "app_mention",
        "channel": channel,
        "user": user,
        "text": f"<@{bot}> {text}",
        "ts": ts,
        "event_ts": ts,
        **extra,
    }


@dataclass
class SlackHarness:
    app: RunningApp
    slack: FakeSlack
    anthropic: FakeAnthropic
    http: aiohttp.ClientSession

    @property
    def edge(self) -> Any:
        return self.app.services.extras["slack"]

    async def post(
        self, body: str, *, headers: dict[str, str] | None = None, signed: bool = True
    ) -> tuple[int, Any]:
        """POST a raw body to /slack/events; (status, parsed JSON or text)."""
        all_headers = {"Content-Type": "application/json"}
        if signed:
            all_headers.update(sign(body))
        all_headers.update(headers or {})
        async with self.http.post(
            f"{self.app.base_url}/slack/events", data=body.encode(), headers=all_headers
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                return resp.status, text

    async def send(
        self,
        event: dict[str, Any],
        *,
        team_id: str = "T1",
        bot_user_id: str = "UBOT",
        event_id: str = "",
        retry_num: int | None = None,
    ) -> tuple[int, Any]:
        """Deliver one signed Events API callback, as Slack does."""
        envelope = event_envelope(
            event, team_id=team_id, bot_user_id=bot_user_id, event_id=event_id
        )
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(json.dumps(envelope), headers=headers)

    async def click(self, user: str, action_id: str, message: Any, *, team_id: str = "T1") -> int:
        """A button click on a message the bot posted (interactivity, form-encoded payload)."""
        block = next(b for b in message.blocks if b["type"] == "actions")
        button = next(e for e in block["elements"] if e["action_id"] == action_id)
        payload = {
            "type": "block_actions",
            "user": {"id": user, "team_id": team_id},
            "team": {"id": team_id},
            "api_app_id": "A0TEST",
            "trigger_id": "1.2.3",
            "container": {
                "type": "message",
                "channel_id": message.channel,
                "message_ts": message.ts,
                "thread_ts": message.thread_ts,
            },
            "channel": {"id": message.channel},
            "message": {"ts": message.ts, "thread_ts": message.thread_ts, "type": "message"},
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block["block_id"],
                    "value": button["value"],
                }
            ],
        }
        body = "payload=" + quote(json.dumps(payload), safe="")
        status, _ = await self.post(
            body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        return status

    async def bind_agent(
        self,
        *,
        team_id: str = "T1",
        channels: tuple[str, ...] = (),
        default: bool = True,
        name: str = "Helper",
        approval_required_tools: tuple[str, ...] = (),
    ) -> AgentView:
        return await self.app.services.core.deploy_agent(
            ACTOR,
            name=name,
            model="claude-sonnet-4-5",
            system="Be brief.",
            approval_required_tools=list(approval_required_tools),
            slack=SlackBindingRequest(team_id, channels, default),
        )

    async def sessions(self, agent: AgentView) -> list[SessionView]:
        page = await self.app.services.core.list_sessions(ACTOR, agent.id, limit=200, cursor=None)
        return page.items

    async def events(self, agent: AgentView, session_id: str) -> list[EventRecord]:
        records, _more = await self.app.services.core.events(ACTOR, agent.id, session_id, limit=200)
        return records

    async def settle(self, timeout: float = 15.0) -> None:
        """Until no turn runs and every Slack delivery is done."""
        await self.app.services.runner.wait_idle(timeout)
        await self.edge.outbox.wait_idle(timeout)

    async def reply(self, channel: str, thread_ts: str, timeout: float = 15.0) -> str:
        """The bot's complete text in a thread, once something is there and no stream is open."""

        def done() -> str | None:
            messages = self.slack.thread(channel, thread_ts)
            if messages and not any(m.streaming for m in messages):
                return self.slack.thread_text(channel, thread_ts)
            return None

        return await self.slack.wait_for(done, timeout)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


async def start_slack_app(
    database: TestDatabase, slack: FakeSlack, anthropic: FakeAnthropic, **overrides: Any
) -> RunningApp:
    settings: dict[str, Any] = {
        "slack_signing_secret": SIGNING_SECRET,
        "slack_bot_token": slack.team("T1").bot_token,
        "slack_api_url": slack.api_url,
        "anthropic_api_key": anthropic.api_key,
        "anthropic_base_url": anthropic.base_url,
    }
    settings.update(overrides)
    return await start_app(database, **settings)


@pytest.fixture
async def harness(
    database: TestDatabase, fake_slack: FakeSlack, fake_anthropic: FakeAnthropic
) -> AsyncIterator[SlackHarness]:
    app = await start_slack_app(database, fake_slack, fake_anthropic)
    async with aiohttp.ClientSession() as http:
        try:
            yield SlackHarness(app, fake_slack, fake_anthropic, http)
        finally:
            await app.stop()
            await app.services.close()
