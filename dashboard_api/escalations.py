"""The escalation inbox: `GET /dashboard/escalations`, `POST .../{escalation_id}/resolve`.

Scoped to the caller's workspace; resolving twice answers the same resolved escalation.
"""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.schemas import (
    EscalationListQuery,
    EscalationOut,
    answer_json,
    page_json,
    path_id,
    read_query,
)

ESCALATIONS = "/dashboard/escalations"


def _escalation_json(view: object) -> dict[str, object]:
    return answer_json(EscalationOut, view)


async def list_escalations(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    query = read_query(request, EscalationListQuery)
    page = await dashboard.core.list_escalations(
        actor, limit=query.limit, cursor=query.cursor, status=query.status
    )
    return web.json_response(page_json(page, _escalation_json))


async def resolve(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    escalation_id = path_id(request, "escalation_id", "escalation")
    view = await dashboard.core.resolve_escalation(actor, escalation_id)
    return web.json_response(_escalation_json(view))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(ESCALATIONS, list_escalations, allow_head=False)
    router.add_post(ESCALATIONS + "/{escalation_id}/resolve", resolve)
