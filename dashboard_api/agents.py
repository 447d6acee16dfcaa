"""Agents: deploy, list, read (`/dashboard/agents`)."""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.schemas import (
    AgentCreate,
    ListQuery,
    agent_json,
    page_json,
    path_id,
    read_body,
    read_query,
)
from router.sessions import SlackBindingRequest


async def deploy_agent(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    body = await read_body(request, AgentCreate, optional=False)
    slack = (
        SlackBindingRequest(
            team_id=body.slack.team_id,
            channel_ids=tuple(dict.fromkeys(body.slack.channel_ids)),
            default=body.slack.default,
        )
        if body.slack is not None
        else None
    )
    view = await dashboard.core.deploy_agent(
        actor,
        name=body.name,
        model=body.model,
        system=body.system,
        approval_required_tools=list(dict.fromkeys(body.approval_required_tools)),
        slack=slack,
    )
    return web.json_response(agent_json(view), status=201)


async def list_agents(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    query = read_query(request, ListQuery)
    page = await dashboard.core.list_agents(actor, limit=query.limit, cursor=query.cursor)
    return web.json_response(page_json(page, agent_json))


async def get_agent(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id = path_id(request, "agent_id", "agent")
    return web.json_response(agent_json(await dashboard.core.get_agent(actor, agent_id)))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/dashboard/agents", deploy_agent)
    router.add_get("/dashboard/agents", list_agents, allow_head=False)
    router.add_get("/dashboard/agents/{agent_id}", get_agent, allow_head=False)
