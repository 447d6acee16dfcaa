"""What every dashboard handler needs, stored once on the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dashboard_api.auth import Authenticator
from dashboard_api.stream import StreamHub
from router.types import Actor


@dataclass(frozen=True)
class Dashboard:
    core: Any  # router.sessions.SessionService
    auth: Authenticator
    hub: StreamHub


DASHBOARD = web.AppKey("dashboard", Dashboard)


async def caller(request: web.Request) -> tuple[Dashboard, Actor]:
    """The dashboard and the authenticated actor (401 otherwise); a workspace or member seen
    for the first time is created here, so a fresh token works at once."""
    dashboard = request.app[DASHBOARD]
    actor = await dashboard.auth.actor(request)
    await dashboard.core.ensure_actor(actor)
    return dashboard, actor
