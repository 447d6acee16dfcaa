"""Bolt listeners: parse the event, take it into the database through the router, say the outcome.

Bolt runs with `process_before_response=True`: a listener returns only once the message is
durable (or known to be a duplicate), then Slack gets its 200. Anything slower than a database
transaction (every Slack call) goes to the outbox, which works after the ack.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.cards import APPROVE_ACTION, DENY_ACTION
from bot.clients import SlackClients
from bot.decisions import decide_from_click
from bot.files import fetch_files
from bot.inbound import BotIdentity, file_refs, parse_event
from bot.outbox import SlackOutbox
from router.inbox import SlackAcceptance, Taken, accept_slack_message
from router.sessions import SessionService
from router.types import InboundSlackMessage

log = logging.getLogger(__name__)

NO_AGENT_CHANNEL = (
    "No agent is bound to this channel yet: deploy one from the dashboard with this channel "
    "(or this workspace's default) in its Slack binding, then mention me again."
)
NO_AGENT_DM = (
    "No agent is set as this workspace's default yet: deploy one from the dashboard with "
    "`default` on in its Slack binding, then write to me again."
)
WALLET_EMPTY = (
    "This workspace's AI wallet is empty, so the agent cannot answer. "
    "An admin can top it up from the dashboard; then write again."
)
ARCHIVED = (
    "This session is archived, so it takes no new messages. "
    "Start a new thread to talk to the agent again."
)


@dataclass
class SlackEdgeDeps:
    """What the listeners call: the core, the outbox, the Slack clients."""

    core: SessionService
    outbox: SlackOutbox
    clients: SlackClients


def register_listeners(bolt: AsyncApp, deps: SlackEdgeDeps, *, oauth: bool) -> None:
    """Messages and mentions first; then no-op catch-alls, so no request ever answers 404 (Slack
    would retry it)."""

    async def on_message(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext):
        await take_message(deps, body, event, context)

    async def on_decision(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        deps.outbox.track(decide_from_click(deps.core, deps.clients, body, action))

    bolt.event("message")(on_message)
    bolt.event("app_mention")(on_message)
    bolt.action(re.compile(f"^({APPROVE_ACTION}|{DENY_ACTION})$"))(on_decision)
    if oauth:
        bolt.enable_token_revocation_listeners()

    async def ignore_event() -> None:
        return None

    async def ack_only(ack: Any) -> None:
        await ack()

    bolt.event(re.compile(".*"))(ignore_event)
    bolt.action(re.compile(".*"))(ack_only)
    bolt.view(re.compile(".*"))(ack_only)
    bolt.shortcut(re.compile(".*"))(ack_only)
    bolt.command(re.compile(".*"))(ack_only)
    bolt.options(re.compile(".*"))(ack_only)


async def take_message(
    deps: SlackEdgeDeps, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
) -> SlackAcceptance | None:
    me = BotIdentity(context.bot_user_id, context.bot_id)
    msg = parse_event(event, team_id=context.team_id, event_id=body.get("event_id"), me=me)
    if msg is None:
        return None
    notes: list[str] = []
    refs = file_refs(event)
    if refs and deps.clients.session is not None:
        files = await fetch_files(deps.clients.session, context.bot_token, refs)
        notes = files.notes
        text = msg.text or "(shared " + ", ".join(ref.name for ref in refs) + ")"
        msg = replace(msg, text=text, content=tuple(files.content))
    taken = await accept_slack_message(deps.core, msg)
    log.info(
        "slack message taken",
        extra={
            "session_id": taken.session_id,
            "outcome": str(taken.outcome),
            "event_id": msg.event_id,
            "conversation_key": msg.thread.conversation_key,
        },
    )
    say_outcome(deps.outbox, msg, taken, notes)
    return taken


def say_outcome(
    outbox: SlackOutbox, msg: InboundSlackMessage, taken: SlackAcceptance, notes: list[str]
) -> None:
    """Queue what the thread should see about this message (after the ack)."""
    thread = msg.thread
    if taken.outcome is Taken.NO_AGENT:
        outbox.notice(thread, NO_AGENT_DM if msg.is_dm else NO_AGENT_CHANNEL, about_ts=msg.ts)
    elif taken.outcome is Taken.ARCHIVED:
        outbox.notice(thread, ARCHIVED, about_ts=msg.ts)
    elif taken.outcome is Taken.WALLET_EMPTY:
        outbox.notice(thread, WALLET_EMPTY, about_ts=msg.ts)
    elif taken.outcome is Taken.ACCEPTED:
        if notes:
            outbox.notice(thread, "\n".join(notes))
        if taken.queued > 1 or (taken.session_id and outbox.busy(taken.session_id)):
            outbox.mark_queued(thread, msg.ts)
