"""Files shared with the bot, and the multi-workspace OAuth install."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from tests.bot.conftest import SlackHarness, dm, start_slack_app
from tests.conftest import TestDatabase
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlack

# slack_sdk's own use of aiohttp.BasicAuth for oauth.v2.access.
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_shared_files_reach_the_agent_and_unreadable_ones_are_explained(
    harness: SlackHarness,
) -> None:
    await harness.bind_agent()
    slack = harness.slack
    files = [
        slack.add_file("chart.png", PNG, "image/png"),
        slack.add_file("report.pdf", b"%PDF-1.4 tiny", "application/pdf"),
        slack.add_file("notes.txt", b"remember the milk", "text/plain"),
        slack.add_file("archive.zip", b"PK\x03\x04", "application/zip"),
        slack.add_file("huge.png", b"\0" * (5 * 1024 * 1024 + 1), "image/png"),
        slack.add_file("locked.png", PNG, "image/png", html_instead=True),
    ]
    event = dm("what do you see?", subtype="file_share", files=files)
    assert (await harness.send(event))[0] == 200
    await harness.settle()
    (sent,) = harness.anthropic.sent_events(event_type="user.message")
    blocks = sent["content"]
    assert blocks[0] == {"type": "text", "text": "what do you see?"}
    assert blocks[1] == {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(PNG).decode(),
        },
    }
    assert blocks[2]["type"] == "document"
    assert blocks[2]["source"] == {
        "type": "base64",
        "media_type": "application/pdf",
        "data": base64.b64encode(b"%PDF-1.4 tiny").decode(),
    }
    assert blocks[3]["source"] == {
        "type": "text",
        "media_type": "text/plain",
        "data": "remember the milk",
    }
    assert len(blocks) == 4
    thread = slack.thread_text("D1", event["ts"], sep="\n")
    assert "archive.zip" in thread
    assert "huge.png" in thread and "5 MB" in thread
    assert "locked.png" in thread and "files:read" in thread
    assert "You said: what do you see?" in thread
    downloads = {c.args["id"] for c in slack.calls_of("files.download")}
    assert downloads == {files[0]["id"], files[1]["id"], files[2]["id"], files[5]["id"]}


async def test_an_oauth_install_stores_the_team_and_the_bot_answers_there(
    database: TestDatabase, fake_slack: FakeSlack, fake_anthropic: FakeAnthropic
) -> None:
    fake_slack.add_oauth_app("cid.123", "client-secret")
    team = fake_slack.add_oauth_code("code-1", "T2", bot_user_id="UBOT2")
    app = await start_slack_app(
        database,
        fake_slack,
        fake_anthropic,
        slack_bot_token=None,
        slack_client_id="cid.123",
        slack_client_secret="client-secret",
    )
    edge = app.services.extras["slack"]
    # The migration creates these tables; the test database is built from the models only.
    await edge.oauth.installation_store.create_tables()
    await edge.oauth.settings.state_store.create_tables()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{app.base_url}/slack/install", allow_redirects=False) as resp:
                assert resp.status == 302
                location = resp.headers["Location"]
                cookie = resp.headers["Set-Cookie"].split(";")[0]
            state = parse_qs(urlparse(location).query)["state"][0]
            async with http.get(
                f"{app.base_url}/slack/oauth_redirect",
                params={"code": "wrong", "state": state},
                headers={"Cookie": cookie},
            ) as resp:
                assert resp.status in (400, 401)  # Bolt's failure page, never a 500
            async with http.get(f"{app.base_url}/slack/install", allow_redirects=False) as resp:
                location = resp.headers["Location"]
                cookie = resp.headers["Set-Cookie"].split(";")[0]
            state = parse_qs(urlparse(location).query)["state"][0]
            async with http.get(
                f"{app.base_url}/slack/oauth_redirect",
                params={"code": "code-1", "state": state},
                headers={"Cookie": cookie},
            ) as resp:
                assert resp.status == 200, await resp.text()
            bot = await edge.oauth.installation_store.async_find_bot(
                enterprise_id=None, team_id="T2"
            )
            assert bot is not None and bot.bot_token == team.bot_token

            harness = SlackHarness(app, fake_slack, fake_anthropic, http)
            await harness.bind_agent(team_id="T2")
            event = dm("hello team two", channel="D2")
            status, _ = await harness.send(event, team_id="T2", bot_user_id="UBOT2")
            assert status == 200
            assert await harness.reply("D2", event["ts"]) == "You said: hello team two"
            posting = fake_slack.calls_of("chat.startStream")
            assert {c.token for c in posting} == {team.bot_token}
            stranger = dm("from a team that never installed", channel="D9")
            assert (await harness.send(stranger, team_id="T9"))[0] == 200
            mine = dm("my own echo", channel="D2", user="UBOT2")
            await harness.send(mine, team_id="T2", bot_user_id="UBOT2")
            await harness.settle()
            assert fake_slack.thread("D2", mine["ts"]) == []
            assert fake_slack.thread("D9", stranger["ts"]) == []
    finally:
        await app.stop()
        await app.services.close()
