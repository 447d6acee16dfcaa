"""Approve / Deny clicks on an approval card.

The click is acknowledged at once; the decision runs after the ack (tracked by the outbox):
the router takes it in the database first (one decision wins, whichever button, replica or
dashboard), then tells the runtime. The card is then rewritten without buttons, naming who
decided. In a channel only its members may decide.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.cards import APPROVE_ACTION, decided_blocks, decided_text, input_preview
from bot.clients import SlackClients
from bot.outbox import SLACK_ERRORS
from router import approvals
from router.errors import Conflict, NotFound, RuntimeFailure
from router.sessions import SessionService

log = logging.getLogger(__name__)


def _obj(value: Any) -> dict[str, Any]:
    """A payload part that should be an object (a forged or odd payload may hold anything)."""
    return value if isinstance(value, dict) else {}


async def decide_from_click(
    core: SessionService, clients: SlackClients, body: dict[str, Any], action: dict[str, Any]
) -> None:
    user = str(_obj(body.get("user")).get("id") or "")
    team = str(_obj(body.get("team")).get("id") or _obj(body.get("user")).get("team_id") or "")
    channel = str(_obj(body.get("channel")).get("id") or "")
    message_ts = str(_obj(body.get("message")).get("ts") or "")
    client = await clients.client_for(team)
    if client is None or not (user and channel and message_ts):
        log.warning("approval click without a usable channel or token", extra={"team_id": team})
        return
    say = _Reply(client, channel, message_ts, user)
    request = await approvals.find_request(core.db, str(action.get("value") or ""))
    if request is None:
        await say.card("This approval request no longer exists.")
        return
    if not await is_member(client, channel, user):
        await say.privately("Only members of this channel can decide on this tool call.")
        return
    allow = action.get("action_id") == APPROVE_ACTION
    try:
        decision = await approvals.decide(
            core.db,
            core.runtime,
            workspace_id=request.workspace_id,
            session_id=request.session_id,
            tool_use_id=request.tool_use_id,
            allow=allow,
            reason=None if allow else f"Denied in Slack by <@{user}>",
            decided_by=f"slack:{user}",
        )
    except Conflict:
        await say.card(f"`{request.tool_name}` was already decided.", request.tool_input)
        return
    except NotFound:
        await say.card("This tool call no longer waits for a decision.", request.tool_input)
        return
    except RuntimeFailure as exc:
        await say.privately(f"The agent runtime could not be told ({exc.message}). Try again.")
        return
    log.info(
        "approval decided in slack",
        extra={"session_id": request.session_id, "decision": decision.decision, "user": user},
    )
    await say.blocks(
        decided_text(request.tool_name, decision.decision, f"<@{user}>"),
        decided_blocks(request.tool_name, request.tool_input, decision.decision, f"<@{user}>"),
    )


async def is_member(client: AsyncWebClient, channel: str, user: str) -> bool:
    """A DM's card is seen by its user alone; in a channel, ask Slack (fails closed)."""
    if channel.startswith("D"):
        return True
    cursor = None
    try:
        while True:
            page = await client.conversations_members(channel=channel, cursor=cursor, limit=1000)
            if user in (page.get("members") or []):
                return True
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False
    except SLACK_ERRORS as exc:
        log.warning("membership check failed", extra={"channel": channel, "error": str(exc)})
        return False


class _Reply:
    """Where the outcome of a click is shown: the card itself, or a note only the clicker sees."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, user: str) -> None:
        self.client, self.channel, self.ts, self.user = client, channel, ts, user

    async def card(self, text: str, tool_input: Any = None) -> None:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if tool_input is not None:
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"```{input_preview(tool_input)}```"},
                }
            )
        await self.blocks(text, blocks)

    async def blocks(self, text: str, blocks: list[dict[str, Any]]) -> None:
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=blocks
            )
        except SLACK_ERRORS as exc:
            log.warning("approval card update failed", extra={"error": str(exc)})

    async def privately(self, text: str) -> None:
        try:
            await self.client.chat_postEphemeral(channel=self.channel, user=self.user, text=text)
        except SLACK_ERRORS as exc:
            log.warning("ephemeral note failed", extra={"error": str(exc)})
