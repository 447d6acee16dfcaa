"""A local stand-in for Slack's Web API (and the file and OAuth endpoints the bot touches).

`FakeSlack` is an aiohttp server on 127.0.0.1:0. `slack_sdk` talks to it over real HTTP through
`SLACK_API_URL=fake.api_url`. It keeps what a user would see: the messages of each thread
(posted, updated, streamed), reactions and statuses; it records every call; and it can fail on
purpose (429 with `Retry-After`, 500, `ok: false` errors, delays).

Also here: `sign`, the signing helper for requests *to* the app, and `event_envelope`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret"


@dataclass
class Team:
    team_id: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    name: str = "Test team"
    app_id: str = "A0TEST"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str = ""
    user: str | None = None
    streaming: bool = False
    stream_calls: int = 0
    recipient_user_id: str | None = None
    updated: int = 0
    deleted: bool = False
    blocks: list[Any] | None = None


@dataclass
class Fault:
    status: int = 429
    error: str = "ratelimited"
    times: int = 1
    retry_after: int = 0
    delay: float = 0.0


@dataclass
class StoredFile:
    id: str
    name: str
    mimetype: str
    data: bytes
    html_instead: bool = False  # what Slack does without files:read: 200 + an HTML login page


@dataclass
class OAuthCode:
    team: Team
    scope: str = "chat:write,app_mentions:read"
    used: bool = False


@dataclass
class FakeSlack:
    """The fake Web API. Default team T1 with bot token `xoxb-test-T1` and bot user UBOT."""

    teams: dict[str, Team] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    reactions: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, StoredFile] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    oauth_apps: dict[str, str] = field(default_factory=dict)
    oauth_codes: dict[str, OAuthCode] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    max_markdown_chars: int = 12_000

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        if not self.teams:
            self.add_team("T1", bot_user_id="UBOT", bot_id="BBOT")

    # -- setup --------------------------------------------------------------------------------

    def add_team(
        self, team_id: str, *, bot_user_id: str = "UBOT", bot_id: str = "BBOT", token: str = ""
    ) -> Team:
        team = Team(team_id, token or f"xoxb-test-{team_id}", bot_user_id, bot_id)
        self.teams[team.bot_token] = team
        return team

    def team(self, team_id: str = "T1") -> Team:
        return next(t for t in self.teams.values() if t.team_id == team_id)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/files/{file_id}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(
        self,
        method: str,
        *,
        status: int = 429,
        times: int = 1,
        error: str = "",
        retry_after: int = 0,
        delay: float = 0.0,
    ) -> None:
        """The next `times` calls of `method` answer `status` (429 with `Retry-After`, 500, or
        200 with `ok: false` and `error`), after `delay` seconds."""
        default = {429: "ratelimited", 500: "internal_error", 200: "fatal_error"}.get(
            status, "error"
        )
        self.faults.setdefault(method, []).append(
            Fault(status, error or default, times, retry_after, delay)
        )

    def slow(self, method: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` calls of `method` succeed, `seconds` late."""
        self.faults.setdefault(method, []).append(Fault(0, "", times, 0, seconds))

    def add_file(
        self, name: str, data: bytes, mimetype: str, *, html_instead: bool = False
    ) -> dict[str, Any]:
        """Store a file; returns the `files[]` item of a `file_share` event for it."""
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        self.files[file_id] = StoredFile(file_id, name, mimetype, data, html_instead)
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(data),
            "url_private": f"{self.base_url}/files/{file_id}",
            "url_private_download": f"{self.base_url}/files/{file_id}?download=1",
        }

    def add_oauth_app(self, client_id: str, client_secret: str) -> None:
        self.oauth_apps[client_id] = client_secret

    def add_oauth_code(self, code: str, team_id: str, *, bot_user_id: str = "UBOT2") -> Team:
        """`oauth.v2.access` with this code installs the app in a new team."""
        team = Team(
            team_id, f"xoxb-oauth-{team_id}-{uuid.uuid4().hex[:6]}", bot_user_id, "B" + team_id
        )
        self.oauth_codes[code] = OAuthCode(team)
        return team

    # -- what a user would see -----------------------------------------------------------------

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The bot's messages in a thread, oldest first (never the root message itself)."""
        return [
            m
            for m in self.messages
            if m.channel == channel and m.thread_ts == thread_ts and not m.deleted
        ]

    def thread_text(self, channel: str, thread_ts: str, sep: str = "") -> str:
        """Everything the bot wrote in a thread (posted, updated and streamed), joined by `sep`."""
        return sep.join(m.text for m in self.thread(channel, thread_ts))

    def root_messages(self, channel: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Until `predicate()` is truthy (re-checked on every call the fake gets, and at least
        every 50 ms for conditions that depend on something else); returns its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    pass

    # -- the API ------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await _args(request)
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        self.calls.append(Call(method, args, token, time.monotonic()))
        try:
            fault = self._take_fault(method)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status == 429:
                    return web.json_response(
                        {"ok": False, "error": fault.error},
                        status=429,
                        headers={"Retry-After": str(fault.retry_after)},
                    )
                if fault.status:
                    return web.json_response(
                        {"ok": False, "error": fault.error}, status=fault.status
                    )
            if method == "oauth.v2.access":
                return web.json_response(self._oauth_access(request, args))
            team = self.teams.get(token or "")
            if team is None:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return web.json_response({"ok": True})
            return web.json_response(handler(team, args))
        finally:
            self._changed.set()

    def _take_fault(self, method: str) -> Fault | None:
        queue = self.faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def _next_ts(self) -> str:
        return f"1800000000.{next(self._ts):06d}"

    def _find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)

    def _m_auth_test(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{team.team_id.lower()}.slack.test/",
            "team": team.name,
            "user": "agents",
            "team_id": team.team_id,
            "user_id": team.bot_user_id,
            "bot_id": team.bot_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        text = args.get("markdown_text") or args.get("text") or ""
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not (text or args.get("blocks")):
            return {"ok": False, "error": "no_text"}
        limit = self.max_markdown_chars if args.get("markdown_text") else 40_000
        if len(text) > limit:
            return {"ok": False, "error": "msg_too_long"}
        message = Message(
            channel,
            self._next_ts(),
            args.get("thread_ts"),
            text=text,
            user=team.bot_user_id,
            blocks=_json_arg(args.get("blocks")),
        )
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": {"text": text}}

    def _m_chat_postEphemeral(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "invalid_arguments"}
        self.ephemerals.append(
            {"channel": args["channel"], "user": args["user"], "text": args.get("text", "")}
        )
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_chat_update(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        text = args.get("markdown_text") or args.get("text")
        if text is not None:
            if len(text) > self.max_markdown_chars:
                return {"ok": False, "error": "msg_too_long"}
            message.text = text
        if args.get("blocks") is not None:
            message.blocks = _json_arg(args.get("blocks"))
        message.updated += 1
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_delete(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.deleted = True
        return {"ok": True}

    def _m_chat_startStream(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        channel, thread_ts = args.get("channel"), args.get("thread_ts")
        if not channel or not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        if not channel.startswith("D") and not (
            args.get("recipient_user_id") and args.get("recipient_team_id")
        ):
            return {"ok": False, "error": "missing_recipient_user_id"}
        message = Message(
            channel,
            self._next_ts(),
            thread_ts,
            user=team.bot_user_id,
            streaming=True,
            recipient_user_id=args.get("recipient_user_id"),
        )
        error = self._append(message, args)
        if error:
            return {"ok": False, "error": error}
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _m_chat_appendStream(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if not message.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        error = self._append(message, args)
        if error:
            return {"ok": False, "error": error}
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args.get("channel", ""), args.get("ts", ""))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if not message.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        error = self._append(message, args)
        if error:
            return {"ok": False, "error": error}
        message.streaming = False
        if args.get("blocks") is not None:
            message.blocks = _json_arg(args.get("blocks"))
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _append(self, message: Message, args: dict[str, Any]) -> str | None:
        added = args.get("markdown_text") or ""
        for chunk in _json_arg(args.get("chunks")) or []:
            if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
                added += chunk.get("text") or ""
        if len(added) > self.max_markdown_chars:
            return "msg_too_long"
        message.text += added
        message.stream_calls += 1
        return None

    def _m_assistant_threads_setStatus(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel_id") or not args.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        self.statuses.append(
            {
                "channel_id": args["channel_id"],
                "thread_ts": args["thread_ts"],
                "status": args.get("status", ""),
            }
        )
        return {"ok": True}

    def _m_reactions_add(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel", ""), args.get("timestamp", ""))
        names = self.reactions.setdefault(key, [])
        if args.get("name") in names:
            return {"ok": False, "error": "already_reacted"}
        names.append(args.get("name", ""))
        return {"ok": True}

    def _m_reactions_remove(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel", ""), args.get("timestamp", ""))
        names = self.reactions.get(key, [])
        if args.get("name") not in names:
            return {"ok": False, "error": "no_reaction"}
        names.remove(args.get("name", ""))
        return {"ok": True}

    def _m_conversations_replies(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        """The bot's messages of a thread (the fake keeps no user messages), oldest first."""
        channel, thread_ts = args.get("channel"), args.get("ts")
        if not channel or not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        messages = [
            {
                "type": "message",
                "ts": m.ts,
                "thread_ts": m.thread_ts,
                "text": m.text,
                "user": m.user,
                "bot_id": team.bot_id if m.user == team.bot_user_id else None,
            }
            for m in self.thread(channel, thread_ts)
        ]
        return {"ok": True, "messages": messages, "has_more": False}

    def _m_conversations_members(self, team: Team, args: dict[str, Any]) -> dict[str, Any]:
        members = self.members.get(args.get("channel", ""), [])
        return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}

    def _oauth_access(self, request: web.Request, args: dict[str, Any]) -> dict[str, Any]:
        client_id, client_secret = args.get("client_id"), args.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if not client_id or self.oauth_apps.get(client_id) != client_secret:
            return {"ok": False, "error": "invalid_client_id"}
        grant = self.oauth_codes.get(args.get("code", ""))
        if grant is None or grant.used:
            return {"ok": False, "error": "invalid_code"}
        grant.used = True
        team = grant.team
        self.teams[team.bot_token] = team
        return {
            "ok": True,
            "access_token": team.bot_token,
            "token_type": "bot",
            "scope": grant.scope,
            "bot_user_id": team.bot_user_id,
            "app_id": team.app_id,
            "team": {"id": team.team_id, "name": team.name},
            "enterprise": None,
            "is_enterprise_install": False,
            "authed_user": {"id": "UINSTALLER"},
        }

    async def _file(self, request: web.Request) -> web.StreamResponse:
        stored = self.files.get(request.match_info["file_id"])
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        self.calls.append(
            Call("files.download", {"id": request.match_info["file_id"]}, token, time.monotonic())
        )
        self._changed.set()
        if stored is None:
            return web.Response(status=404, text="not found")
        if stored.html_instead or token not in self.teams:
            return web.Response(
                text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>",
                content_type="text/html",
            )
        return web.Response(body=stored.data, content_type=stored.mimetype)


async def _args(request: web.Request) -> dict[str, Any]:
    """Query string, form and JSON arguments, merged (slack_sdk uses all three)."""
    args: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        raw = await request.text()
        content_type = request.content_type
        if content_type == "application/json" and raw:
            body = json.loads(raw)
            if isinstance(body, dict):
                args.update(body)
        elif raw:
            args.update(dict(parse_qsl(raw, keep_blank_values=True)))
    return args


def _json_arg(value: Any) -> Any:
    """Form-encoded calls send lists as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# -- requests to the app -----------------------------------------------------------------------


def sign(body: str, *, secret: str = SIGNING_SECRET, ts: int | None = None) -> dict[str, str]:
    """The headers Slack puts on a request to the app, exactly as Bolt verifies them."""
    stamp = str(ts if ts is not None else int(time.time()))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(
            timestamp=stamp, body=body
        ),
    }


def event_envelope(
    event: dict[str, Any], *, team_id: str = "T1", bot_user_id: str = "UBOT", event_id: str = ""
) -> dict[str, Any]:
    """An Events API `event_callback` around `event`."""
    return {
        "token": "legacy",
        "team_id": team_id,
        "api_app_id": "A0TEST",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:12].upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": team_id, "user_id": bot_user_id, "is_bot": True, "enterprise_id": None}
        ],
        "is_ext_shared_channel": False,
    }
