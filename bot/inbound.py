"""Pure parsing: a Slack event -> the core's `InboundSlackMessage`, or None when it is not for us.

No I/O here, so every rule of "which Slack message reaches an agent" is tested without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from router.types import InboundSlackMessage

# Subtypes that still carry a human's new message; everything else (message_changed,
# message_deleted, channel_join, bot_message, ...) is ignored.
TAKEN_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
# What Slack's ids and timestamps look like; an event carrying anything else (a NUL, say, which
# PostgreSQL cannot store) is not Slack's to take.
SLACK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
SLACK_TS = re.compile(r"[0-9]{1,20}\.[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who "we" are in the event's workspace (from Bolt's authorize result)."""

    user_id: str | None
    bot_id: str | None


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file attached to a `file_share` message, as Slack describes it (not downloaded yet)."""

    id: str
    name: str
    mimetype: str
    size: int
    url: str | None


def parse_event(
    event: dict[str, Any],
    *,
    team_id: str | None,
    event_id: str | None,
    me: BotIdentity,
) -> InboundSlackMessage | None:
    """The message the bot should take from a `message` or `app_mention` event, else None.

    Top-level channel messages count only when they mention the bot; thread replies in channels
    are passed on (the router takes them only when the thread has a session). A channel message
    that mentions the bot arrives twice (app_mention and message): both parse to the same
    `dedupe_key`, and the router keeps one."""
    kind = event.get("type")
    if kind not in ("message", "app_mention") or not team_id:
        return None
    if not _from_a_human(event, me):
        return None
    channel = event.get("channel")
    ts = event.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        return None
    text = event.get("text")
    text = text.replace("\x00", "") if isinstance(text, str) else ""  # PostgreSQL refuses NUL
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    if not _well_formed(team_id, channel, event["user"], event_id, ts, thread_ts):
        return None
    is_dm = _is_dm(event, channel)
    is_mention = kind == "app_mention" or mentions(text, me.user_id)
    is_reply = thread_ts is not None and thread_ts != ts
    if kind == "message" and not is_dm and not is_reply and not is_mention:
        return None
    return InboundSlackMessage(
        event_id=event_id,
        team_id=team_id,
        channel_id=channel,
        ts=ts,
        thread_ts=thread_ts,
        user_id=event["user"],
        text=strip_mention(text, me.user_id),
        is_dm=is_dm,
        is_mention=is_mention and not is_dm,
    )


def _well_formed(
    team_id: str, channel: str, user: str, event_id: Any, ts: str, thread_ts: str | None
) -> bool:
    ids = (team_id, channel, user, event_id) if event_id else (team_id, channel, user)
    if not all(isinstance(i, str) and SLACK_ID.fullmatch(i) for i in ids):
        return False
    return all(SLACK_TS.fullmatch(t) for t in (ts, thread_ts) if t is not None)


def _from_a_human(event: dict[str, Any], me: BotIdentity) -> bool:
    if event.get("subtype") not in TAKEN_SUBTYPES:
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    if not isinstance(user, str) or not user:
        return False
    return user != me.user_id


def _is_dm(event: dict[str, Any], channel: str) -> bool:
    channel_type = event.get("channel_type")
    if channel_type is not None:
        return channel_type == "im"
    return channel.startswith("D")


def mentions(text: str, bot_user_id: str | None) -> bool:
    return bool(bot_user_id) and f"<@{bot_user_id}" in text


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The text without the bot's own `<@U…>` (the agent needs the request, not its name)."""
    if not bot_user_id:
        return text.strip()
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def file_refs(event: dict[str, Any]) -> list[FileRef]:
    """The files of a `file_share` message (empty for anything else)."""
    refs = []
    for item in event.get("files") or []:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        refs.append(
            FileRef(
                id=str(item["id"]),
                name=str(item.get("name") or item.get("title") or item["id"]),
                mimetype=str(item.get("mimetype") or "application/octet-stream"),
                size=int(item.get("size") or 0),
                url=item.get("url_private_download") or item.get("url_private"),
            )
        )
    return refs
