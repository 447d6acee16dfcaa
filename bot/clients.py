"""Slack Web API clients: one shared aiohttp session, the 429 retry handler, a token per team.

Single workspace: every team uses `SLACK_BOT_TOKEN`. Multi-workspace (OAuth): the team's bot token
comes from the installation store, cached for a few minutes so a busy thread does not read the
database on every streamed chunk.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 300.0


def retry_handlers() -> list[Any]:
    """Connection errors (the SDK's default), 429 + Retry-After and 500/503 with backoff (not on
    by default): an answer must survive a few seconds of Slack trouble, not be dropped."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=1),
        AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        AsyncServerErrorRetryHandler(max_retry_count=3),
    ]


def make_client(base_url: str, token: str | None = None) -> AsyncWebClient:
    """A client for `base_url`; its `session` is set once the event loop runs (`SlackClients.open`)."""
    return AsyncWebClient(token=token, base_url=base_url, retry_handlers=retry_handlers())


class SlackClients:
    """Clients by Slack team, sharing one `aiohttp.ClientSession` opened in the event loop."""

    def __init__(
        self,
        *,
        base_url: str,
        bot_token: str | None = None,
        installation_store: Any = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self.bot_token = bot_token
        self.installation_store = installation_store
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.bolt_client = make_client(base_url, bot_token)
        self._clients: dict[str, tuple[AsyncWebClient, float]] = {}
        self._bot_users: dict[str, str] = {}

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.bolt_client.session = self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        self.bolt_client.session = None
        self._clients.clear()

    async def token_for(self, team_id: str) -> str | None:
        if self.installation_store is None:
            return self.bot_token
        bot = await self.installation_store.async_find_bot(enterprise_id=None, team_id=team_id)
        return bot.bot_token if bot is not None else None

    async def bot_user_id(self, team_id: str) -> str | None:
        """The bot's own user id in the team (`auth.test`, asked once per team)."""
        if team_id not in self._bot_users:
            client = await self.client_for(team_id)
            if client is None:
                return None
            self._bot_users[team_id] = (await client.auth_test())["user_id"]
        return self._bot_users[team_id]

    async def client_for(self, team_id: str) -> AsyncWebClient | None:
        """The team's client, or None when the app has no token for it (logged)."""
        cached = self._clients.get(team_id)
        now = self.clock()
        if cached is not None and (self.installation_store is None or cached[1] > now):
            return cached[0]
        try:
            token = await self.token_for(team_id)
        except Exception:
            log.exception("installation lookup failed", extra={"team_id": team_id})
            return cached[0] if cached is not None else None
        if not token:
            log.warning("no Slack token for this team: cannot post", extra={"team_id": team_id})
            return None
        client = make_client(self.base_url, token)
        client.session = self.session
        self._clients[team_id] = (client, now + TOKEN_TTL_SECONDS)
        return client
