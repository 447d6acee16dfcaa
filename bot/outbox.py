"""Delivers turns to their Slack thread: status, streamed text, the final answer, errors, notices.

`SlackOutbox` is a `router.turns.TurnObserver`. The runner calls it synchronously, so every call
only puts a job on the thread's lane (an asyncio queue with one tracked task); the lane does the
Slack calls in order. Lanes exist while they have work and are drained at shutdown.

Text arrives as best-effort deltas: the lane streams them with `chat.startStream/appendStream`
(coalesced to a call every `flush_seconds` or `flush_chars`, so the first words show at once
without spending the rate limit), and the final `agent.message` is the truth: whatever the deltas
missed is appended, and with no deltas at all the text is posted. A message is closed before
`max_message_chars` and the text goes on in the next one: an answer is never cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cards import approval_blocks, approval_text, escalation_text
from bot.clients import SlackClients
from router.ports import TextDelta
from router.turns import ABANDONED
from router.types import EventRecord, SlackThread, TurnContext

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.4
FLUSH_CHARS = 200
MAX_MESSAGE_CHARS = 11_000  # Slack takes 12,000 markdown characters per message
STATUS_TIMEOUT = 5.0
THINKING = "is thinking…"
QUEUED_REACTION = "hourglass_flowing_sand"
NOTICED_MEMORY = 10_000
TOOL_EVENTS = ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use")
APPROVAL_EVENT = "app.approval_requested"
ESCALATION_EVENT = "app.escalation"
_DELIVERED = {
    "agent.message",
    "app.error",
    "session.error",
    APPROVAL_EVENT,
    ESCALATION_EVENT,
    *TOOL_EVENTS,
}
SLACK_ERRORS = (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError)


def split_text(text: str, limit: int) -> tuple[str, str]:
    """(head, rest) with len(head) <= limit, cut at a paragraph, line or word boundary when one
    is in the second half of the window; nothing is lost: head + rest == text."""
    if len(text) <= limit:
        return text, ""
    window = text[:limit]
    for sep in ("\n\n", "\n", " "):
        cut = window.rfind(sep)
        if cut >= limit // 2:
            cut += len(sep)
            return text[:cut], text[cut:]
    return window, text[limit:]


def split_all(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    parts = []
    while text:
        head, text = split_text(text, limit)
        parts.append(head)
    return parts


def text_of(data: dict[str, Any]) -> str:
    return "".join(
        block.get("text", "")
        for block in data.get("content") or []
        if isinstance(block, dict) and block.get("type") == "text"
    )


def error_text(record: EventRecord) -> str | None:
    """What the thread says about an `app.error` or `session.error` (None: nothing to say)."""
    data = record.data
    if record.type == "app.error":
        code = str(data.get("code") or "error")
        message = str(data.get("message") or "unknown error")
        if code == "runtime_not_configured":
            return (
                ":warning: The agent runtime is not configured on this server "
                "(no Anthropic API key), so the agent cannot answer yet."
            )
        if code.startswith("runtime_"):
            return (
                f":warning: The agent runtime is unavailable right now ({message}). "
                "Please try again in a minute."
            )
        return f":warning: This turn failed: {message}"
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    retry = (error.get("retry_status") or {}).get("type")
    if retry == "retrying":
        return None  # the runtime retries by itself; an answer may still come
    message = str(error.get("message") or error.get("type") or "unknown error")
    return f":warning: The agent hit an error: {message}"


@dataclass
class _Job:
    kind: str  # started | item | ended | notice | react | close | barrier
    ctx: TurnContext | None = None
    item: Any = None
    thread: SlackThread | None = None
    text: str = ""


@dataclass
class _Reply:
    """One `agent.message` on its way to Slack (possibly over several Slack messages)."""

    event_id: str
    sent: str = ""  # text Slack confirmed, over every part
    pending: str = ""
    stream: Any = None
    stream_chars: int = 0
    parts: list[str] = field(default_factory=list)
    last_flush: float = float("-inf")
    broken: bool = False  # streaming failed: the rest is posted as plain messages


@dataclass
class _Lane:
    """One Slack thread's ordered work."""

    thread: SlackThread
    queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    turn: TurnContext | None = None
    replies: dict[str, _Reply] = field(default_factory=dict)
    posted: bool = False
    # A turn taken over from a runner that stopped (crash, lost lease): the bot's messages in
    # the thread since the user's message, (ts, text), which that runner may have left unfinished.
    prior: list[tuple[str, str]] | None = None


class SlackOutbox:
    def __init__(
        self,
        clients: SlackClients,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        flush_chars: int = FLUSH_CHARS,
        max_message_chars: int = MAX_MESSAGE_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = clients
        self.flush_seconds = flush_seconds
        self.flush_chars = flush_chars
        self.max_message_chars = max_message_chars
        self.clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self._marked: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._noticed: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._open_streams: Counter[str] = Counter()
        self._abandoned: set[tuple[str, int]] = set()
        # Called with (session_id, thread) when a scheduled run opens its thread in a channel.
        self.on_thread_opened: Callable[[str, SlackThread], Awaitable[None]] | None = None

    # -- TurnObserver (synchronous, never blocks) -----------------------------------------------

    def turn_started(self, ctx: TurnContext) -> None:
        thread = _thread_of(ctx)
        if thread is None:
            return
        self._busy.add(ctx.session_id)
        self._enqueue(thread, _Job("started", ctx=ctx))

    def turn_item(self, ctx: TurnContext, item: EventRecord | TextDelta) -> None:
        thread = _thread_of(ctx)
        if thread is None:
            return
        if isinstance(item, EventRecord) and item.type not in _DELIVERED:
            return
        if (
            isinstance(item, EventRecord)
            and item.type != "agent.message"
            and item.seq <= ctx.extra.get("replayed_through", 0)
        ):
            return  # said by the runner before us, or lost with it: a card is not posted twice
        self._enqueue(thread, _Job("item", ctx=ctx, item=item))

    def turn_ended(self, ctx: TurnContext, outcome: str) -> None:
        thread = _thread_of(ctx)
        if thread is None:
            return
        self._busy.discard(ctx.session_id)
        if outcome == ABANDONED:
            self._abandoned.add((ctx.session_id, ctx.turn))  # what is still queued is dropped
        self._enqueue(thread, _Job("ended", ctx=ctx, text=outcome))

    async def delivered(self, ctx: TurnContext) -> None:
        """Until what this turn gave the thread so far has been through Slack (the runner keeps
        the turn unsettled until then, so a crash meanwhile leaves it to the next runner)."""
        thread = _thread_of(ctx)
        if thread is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(thread, _Job("barrier", ctx=ctx, item=done))
        await done

    # -- from the listeners ---------------------------------------------------------------------

    def busy(self, session_id: str) -> bool:
        """A turn of this session runs in this process right now."""
        return session_id in self._busy

    def notice(self, thread: SlackThread, text: str, *, about_ts: str | None = None) -> None:
        """A short message in the thread (no agent bound, archived session, unreadable file).
        With `about_ts`, said once per Slack message: a mention arrives as two events."""
        if about_ts is not None:
            key = (thread.channel_id, about_ts, text)
            if key in self._noticed:
                return
            self._noticed[key] = None
            while len(self._noticed) > NOTICED_MEMORY:
                self._noticed.popitem(last=False)
        self._enqueue(thread, _Job("notice", thread=thread, text=text))

    def mark_queued(self, thread: SlackThread, message_ts: str) -> None:
        """Show on the user's message that it waits behind a running turn."""
        self._marked[(thread.channel_id, message_ts)] = None
        while len(self._marked) > NOTICED_MEMORY:
            self._marked.popitem(last=False)
        self._enqueue(thread, _Job("react", thread=thread, text=message_ts))

    async def drain(self, timeout: float = 10.0) -> None:
        """Finish what is queued (open streams are closed), then stop; called at shutdown."""
        for lane in list(self._lanes.values()):
            self._enqueue(lane.thread, _Job("close"))
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        tasks += list(self._side_tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
            log.warning("slack deliveries cut short at shutdown", extra={"count": len(pending)})

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no lane has work (tests)."""
        async with asyncio.timeout(timeout):
            while self._lanes or self._side_tasks:
                tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
                await asyncio.wait([*tasks, *self._side_tasks])

    # -- lanes ----------------------------------------------------------------------------------

    def _enqueue(self, thread: SlackThread, job: _Job) -> None:
        key = thread.conversation_key
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(thread)
        lane.queue.put_nowait(job)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._run_lane(key, lane), name=f"slack-lane:{key}")

    async def _run_lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.turn is not None or lane.replies or not lane.queue.empty():
                try:
                    job = await asyncio.wait_for(lane.queue.get(), self._next_flush_in(lane))
                except TimeoutError:
                    job = None
                try:
                    if job is None:
                        await self._flush_due(lane)
                    else:
                        await self._handle(lane, job)
                except Exception:
                    log.exception(
                        "slack delivery failed",
                        extra={**self._log_extra(lane), "job": job.kind if job else "flush"},
                    )
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def _pace(self, lane: _Lane) -> float:
        """How much slower than the base pace to stream: `chat.appendStream` is limited per
        workspace, so the more streams a team has open, the bigger and rarer each append."""
        return max(1.0, self._open_streams[lane.thread.team_id] / 2)

    def _due(self, lane: _Lane, reply: _Reply, now: float) -> bool:
        pace = self._pace(lane)
        return bool(reply.pending) and (
            len(reply.pending) >= self.flush_chars * pace
            or now - reply.last_flush >= self.flush_seconds * pace
        )

    def _next_flush_in(self, lane: _Lane) -> float | None:
        interval = self.flush_seconds * self._pace(lane)
        due = [r.last_flush + interval for r in lane.replies.values() if r.pending]
        if not due:
            return None
        return max(0.0, min(due) - self.clock())

    async def _flush_due(self, lane: _Lane) -> None:
        now = self.clock()
        for reply in list(lane.replies.values()):
            if self._due(lane, reply, now):
                await self._flush(lane, reply)

    async def _handle(self, lane: _Lane, job: _Job) -> None:
        if job.kind == "started":
            await self._on_started(lane, job.ctx)
        elif job.kind == "item":
            if (job.ctx.session_id, job.ctx.turn) not in self._abandoned:
                await self._on_item(lane, job.ctx, job.item)
        elif job.kind == "ended":
            self._abandoned.discard((job.ctx.session_id, job.ctx.turn))
            await self._on_ended(lane, job.ctx, abandoned=job.text == ABANDONED)
        elif job.kind == "barrier":
            if not job.item.done():
                job.item.set_result(None)
        elif job.kind == "close":
            await self._on_ended(lane, job.ctx)
        elif job.kind == "notice":
            await self._post(lane, job.text, markdown=False)
        elif job.kind == "react":
            await self._call(lane, "reactions_add", name=QUEUED_REACTION, timestamp=job.text)

    async def _on_started(self, lane: _Lane, ctx: Any) -> None:
        lane.turn = ctx
        lane.replies = {}
        lane.posted = False
        lane.prior = await self._bot_messages_since(lane, ctx) if ctx.extra.get("resumed") else None
        if lane.thread.thread_ts.startswith(PENDING_THREAD):
            await self._open_channel_thread(lane, ctx)
        self._side(lane, "assistant_threads_setStatus", status=THINKING)
        marked = (lane.thread.channel_id, ctx.slack_message_ts or "")
        if marked in self._marked:
            del self._marked[marked]
            self._side(lane, "reactions_remove", name=QUEUED_REACTION, timestamp=marked[1])

    async def _on_item(self, lane: _Lane, ctx: Any, item: Any) -> None:
        if isinstance(item, TextDelta):
            if lane.prior is not None:
                return  # a resumed turn delivers whole answers (see `_complete_prior`)
            reply = lane.replies.get(item.event_id)
            if reply is None:
                reply = lane.replies[item.event_id] = _Reply(item.event_id)
            reply.pending += item.text
            if self._due(lane, reply, self.clock()):
                await self._flush(lane, reply)
            return
        if item.type == "agent.message":
            await self._finish(lane, item.id, text_of(item.data))
        elif item.type in ("app.error", "session.error"):
            text = error_text(item)
            if text:
                await self._close_replies(lane)
                await self._post(lane, text, markdown=False)
        elif item.type == APPROVAL_EVENT:
            await self._close_replies(lane)
            name = str(item.data.get("tool_name") or "a tool")
            blocks = approval_blocks(
                str(item.data.get("approval_id")), name, item.data.get("input")
            )
            if await self._call(
                lane,
                "chat_postMessage",
                thread_ts=lane.thread.thread_ts,
                text=approval_text(name),
                blocks=blocks,
            ):
                lane.posted = True
        elif item.type == ESCALATION_EVENT:
            await self._close_replies(lane)
            await self._post(
                lane, escalation_text(str(item.data.get("reason") or "")), markdown=False
            )
        elif item.type in TOOL_EVENTS:
            name = str(item.data.get("name") or "a tool")
            self._side(lane, "assistant_threads_setStatus", status=f"is using {name}…")

    async def _on_ended(self, lane: _Lane, ctx: Any, *, abandoned: bool = False) -> None:
        if abandoned:
            # Another runner takes the turn over and delivers its answer from the runtime's
            # history: what the deltas said here must not be posted as well.
            for reply in list(lane.replies.values()):
                await self._stop(lane, reply)
            lane.replies.clear()
        await self._close_replies(lane)
        if lane.turn is not None and not lane.posted:
            self._side(lane, "assistant_threads_setStatus", status="")
        lane.turn = None

    async def _close_replies(self, lane: _Lane) -> None:
        """Deliver what the deltas said so far and close the streams (the turn ended without a
        final `agent.message`, or an error comes next)."""
        for reply in list(lane.replies.values()):
            await self._flush(lane, reply)
            if reply.broken and reply.pending:
                await self._post(lane, reply.pending)
            await self._stop(lane, reply)
        lane.replies.clear()

    # -- text -----------------------------------------------------------------------------------

    async def _flush(self, lane: _Lane, reply: _Reply) -> None:
        reply.last_flush = self.clock()
        if reply.broken or not reply.pending:
            return
        client = await self.clients.client_for(lane.thread.team_id)
        if client is None:
            reply.broken = True
            return
        text, reply.pending = reply.pending, ""
        while text:
            room = self.max_message_chars - reply.stream_chars
            if room <= 0:
                await self._stop(lane, reply)
                continue
            chunk, rest = split_text(text, room)
            try:
                if reply.stream is None:
                    reply.stream = await client.chat_stream(
                        buffer_size=1,
                        channel=lane.thread.channel_id,
                        thread_ts=lane.thread.thread_ts,
                        recipient_team_id=lane.thread.team_id,
                        recipient_user_id=lane.turn.author if lane.turn else None,
                    )
                    reply.stream_chars = 0
                    self._open_streams[lane.thread.team_id] += 1
                await reply.stream.append(markdown_text=chunk)
            except SLACK_ERRORS as exc:
                log.warning(
                    "streaming to slack failed; posting instead",
                    extra={**self._log_extra(lane), "error": _describe(exc)},
                )
                reply.broken = True
                if reply.stream is not None:
                    self._open_streams[lane.thread.team_id] -= 1
                reply.stream = None
                reply.pending = text + reply.pending
                return
            if reply.stream.ts and reply.stream.ts not in reply.parts:
                reply.parts.append(reply.stream.ts)
            lane.posted = True
            reply.sent += chunk
            reply.stream_chars += len(chunk)
            text = rest
            if rest:
                await self._stop(lane, reply)

    async def _stop(self, lane: _Lane, reply: _Reply) -> None:
        stream, reply.stream, reply.stream_chars = reply.stream, None, 0
        if stream is None:
            return
        self._open_streams[lane.thread.team_id] -= 1
        try:
            await stream.stop()
        except SLACK_ERRORS as exc:
            log.warning(
                "closing a slack stream failed",
                extra={**self._log_extra(lane), "error": _describe(exc)},
            )

    async def _finish(self, lane: _Lane, event_id: str, final: str) -> None:
        """The final text of one agent message: complete what was streamed, or post it."""
        reply = lane.replies.pop(event_id, None)
        if reply is None:
            if final and not await self._complete_prior(lane, final):
                await self._post(lane, final)
            return
        await self._flush(lane, reply)
        if final.startswith(reply.sent):
            reply.pending = final[len(reply.sent) :]
            await self._flush(lane, reply)
            await self._stop(lane, reply)
            if reply.broken and reply.pending:
                await self._post(lane, reply.pending)
            return
        # The deltas disagree with the final text (a replayed or garbled stream): rewrite.
        await self._stop(lane, reply)
        await self._rewrite(lane, reply, final)

    async def _rewrite(self, lane: _Lane, reply: _Reply, final: str) -> None:
        parts = split_all(final, self.max_message_chars)
        for ts, part in zip(reply.parts, parts, strict=False):
            await self._call(lane, "chat_update", ts=ts, markdown_text=part)
        for ts in reply.parts[len(parts) :]:
            await self._call(lane, "chat_delete", ts=ts)
        for part in parts[len(reply.parts) :]:
            await self._post(lane, part)

    async def _bot_messages_since(self, lane: _Lane, ctx: Any) -> list[tuple[str, str]]:
        """The bot's messages in the thread after the user's message (best effort: none when
        Slack cannot tell, and the answer is then posted as usual)."""
        client = await self.clients.client_for(lane.thread.team_id)
        if client is None or lane.thread.thread_ts.startswith(PENDING_THREAD):
            return []
        after = float(ctx.slack_message_ts or lane.thread.thread_ts)
        try:
            me = await self.clients.bot_user_id(lane.thread.team_id)
            answer = await client.conversations_replies(
                channel=lane.thread.channel_id, ts=lane.thread.thread_ts, limit=200
            )
        except SLACK_ERRORS as exc:
            log.warning(
                "cannot read the thread of a resumed turn",
                extra={**self._log_extra(lane), "error": _describe(exc)},
            )
            return []
        return [
            (str(m["ts"]), str(m.get("text") or ""))
            for m in answer.get("messages") or []
            if m.get("user") == me and float(m.get("ts") or 0) > after
        ]

    async def _complete_prior(self, lane: _Lane, final: str) -> bool:
        """In a resumed turn: when the runner before us already posted this answer, or began to
        stream it and stopped (killed), complete that message instead of posting it again."""
        for ts, text in reversed(lane.prior or []):
            if not text or not final.startswith(text):
                continue
            lane.prior.remove((ts, text))  # type: ignore[union-attr]
            lane.posted = True
            if text == final:
                await self._call(lane, "chat_stopStream", level=logging.INFO, ts=ts)
                return True
            rest = final[len(text) :]
            if await self._call(
                lane, "chat_stopStream", level=logging.INFO, ts=ts, markdown_text=rest
            ):
                return True
            return await self._call(lane, "chat_update", ts=ts, markdown_text=final)
        return False

    async def _open_channel_thread(self, lane: _Lane, ctx: Any) -> None:
        """A schedule's session names a channel: its answer starts a new message there, and that
        message's thread is the session's from now on (replies in it continue the session)."""
        client = await self.clients.client_for(lane.thread.team_id)
        if client is None:
            return
        try:
            answer = await client.chat_postMessage(
                channel=lane.thread.channel_id,
                text=f"Scheduled run of *{ctx.agent_name}*: {ctx.message_text[:300]}",
            )
        except SLACK_ERRORS as exc:
            log.warning(
                "scheduled run could not open its thread",
                extra={**self._log_extra(lane), "error": _describe(exc)},
            )
            return
        lane.thread = SlackThread(lane.thread.team_id, lane.thread.channel_id, answer["ts"])
        if self.on_thread_opened is not None:
            await self.on_thread_opened(ctx.session_id, lane.thread)

    async def _post(self, lane: _Lane, text: str, *, markdown: bool = True) -> None:
        """Post `text` in the thread, as as many messages as it takes."""
        for part in split_all(text, self.max_message_chars):
            arg = {"markdown_text": part} if markdown else {"text": part}
            if await self._call(lane, "chat_postMessage", thread_ts=lane.thread.thread_ts, **arg):
                lane.posted = True

    # -- calls ----------------------------------------------------------------------------------

    async def _call(
        self, lane: _Lane, method: str, *, level: int = logging.WARNING, **args: Any
    ) -> bool:
        """One Web API call in this thread's channel; failures are logged, never raised."""
        client = await self.clients.client_for(lane.thread.team_id)
        if client is None:
            return False
        channel_arg = "channel_id" if method == "assistant_threads_setStatus" else "channel"
        try:
            await getattr(client, method)(**{channel_arg: lane.thread.channel_id}, **args)
        except SLACK_ERRORS as exc:
            log.log(
                level,
                "slack call failed",
                extra={**self._log_extra(lane), "method": method, "error": _describe(exc)},
            )
            return False
        return True

    def _side(self, lane: _Lane, method: str, **args: Any) -> None:
        """A best-effort call that must never hold the thread's text back (status, reactions)."""
        if method == "assistant_threads_setStatus":
            args["thread_ts"] = lane.thread.thread_ts
        call = self._call(lane, method, level=logging.INFO, **args)
        self._track(asyncio.wait_for(call, STATUS_TIMEOUT))

    def track(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run Slack work after the ack (a button's decision), drained at shutdown."""
        self._track(coro)

    def _track(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(_quiet(coro))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    @staticmethod
    def _log_extra(lane: _Lane) -> dict[str, Any]:
        return {
            "session_id": lane.turn.session_id if lane.turn else None,
            "conversation_key": lane.thread.conversation_key,
        }


PENDING_THREAD = "pending:"


def _thread_of(ctx: TurnContext) -> SlackThread | None:
    """The thread a turn's replies go to; a scheduled run bound to a channel gets a placeholder
    until its first message opens the real thread."""
    if ctx.slack is not None:
        return ctx.slack
    target = ctx.extra.get("slack_post_channel")
    if target:
        team_id, channel_id = target
        return SlackThread(team_id, channel_id, f"{PENDING_THREAD}{ctx.session_id}")
    return None


async def _quiet(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except TimeoutError:
        log.info("slack status call timed out")
    except Exception:
        log.exception("slack side call failed")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return f"{exc.response.status_code} {exc.response.get('error')}"
    return type(exc).__name__


__all__ = ["SlackOutbox", "split_all", "split_text", "error_text", "AsyncWebClient"]
