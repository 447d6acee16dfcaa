"""Builder tools over REST: `GET /dashboard/builder/tools` lists them with their JSON Schemas,
`POST /dashboard/builder/{tool_name}` runs one (the JSON body is the tool's input, the answer its
output). Same bearer auth and error shape as the rest of the dashboard.

The input is checked against the tool's JSON Schema here (the MCP endpoint uses the same check),
so a bad field is a 422 naming it and the core only ever sees valid arguments.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.validators import extend

from dashboard_api.context import DASHBOARD, caller
from dashboard_api.errors import ApiError, invalid_field
from dashboard_api.schemas import MAX_BODY_BYTES
from router.builder import BUILDER_TOOLS, Tool, call_tool
from router.types import Actor

PREFIX = "/dashboard/builder/"

# JSON Schema calls 1.0 an integer; a LIMIT of 1.0 is not one for the database.
_STRICT_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
StrictValidator = extend(Draft202012Validator, type_checker=_STRICT_TYPES)
VALIDATORS = {name: StrictValidator(tool.input_schema) for name, tool in BUILDER_TOOLS.items()}


def _field(error: ValidationError) -> tuple[str, str]:
    """(the field's name, what is wrong with it), as the other dashboard routes say it."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    name = path.lstrip(".")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return (f"{name}.{missing}" if name else missing), "is required"
    if error.validator == "additionalProperties":
        extra = error.message.split("'")[1] if "'" in error.message else "?"
        return (f"{name}.{extra}" if name else extra), "is not a field of this request"
    return name or "body", error.message


def check_input(tool_name: str, arguments: Any) -> dict[str, Any]:
    """The arguments, or ApiError(422) naming the first bad field."""
    error = best_match(VALIDATORS[tool_name].iter_errors(arguments))
    if error is not None:
        raise invalid_field(*_field(error))
    return arguments


async def read_json(request: web.Request) -> Any:
    """The JSON body (an empty body is `{}`): 413 over 1 MiB, 400 when it is not JSON."""
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "the request body is larger than 1 MiB")
    if not raw.strip():
        return {}
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise ApiError(400, "bad_request", "the request body is not valid JSON") from exc


async def run(request: web.Request, actor: Actor, tool_name: str, arguments: Any) -> dict[str, Any]:
    """Check the input, then run the tool for the actor's workspace."""
    db = request.app[DASHBOARD].core.db
    return await call_tool(db, actor, tool_name, check_input(tool_name, arguments))


def tool_json(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.input_schema,
        "output_schema": tool.output_schema,
    }


async def list_tools(request: web.Request) -> web.Response:
    await caller(request)
    return web.json_response({"tools": [tool_json(t) for t in BUILDER_TOOLS.values()]})


def _tool_handler(tool_name: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        _dashboard, actor = await caller(request)
        arguments = await read_json(request)
        return web.json_response(await run(request, actor, tool_name, arguments))

    return handle


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(PREFIX + "tools", list_tools, allow_head=False)
    for name in BUILDER_TOOLS:
        router.add_post(PREFIX + name, _tool_handler(name))


# -- OpenAPI ----------------------------------------------------------------------------------

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
ERRORS = {
    400: "Malformed request: the body is not JSON",
    401: "Missing, malformed, expired or forged access token",
    404: "No such agent or session in the caller's workspace",
    413: "The request body is larger than 1 MiB",
    422: "A field of the body is invalid; the message names it",
    503: "The token signing keys are unavailable right now",
}


def _answers(ok: str, schema: dict[str, Any], errors: tuple[int, ...]) -> dict[str, Any]:
    answers = {"200": {"description": ok, "content": {"application/json": {"schema": schema}}}}
    for status in errors:
        answers[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": ERROR_REF}},
        }
    return answers


def openapi_paths() -> dict[str, Any]:
    """The builder routes as OpenAPI 3.1 path items (the schemas are the tools' own)."""
    listing = {
        "type": "object",
        "properties": {
            "tools": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "input_schema": {"type": "object"},
                        "output_schema": {"type": "object"},
                    },
                    "required": ["name", "description", "input_schema", "output_schema"],
                },
            }
        },
        "required": ["tools"],
    }
    paths: dict[str, Any] = {
        PREFIX + "tools": {
            "get": {
                "operationId": "listBuilderTools",
                "summary": "The builder tools, with their input and output JSON Schemas",
                "responses": _answers("The tools", listing, (401, 503)),
            }
        }
    }
    for tool in BUILDER_TOOLS.values():
        paths[PREFIX + tool.name] = {
            "post": {
                "operationId": "builder_" + tool.name,
                "summary": tool.description,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": tool.input_schema}},
                },
                "responses": _answers(
                    "The tool's answer", tool.output_schema, (400, 401, 404, 413, 422, 503)
                ),
            }
        }
    return paths
