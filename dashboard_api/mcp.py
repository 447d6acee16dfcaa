"""The builder tools as an MCP server: streamable HTTP at `/mcp`, with the dashboard's bearer auth.

Why hand-written: the official `mcp` SDK serves streamable HTTP as an ASGI (starlette) app, and
this server is aiohttp; bridging the two would mean a second HTTP stack (and event-loop glue) in
the process for five read-only tools. What the tools need from the protocol is small: JSON-RPC
2.0 over `POST /mcp` with `initialize`, `notifications/initialized`, `ping`, `tools/list` and
`tools/call`, each answered with one `application/json` body. The server is stateless (no
`Mcp-Session-Id`: every request carries its own token), so there is no server-initiated stream:
`GET` and `DELETE` answer 405. The tests drive it with the official client
(`mcp.client.streamable_http` + `ClientSession`) over loopback HTTP.

Failures follow the spec: a malformed message is a JSON-RPC error (-32700 parse, -32600 invalid
request, -32601 unknown method, -32602 unknown tool); a tool call that fails on its input or
finds nothing is a result with `isError: true` and the reason as text, so a model can correct
itself. Without a valid token the answer is the dashboard's 401 `{"error": ...}`. A request
carrying an `Origin` other than the dashboard's is refused with 403 (the spec's guard against DNS
rebinding); clients outside browsers send none. Nothing in the dashboard middlewares needs
bypassing: the error middleware gives /mcp the same JSON errors.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from dashboard_api.builder import read_json, run
from dashboard_api.context import caller
from dashboard_api.errors import ApiError
from router.builder import BUILDER_TOOLS
from router.errors import DomainError
from router.types import Actor

log = logging.getLogger(__name__)

PATH = "/mcp"
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
SERVER_INFO = {"name": "slack-agents-builder", "title": "Agent builder tools", "version": "1"}
INSTRUCTIONS = (
    "Read-only tools to inspect the deployed agents of your workspace: list their sessions, read "
    "a session's event history, search what was said, see a session's cost, and see which "
    "schedule or webhook started which session."
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(message_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message_id, "error": {"code": code, "message": message}}


def _tool_json(name: str) -> dict[str, Any]:
    tool = BUILDER_TOOLS[name]
    return {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
        "annotations": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
    }


def _tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


async def _call(request: web.Request, actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("name")
    if not isinstance(name, str) or name not in BUILDER_TOOLS:
        raise RpcError(INVALID_PARAMS, f"unknown tool: {name!r}")
    arguments = params.get("arguments")
    arguments = {} if arguments is None else arguments
    try:
        answer = await run(request, actor, name, arguments)
    except ApiError as exc:  # invalid arguments (422)
        return _tool_error(exc.message)
    except DomainError as exc:  # not found in this workspace, bad cursor or query
        return _tool_error(f"{exc.code}: {exc.message}")
    return {
        "content": [{"type": "text", "text": json.dumps(answer, ensure_ascii=False)}],
        "structuredContent": answer,
        "isError": False,
    }


def _initialize(params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    return {
        "protocolVersion": asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": SERVER_INFO,
        "instructions": INSTRUCTIONS,
    }


async def _answer(request: web.Request, actor: Actor, method: str, params: dict[str, Any]) -> Any:
    if method == "initialize":
        return _initialize(params)
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [_tool_json(name) for name in BUILDER_TOOLS]}
    if method == "tools/call":
        return await _call(request, actor, params)
    raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")


async def _handle(request: web.Request, actor: Actor, message: Any) -> dict[str, Any] | None:
    """One JSON-RPC message -> its response, or None for a notification or a client response."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
    message_id = message.get("id")
    method = message.get("method")
    if method is None:
        return None  # a response to a server request: this server sends none
    if "id" not in message:
        return None  # notifications (initialized, cancelled, ...) need no answer
    params = message.get("params") or {}
    if not isinstance(method, str) or not isinstance(params, dict):
        return _error(message_id, INVALID_REQUEST, "method must be a string, params an object")
    try:
        result = await _answer(request, actor, method, params)
    except RpcError as exc:
        return _error(message_id, exc.code, exc.message)
    return {"jsonrpc": "2.0", "id": message_id, "result": result}


def _post(allowed_origin: str | None) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != allowed_origin:
            # The spec's guard against DNS rebinding: only the dashboard's own pages may call.
            return web.json_response(
                _error(None, INVALID_REQUEST, f"origin {origin!r} is not allowed"), status=403
            )
        return await post(request)

    return handle


async def post(request: web.Request) -> web.StreamResponse:
    _dashboard, actor = await caller(request)
    version = request.headers.get("MCP-Protocol-Version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        return web.json_response(
            _error(None, INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version!r}"),
            status=400,
        )
    try:
        body = await read_json(request)
    except ApiError as exc:
        if exc.status != 400:
            raise
        return web.json_response(_error(None, PARSE_ERROR, "parse error"), status=400)
    if isinstance(body, list):  # a batch (protocol versions before 2025-06-18)
        replies = [r for r in [await _handle(request, actor, m) for m in body] if r is not None]
        return web.json_response(replies) if replies else web.Response(status=202)
    reply = await _handle(request, actor, body)
    if reply is None:
        return web.Response(status=202)
    return web.json_response(reply)


def add_routes(router: web.UrlDispatcher, *, allowed_origin: str | None = None) -> None:
    """Only POST: aiohttp answers GET and DELETE with 405 (no stream, no session to end). A
    request with an `Origin` header is taken only from `allowed_origin` (the dashboard's)."""
    router.add_post(PATH, _post(allowed_origin.rstrip("/") if allowed_origin else None))
