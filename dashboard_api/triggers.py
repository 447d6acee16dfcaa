"""What starts sessions without a person: an agent's schedules, its webhook endpoints, and the
runs they made (`/dashboard/agents/{agent_id}/schedules|webhooks|trigger-runs`).

Thin translations to `router.triggers.Triggers`; the deliveries themselves arrive on the public
`POST /webhooks/{endpoint_id}` (`dashboard_api.webhooks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.errors import ApiError
from dashboard_api.schemas import (
    ListQuery,
    ScheduleCreate,
    ScheduleOut,
    TriggerRunOut,
    WebhookOut,
    answer_json,
    page_json,
    path_id,
    read_body,
    read_query,
)
from router.errors import InvalidInput
from router.triggers import ScheduleView, Triggers

AGENT = "/dashboard/agents/{agent_id}"
SCHEDULES = AGENT + "/schedules"
WEBHOOKS = AGENT + "/webhooks"
TRIGGER_RUNS = AGENT + "/trigger-runs"
DELIVERY_PATH = "/webhooks/{endpoint_id}"


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    slack = (
        {"team_id": view.slack_team_id, "channel_id": view.slack_channel_id}
        if view.slack_team_id and view.slack_channel_id
        else None
    )
    fields = {name: getattr(view, name) for name in ScheduleOut.model_fields if name != "slack"}
    return ScheduleOut.model_validate({**fields, "slack": slack}).model_dump(mode="json")


def _run_json(view: Any) -> dict[str, Any]:
    return answer_json(TriggerRunOut, view)


@dataclass(frozen=True)
class TriggerRoutes:
    """The handlers, bound to the process's `Triggers` and its public address (if configured)."""

    triggers: Triggers
    public_url: str | None

    async def create_schedule(self, request: web.Request) -> web.Response:
        _dashboard, actor = await caller(request)
        agent_id = path_id(request, "agent_id", "agent")
        body = await read_body(request, ScheduleCreate, optional=False)
        try:
            view = await self.triggers.create_schedule(
                actor,
                agent_id,
                cron=body.cron,
                timezone=body.timezone,
                input_text=body.input_text,
                enabled=body.enabled,
                slack_team_id=body.slack.team_id if body.slack else None,
                slack_channel_id=body.slack.channel_id if body.slack else None,
            )
        except InvalidInput as exc:  # a cron or zone the core refuses: the message names it
            raise ApiError(422, "invalid_field", exc.message) from exc
        return web.json_response(schedule_json(view), status=201)

    async def list_schedules(self, request: web.Request) -> web.Response:
        """Every schedule of the agent on one page (an agent has a handful, not thousands)."""
        _dashboard, actor = await caller(request)
        agent_id = path_id(request, "agent_id", "agent")
        views = await self.triggers.list_schedules(actor, agent_id)
        return web.json_response(
            {"data": [schedule_json(v) for v in views], "has_more": False, "next_cursor": None}
        )

    async def delete_schedule(self, request: web.Request) -> web.Response:
        _dashboard, actor = await caller(request)
        agent_id = path_id(request, "agent_id", "agent")
        schedule_id = path_id(request, "schedule_id", "schedule")
        await self.triggers.delete_schedule(actor, agent_id, schedule_id)
        return web.Response(status=204)

    async def create_webhook(self, request: web.Request) -> web.Response:
        _dashboard, actor = await caller(request)
        agent_id = path_id(request, "agent_id", "agent")
        view = await self.triggers.create_webhook(actor, agent_id)
        base = (self.public_url or str(request.url.origin())).rstrip("/")
        url = base + DELIVERY_PATH.format(endpoint_id=view.id)
        answer = WebhookOut(id=view.id, url=url, secret=view.secret)
        return web.json_response(answer.model_dump(mode="json"), status=201)

    async def list_runs(self, request: web.Request) -> web.Response:
        _dashboard, actor = await caller(request)
        agent_id = path_id(request, "agent_id", "agent")
        query = read_query(request, ListQuery)
        page = await self.triggers.list_runs(
            actor, agent_id, limit=query.limit, cursor=query.cursor
        )
        return web.json_response(page_json(page, _run_json))


def add_routes(
    router: web.UrlDispatcher, triggers: Triggers, *, public_url: str | None = None
) -> None:
    routes = TriggerRoutes(triggers, public_url)
    router.add_post(SCHEDULES, routes.create_schedule)
    router.add_get(SCHEDULES, routes.list_schedules, allow_head=False)
    router.add_delete(SCHEDULES + "/{schedule_id}", routes.delete_schedule)
    router.add_post(WEBHOOKS, routes.create_webhook)
    router.add_get(TRIGGER_RUNS, routes.list_runs, allow_head=False)
