"""Mount the dashboard edge on the shared aiohttp app: middlewares, CORS and every route.

Routes of later features (approvals, usage, schedules, webhooks, trigger runs, escalations,
wallets, the transcript page) are added by their own modules' `add_routes` in `register` below.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dashboard_api import (
    agents,
    approvals,
    builder,
    escalations,
    mcp,
    openapi,
    sessions,
    transcript,
    triggers,
    usage,
    wallets,
    webhooks,
)
from dashboard_api.auth import Authenticator
from dashboard_api.context import DASHBOARD, Dashboard
from dashboard_api.errors import Handler, error_middleware
from dashboard_api.stream import KEEPALIVE_SECONDS, StreamHub

DASHBOARD_PREFIX = "/dashboard/"
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key"
CORS_MAX_AGE = "600"


def register(
    app: web.Application,
    services: Any,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    disconnect_poll: float | None = None,
) -> None:
    """Mount the dashboard routes. `keepalive` is the SSE comment interval (tests shorten it)."""
    hub_options = {"keepalive": keepalive}
    if disconnect_poll is not None:
        hub_options["disconnect_poll"] = disconnect_poll
    hub = StreamHub(services.bus, services.core, **hub_options)
    app[DASHBOARD] = Dashboard(
        core=services.core, auth=Authenticator.from_settings(services.settings), hub=hub
    )
    origin = services.settings.dashboard_origin
    if origin:
        app.middlewares.append(_preflight_middleware(origin.rstrip("/")))
        app.on_response_prepare.append(_cors_headers(origin.rstrip("/")))
    app.middlewares.append(error_middleware)

    async def end_streams(_app: web.Application) -> None:
        await hub.close()

    app.on_shutdown.append(end_streams)

    agents.add_routes(app.router)
    sessions.add_routes(app.router)
    openapi.add_routes(app.router)
    builder.add_routes(app.router)
    mcp.add_routes(app.router, allowed_origin=origin)
    transcript.add_routes(app.router)
    approvals.add_routes(app.router)
    usage.add_routes(app.router)
    triggers.add_routes(app.router, services.triggers, public_url=services.settings.public_url)
    webhooks.add_routes(app.router, services.triggers)
    escalations.add_routes(app.router)
    wallets.add_routes(app.router)


def _allowed(request: web.Request, origin: str) -> bool:
    return request.path.startswith(DASHBOARD_PREFIX) and request.headers.get("Origin") == origin


def _preflight_middleware(origin: str) -> Any:
    """Answer CORS preflights for the dashboard origin before routing (no token on preflights)."""

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and _allowed(request, origin)
        ):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": CORS_METHODS,
                    "Access-Control-Allow-Headers": CORS_HEADERS,
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                },
            )
        return await handler(request)

    return preflight


def _cors_headers(origin: str) -> Any:
    """On every dashboard answer to the dashboard origin (errors and SSE streams included)."""

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if _allowed(request, origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = "Content-Type"
        if request.path.startswith(DASHBOARD_PREFIX):
            response.headers.add("Vary", "Origin")

    return add_headers
