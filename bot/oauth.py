"""Multi-workspace install (OAuth v2): slack_sdk's SQLAlchemy stores on the app's own database.

The tables (`slack_installations`, `slack_bots`, `slack_oauth_states`) come from our migration,
so nothing here creates tables. Authorization caches each team's `auth.test` in process
(`cache_enabled=True`): without it every event would wait for an extra Web API call before its ack.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

# Keep in step with manifest.yml (oauth_config.scopes.bot).
BOT_SCOPES = (
    "app_mentions:read",
    "chat:write",
    "im:history",
    "channels:history",
    "groups:history",
    "mpim:history",
    "assistant:write",
    "reactions:write",
    "files:read",
    "channels:read",
    "groups:read",
    "im:read",
    "mpim:read",
    "users:read",
)
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600


@dataclass
class OAuthParts:
    installation_store: AsyncSQLAlchemyInstallationStore
    settings: AsyncOAuthSettings
    authorize: AsyncInstallationStoreAuthorize


def build_oauth(
    *,
    client_id: str,
    client_secret: str,
    engine: Any,
    client: AsyncWebClient,
    public_url: str | None,
) -> OAuthParts:
    """Stores, flow settings and authorize for OAuth mode, every value passed explicitly."""
    store = AsyncSQLAlchemyInstallationStore(client_id=client_id, engine=engine, logger=log)
    states = AsyncSQLAlchemyOAuthStateStore(
        expiration_seconds=STATE_SECONDS, engine=engine, logger=log
    )
    redirect_uri = f"{public_url.rstrip('/')}{REDIRECT_PATH}" if public_url else None
    with slack_env_hidden():
        settings = AsyncOAuthSettings(
            client_id=client_id,
            client_secret=client_secret,
            scopes=list(BOT_SCOPES),
            user_scopes=[],
            redirect_uri=redirect_uri,
            install_path=INSTALL_PATH,
            install_page_rendering_enabled=False,
            redirect_uri_path=REDIRECT_PATH,
            installation_store=store,
            installation_store_bot_only=True,
            state_store=states,
            state_expiration_seconds=STATE_SECONDS,
            logger=log,
        )
    authorize = AsyncInstallationStoreAuthorize(
        installation_store=store,
        client_id=client_id,
        client_secret=client_secret,
        bot_only=True,
        cache_enabled=True,
        client=client,
        logger=log,
    )
    return OAuthParts(store, settings, authorize)


@contextlib.contextmanager
def slack_env_hidden() -> Iterator[None]:
    """Bolt and its OAuth settings read SLACK_* variables when an argument is None; our values
    come from `Settings` only. Construction is synchronous, so nothing else sees the gap."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLACK_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)
