"""Builder tools: what an AI builder uses to inspect a deployed agent's running.

Five read-only tools, each one plain async function `fn(db, actor, arguments) -> answer` with a
JSON Schema for its input and for its answer, so the edges can serve them as they are: REST
(`POST /dashboard/builder/{name}`) and MCP (`tools/list`, `tools/call`). The edges validate the
input against `input_schema` before calling; the functions trust it. Every tool is scoped to the
actor's workspace: another workspace's agent or session is not found, exactly as a missing id.

Answers are JSON-ready dicts: times are ISO 8601 strings, money is a decimal string with six
places (as everywhere in the dashboard), runtime seconds a number.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from router import cursors
from router.errors import AgentNotFound, InvalidInput, NotFound, SessionNotFound
from router.types import Actor
from store import agents as agents_store
from store import events as events_store
from store import search as search_store
from store import sessions as sessions_store
from store import triggers as triggers_store
from store import usage as usage_store

log = logging.getLogger(__name__)

ToolFn = Callable[[Any, Actor, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    fn: ToolFn


# -- schema pieces ----------------------------------------------------------------------------

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_=-]{1,512}$"}
TIME = {"type": "string", "format": "date-time"}
MONEY = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$", "description": "US dollars"}
COUNT = {"type": "integer", "minimum": 0}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object with exactly these properties (all required unless `required` says which)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def limit_of(default: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}


AGENT_ID = {**ID, "description": "The deployed agent's id (`agt_...`)"}
SESSION_ID = {**ID, "description": "The session's id (`sess_...`)"}
STATUS = {"type": "string", "enum": ["idle", "running", "archived"]}
SOURCE = {"type": "string", "enum": ["dashboard", "slack", "schedule", "webhook"]}

SESSION = closed(
    {
        "id": ID,
        "status": STATUS,
        "source": SOURCE,
        "title": {"type": "string"},
        "queued": {**COUNT, "description": "User messages waiting behind the running turn"},
        "turns": {**COUNT, "description": "Turns started so far"},
        "events": {**COUNT, "description": "Events in the mirror (the highest seq)"},
        "created_by": nullable({"type": "string"}),
        "slack_conversation_key": nullable({"type": "string"}),
        "created_at": TIME,
        "updated_at": TIME,
        "archived_at": nullable(TIME),
    }
)

EVENT = closed(
    {
        "seq": {"type": "integer", "minimum": 1},
        "id": {"type": "string", "description": "The runtime's event id"},
        "type": {"type": "string"},
        "created_at": TIME,
        "data": {"type": "object", "description": "The runtime's event as it came"},
    }
)

USAGE_FIELDS = {
    "input_tokens": COUNT,
    "output_tokens": COUNT,
    "cache_read_input_tokens": COUNT,
    "cache_creation_input_tokens": COUNT,
    "runtime_seconds": {"type": "number", "minimum": 0},
    "cost_usd": MONEY,
}


# -- answers ----------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def money(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.000001')):f}"


def _session_json(row: Any, queued: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "source": row.source,
        "title": row.title,
        "queued": queued,
        "turns": row.turn_count,
        "events": row.last_event_seq,
        "created_by": row.created_by,
        "slack_conversation_key": row.slack_conversation_key,
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
        "archived_at": _time(row.archived_at),
    }


def _event_json(row: Any) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "id": row.runtime_event_id,
        "type": row.type,
        "created_at": _time(row.created_at),
        "data": row.data if isinstance(row.data, dict) else {"value": row.data},
    }


# -- scoping ----------------------------------------------------------------------------------


async def _agent(s: Any, actor: Actor, agent_id: str) -> Any:
    row = await agents_store.get_agent(s, agent_id, workspace_id=actor.workspace_id)
    if row is None:
        raise AgentNotFound(f"no agent {agent_id}")
    return row


async def _session(s: Any, actor: Actor, agent_id: str, session_id: str) -> Any:
    await _agent(s, actor, agent_id)
    row = await sessions_store.get_session(
        s, session_id, workspace_id=actor.workspace_id, agent_id=agent_id
    )
    if row is None:
        raise SessionNotFound(f"no session {session_id} for agent {agent_id}")
    return row


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    try:
        created_at, row_id = cursors.decode(value)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return created_at.astimezone(UTC), row_id
    except (InvalidInput, ValueError, OverflowError) as exc:
        raise InvalidInput("cursor: is not one this API gave out") from exc


# -- the tools --------------------------------------------------------------------------------


async def list_live_agent_sessions(db: Any, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    async with db() as s:
        await _agent(s, actor, args["agent_id"])
        rows, more = await sessions_store.list_sessions(
            s,
            agent_id=args["agent_id"],
            limit=args["limit"],
            status=args.get("status"),
            source=args.get("source"),
            cursor=_cursor(args.get("cursor")),
        )
        queued = await sessions_store.queued_counts(s, [r.id for r in rows])
    return {
        "sessions": [_session_json(r, queued[r.id]) for r in rows],
        "has_more": more,
        "next_cursor": cursors.encode(rows[-1].created_at, rows[-1].id) if more else None,
    }


async def read_live_agent_session(db: Any, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    async with db() as s:
        row = await _session(s, actor, args["agent_id"], args["session_id"])
        queued = await sessions_store.queued_counts(s, [row.id])
        events, more = await events_store.list_events(
            s, row.id, limit=args["limit"], after=args["after_seq"]
        )
    return {
        "session": _session_json(row, queued[row.id]),
        "events": [_event_json(e) for e in events],
        "has_more": more,
        "next_after_seq": events[-1].seq if more else None,
    }


async def search_live_agent_sessions(db: Any, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    try:
        terms = search_store.parse_query(args["query"])
    except ValueError as exc:
        raise InvalidInput(f"query: {exc}") from exc
    async with db() as s:
        await _agent(s, actor, args["agent_id"])
        hits = await search_store.search_events(
            s,
            workspace_id=actor.workspace_id,
            agent_id=args["agent_id"],
            terms=terms,
            limit=args["limit"],
        )
    return {
        "results": [
            {
                "session_id": h.session_id,
                "seq": h.seq,
                "type": h.type,
                "created_at": _time(h.created_at),
                "snippet": h.snippet,
                "score": h.score,
            }
            for h in hits
        ]
    }


def _usage_json(row: Any) -> dict[str, Any]:
    return {
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_read_input_tokens": row.cache_read_input_tokens,
        "cache_creation_input_tokens": row.cache_creation_input_tokens,
        "runtime_seconds": float(row.runtime_seconds),
        "cost_usd": money(row.cost_usd),
    }


async def get_agent_session_usage(db: Any, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    async with db() as s:
        row = await _session(s, actor, args["agent_id"], args["session_id"])
        turns = await usage_store.turns_of(s, row.id)
    total = {
        "input_tokens": sum(t.input_tokens for t in turns),
        "output_tokens": sum(t.output_tokens for t in turns),
        "cache_read_input_tokens": sum(t.cache_read_input_tokens for t in turns),
        "cache_creation_input_tokens": sum(t.cache_creation_input_tokens for t in turns),
        "runtime_seconds": float(sum((t.runtime_seconds for t in turns), Decimal(0))),
        "cost_usd": money(sum((t.cost_usd for t in turns), Decimal(0))),
    }
    return {
        "session_id": row.id,
        "turns": [{"turn": t.turn, "model": t.model, **_usage_json(t)} for t in turns],
        "total": total,
    }


async def list_agent_trigger_runs(db: Any, actor: Actor, args: dict[str, Any]) -> dict[str, Any]:
    async with db() as s:
        await _agent(s, actor, args["agent_id"])
        runs, more = await triggers_store.list_runs(
            s, args["agent_id"], limit=args["limit"], cursor=_cursor(args.get("cursor"))
        )
        schedules = {r.id: r for r in await triggers_store.list_schedules(s, args["agent_id"])}
        session_ids = list(dict.fromkeys(r.session_id for r in runs if r.session_id))
        rows = {sid: await sessions_store.get_session(s, sid) for sid in session_ids}
        queued = await sessions_store.queued_counts(s, session_ids)
    answer = []
    for run in runs:
        schedule = schedules.get(run.schedule_id) if run.schedule_id else None
        session = rows.get(run.session_id) if run.session_id else None
        answer.append(
            {
                "id": run.id,
                "kind": run.kind,
                "status": run.status,
                "error": run.error,
                "fire_time": _time(run.fire_time),
                "created_at": _time(run.created_at),
                "finished_at": _time(run.finished_at),
                "schedule": (
                    {
                        "id": schedule.id,
                        "cron": schedule.cron,
                        "timezone": schedule.timezone,
                        "enabled": schedule.enabled,
                    }
                    if schedule is not None
                    else None
                ),
                "webhook_endpoint_id": run.webhook_endpoint_id,
                "session": _session_json(session, queued[session.id]) if session else None,
            }
        )
    return {
        "runs": answer,
        "has_more": more,
        "next_cursor": cursors.encode(runs[-1].created_at, runs[-1].id) if more else None,
    }


class ToolNotFound(NotFound):
    code = "tool_not_found"


def with_defaults(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments with the input schema's defaults filled in."""
    properties = tool.input_schema.get("properties", {})
    defaults = {k: v["default"] for k, v in properties.items() if "default" in v}
    return {**defaults, **arguments}


async def call_tool(db: Any, actor: Actor, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run a builder tool on arguments already valid against its input schema."""
    tool = BUILDER_TOOLS.get(name)
    if tool is None:
        raise ToolNotFound(f"no builder tool {name!r}")
    answer = await tool.fn(db, actor, with_defaults(tool, arguments))
    log.info(
        "builder tool answered",
        extra={
            "tool": name,
            "workspace_id": actor.workspace_id,
            "agent_id": arguments.get("agent_id"),
        },
    )
    return answer


# -- the registry -----------------------------------------------------------------------------

PAGE = {"has_more": {"type": "boolean"}, "next_cursor": nullable(CURSOR)}

BUILDER_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="list_live_agent_sessions",
            description=(
                "List a deployed agent's sessions, newest first: status (`running` has a turn "
                "in flight), source (dashboard, slack, schedule, webhook), queued messages, "
                "turn and event counts. Pass `next_cursor` back as `cursor` for the next page."
            ),
            input_schema=closed(
                {
                    "agent_id": AGENT_ID,
                    "status": STATUS,
                    "source": SOURCE,
                    "limit": limit_of(20, 200),
                    "cursor": CURSOR,
                },
                required=["agent_id"],
            ),
            output_schema=closed({"sessions": {"type": "array", "items": SESSION}, **PAGE}),
            fn=list_live_agent_sessions,
        ),
        Tool(
            name="read_live_agent_session",
            description=(
                "Read a session's full event history as the runtime produced it (user and agent "
                "messages, tool uses and results, status changes, errors), oldest first, with "
                "the session itself. Pages by seq: pass `next_after_seq` back as `after_seq`."
            ),
            input_schema=closed(
                {
                    "agent_id": AGENT_ID,
                    "session_id": SESSION_ID,
                    "after_seq": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 2**53 - 1,
                        "default": 0,
                        "description": "Only events after this seq",
                    },
                    "limit": limit_of(200, 1000),
                },
                required=["agent_id", "session_id"],
            ),
            output_schema=closed(
                {
                    "session": SESSION,
                    "events": {"type": "array", "items": EVENT},
                    "has_more": {"type": "boolean"},
                    "next_after_seq": nullable({"type": "integer"}),
                }
            ),
            fn=read_live_agent_session,
        ),
        Tool(
            name="search_live_agent_sessions",
            description=(
                "Keyword search across the user and agent messages of a deployed agent's "
                "sessions. Every word must match (stemmed: `running` finds `runs`); "
                '`"quoted words"` match as a phrase. Best matches first among the agent\'s '
                "recent matches, newer first among equals, each with a snippet (matches in "
                "**bold**) and the session and seq to read it in context."
            ),
            input_schema=closed(
                {
                    "agent_id": AGENT_ID,
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 500,
                        "pattern": "^[^\\x00]*$",
                    },
                    "limit": limit_of(20, 100),
                },
                required=["agent_id", "query"],
            ),
            output_schema=closed(
                {
                    "results": {
                        "type": "array",
                        "items": closed(
                            {
                                "session_id": ID,
                                "seq": {"type": "integer", "minimum": 1},
                                "type": {"type": "string"},
                                "created_at": TIME,
                                "snippet": {"type": "string"},
                                "score": {
                                    "type": "number",
                                    "description": "Higher is better; within one search only",
                                },
                            }
                        ),
                    }
                }
            ),
            fn=search_live_agent_sessions,
        ),
        Tool(
            name="get_agent_session_usage",
            description=(
                "A session's metered cost: tokens (input, output, cache reads and writes), "
                "runtime seconds and dollars, per turn and in total."
            ),
            input_schema=closed(
                {"agent_id": AGENT_ID, "session_id": SESSION_ID},
            ),
            output_schema=closed(
                {
                    "session_id": ID,
                    "turns": {
                        "type": "array",
                        "items": closed(
                            {
                                "turn": {"type": "integer", "minimum": 1},
                                "model": {"type": "string"},
                                **USAGE_FIELDS,
                            }
                        ),
                    },
                    "total": closed(USAGE_FIELDS),
                }
            ),
            fn=get_agent_session_usage,
        ),
        Tool(
            name="list_agent_trigger_runs",
            description=(
                "The runs of a deployed agent's schedules and webhooks, newest first, each with "
                "what fired it (the schedule's cron, or the webhook endpoint), its outcome and "
                "the session it started."
            ),
            input_schema=closed(
                {"agent_id": AGENT_ID, "limit": limit_of(20, 200), "cursor": CURSOR},
                required=["agent_id"],
            ),
            output_schema=closed(
                {
                    "runs": {
                        "type": "array",
                        "items": closed(
                            {
                                "id": ID,
                                "kind": {"type": "string", "enum": ["schedule", "webhook"]},
                                "status": {"type": "string", "enum": ["started", "ok", "error"]},
                                "error": nullable({"type": "string"}),
                                "fire_time": nullable(TIME),
                                "created_at": TIME,
                                "finished_at": nullable(TIME),
                                "schedule": nullable(
                                    closed(
                                        {
                                            "id": ID,
                                            "cron": {"type": "string"},
                                            "timezone": {"type": "string"},
                                            "enabled": {"type": "boolean"},
                                        }
                                    )
                                ),
                                "webhook_endpoint_id": nullable(ID),
                                "session": nullable(SESSION),
                            }
                        ),
                    },
                    **PAGE,
                }
            ),
            fn=list_agent_trigger_runs,
        ),
    )
}
