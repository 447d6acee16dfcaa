"""A local fake of Anthropic's managed-agents HTTP API, for the real `anthropic` SDK.

It serves a `runtime.scripted.ScriptedWorld` (the scripted agent; its directives are documented
there) on 127.0.0.1 in the API's wire shapes: agents, environments, sessions, user events, the
paged event history and the SSE event stream (live only, with `event_start` / `event_delta`
previews when asked). Requests need the configured key (`x-api-key` or `Authorization: Bearer`).

    async with FakeAnthropic() as fake:
        client = AsyncAnthropic(api_key=fake.api_key, base_url=fake.base_url)

Knobs for tests: `fail_next(...)` answers the next matching requests with an error status,
`cut_streams()` drops every open stream, `response_delay` slows every answer, `delta_delay` paces
the scripted agent's streamed text; `requests` records what was received.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from runtime.events import parse_time
from runtime.scripted import ScriptedError, ScriptedWorld

BETA = "managed-agents-2026-04-01"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    headers: dict[str, str]


@dataclass(slots=True)
class _Fault:
    path_substring: str
    status: int
    times: int
    method: str | None
    message: str | None


@dataclass(eq=False, slots=True)
class _OpenStream:
    request: web.Request
    cut: asyncio.Event = field(default_factory=asyncio.Event)


class FakeAnthropic:
    """The fake API server. `start()` returns its base URL; `close()` stops it."""

    def __init__(
        self,
        api_key: str = "sk-ant-test-key",
        *,
        delta_delay: float = 0.0,
        response_delay: float = 0.0,
        ping_interval: float = 15.0,
        world: ScriptedWorld | None = None,
    ) -> None:
        self.api_key = api_key
        self.response_delay = response_delay
        self.ping_interval = ping_interval
        self.world = world or ScriptedWorld(delta_delay=delta_delay)
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._streams: set[_OpenStream] = set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(
            [
                web.post("/v1/agents", self._create_agent),
                web.get("/v1/agents/{agent_id}", self._get_agent),
                web.post("/v1/agents/{agent_id}", self._update_agent),
                web.post("/v1/environments", self._create_environment),
                web.get("/v1/environments/{environment_id}", self._get_environment),
                web.post("/v1/sessions", self._create_session),
                web.get("/v1/sessions/{session_id}", self._get_session),
                web.post("/v1/sessions/{session_id}/archive", self._archive_session),
                web.post("/v1/sessions/{session_id}/events", self._send_events),
                web.get("/v1/sessions/{session_id}/events", self._list_events),
                web.get("/v1/sessions/{session_id}/events/stream", self._stream_events),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        self.cut_streams()
        await self.world.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- knobs and records -------------------------------------------------------------------

    def fail_next(
        self,
        path_substring: str,
        status: int,
        times: int = 1,
        *,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` requests whose path contains `path_substring` (and whose
        method is `method`, when given) with `status` in Anthropic's error shape. Retryable
        statuses carry `retry-after-ms: 1` so the SDK retries at once."""
        self._faults.append(_Fault(path_substring, status, times, method, message))

    def cut_streams(self) -> None:
        """Drop every open event-stream connection now (mid-frame for the client: no clean end)."""
        for stream in list(self._streams):
            stream.cut.set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def requests_to(self, method: str, path_substring: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_substring in r.path]

    def sent_events(
        self, session_id: str | None = None, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        """The user events received by `POST .../events` (including refused or failed sends)."""
        sent: list[dict[str, Any]] = []
        for r in self.requests:
            if r.method != "POST" or not r.path.endswith("/events"):
                continue
            if session_id and f"/sessions/{session_id}/" not in r.path:
                continue
            events = r.json.get("events") if isinstance(r.json, dict) else None
            for event in events or []:
                if event_type is None or event.get("type") == event_type:
                    sent.append(event)
        return sent

    def history(self, session_id: str) -> list[dict[str, Any]]:
        return self.world.history(session_id)

    async def wait_idle(self, session_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
        return await self.world.wait_idle(session_id, timeout)

    # -- the HTTP edge -----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query={key: request.query.getall(key) for key in request.query},
                json=body,
                headers=dict(request.headers),
            )
        )
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        fault = self._take_fault(request)
        if fault is not None:
            return _error(fault.status, fault.message or f"injected {fault.status}")
        if not self._authorized(request):
            return _error(401, "invalid x-api-key")
        if BETA not in request.headers.get("anthropic-beta", ""):
            return _error(400, f"this endpoint needs the anthropic-beta header {BETA}")
        if request.method == "POST" and not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            return await handler(request)
        except ScriptedError as exc:
            return _error(exc.status, exc.message, exc.error_type)

    def _take_fault(self, request: web.Request) -> _Fault | None:
        for fault in self._faults:
            if fault.path_substring not in request.path:
                continue
            if fault.method and fault.method.upper() != request.method:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _authorized(self, request: web.Request) -> bool:
        if request.headers.get("x-api-key") == self.api_key:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _create_agent(self, request: web.Request) -> web.Response:
        return _json(self.world.create_agent(await request.json()))

    async def _get_agent(self, request: web.Request) -> web.Response:
        version = request.query.get("version")
        agent = self.world.get_agent(
            request.match_info["agent_id"], int(version) if version else None
        )
        return _json(agent)

    async def _update_agent(self, request: web.Request) -> web.Response:
        agent = self.world.update_agent(request.match_info["agent_id"], await request.json())
        return _json(agent)

    async def _create_environment(self, request: web.Request) -> web.Response:
        return _json(self.world.create_environment(await request.json()))

    async def _get_environment(self, request: web.Request) -> web.Response:
        return _json(self.world.get_environment(request.match_info["environment_id"]))

    async def _create_session(self, request: web.Request) -> web.Response:
        return _json(self.world.create_session(await request.json()))

    async def _get_session(self, request: web.Request) -> web.Response:
        return _json(self.world.session_json(request.match_info["session_id"]))

    async def _archive_session(self, request: web.Request) -> web.Response:
        return _json(self.world.archive_session(request.match_info["session_id"]))

    async def _send_events(self, request: web.Request) -> web.Response:
        body = await request.json()
        events = body.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ScriptedError(400, "invalid_request_error", "events must be a list of objects")
        taken = self.world.send_events(request.match_info["session_id"], events)
        return _json({"data": taken})

    async def _list_events(self, request: web.Request) -> web.Response:
        history = self.world.history(request.match_info["session_id"])
        query = request.query
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise ScriptedError(400, "invalid_request_error", "order must be asc or desc")
        limit = _int(query.get("limit"), 20)
        if not 1 <= limit <= 1000:
            raise ScriptedError(400, "invalid_request_error", "limit must be between 1 and 1000")
        types = set(query.getall("types[]", []) + query.getall("types", []))
        bounds = {op: _time_param(query, f"created_at[{op}]") for op in ("gt", "gte", "lt", "lte")}
        # (position in the history, event): the page cursor is a position, so pages stay stable
        # while the history grows.
        matches = [
            (position, event)
            for position, event in enumerate(history)
            if (not types or event["type"] in types) and _within(event, bounds)
        ]
        if order == "desc":
            matches.reverse()
        cursor = query.get("page")
        if cursor:
            position = _cursor_position(cursor)
            if order == "asc":
                matches = [m for m in matches if m[0] > position]
            else:
                matches = [m for m in matches if m[0] < position]
        page = matches[:limit]
        next_page = f"page_{page[-1][0]}" if len(matches) > limit else None
        return _json({"data": [event for _, event in page], "next_page": next_page})

    async def _stream_events(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session_id"]
        wanted = request.query.getall("event_deltas[]", []) + request.query.getall(
            "event_deltas", []
        )
        subscription = self.world.subscribe(session_id, deltas="agent.message" in wanted)
        stream = _OpenStream(request)
        self._streams.add(stream)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            # The SDK returns from `events.stream()` once headers and a first frame arrive.
            await response.write(_frame("ping", {"type": "ping"}))
            cut = asyncio.ensure_future(stream.cut.wait())
            try:
                while True:
                    getter = asyncio.ensure_future(subscription.queue.get())
                    done, _ = await asyncio.wait(
                        {getter, cut},
                        timeout=self.ping_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if cut in done or (getter in done and getter.result() is None):
                        getter.cancel()
                        _drop(request)
                        return response
                    if getter not in done:
                        getter.cancel()
                        await response.write(_frame("ping", {"type": "ping"}))
                        continue
                    frame = getter.result()
                    assert frame is not None
                    await response.write(_frame(str(frame["type"]), frame))
            finally:
                cut.cancel()
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            self._streams.discard(stream)
            self.world.unsubscribe(subscription)


def _drop(request: web.Request) -> None:
    """Close the connection under a streaming answer, without the chunked terminator."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"request-id": _request_id()})


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    error_type = error_type or _ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    headers = {"request-id": _request_id()}
    if status in (408, 409, 429) or status >= 500:
        headers["retry-after"] = "0"
        headers["retry-after-ms"] = "1"
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": headers["request-id"],
    }
    return web.json_response(body, status=status, headers=headers)


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ScriptedError(400, "invalid_request_error", f"not an integer: {value}") from exc


def _time_param(query: Any, name: str) -> datetime | None:
    value = query.get(name)
    if value is None:
        return None
    moment = parse_time(value)
    if moment is None:
        raise ScriptedError(400, "invalid_request_error", f"{name} is not an RFC 3339 time")
    return moment


def _within(event: dict[str, Any], bounds: dict[str, datetime | None]) -> bool:
    moment = parse_time(event.get("processed_at"))
    if moment is None:
        return True
    gt, gte, lt, lte = bounds["gt"], bounds["gte"], bounds["lt"], bounds["lte"]
    return not (
        (gt and moment <= gt)
        or (gte and moment < gte)
        or (lt and moment >= lt)
        or (lte and moment > lte)
    )


def _cursor_position(cursor: str) -> int:
    try:
        return int(cursor.removeprefix("page_"))
    except ValueError as exc:
        raise ScriptedError(400, "invalid_request_error", "unknown page cursor") from exc
