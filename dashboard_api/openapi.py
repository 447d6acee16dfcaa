"""`GET /dashboard/openapi.json`: the OpenAPI 3.1 description of every dashboard route.

The operations are listed here by hand (one table), their bodies, query strings and answers are
generated from the pydantic models in `schemas.py` that validate and serialize them, so the
description follows the code. A test runs schemathesis against the live app with this document,
and another checks that every `/dashboard` route the app serves is described here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dashboard_api import builder, transcript
from dashboard_api import schemas as s

REF = "#/components/schemas/{model}"

ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON",
    401: "Missing, malformed, expired or forged access token",
    404: "No such agent, session (or other id in the path) in the caller's workspace",
    409: "The session is archived, or the tool call was already decided",
    413: "The request body is larger than 1 MiB",
    422: "A field of the body or query string is invalid; the message names it",
    429: "Over a limit, or the workspace's wallet is empty",
    502: "The agent runtime refused the request",
    503: "The agent runtime or the token signing keys are unavailable right now",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    answers: dict[int, tuple[str, type[BaseModel] | None]]
    errors: tuple[int, ...]
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    extra_parameters: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    public: bool = False  # no bearer token (the webhook delivery proves itself by its signature)
    error_descriptions: dict[int, str] = field(default_factory=dict)  # where the default misleads


AGENT = "/dashboard/agents/{agent_id}"
SESSIONS = AGENT + "/sessions"
SESSION = SESSIONS + "/{session_id}"
READ = (401, 404, 503)
BODY = (400, 401, 404, 413, 422, 503)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/dashboard/agents",
        "deployAgent",
        "Deploy an agent",
        {201: ("The agent", s.AgentOut)},
        (400, 401, 413, 422, 503),
        body=s.AgentCreate,
    ),
    Operation(
        "get",
        "/dashboard/agents",
        "listAgents",
        "List the workspace's agents, newest first",
        {200: ("A page of agents", s.AgentPage)},
        (401, 422, 503),
        query=s.ListQuery,
    ),
    Operation("get", AGENT, "getAgent", "Read an agent", {200: ("The agent", s.AgentOut)}, READ),
    Operation(
        "post",
        SESSIONS,
        "createSession",
        "Create a fresh dashboard session, optionally with a first message",
        {201: ("The session (with `message` when a first message was given)", s.SessionCreatedOut)},
        (*BODY, 429),
        body=s.SessionCreate,
        body_required=False,
    ),
    Operation(
        "get",
        SESSIONS,
        "listSessions",
        "List an agent's sessions, newest first",
        {200: ("A page of sessions", s.SessionPage)},
        (401, 404, 422, 503),
        query=s.SessionListQuery,
    ),
    Operation(
        "get", SESSION, "getSession", "Read a session", {200: ("The session", s.SessionOut)}, READ
    ),
    Operation(
        "get",
        SESSION + "/events",
        "listSessionEvents",
        "A keyset page of the session's mirrored events (oldest first unless order=desc)",
        {200: ("A page of events; next_cursor is the last seq of the page", s.EventPage)},
        (401, 404, 422, 503),
        query=s.EventQuery,
    ),
    Operation(
        "get",
        SESSION + "/stream",
        "streamSessionEvents",
        "Server-sent events: replay after Last-Event-ID (or ?after=), then live",
        {200: ("text/event-stream", None)},
        (401, 404, 422, 503),
        query=s.StreamQuery,
        extra_parameters=(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this seq (wins over ?after=)",
                "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
            },
        ),
    ),
    Operation(
        "post",
        SESSION + "/messages",
        "postMessage",
        "Send a user message (queued behind a running turn)",
        {202: ("The message is queued", s.MessageOut)},
        (*BODY, 409, 429),
        body=s.MessageCreate,
    ),
    Operation(
        "post",
        SESSION + "/interrupt",
        "interruptSession",
        "Stop the turn in flight; queued messages stay queued",
        {202: ("The session", s.SessionOut)},
        (401, 404, 502, 503),
    ),
    Operation(
        "post",
        SESSION + "/approvals/{tool_use_id}",
        "decideApproval",
        "Allow or deny a tool call waiting for approval (the first decision wins)",
        {200: ("The decision", s.ApprovalOut)},
        (*BODY, 409, 502),
        body=s.ApprovalDecide,
        error_descriptions={409: "The tool call was already decided"},
    ),
    Operation(
        "get",
        SESSION + "/usage",
        "getSessionUsage",
        "Tokens, runtime seconds and cost of each finished turn, and their total",
        {200: ("The usage", s.UsageOut)},
        READ,
    ),
    Operation(
        "post",
        AGENT + "/schedules",
        "createSchedule",
        "Run the agent on a cron schedule (in an IANA time zone): each fire is a fresh session",
        {201: ("The schedule", s.ScheduleOut)},
        BODY,
        body=s.ScheduleCreate,
    ),
    Operation(
        "get",
        AGENT + "/schedules",
        "listSchedules",
        "Every schedule of the agent, on one page",
        {200: ("The schedules", s.SchedulePage)},
        READ,
    ),
    Operation(
        "delete",
        AGENT + "/schedules/{schedule_id}",
        "deleteSchedule",
        "Delete a schedule (its past runs and sessions stay)",
        {204: ("Deleted", None)},
        READ,
    ),
    Operation(
        "post",
        AGENT + "/webhooks",
        "createWebhook",
        "A webhook endpoint bound to the agent: its delivery URL and signing secret",
        {201: ("The endpoint; the secret is shown here only", s.WebhookOut)},
        READ,
    ),
    Operation(
        "get",
        AGENT + "/trigger-runs",
        "listTriggerRuns",
        "Schedule fires and webhook deliveries, newest first, each with its session",
        {200: ("A page of runs", s.TriggerRunPage)},
        (401, 404, 422, 503),
        query=s.ListQuery,
    ),
    Operation(
        "get",
        "/dashboard/escalations",
        "listEscalations",
        "The workspace's escalation inbox, newest first",
        {200: ("A page of escalations", s.EscalationPage)},
        (401, 422, 503),
        query=s.EscalationListQuery,
    ),
    Operation(
        "post",
        "/dashboard/escalations/{escalation_id}/resolve",
        "resolveEscalation",
        "Mark an escalation resolved (resolving twice is fine)",
        {200: ("The escalation", s.EscalationOut)},
        READ,
    ),
    Operation(
        "get",
        "/dashboard/wallets",
        "getWallets",
        "The workspace's AI and data wallet balances and latest ledger entries",
        {200: ("Balances and ledger", s.WalletsOut)},
        (401, 503),
    ),
    Operation(
        "post",
        "/webhooks/{endpoint_id}",
        "deliverWebhook",
        "A webhook delivery (no bearer token): creates a session, the JSON body is its first message",
        {
            202: ("The delivery is taken", s.DeliveryOut),
            200: ("A replay: the first delivery's ids; nothing new is created", s.DeliveryOut),
        },
        (400, 401, 404, 413, 422, 429),
        body=s.WebhookPayload,
        public=True,
        extra_parameters=(
            {
                "name": "X-Signature",
                "in": "header",
                "required": True,
                "description": "`sha256=<hex HMAC-SHA256 of the raw body with the endpoint's secret>`",
                "schema": {"type": "string"},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Deliveries with the same key run once (without one: the same body "
                "within ten minutes)",
                "schema": {"type": "string", "pattern": "^[ -~]{1,200}$"},
            },
        ),
        error_descriptions={
            400: "The body is not JSON",
            401: "X-Signature does not match the body signed with the endpoint's secret",
            404: "No such webhook endpoint",
            422: "The Idempotency-Key header is invalid",
            429: "The workspace's AI wallet is empty",
        },
    ),
    Operation(
        "post",
        SESSION + "/archive",
        "archiveSession",
        "Make the session read-only (archiving twice is fine)",
        {200: ("The session", s.SessionOut)},
        READ,
    ),
)

STREAM_DESCRIPTION = (
    "`id: <seq>`, `event: <type>`, `data: <Event JSON>` per mirrored event; `event: delta` frames "
    "(no `id:`) carry best-effort text fragments `{event_id, text}` of an agent message being "
    "written; a `: keep-alive` comment every 15 s of silence."
)

ANSWER_MODELS: tuple[type[BaseModel], ...] = (
    s.AgentOut,
    s.AgentPage,
    s.SessionOut,
    s.SessionCreatedOut,
    s.SessionPage,
    s.MessageOut,
    s.EventOut,
    s.EventPage,
    s.DeltaOut,
    s.ErrorOut,
    s.ApprovalOut,
    s.UsageOut,
    s.ScheduleOut,
    s.SchedulePage,
    s.WebhookOut,
    s.DeliveryOut,
    s.TriggerRunPage,
    s.EscalationOut,
    s.EscalationPage,
    s.WalletsOut,
)
BODY_MODELS: tuple[type[BaseModel], ...] = (
    s.AgentCreate,
    s.SessionCreate,
    s.MessageCreate,
    s.ApprovalDecide,
    s.ScheduleCreate,
    s.WebhookPayload,
)


def _component_schemas() -> dict[str, Any]:
    models = [(m, "validation") for m in BODY_MODELS] + [
        (m, "serialization") for m in ANSWER_MODELS
    ]
    _refs, top = models_json_schema(models, ref_template=REF)
    return top["$defs"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: keep the non-null branch of `X | None`."""
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    properties = model.model_json_schema()["properties"]
    parameters = []
    for name, schema in properties.items():
        schema = _not_null({k: v for k, v in schema.items() if k != "title"})
        if schema.get("default") is None:
            schema.pop("default", None)
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    return parameters


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": s.ID_PATTERN},
        }
        for name in names
    ]


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ref(s.ErrorOut)}},
    }


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, model) in op.answers.items():
        if status == 204:
            responses[str(status)] = {"description": description}
            continue
        if model is None:
            content = {"text/event-stream": {"schema": {"type": "string"}}}
            description = f"{description}: {STREAM_DESCRIPTION}"
        else:
            content = {"application/json": {"schema": _ref(model)}}
        responses[str(status)] = {"description": description, "content": content}
    for status in sorted(op.errors):
        responses[str(status)] = _error(status, op.error_descriptions.get(status))
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [
            *_path_parameters(op.path),
            *(_query_parameters(op.query) if op.query else []),
            *op.extra_parameters,
        ],
        "responses": responses,
    }
    if op.public:
        spec["security"] = []
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return spec


def build_spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    paths.update(builder.openapi_paths())
    paths.update(transcript.openapi_paths())
    paths["/dashboard/openapi.json"] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Agents in Slack: dashboard API",
            "version": "1",
            "description": (
                "Every route but this document and the webhook delivery (signed with "
                "`X-Signature` instead) takes `Authorization: Bearer <Supabase access token>`; "
                '`app_metadata.workspace_id` scopes every answer. Errors are `{"error": {"code", '
                '"message"}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearerAuth": []}],
    }


def add_routes(router: web.UrlDispatcher) -> None:
    document = json.dumps(build_spec())

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(text=document, content_type="application/json")

    router.add_get("/dashboard/openapi.json", openapi, allow_head=False)
