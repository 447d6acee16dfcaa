"""A session's metered usage: `GET .../sessions/{session_id}/usage`, per turn and in total."""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.schemas import UsageOut, answer_json, path_id

USAGE = "/dashboard/agents/{agent_id}/sessions/{session_id}/usage"


async def session_usage(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id = path_id(request, "agent_id", "agent")
    session_id = path_id(request, "session_id", "session")
    report = await dashboard.core.usage(actor, agent_id, session_id)
    return web.json_response(answer_json(UsageOut, report))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(USAGE, session_usage, allow_head=False)
