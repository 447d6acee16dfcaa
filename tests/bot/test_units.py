"""The Slack edge's pure parts: which events are messages for us, how text is split, what an
error says, how a request signature is checked, which files the agent can read."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bot.files import block_for, kind_of
from bot.http import signature_problem
from bot.inbound import BotIdentity, file_refs, parse_event, strip_mention
from bot.outbox import error_text, split_all, split_text
from router.types import EventRecord

ME = BotIdentity(user_id="UBOT", bot_id="BBOT")


def parse(event: dict, **kw):
    return parse_event(event, team_id="T1", event_id="Ev1", me=kw.get("me", ME))


def msg(**fields) -> dict:
    return {"type": "message", "channel": "C1", "user": "U1", "ts": "10.1", "text": "hi", **fields}


def test_a_dm_is_taken_as_a_dm() -> None:
    taken = parse(msg(channel="D1", channel_type="im"))
    assert taken is not None and taken.is_dm and not taken.is_mention
    assert taken.thread.conversation_key == "T1:D1:10.1"


def test_a_dm_without_channel_type_is_recognised_by_its_channel_id() -> None:
    assert parse(msg(channel="D1")).is_dm


def test_a_mention_strips_the_bots_name_and_keeps_others() -> None:
    taken = parse({**msg(text="<@UBOT> ask <@U2> please"), "type": "app_mention"})
    assert taken.is_mention and taken.text == "ask <@U2> please"
    assert strip_mention("<@UBOT|agents> hi", "UBOT") == "hi"


def test_channel_top_level_messages_count_only_when_they_mention_the_bot() -> None:
    assert parse(msg(channel_type="channel")) is None
    assert parse(msg(channel_type="channel", text="hey <@UBOT>")).is_mention


def test_a_channel_thread_reply_is_passed_on_to_the_router() -> None:
    taken = parse(msg(channel_type="channel", thread_ts="9.9"))
    assert taken is not None and not taken.is_mention and taken.thread.thread_ts == "9.9"


@pytest.mark.parametrize(
    "event",
    [
        msg(user="UBOT"),
        msg(bot_id="B2"),
        msg(subtype="bot_message"),
        msg(subtype="message_changed", message={"user": "U1", "text": "<@UBOT>"}),
        msg(subtype="message_deleted"),
        msg(subtype="channel_join", text="<@UBOT> joined"),
        msg(user=None),
        msg(ts=None),
        {"type": "reaction_added", "user": "U1"},
    ],
)
def test_bots_self_edits_deletions_joins_and_other_events_are_ignored(event: dict) -> None:
    assert parse({**event, "channel_type": "im"}) is None


def test_file_shares_and_thread_broadcasts_are_messages() -> None:
    assert parse(msg(channel_type="im", subtype="file_share")) is not None
    assert parse(msg(channel_type="channel", subtype="thread_broadcast", thread_ts="1.0"))


def test_file_refs_read_the_download_link() -> None:
    refs = file_refs(
        {
            "files": [
                {
                    "id": "F1",
                    "name": "a.png",
                    "mimetype": "image/png",
                    "size": 3,
                    "url_private_download": "http://x/f",
                },
                {"no": "id"},
            ]
        }
    )
    assert [(r.id, r.name, r.size, r.url) for r in refs] == [("F1", "a.png", 3, "http://x/f")]


def test_split_text_cuts_at_boundaries_and_loses_nothing() -> None:
    text = "para one.\n\npara two is longer " + "word " * 50
    parts = split_all(text, 40)
    assert "".join(parts) == text
    assert all(len(p) <= 40 for p in parts)
    assert all(p.endswith(" ") for p in parts[:-1])
    assert split_text("a" * 25 + "\n\n" + "b c" * 10, 40) == ("a" * 25 + "\n\n", "b c" * 10)
    assert split_text("x" * 100, 30) == ("x" * 30, "x" * 70)
    assert split_text("short", 30) == ("short", "")


def record(type_: str, data: dict) -> EventRecord:
    from datetime import UTC, datetime

    return EventRecord(1, "e1", type_, datetime.now(UTC), {"type": type_, **data})


def test_error_text_speaks_plainly() -> None:
    rate = error_text(
        record(
            "app.error",
            {
                "code": "runtime_rate_limited",
                "message": "Anthropic is rate limiting this key (429)",
            },
        )
    )
    assert rate.startswith(":warning: The agent runtime is unavailable right now") and "429" in rate
    assert "not configured" in error_text(record("app.error", {"code": "runtime_not_configured"}))
    assert "took too long" in error_text(
        record("app.error", {"code": "turn_timeout", "message": "took too long"})
    )
    failed = {
        "type": "model_overloaded_error",
        "message": "overloaded",
        "retry_status": {"type": "exhausted"},
    }
    assert "overloaded" in error_text(record("session.error", {"error": failed}))
    retrying = {**failed, "retry_status": {"type": "retrying"}}
    assert error_text(record("session.error", {"error": retrying})) is None


def test_signature_problem_follows_slacks_v0_scheme() -> None:
    body, ts = b'{"a":1}', "1700000000"
    good = (
        "v0=" + hmac.new(b"s3cret", b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    )
    assert signature_problem("s3cret", body, ts, good, 1700000000) is None
    assert (
        signature_problem("s3cret", body, ts, good, 1700000000 + 301) == "stale request timestamp"
    )
    assert signature_problem("s3cret", body + b" ", ts, good, 1700000000) == "bad signature"
    assert "not a number" in signature_problem("s3cret", body, "abc", good, 1700000000)
    assert "missing" in signature_problem("s3cret", body, None, good, 1700000000)


def test_files_become_image_and_document_blocks() -> None:
    assert kind_of("image/webp") == "image"
    assert kind_of("application/pdf") == "pdf"
    assert kind_of("text/csv; charset=utf-8") == "text"
    assert kind_of("application/zip") is None
    assert (
        block_for("image", "image/png", "a.png", b"\x89PNG")["source"]["media_type"] == "image/png"
    )
    doc = block_for("text", "text/markdown", "a.md", "é".encode())
    assert doc == {
        "type": "document",
        "title": "a.md",
        "source": {"type": "text", "media_type": "text/plain", "data": "é"},
    }
