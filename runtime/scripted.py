"""A scripted stand-in for the managed-agents runtime, for tests and the offline demo.

`ScriptedWorld` keeps agents, environments and sessions in memory, in the runtime's wire shapes
(plain JSON dicts): each session has an ordered history (ids `sevt_<n>`, increasing `processed_at`)
fanned out to live subscribers, and runs its turns as asyncio tasks. `tests/fakes/anthropic_api.py`
serves it over HTTP; `ScriptedRuntime` offers it in process as an `AgentRuntime` (`app.py demo`).

A turn answers "You said: <text>", streamed in a few fragments between `span.model_request_start`
and `span.model_request_end` (with `model_usage`), from `session.status_running` to
`session.status_idle` (`end_turn`). Directives in the user's text change that:

    [slow:S]           S seconds between streamed fragments (and before a tool result)
    [tool:NAME]        call toolset tool NAME (bash, write, ...): agent.tool_use, then, if the agent
                       has it `always_ask`, idle `requires_action` until user.tool_confirmation
                       (allow: agent.tool_result and the reply; deny: a reply saying so)
    [custom:NAME]      agent.custom_tool_use, idle `requires_action` until user.custom_tool_result
    [fail:overloaded]  session.error (model_overloaded_error), idle `retries_exhausted`
                       (also [fail:rate_limited], [fail:request_failed])
    [long:N]           a reply of N characters
    [cut]              live streams are dropped once after the first fragment; the turn goes on

A `user.interrupt` stops the turn in progress: an open model request gets its
`span.model_request_end`, then the session idles with `end_turn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from router.errors import RuntimeFailure
from router.ports import AgentSpec, RuntimeAgentRef, RuntimeEvent, TextDelta
from runtime.client import TOOLSET_TYPE, agent_tools
from runtime.events import from_wire, parse_time

logger = logging.getLogger(__name__)

_DIRECTIVE = re.compile(r"\[(slow|tool|custom|fail|long|cut)(?::([^\]]*))?\]")
_FILLER = "The quick brown fox jumps over the lazy dog. "
USER_EVENT_TYPES = (
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
)


class ScriptedError(Exception):
    """A request the runtime would refuse; `status` and `type` as in Anthropic's error JSON."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(slots=True)
class Script:
    """What a user message asks of the scripted agent."""

    text: str
    slow: float = 0.0
    tools: list[str] = field(default_factory=list)
    customs: list[str] = field(default_factory=list)
    fail: str | None = None
    long: int | None = None
    cut: bool = False


def parse_script(text: str) -> Script:
    script = Script(text=" ".join(_DIRECTIVE.sub(" ", text).split()))
    for name, arg in _DIRECTIVE.findall(text):
        if name == "slow":
            script.slow = _number(arg, 0.2)
        elif name == "tool" and arg:
            script.tools.append(arg.strip())
        elif name == "custom" and arg:
            script.customs.append(arg.strip())
        elif name == "fail":
            script.fail = arg.strip() or "overloaded"
        elif name == "long":
            script.long = int(_number(arg, 2000))
        elif name == "cut":
            script.cut = True
    return script


def _number(value: str, default: float) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


@dataclass(eq=False, slots=True)
class Subscription:
    """A live reader of one session: frames (events, and previews when `deltas`) in order;
    `None` means the connection is dropped."""

    session_id: str
    deltas: bool
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


@dataclass(eq=False, slots=True)
class _Session:
    id: str
    agent: dict[str, Any]
    environment_id: str
    title: str | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    archived_at: str | None = None
    status: str = "idle"
    history: list[dict[str, Any]] = field(default_factory=list)
    subscribers: set[Subscription] = field(default_factory=set)
    inbox: deque[str] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    open_span: str | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    model_requests: int = 0
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
    )


class ScriptedWorld:
    """The runtime's state and scripted agent. `delta_delay` paces streamed fragments (seconds)."""

    def __init__(self, *, delta_delay: float = 0.0) -> None:
        self.delta_delay = delta_delay
        self.agents: dict[str, list[dict[str, Any]]] = {}
        self.environments: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, _Session] = {}
        self._event_numbers = itertools.count(1)
        self._last_time = datetime.now(UTC)

    # -- agents and environments -------------------------------------------------------------

    def create_agent(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("name") or not body.get("model"):
            raise ScriptedError(400, "invalid_request_error", "name and model are required")
        now = self._stamp()
        agent = {
            "id": f"agent_{uuid.uuid4().hex[:24]}",
            "type": "agent",
            "name": body["name"],
            "description": body.get("description"),
            "model": _model(body["model"]),
            "system": body.get("system"),
            "tools": [_tool(tool) for tool in body.get("tools") or []],
            "mcp_servers": list(body.get("mcp_servers") or []),
            "skills": list(body.get("skills") or []),
            "metadata": dict(body.get("metadata") or {}),
            "execution_identity": {"type": "service_account"},
            "multiagent": None,
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
            "version": 1,
        }
        self.agents[agent["id"]] = [agent]
        return agent

    def update_agent(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self.get_agent(agent_id)
        if body.get("version") is not None and body["version"] != current["version"]:
            raise ScriptedError(409, "conflict_error", "agent version does not match")
        agent = dict(current)
        for key in ("name", "description", "system", "mcp_servers", "skills"):
            if key in body:
                agent[key] = body[key]
        if "model" in body:
            agent["model"] = _model(body["model"])
        if "tools" in body:
            agent["tools"] = [_tool(tool) for tool in body["tools"] or []]
        if "metadata" in body:
            metadata = dict(agent["metadata"])
            for key, value in (body["metadata"] or {}).items():
                if value is None:
                    metadata.pop(key, None)
                else:
                    metadata[key] = value
            agent["metadata"] = metadata
        agent["version"] = current["version"] + 1
        agent["updated_at"] = self._stamp()
        self.agents[agent_id].append(agent)
        return agent

    def get_agent(self, agent_id: str, version: int | None = None) -> dict[str, Any]:
        versions = self.agents.get(agent_id)
        if not versions:
            raise ScriptedError(404, "not_found_error", f"agent {agent_id} not found")
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise ScriptedError(
                404, "not_found_error", f"agent {agent_id} has no version {version}"
            )
        return versions[version - 1]

    def create_environment(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("name"):
            raise ScriptedError(400, "invalid_request_error", "name is required")
        config = dict(body.get("config") or {"type": "cloud"})
        config.setdefault("networking", {"type": "unrestricted"})
        if not config.get("packages"):
            config["packages"] = {
                "type": "packages",
                **{manager: [] for manager in ("apt", "cargo", "gem", "go", "npm", "pip")},
            }
        now = self._stamp()
        environment = {
            "id": f"env_{uuid.uuid4().hex[:24]}",
            "type": "environment",
            "name": body["name"],
            "description": body.get("description"),
            "config": config,
            "metadata": dict(body.get("metadata") or {}),
            "scope": body.get("scope") or "organization",
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        self.environments[environment["id"]] = environment
        return environment

    def get_environment(self, environment_id: str) -> dict[str, Any]:
        environment = self.environments.get(environment_id)
        if environment is None:
            raise ScriptedError(404, "not_found_error", f"environment {environment_id} not found")
        return environment

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = body.get("agent")
        if isinstance(ref, str):
            agent = self.get_agent(ref)
        elif isinstance(ref, dict) and isinstance(ref.get("id"), str):
            agent = self.get_agent(ref["id"], ref.get("version"))
        else:
            raise ScriptedError(400, "invalid_request_error", "agent is required")
        self.get_environment(str(body.get("environment_id")))
        metadata = dict(body.get("metadata") or {})
        if len(metadata) > 16:
            raise ScriptedError(400, "invalid_request_error", "metadata has more than 16 keys")
        now = self._stamp()
        snapshot = {
            key: value
            for key, value in agent.items()
            if key not in ("created_at", "updated_at", "archived_at", "metadata")
        }
        session = _Session(
            id=f"sesn_{uuid.uuid4().hex[:24]}",
            agent=snapshot,
            environment_id=body["environment_id"],
            title=body.get("title"),
            metadata=metadata,
            created_at=now,
            updated_at=now,
        )
        session.idle.set()
        self.sessions[session.id] = session
        return self.session_json(session.id)

    def session_json(self, session_id: str) -> dict[str, Any]:
        s = self._session(session_id)
        created = parse_time(s.created_at) or datetime.now(UTC)
        return {
            "id": s.id,
            "type": "session",
            "agent": s.agent,
            "environment_id": s.environment_id,
            "title": s.title,
            "metadata": s.metadata,
            "status": s.status,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "archived_at": s.archived_at,
            "budget": None,
            "outcome_evaluations": [],
            "resources": [],
            "vault_ids": [],
            "stats": {"duration_seconds": (datetime.now(UTC) - created).total_seconds()},
            "usage": dict(s.usage),
        }

    def archive_session(self, session_id: str) -> dict[str, Any]:
        s = self._session(session_id)
        if s.archived_at is None:
            self._interrupt(s)
            s.archived_at = s.updated_at = self._stamp()
        return self.session_json(session_id)

    def history(self, session_id: str) -> list[dict[str, Any]]:
        return list(self._session(session_id).history)

    def emit(self, session_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Append a runtime event as given (any `type`, even one no SDK knows) and fan it out."""
        return self._emit(self._session(session_id), event)

    def subscribe(self, session_id: str, *, deltas: bool) -> Subscription:
        s = self._session(session_id)
        subscription = Subscription(session_id=session_id, deltas=deltas)
        s.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        s = self.sessions.get(subscription.session_id)
        if s is not None:
            s.subscribers.discard(subscription)

    def cut_streams(self, session_id: str | None = None) -> None:
        """Drop every live stream (of one session, or all)."""
        sessions = [self._session(session_id)] if session_id else list(self.sessions.values())
        for s in sessions:
            for subscription in s.subscribers:
                subscription.queue.put_nowait(None)
            s.subscribers.clear()

    def send_events(self, session_id: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the user's events: each enters the history (with its id and `processed_at`) and
        starts, resumes or stops the scripted turn. Checked as a whole before any is taken."""
        s = self._session(session_id)
        if s.archived_at is not None:
            raise ScriptedError(400, "invalid_request_error", "session is archived")
        if not events:
            raise ScriptedError(400, "invalid_request_error", "events must not be empty")
        for event in events:
            self._check_user_event(s, event)
        return [self._take(s, event) for event in events]

    async def wait_idle(self, session_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """Until the session is idle (its turn ended or waits for the user); returns the last
        `session.status_idle` event (None before the first turn)."""
        s = self._session(session_id)
        async with asyncio.timeout(timeout):
            await s.idle.wait()
        return next((e for e in reversed(s.history) if e["type"] == "session.status_idle"), None)

    async def close(self) -> None:
        tasks = [s.worker for s in self.sessions.values() if s.worker and not s.worker.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.cut_streams()

    # -- user events -------------------------------------------------------------------------

    def _check_user_event(self, s: _Session, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind not in USER_EVENT_TYPES:
            raise ScriptedError(400, "invalid_request_error", f"unsupported event type {kind!r}")
        if kind == "user.message" and not isinstance(event.get("content"), list):
            raise ScriptedError(400, "invalid_request_error", "user.message needs content")
        if kind == "user.tool_confirmation":
            if event.get("result") not in ("allow", "deny"):
                raise ScriptedError(400, "invalid_request_error", "result must be allow or deny")
            self._check_waiting(s, event.get("tool_use_id"))
        if kind == "user.custom_tool_result":
            self._check_waiting(s, event.get("custom_tool_use_id"))

    def _check_waiting(self, s: _Session, event_id: Any) -> None:
        if not isinstance(event_id, str) or event_id not in s.waiting:
            raise ScriptedError(
                400, "invalid_request_error", f"no pending action with event id {event_id!r}"
            )

    def _take(self, s: _Session, event: dict[str, Any]) -> dict[str, Any]:
        taken = self._emit(s, {k: v for k, v in event.items() if k not in ("id", "processed_at")})
        kind = event["type"]
        if kind == "user.message":
            s.inbox.append(_text_of(event.get("content")))
            if s.worker is None or s.worker.done():
                if s.status != "running":
                    self._emit(s, {"type": "session.status_running"})
                s.worker = asyncio.get_running_loop().create_task(self._work(s))
        elif kind == "user.interrupt":
            self._interrupt(s)
        else:
            waited = event.get("tool_use_id") or event.get("custom_tool_use_id")
            future = s.waiting.pop(str(waited), None)
            if future is not None and not future.done():
                future.set_result(taken)
            if not s.waiting:
                self._emit(s, {"type": "session.status_running"})
        return taken

    def _interrupt(self, s: _Session) -> None:
        busy = s.worker is not None and not s.worker.done()
        s.inbox.clear()
        for future in s.waiting.values():
            future.cancel()
        s.waiting.clear()
        if s.worker is not None:
            s.worker.cancel()
            s.worker = None
        if s.open_span is not None:
            self._end_span(s, s.open_span, output_tokens=1)
        if busy or s.status != "idle":
            self._emit(s, {"type": "session.status_idle", "stop_reason": {"type": "end_turn"}})

    # -- the scripted agent ------------------------------------------------------------------

    async def _work(self, s: _Session) -> None:
        try:
            while s.inbox:
                await self._turn(s, parse_script(s.inbox.popleft()))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("scripted turn failed", extra={"session_id": s.id})
            self._emit(s, {"type": "session.status_idle", "stop_reason": {"type": "end_turn"}})

    async def _turn(self, s: _Session, script: Script) -> None:
        if s.status != "running":
            self._emit(s, {"type": "session.status_running"})
        delay = script.slow or self.delta_delay
        if script.fail:
            self._fail(s, script.fail)
            return
        notes: list[str] = []
        for name in script.tools:
            notes.append(await self._use_tool(s, name, script, delay))
        for name in script.customs:
            notes.append(await self._use_custom_tool(s, name, script))
        if script.long is not None:
            reply = (_FILLER * (script.long // len(_FILLER) + 1))[: script.long]
        else:
            reply = f"You said: {script.text}" if script.text else "You said nothing."
            reply = " ".join([*notes, reply])
        start = self._start_span(s)
        await self._say(s, reply, delay=delay, cut=script.cut)
        self._end_span(s, start, output_tokens=max(1, len(reply) // 4))
        self._emit(s, {"type": "session.status_idle", "stop_reason": {"type": "end_turn"}})

    def _fail(self, s: _Session, kind: str) -> None:
        start = self._start_span(s)
        error_type = {
            "overloaded": "model_overloaded_error",
            "rate_limited": "model_rate_limited_error",
        }.get(kind, "model_request_failed_error")
        self._emit(
            s,
            {
                "type": "session.error",
                "error": {
                    "type": error_type,
                    "message": f"The model request failed ({kind}) after automatic retries.",
                    "retry_status": {"type": "exhausted"},
                },
            },
        )
        self._end_span(s, start, output_tokens=0, is_error=True)
        self._emit(s, {"type": "session.status_idle", "stop_reason": {"type": "retries_exhausted"}})

    async def _use_tool(self, s: _Session, name: str, script: Script, delay: float) -> str:
        policy = _permission_policy(s.agent, name)
        start = self._start_span(s)
        tool_input = (
            {"command": f"echo {script.text!r}"} if name == "bash" else {"text": script.text}
        )
        use = self._emit(
            s,
            {
                "type": "agent.tool_use",
                "name": name,
                "input": tool_input,
                "evaluated_permission": "ask" if policy == "always_ask" else "allow",
                "evaluation": {"type": policy},
            },
        )
        self._end_span(s, start, output_tokens=24)
        if policy == "always_ask":
            answer = await self._wait_for_user(s, use["id"])
            if answer.get("result") == "deny":
                reason = answer.get("deny_message")
                return f"The {name} call was denied{f': {reason}' if reason else ''}."
        await asyncio.sleep(delay)
        self._emit(
            s,
            {
                "type": "agent.tool_result",
                "tool_use_id": use["id"],
                "content": [{"type": "text", "text": f"{name} ran: {script.text}"}],
                "is_error": False,
            },
        )
        return f"I ran {name}."

    async def _use_custom_tool(self, s: _Session, name: str, script: Script) -> str:
        start = self._start_span(s)
        use = self._emit(
            s, {"type": "agent.custom_tool_use", "name": name, "input": {"reason": script.text}}
        )
        self._end_span(s, start, output_tokens=24)
        answer = await self._wait_for_user(s, use["id"])
        result = _text_of(answer.get("content")) or "(no content)"
        return f"{name} answered: {result}."

    async def _wait_for_user(self, s: _Session, event_id: str) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        s.waiting[event_id] = future
        self._emit(
            s,
            {
                "type": "session.status_idle",
                "stop_reason": {"type": "requires_action", "event_ids": [event_id]},
            },
        )
        return await future

    async def _say(self, s: _Session, text: str, *, delay: float, cut: bool) -> None:
        message_id = self._new_id()
        self._preview(
            s, {"type": "event_start", "event": {"type": "agent.message", "id": message_id}}
        )
        size = min(400, max(8, len(text) // 4))
        for number, offset in enumerate(range(0, len(text), size)):
            await asyncio.sleep(delay)
            fragment = text[offset : offset + size]
            self._preview(
                s,
                {
                    "type": "event_delta",
                    "event_id": message_id,
                    "delta": {
                        "type": "content_delta",
                        "index": 0,
                        "content": {"type": "text", "text": fragment},
                    },
                },
            )
            if cut and number == 0:
                self.cut_streams(s.id)
        await asyncio.sleep(delay)
        self._emit(
            s,
            {
                "id": message_id,
                "type": "agent.message",
                "content": [{"type": "text", "text": text}],
            },
        )

    def _start_span(self, s: _Session) -> str:
        start = self._emit(s, {"type": "span.model_request_start"})
        s.open_span = start["id"]
        return start["id"]

    def _end_span(
        self, s: _Session, start_id: str, *, output_tokens: int, is_error: bool = False
    ) -> None:
        s.model_requests += 1
        cached = 0 if s.model_requests == 1 else 1200 + 40 * (s.model_requests - 2)
        usage = {
            "input_tokens": 30 + 7 * s.model_requests,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 1200 if s.model_requests == 1 else 40,
        }
        for key, value in usage.items():
            s.usage[key] += value
        s.open_span = None
        self._emit(
            s,
            {
                "type": "span.model_request_end",
                "model_request_start_id": start_id,
                "is_error": is_error,
                "model_usage": usage,
            },
        )

    # -- history and fan-out -----------------------------------------------------------------

    def _emit(self, s: _Session, event: dict[str, Any]) -> dict[str, Any]:
        stored = {"id": event.get("id") or self._new_id()}
        stored.update((key, value) for key, value in event.items() if key != "id")
        stored["processed_at"] = self._stamp()
        s.history.append(stored)
        s.updated_at = stored["processed_at"]
        if stored["type"] == "session.status_running":
            s.status = "running"
            s.idle.clear()
        elif stored["type"] == "session.status_idle":
            s.status = "idle"
            s.idle.set()
        for subscription in s.subscribers:
            subscription.queue.put_nowait(stored)
        return stored

    def _preview(self, s: _Session, frame: dict[str, Any]) -> None:
        for subscription in s.subscribers:
            if subscription.deltas:
                subscription.queue.put_nowait(frame)

    def _new_id(self) -> str:
        return f"sevt_{next(self._event_numbers)}"

    def _stamp(self) -> str:
        now = datetime.now(UTC)
        if now <= self._last_time:
            now = self._last_time + timedelta(microseconds=1)
        self._last_time = now
        return now.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _session(self, session_id: str | None) -> _Session:
        s = self.sessions.get(session_id or "")
        if s is None:
            raise ScriptedError(404, "not_found_error", f"session {session_id} not found")
        return s


def _model(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"speed": "standard", **value}
    return {"id": str(value), "speed": "standard"}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != TOOLSET_TYPE:
        return dict(tool)
    default = {"enabled": True, "permission_policy": {"type": "always_allow"}}
    default.update({k: v for k, v in (tool.get("default_config") or {}).items() if v is not None})
    configs = []
    for config in tool.get("configs") or []:
        resolved = {"type": config["name"], **default, **config}
        configs.append({k: v for k, v in resolved.items() if v is not None})
    return {"type": TOOLSET_TYPE, "default_config": default, "configs": configs}


def _permission_policy(agent: dict[str, Any], name: str) -> str:
    for tool in agent.get("tools") or []:
        if tool.get("type") != TOOLSET_TYPE:
            continue
        for config in tool.get("configs") or []:
            if config.get("name") == name:
                return str(config["permission_policy"]["type"])
        return str(tool["default_config"]["permission_policy"]["type"])
    return "always_allow"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [block.get("text", "") for block in content if isinstance(block, dict)]
    return " ".join(part for part in parts if isinstance(part, str) and part)


class ScriptedRuntime:
    """`AgentRuntime` in process over a `ScriptedWorld`: the offline demo's runtime, no HTTP."""

    def __init__(self, world: ScriptedWorld | None = None) -> None:
        self.world = world or ScriptedWorld(delta_delay=0.05)

    async def close(self) -> None:
        await self.world.close()

    async def deploy_agent(
        self, spec: AgentSpec, *, existing: RuntimeAgentRef | None = None
    ) -> RuntimeAgentRef:
        body = {
            "name": spec.name,
            "model": spec.model,
            "system": spec.system,
            "tools": agent_tools(spec),
            "metadata": dict(spec.metadata),
        }
        with _as_failure():
            environment_id = existing.environment_id if existing else ""
            if not environment_id:
                environment = self.world.create_environment({"name": f"{spec.name} environment"})
                environment_id = environment["id"]
            if existing:
                agent = self.world.update_agent(existing.agent_id, body)
            else:
                agent = self.world.create_agent(body)
        return RuntimeAgentRef(agent["id"], agent["version"], environment_id)

    async def create_session(
        self, agent: RuntimeAgentRef, *, title: str, metadata: dict[str, str]
    ) -> str:
        ref = {"type": "agent", "id": agent.agent_id, "version": agent.agent_version}
        with _as_failure():
            session = self.world.create_session(
                {
                    "agent": ref,
                    "environment_id": agent.environment_id,
                    "title": title,
                    "metadata": metadata,
                }
            )
        return str(session["id"])

    def stream(
        self, session_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent | TextDelta]]:
        return self._stream(session_id)

    @asynccontextmanager
    async def _stream(
        self, session_id: str
    ) -> AsyncIterator[AsyncIterator[RuntimeEvent | TextDelta]]:
        with _as_failure():
            subscription = self.world.subscribe(session_id, deltas=True)
        items = _read(subscription)
        try:
            yield items
        finally:
            self.world.unsubscribe(subscription)
            subscription.queue.put_nowait(None)
            with contextlib.suppress(RuntimeError):
                await items.aclose()

    async def send_user_message(self, session_id: str, content: list[dict[str, Any]]) -> None:
        await self.send_events(session_id, [{"type": "user.message", "content": content}])

    async def send_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        with _as_failure():
            self.world.send_events(session_id, events)

    async def list_events(
        self, session_id: str, *, after: datetime | None = None
    ) -> list[RuntimeEvent]:
        with _as_failure():
            history = self.world.history(session_id)
        events = [item for item in map(from_wire, history) if isinstance(item, RuntimeEvent)]
        if after is None:
            return events
        return [e for e in events if e.processed_at is None or e.processed_at > after]

    async def session_status(self, session_id: str) -> str:
        with _as_failure():
            return str(self.world.session_json(session_id)["status"])


async def _read(subscription: Subscription) -> AsyncIterator[RuntimeEvent | TextDelta]:
    while True:
        frame = await subscription.queue.get()
        if frame is None:
            return
        item = from_wire(frame)
        if item is not None:
            yield item


@contextmanager
def _as_failure() -> Iterator[None]:
    """`ScriptedError` -> `RuntimeFailure`, as the real runtime's 4xx answers are translated."""
    try:
        yield
    except ScriptedError as exc:
        raise RuntimeFailure(
            "runtime_bad_request", f"The runtime refused the request ({exc.status}): {exc.message}"
        ) from exc
