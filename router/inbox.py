"""Taking a Slack message: dedupe, route to an agent and a session, enqueue, in one transaction.

This is the whole ack path of `/slack/events`: when it returns, the message is durable, and the
turn runs afterwards in work the runner tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from router.errors import WalletEmpty
from router.sessions import SessionService
from router.types import InboundSlackMessage
from store import agents as agents_store
from store import queue as queue_store
from store import receipts
from store import sessions as sessions_store


class Taken(StrEnum):
    ACCEPTED = "accepted"  # queued; a turn will answer in the thread
    DUPLICATE = "duplicate"  # a Slack retry, or the second event of one message: drop
    IGNORED = "ignored"  # not for us (a thread reply in a thread with no session)
    NO_AGENT = "no_agent"  # addressed to us but no agent is bound here: say so
    ARCHIVED = "archived"  # the thread's session is archived: say so, send nothing
    WALLET_EMPTY = "wallet_empty"  # the workspace's AI wallet is empty: say so, send nothing


@dataclass(frozen=True, slots=True)
class SlackAcceptance:
    outcome: Taken
    session_id: str | None = None
    message_id: str | None = None
    queued: int = 0
    new_session: bool = False


async def accept_slack_message(
    service: SessionService, msg: InboundSlackMessage
) -> SlackAcceptance:
    """A plain thread reply (no mention, not a DM) is taken only when its thread has a session."""
    thread = msg.thread
    addressed = msg.is_dm or msg.is_mention
    async with service.db.begin() as s:
        if msg.event_id and not await receipts.record_slack_event(s, msg.event_id, msg.team_id):
            return SlackAcceptance(Taken.DUPLICATE)
        row = None
        if msg.thread_ts is not None:  # a top-level message starts its own thread
            row = await sessions_store.find_slack_session(
                s, team_id=thread.team_id, channel_id=thread.channel_id, thread_ts=thread.thread_ts
            )
        created = False
        if row is None:
            if not addressed:
                return SlackAcceptance(Taken.IGNORED)
            agent = await agents_store.resolve_slack_agent(
                s, team_id=msg.team_id, channel_id=None if msg.is_dm else msg.channel_id
            )
            if agent is None:
                return SlackAcceptance(Taken.NO_AGENT)
            row, created = await sessions_store.get_or_create_slack_session(
                s,
                workspace_id=agent.workspace_id,
                deployed_agent_id=agent.id,
                team_id=thread.team_id,
                channel_id=thread.channel_id,
                thread_ts=thread.thread_ts,
                created_by=msg.user_id,
                title=msg.text[:80],
                reserve_first_message=True,
            )
        if row.status == "archived":
            return SlackAcceptance(Taken.ARCHIVED, session_id=row.id)
        try:
            await service.runner.billing.check_can_run(s, row.workspace_id)
        except WalletEmpty:
            return SlackAcceptance(Taken.WALLET_EMPTY, session_id=row.id)
        message = await queue_store.enqueue(
            s,
            row.id,
            text=msg.text,
            content=list(msg.content),
            author=msg.user_id,
            dedupe_key=msg.dedupe_key,
            slack_ts=msg.ts,
            position=1 if created else None,
        )
        if message is None:
            return SlackAcceptance(Taken.DUPLICATE, session_id=row.id)
        # Behind a running turn (or a fresh row with nothing before it): no count query on the
        # ack path, the row's status says whether this message waits.
        queued = 2 if row.status == "running" else 1
    service.runner.kick(row.id)
    return SlackAcceptance(
        Taken.ACCEPTED, session_id=row.id, message_id=message.id, queued=queued, new_session=created
    )
