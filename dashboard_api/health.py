"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from store.db import ping

log = logging.getLogger(__name__)


def register(app: web.Application, engine: AsyncEngine) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(ping(engine), timeout=5)
        except Exception as exc:  # any failure to reach the database means "not ready"
            log.warning("readiness check failed", extra={"error": repr(exc)})
            return web.json_response(
                {
                    "error": {
                        "code": "database_unavailable",
                        "message": "the database does not answer",
                    }
                },
                status=503,
            )
        return web.json_response({"status": "ready"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
