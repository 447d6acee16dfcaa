"""Sessions of an agent: create, list, read, message, interrupt, archive, and the event history."""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.errors import invalid_field
from dashboard_api.schemas import (
    MAX_SEQ,
    EventQuery,
    MessageCreate,
    SessionCreate,
    SessionListQuery,
    StreamQuery,
    event_json,
    message_json,
    page_json,
    path_id,
    read_body,
    read_query,
    session_json,
)

SESSIONS = "/dashboard/agents/{agent_id}/sessions"
SESSION = SESSIONS + "/{session_id}"


def _ids(request: web.Request) -> tuple[str, str]:
    return path_id(request, "agent_id", "agent"), path_id(request, "session_id", "session")


async def create_session(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id = path_id(request, "agent_id", "agent")
    body = await read_body(request, SessionCreate, optional=True)
    view, receipt = await dashboard.core.create_session(
        actor, agent_id, text=body.text, title=body.title or ""
    )
    return web.json_response(session_json(view, receipt), status=201)


async def list_sessions(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id = path_id(request, "agent_id", "agent")
    query = read_query(request, SessionListQuery)
    page = await dashboard.core.list_sessions(
        actor,
        agent_id,
        limit=query.limit,
        cursor=query.cursor,
        status=query.status,
        source=query.source,
    )
    return web.json_response(page_json(page, session_json))


async def get_session(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    view = await dashboard.core.get_session(actor, agent_id, session_id)
    return web.json_response(session_json(view))


async def post_message(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    body = await read_body(request, MessageCreate, optional=False)
    receipt = await dashboard.core.post_message(actor, agent_id, session_id, text=body.text)
    return web.json_response(message_json(receipt), status=202)


async def interrupt(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    view = await dashboard.core.interrupt(actor, agent_id, session_id)
    return web.json_response(session_json(view), status=202)


async def archive(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    view = await dashboard.core.archive(actor, agent_id, session_id)
    return web.json_response(session_json(view))


async def list_events(request: web.Request) -> web.Response:
    """Keyset pages over the mirror; `next_cursor` is the last seq of the page, as a string."""
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    query = read_query(request, EventQuery)
    after, before = query.bounds()
    records, more = await dashboard.core.events(
        actor,
        agent_id,
        session_id,
        limit=query.limit,
        after=after,
        before=before,
        descending=query.order == "desc",
    )
    return web.json_response(
        {
            "data": [event_json(r) for r in records],
            "has_more": more,
            "next_cursor": str(records[-1].seq) if more and records else None,
        }
    )


async def stream(request: web.Request) -> web.StreamResponse:
    dashboard, actor = await caller(request)
    agent_id, session_id = _ids(request)
    after = _resume_point(request)
    return await dashboard.hub.serve(request, actor, agent_id, session_id, after)


def _resume_point(request: web.Request) -> int:
    """`Last-Event-ID` (a reconnecting EventSource sends it) wins over `?after=`; default 0."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        value = header.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 16 or int(value) > MAX_SEQ:
            raise invalid_field("Last-Event-ID", "must be the seq of an event this stream sent")
        return int(value)
    return read_query(request, StreamQuery).after or 0


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(SESSIONS, create_session)
    router.add_get(SESSIONS, list_sessions, allow_head=False)
    router.add_get(SESSION, get_session, allow_head=False)
    router.add_get(SESSION + "/events", list_events, allow_head=False)
    router.add_get(SESSION + "/stream", stream, allow_head=False)
    router.add_post(SESSION + "/messages", post_message)
    router.add_post(SESSION + "/interrupt", interrupt)
    router.add_post(SESSION + "/archive", archive)
