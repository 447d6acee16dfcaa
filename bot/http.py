"""Slack edge over HTTP: `POST /slack/events` and the OAuth routes on the app's aiohttp application.

The events route wraps Bolt's aiohttp adapter so a bad request never becomes a 500: the body
size, the signature (v0 HMAC, 5-minute window) and the JSON are checked here first, and each
failure answers a JSON error (413, 401, 400) before anything is stored. Bolt then dispatches
with `process_before_response=True`: the listener takes the message into the database and only
then does Slack get its 200. An event no listener wants is acknowledged too (Slack would retry a
404).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.clients import SlackClients
from bot.listeners import SlackEdgeDeps, register_listeners
from bot.oauth import INSTALL_PATH, REDIRECT_PATH, build_oauth, slack_env_hidden
from bot.outbox import SlackOutbox
from router.types import SlackThread

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_WINDOW_SECONDS = 300
SLACK_EDGE_KEY = web.AppKey("slack_edge", object)


def json_error(status: int, code: str, message: str) -> web.Response:
    """The contract's error shape; `X-Slack-No-Retry` because sending it again cannot help."""
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers={"X-Slack-No-Retry": "1"},
    )


def signature_problem(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float
) -> str | None:
    """Why the request is not Slack's (None when it is): Slack's v0 scheme, as Bolt checks it."""
    if not timestamp or not signature:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "X-Slack-Request-Timestamp is not a number"
    if abs(now - sent_at) > SIGNATURE_WINDOW_SECONDS:
        return "stale request timestamp"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    return None


def _dispatchable(body: dict[str, Any]) -> bool:
    """An `event_callback` must carry an event object with a type, as Bolt assumes."""
    if body.get("type") != "event_callback":
        return True
    event = body.get("event")
    return isinstance(event, dict) and isinstance(event.get("type"), str)


class SlackEdge:
    """Bolt, the clients and the outbox of one process, wired from `Settings`."""

    def __init__(self, services: Any, *, clock: Callable[[], float] = time.time) -> None:
        settings = services.settings
        self.clock = clock
        self.signing_secret: str | None = settings.slack_signing_secret
        oauth_mode = bool(settings.slack_client_id and settings.slack_client_secret)
        self.oauth = None
        self.clients = SlackClients(
            base_url=settings.slack_api_url,
            bot_token=None if oauth_mode else settings.slack_bot_token,
        )
        if oauth_mode:
            self.oauth = build_oauth(
                client_id=settings.slack_client_id,
                client_secret=settings.slack_client_secret,
                engine=services.engine,
                client=self.clients.bolt_client,
                public_url=settings.public_url,
            )
            self.clients.installation_store = self.oauth.installation_store
        self.outbox = SlackOutbox(self.clients)
        self.core = services.core
        self.outbox.on_thread_opened = self._thread_opened
        self.bolt: AsyncApp | None = None
        self.missing: str | None = None
        if not self.signing_secret:
            self.missing = "SLACK_SIGNING_SECRET is not set: Slack requests cannot be verified"
        elif not (oauth_mode or settings.slack_bot_token):
            self.missing = "no SLACK_BOT_TOKEN or SLACK_CLIENT_ID/SECRET: the bot cannot answer"
        else:
            self.bolt = self._build_bolt(services)

    def _build_bolt(self, services: Any) -> AsyncApp:
        with slack_env_hidden():
            bolt = AsyncApp(
                name="slack-agents",
                logger=logging.getLogger("bot.bolt"),
                process_before_response=True,
                signing_secret=self.signing_secret,
                client=self.clients.bolt_client,
                authorize=self.oauth.authorize if self.oauth else None,
                oauth_settings=self.oauth.settings if self.oauth else None,
                installation_store=self.oauth.installation_store if self.oauth else None,
                installation_store_bot_only=True if self.oauth else None,
                # `handle_events` verifies every request before dispatch (and without a 500 on a
                # non-numeric timestamp); a second HMAC would only lengthen the ack.
                request_verification_enabled=False,
                attaching_conversation_kwargs_enabled=False,
                url_verification_enabled=True,
            )
        deps = SlackEdgeDeps(core=services.core, outbox=self.outbox, clients=self.clients)
        register_listeners(bolt, deps, oauth=self.oauth is not None)
        return bolt

    async def _thread_opened(self, session_id: str, thread: SlackThread) -> None:
        await self.core.attach_slack_thread(
            session_id,
            team_id=thread.team_id,
            channel_id=thread.channel_id,
            thread_ts=thread.thread_ts,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the shared HTTP session lives as long as the app. On the way
        out (after the turn runner drained) the outbox finishes its deliveries."""
        await self.clients.open()
        try:
            yield
        finally:
            await self.outbox.drain()
            await self.clients.close()

    # -- routes ---------------------------------------------------------------------------------

    async def handle_events(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return json_error(413, "too_large", "the request body is over 1 MiB")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "too_large", "the request body is over 1 MiB")
        if not self.signing_secret:
            return json_error(503, "slack_not_configured", str(self.missing))
        problem = signature_problem(
            self.signing_secret,
            raw,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            self.clock(),
        )
        if problem is not None:
            log.info("slack request refused", extra={"reason": problem})
            return json_error(401, "invalid_signature", problem)
        try:
            bolt_request = AsyncBoltRequest(
                body=raw.decode("utf-8"),
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
            return json_error(400, "malformed_body", "the body is not a Slack JSON or form payload")
        if not isinstance(bolt_request.body, dict) or not bolt_request.body:
            return json_error(400, "malformed_body", "the body is not a Slack JSON or form payload")
        if not _dispatchable(bolt_request.body):  # Bolt's middleware would raise on it: a 500
            return json_error(400, "malformed_body", "the event callback carries no event object")
        if self.bolt is None:
            if bolt_request.body.get("type") == "url_verification":
                return web.json_response({"challenge": bolt_request.body.get("challenge")})
            return json_error(503, "slack_not_configured", str(self.missing))
        response = await self.bolt.async_dispatch(bolt_request)
        if response.status == 404:
            return web.Response(status=200)  # unhandled: acknowledge so Slack does not retry
        return await to_aiohttp_response(response)

    async def handle_install(self, request: web.Request) -> web.StreamResponse:
        flow = self.bolt.oauth_flow if self.bolt is not None else None
        if flow is None:
            return json_error(
                404, "oauth_not_configured", "set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET"
            )
        return await to_aiohttp_response(
            await flow.handle_installation(await to_bolt_request(request))
        )

    async def handle_oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        flow = self.bolt.oauth_flow if self.bolt is not None else None
        if flow is None:
            return json_error(
                404, "oauth_not_configured", "set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET"
            )
        return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))


def register(app: web.Application, services: Any) -> None:
    """Mount the Slack routes on the shared aiohttp application and follow the turn runner."""
    edge = SlackEdge(services)
    if edge.missing:  # app.py logs what is missing at start; this says what the edge does
        log.info("slack events answer 503", extra={"detail": edge.missing})
    app[SLACK_EDGE_KEY] = edge
    services.extras["slack"] = edge
    services.runner.observers.append(edge.outbox)
    app.cleanup_ctx.append(edge.lifecycle)
    app.router.add_post(EVENTS_PATH, edge.handle_events)
    app.router.add_get(INSTALL_PATH, edge.handle_install)
    app.router.add_get(REDIRECT_PATH, edge.handle_oauth_redirect)
