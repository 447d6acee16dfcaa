"""Decide a tool call waiting for a human: `POST .../sessions/{session_id}/approvals/{tool_use_id}`.

The first decision wins (from here or from a Slack card, on any process); a second one is a 409.
"""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.schemas import ApprovalDecide, ApprovalOut, answer_json, path_id, read_body

APPROVAL = "/dashboard/agents/{agent_id}/sessions/{session_id}/approvals/{tool_use_id}"


async def decide(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id = path_id(request, "agent_id", "agent")
    session_id = path_id(request, "session_id", "session")
    tool_use_id = path_id(request, "tool_use_id", "tool call waiting for approval")
    body = await read_body(request, ApprovalDecide, optional=False)
    decision = await dashboard.core.decide_approval(
        actor,
        agent_id,
        session_id,
        tool_use_id,
        allow=body.decision == "allow",
        reason=body.reason,
    )
    return web.json_response(answer_json(ApprovalOut, decision))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(APPROVAL, decide)
