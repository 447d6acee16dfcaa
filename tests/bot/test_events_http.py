"""`POST /slack/events` as an HTTP endpoint: bad requests are refused with JSON errors, never a
500, and nothing is stored; whatever Slack sends that we do not handle is still acknowledged."""

from __future__ import annotations

import json
import time

import aiohttp
from sqlalchemy import func, select

from store.models import AgentSession, SlackEventReceipt
from tests.bot.conftest import SlackHarness, dm, start_slack_app
from tests.conftest import TestDatabase
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlack, event_envelope, sign


async def stored_rows(harness: SlackHarness) -> int:
    async with harness.app.services.sessionmaker() as s:
        receipts = await s.scalar(select(func.count()).select_from(SlackEventReceipt))
        sessions = await s.scalar(select(func.count()).select_from(AgentSession))
    return receipts + sessions


async def test_bad_stale_or_missing_signatures_are_401_and_store_nothing(
    harness: SlackHarness,
) -> None:
    await harness.bind_agent()
    body = json.dumps(event_envelope(dm("let me in")))
    good = sign(body)
    cases = [
        {**good, "X-Slack-Signature": "v0=" + "0" * 64},
        sign(body, secret="someone-elses-secret"),
        sign(body, ts=int(time.time()) - 301),
        {
            "X-Slack-Request-Timestamp": "not-a-number",
            "X-Slack-Signature": good["X-Slack-Signature"],
        },
        {"X-Slack-Request-Timestamp": good["X-Slack-Request-Timestamp"]},
        {},
    ]
    for headers in cases:
        status, answer = await harness.post(body, headers=headers, signed=False)
        assert status == 401, headers
        assert answer["error"]["code"] == "invalid_signature"
    await harness.settle()
    assert await stored_rows(harness) == 0
    assert harness.slack.messages == []


async def test_malformed_bodies_are_400_and_store_nothing(harness: SlackHarness) -> None:
    for body in ("{not json", "[1, 2]", "payload=%7Bbroken", "null"):
        status, answer = await harness.post(body)
        assert status == 400, body
        assert answer["error"]["code"] == "malformed_body"
    raw = b"\xff\xfe{}"
    headers = {"Content-Type": "application/json", **sign(raw.decode("latin-1"))}
    async with harness.http.post(
        f"{harness.app.base_url}/slack/events", data=raw, headers=headers
    ) as resp:
        assert resp.status in (400, 401)
    assert await stored_rows(harness) == 0


async def test_a_body_over_one_mebibyte_is_413(harness: SlackHarness) -> None:
    body = json.dumps({"type": "event_callback", "pad": "x" * (1024 * 1024 + 10)})
    status, answer = await harness.post(body)
    assert status == 413
    assert answer["error"]["code"] == "too_large"


async def test_url_verification_answers_the_challenge(harness: SlackHarness) -> None:
    status, answer = await harness.post(
        json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
    )
    assert (status, answer) == (200, {"challenge": "abc123"})


async def test_events_and_actions_nobody_handles_are_acknowledged(harness: SlackHarness) -> None:
    reaction = {"type": "reaction_added", "user": "U1", "reaction": "+1", "event_ts": "1.2"}
    status, _ = await harness.send(reaction)
    assert status == 200
    payload = {
        "type": "block_actions",
        "user": {"id": "U1", "team_id": "T1"},
        "team": {"id": "T1"},
        "api_app_id": "A0TEST",
        "actions": [{"action_id": "something_else", "block_id": "b", "value": "v"}],
        "channel": {"id": "C1"},
        "message": {"ts": "1.1"},
    }
    form = "payload=" + aiohttp.helpers.quote(json.dumps(payload), safe="")
    status, _ = await harness.post(
        form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200


async def test_without_a_signing_secret_slack_requests_get_503(
    database: TestDatabase, fake_slack: FakeSlack, fake_anthropic: FakeAnthropic
) -> None:
    app = await start_slack_app(database, fake_slack, fake_anthropic, slack_signing_secret=None)
    try:
        body = json.dumps(event_envelope(dm("hello")))
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{app.base_url}/slack/events", data=body, headers=sign(body)
            ) as resp:
                assert resp.status == 503
                answer = await resp.json()
        assert answer["error"]["code"] == "slack_not_configured"
    finally:
        await app.stop()
        await app.services.close()
