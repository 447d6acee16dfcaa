"""The turn runner: one turn per session at a time, across every process on one database.

A turn: claim the session (conditional UPDATE), take the next queued message, open the runtime's
stream, send the message, mirror every event (idempotent on the runtime's id), publish it on the
live bus and to the observers (the Slack outbox), end on `session.status_idle` or a terminal
error, release the session, and go on with the next queued message.

Crash safety: a message is marked `sending` before it is sent; a runner that takes over a session
(lease expired) catches the mirror up with the runtime's history and sends the message only if
the runtime never got it, and replays to the observers what the runner before it mirrored of
the turn (the Slack outbox completes in the thread what that runner began). The lease is renewed
while the turn runs; a runner that cannot renew it in time, or finds the session held by another,
stops driving the turn (it sends, mirrors and delivers nothing more: the mirror is fenced by
runner id), and a turn the database drops mid-way is abandoned the same way, to be taken over.
A turn is settled only once its answer is delivered, so a crash before that loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from router import approvals, escalations
from router.billing import Billing, TurnUsage
from router.errors import RuntimeFailure
from router.ports import AgentRuntime, AgentSpec, RuntimeAgentRef, RuntimeEvent, TextDelta
from router.types import EventRecord, SlackThread, TurnContext
from store import agents as agents_store
from store import events as events_store
from store import queue as queue_store
from store import sessions as sessions_store
from store import triggers as triggers_store
from store.db import is_unavailable
from store.events import NewEvent
from store.ids import new_id
from store.models import utcnow

log = logging.getLogger(__name__)

ESCALATE_TOOL = {
    "name": "escalate_to_human",
    "description": (
        "Hand the conversation to a human teammate when you cannot or should not go on alone. "
        "Say why in `reason`."
    ),
    "input_schema": {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "why a human is needed"}},
        "required": ["reason"],
    },
}

_END = object()
_LEASE_LOST = object()


class LeaseLost(Exception):
    """This runner may no longer drive the turn (see `TurnRunner._hold`)."""


FAILED_OUTCOMES = ("error", "timeout", "terminated", "retries_exhausted")
# A turn this runner stopped driving (lease lost, database unreachable): nothing is settled,
# and the runner that takes the session over next reconciles with the runtime.
ABANDONED = "abandoned"
SEND_ATTEMPTS = 3


class TurnObserver(Protocol):
    """Follows turns (the Slack outbox). Calls must return quickly: queue work, don't do it.

    An observer may also have `async def delivered(ctx)`, which returns once what it was given
    of the turn is delivered: the runner waits for it (bounded) before it settles the turn."""

    def turn_started(self, ctx: TurnContext) -> None: ...

    def turn_item(self, ctx: TurnContext, item: EventRecord | TextDelta) -> None: ...

    def turn_ended(self, ctx: TurnContext, outcome: str) -> None: ...


@dataclass
class TurnOutcome:
    """How a turn ended: `end_turn`, `requires_action`, `interrupted`, `error`, `timeout`..."""

    reason: str


def record_of(session_id: str, row: Any) -> EventRecord:
    return EventRecord(
        seq=row.seq,
        id=row.runtime_event_id,
        type=row.type,
        created_at=row.created_at,
        data=row.data,
        session_id=session_id,
    )


class TurnRunner:
    def __init__(
        self,
        db: Any,
        runtime: AgentRuntime,
        bus: Any,
        *,
        observers: list[TurnObserver] | None = None,
        billing: Billing | None = None,
        runner_id: str | None = None,
        turn_timeout: float = 600.0,
        approval_timeout: float = 24 * 3600.0,
        lease_seconds: float = 30.0,
        recover_every: float = 5.0,
        delivery_timeout: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.bus = bus
        self.observers = list(observers or [])
        self.billing = billing or Billing(db)
        self.runner_id = runner_id or f"run_{os.getpid()}_{new_id('r')[-8:]}"
        self.turn_timeout = turn_timeout
        self.approval_timeout = approval_timeout
        self.lease_seconds = lease_seconds
        self.recover_every = recover_every
        self.delivery_timeout = delivery_timeout
        self._held: dict[str, TurnContext] = {}
        self._lease_task: asyncio.Task[None] | None = None
        self.clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._closing = False
        self._recover_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- scheduling ---------------------------------------------------------------------------

    def kick(self, session_id: str) -> None:
        """There may be work for this session: drain its queue (no-op if already draining here)."""
        if self._closing:
            return
        task = self._tasks.get(session_id)
        if task is not None and not task.done():
            self._again.add(session_id)
            return
        self._idle.clear()
        task = asyncio.create_task(self._drain(session_id), name=f"turns:{session_id}")
        self._tasks[session_id] = task

    async def _drain(self, session_id: str) -> None:
        try:
            while not self._closing:
                self._again.discard(session_id)
                while not self._closing and await self._run_one_turn(session_id):
                    pass
                if session_id not in self._again:
                    break
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("turn runner failed", extra={"session_id": session_id})
            else:  # a recovery pass takes the session up again
                log.warning(
                    "turn runner stopped: database unavailable",
                    extra={"session_id": session_id, "error": repr(exc)[:300]},
                )
        finally:
            if self._tasks.get(session_id) is asyncio.current_task():
                del self._tasks[session_id]
            if not self._tasks:
                self._idle.set()

    def start(self) -> None:
        """Recover orphaned work now and every `recover_every` seconds."""
        if self._recover_task is None:
            self._recover_task = asyncio.create_task(self._recover_loop(), name="turns:recover")

    async def _recover_loop(self) -> None:
        while not self._closing:
            try:
                await self.recover()
            except Exception:
                log.exception("recovery pass failed")
            await asyncio.sleep(self.recover_every)

    async def recover(self) -> list[str]:
        """Kick sessions whose work has no live runner (crash, restart, lost kick)."""
        async with self.db() as s:
            ids = await sessions_store.sessions_to_recover(s, now=self.clock())
        for session_id in ids:
            self.kick(session_id)
        return ids

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until no turn runs in this process (tests, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def shutdown(self, timeout: float = 25.0) -> None:
        """Stop taking work; let running turns finish for up to `timeout` s. A turn cut short
        stays `running` with its lease: the next start (or another replica) takes it over."""
        self._closing = True
        if self._recover_task is not None:
            self._recover_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recover_task
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning("turns left to the next start", extra={"count": len(pending)})
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task

    # -- one turn -----------------------------------------------------------------------------

    def _lease(self) -> datetime:
        return self.clock() + timedelta(seconds=self.lease_seconds)

    async def _run_one_turn(self, session_id: str) -> bool:
        """One turn of the session, if this runner can claim it; False when there was nothing
        to run here (not claimed, or the turn was abandoned to another runner)."""
        lease_from = asyncio.get_running_loop().time()
        async with self.db.begin() as s:
            if not await sessions_store.claim_turn(
                s, session_id, runner_id=self.runner_id, lease_until=self._lease()
            ):
                return False
            row = await sessions_store.get_session(s, session_id)
            agent = await agents_store.get_agent(s, row.deployed_agent_id)
            message = await queue_store.next_queued(s, session_id)
            resumed = message is not None and message.state == "sending"
            if message is not None and not resumed:
                # Taken now, in the claim: it no longer counts as queued behind the turn.
                await queue_store.mark_sending(s, message.id, session_id)
        if message is None:  # claimed by a racing pass that found the queue empty
            async with self.db.begin() as s:
                await sessions_store.release_turn(s, session_id, runner_id=self.runner_id)
            return False
        ctx = TurnContext(
            session_id=session_id,
            workspace_id=row.workspace_id,
            agent_id=agent.id,
            agent_name=agent.name,
            source=row.source,
            turn=row.turn_count,
            message_id=message.id,
            message_text=message.text,
            author=message.author,
            slack=thread_of(row),
            slack_message_ts=message.slack_ts,
            extra={
                "usage": TurnUsage(),
                "model": agent.model,
                "resumed": resumed,
                # A schedule's session names a channel but has no thread until its first answer.
                "slack_post_channel": (
                    (row.slack_team_id, row.slack_channel_id)
                    if row.slack_channel_id and not row.slack_conversation_key
                    else None
                ),
            },
        )
        log.info("turn started", extra={"session_id": session_id, "turn": ctx.turn})
        self._notify("turn_started", ctx)
        self._hold(ctx, lease_from)
        outcome = TurnOutcome("error")
        try:
            outcome = await self._drive(ctx, row, agent, message)
            if outcome.reason != ABANDONED:
                await self._await_delivery(ctx)
                if ctx.extra.get("lease_lost"):
                    outcome = TurnOutcome(ABANDONED)
        except asyncio.CancelledError:
            outcome = TurnOutcome("shutdown")
            raise
        finally:
            self._unhold(ctx)
            if outcome.reason != "shutdown":
                outcome = await self._end_turn(ctx, message, outcome)
        return outcome.reason != ABANDONED

    async def _drive(self, ctx: TurnContext, row: Any, agent: Any, message: Any) -> TurnOutcome:
        """The turn, with its failures turned into outcomes: an error the thread is told about,
        or abandoned when the database is out of reach (another runner resumes it later)."""
        try:
            return await self._turn(ctx, row, agent, message)
        except LeaseLost:
            return TurnOutcome(ABANDONED)
        except RuntimeFailure as exc:
            return await self._failed(ctx, exc.code, exc.message)
        except Exception as exc:
            if is_unavailable(exc):
                return TurnOutcome(ABANDONED)
            log.exception("turn failed", extra={"session_id": ctx.session_id})
            return await self._failed(
                ctx, "internal_error", f"The turn failed: {type(exc).__name__}"
            )

    async def _await_delivery(self, ctx: TurnContext) -> None:
        """Keep the turn, and its lease, until the observers have delivered it (the answer is in
        the Slack thread): when this process dies before, the turn is not settled, and the
        runner that takes it over replays it; settled, nobody would ever post that answer."""
        waits = [
            hook(ctx) for observer in self.observers if (hook := getattr(observer, "delivered", 0))
        ]
        if not waits:
            return
        delivery = asyncio.ensure_future(asyncio.gather(*waits, return_exceptions=True))
        lease_gone = asyncio.ensure_future(ctx.extra["lease_gone"].wait())
        delivered = False
        try:
            await asyncio.wait(
                {delivery, lease_gone},
                timeout=self.delivery_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            delivered = delivery.done()
        finally:
            lease_gone.cancel()
            if not delivery.done():
                delivery.cancel()
                delivery.add_done_callback(_quiet_result)
        if not delivered:
            if not ctx.extra.get("lease_lost"):
                log.warning(
                    "turn settled before its delivery was done",
                    extra={"session_id": ctx.session_id, "timeout": self.delivery_timeout},
                )

    async def _failed(self, ctx: TurnContext, code: str, message: str) -> TurnOutcome:
        try:
            await self._report_error(ctx, code, message)
        except LeaseLost:
            return TurnOutcome(ABANDONED)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return TurnOutcome(ABANDONED)
        return TurnOutcome("error")

    async def _end_turn(self, ctx: TurnContext, message: Any, outcome: TurnOutcome) -> TurnOutcome:
        """Settle the turn: charge, mark the message, finish trigger runs, release the session.

        An abandoned turn settles nothing: the lease is left to run out, and whoever takes the
        session over next (this process or another) reconciles with the runtime's history."""
        session_id = ctx.session_id
        if outcome.reason != ABANDONED:
            try:
                await self._settle(ctx, message, outcome)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                outcome = TurnOutcome(ABANDONED)
        self._notify("turn_ended", ctx, outcome.reason)
        if outcome.reason == ABANDONED:
            log.warning(
                "turn abandoned: the session is taken over once its lease runs out",
                extra={
                    "session_id": session_id,
                    "turn": ctx.turn,
                    "reason": ctx.extra.get("lease_lost", "database unavailable"),
                },
            )
        else:
            log.info(
                "turn finished",
                extra={"session_id": session_id, "turn": ctx.turn, "outcome": outcome.reason},
            )
        return outcome

    async def _settle(self, ctx: TurnContext, message: Any, outcome: TurnOutcome) -> None:
        await self._charge(ctx)
        async with self.db.begin() as s:
            # The session row first, as every transaction that touches a session and its inbox
            # does (a Slack ack locks it to number its message): the other order deadlocks
            # with the second event of a mention arriving just now.
            await sessions_store.release_turn(s, ctx.session_id, runner_id=self.runner_id)
            if ctx.extra.get("delivered"):
                await queue_store.mark_sent(s, message.id)
            else:
                await queue_store.mark_failed(s, message.id)
            if ctx.source in ("schedule", "webhook"):
                failed = outcome.reason in FAILED_OUTCOMES
                await triggers_store.finish_runs_of_session(
                    s,
                    ctx.session_id,
                    status="error" if failed else "ok",
                    error=ctx.extra.get("error") if failed else None,
                )

    async def _charge(self, ctx: TurnContext) -> None:
        usage: TurnUsage = ctx.extra["usage"]
        started, ended = ctx.extra.get("running_at"), ctx.extra.get("idle_at")
        if started and ended and ended > started:
            usage.runtime_seconds = Decimal(str((ended - started).total_seconds()))
        try:
            await self.billing.charge_turn(
                workspace_id=ctx.workspace_id,
                session_id=ctx.session_id,
                turn=ctx.turn,
                model=ctx.extra["model"],
                usage=usage,
            )
        except Exception:
            log.exception("charging the turn failed", extra={"session_id": ctx.session_id})

    def _meter(self, ctx: TurnContext, records: list[EventRecord]) -> None:
        """Count what freshly mirrored events report (each event once, even across a resume)."""
        usage: TurnUsage = ctx.extra["usage"]
        for record in records:
            if record.type == "span.model_request_end":
                usage.add_model_usage(record.data.get("model_usage") or {})
            elif record.type == "session.status_running":
                ctx.extra.setdefault("running_at", _parse_time(record.data.get("processed_at")))
            elif record.type == "session.status_idle":
                ctx.extra["idle_at"] = _parse_time(record.data.get("processed_at"))

    def _hold(self, ctx: TurnContext, held_from: float) -> None:
        """A claimed session: kept by `_keep_leases`, watched by a timer at `lease_deadline`.

        The turn may act (send to the runtime, mirror, deliver) only until `lease_deadline`, a
        third of a lease before anybody else may claim the session; when no renewal has come
        back by then, or another runner holds the session, the turn is told to stop
        (`lease_lost`): two runners must never drive one turn (each would send and answer)."""
        ctx.extra["lease_gone"] = asyncio.Event()
        self._held[ctx.session_id] = ctx
        self._extend(ctx, held_from + self.lease_seconds * 2 / 3)
        if self._lease_task is None or self._lease_task.done():
            self._lease_task = asyncio.create_task(self._keep_leases(), name="turns:leases")

    def _unhold(self, ctx: TurnContext) -> None:
        if self._held.get(ctx.session_id) is ctx:
            del self._held[ctx.session_id]
        timer = ctx.extra.pop("lease_timer", None)
        if timer is not None:
            timer.cancel()

    def _extend(self, ctx: TurnContext, deadline: float) -> None:
        if ctx.extra.get("lease_lost") or deadline <= ctx.extra.get("lease_deadline", 0.0):
            return
        ctx.extra["lease_deadline"] = deadline
        timer = ctx.extra.get("lease_timer")
        if timer is not None:
            timer.cancel()
        ctx.extra["lease_timer"] = asyncio.get_running_loop().call_at(
            deadline, self._lose_lease, ctx, "the lease could not be renewed in time"
        )

    async def _keep_leases(self) -> None:
        """Every third of a lease, renew in one statement the leases of every session this
        runner holds (one round trip per process, however many turns run)."""
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(self.lease_seconds / 3)
            held = dict(self._held)
            if not held:
                continue
            asked_at = loop.time()
            try:
                async with self.db.begin() as s:
                    kept = await sessions_store.renew_leases(
                        s, list(held), runner_id=self.runner_id, lease_until=self._lease()
                    )
            except Exception as exc:
                log.warning(
                    "lease renewal failed", extra={"sessions": len(held), "error": repr(exc)[:300]}
                )
                continue
            for session_id, ctx in held.items():
                if session_id in kept:
                    self._extend(ctx, asked_at + self.lease_seconds * 2 / 3)
                elif self._held.get(session_id) is ctx:
                    self._lose_lease(ctx, "another runner holds the session")

    @staticmethod
    def _lose_lease(ctx: TurnContext, reason: str) -> None:
        if ctx.extra.get("lease_lost"):
            return
        ctx.extra["lease_lost"] = reason
        ctx.extra["lease_gone"].set()
        queue = ctx.extra.get("queue")
        if queue is not None:
            queue.put_nowait(_LEASE_LOST)  # wake the turn up if it waits on the runtime

    @staticmethod
    def _check_lease(ctx: TurnContext) -> None:
        """Raise `LeaseLost` when the turn may no longer act (see `_hold`)."""
        deadline = ctx.extra.get("lease_deadline")
        if ctx.extra.get("lease_lost") or (
            deadline is not None and asyncio.get_running_loop().time() > deadline
        ):
            ctx.extra.setdefault("lease_lost", "the lease ran out")
            raise LeaseLost(ctx.extra["lease_lost"])

    async def _turn(self, ctx: TurnContext, row: Any, agent: Any, message: Any) -> TurnOutcome:
        runtime_session = row.anthropic_session_id or await self._ensure_runtime_session(row, agent)
        content = [{"type": "text", "text": message.text}, *message.content]
        try:
            async with asyncio.timeout(self.turn_timeout) as deadline:
                ctx.extra["deadline"] = deadline
                return await self._stream_turn(ctx, runtime_session, message, content)
        except TimeoutError:
            with contextlib.suppress(RuntimeFailure):
                await self.runtime.send_events(runtime_session, [{"type": "user.interrupt"}])
            await self._report_error(
                ctx,
                "turn_timeout",
                f"The agent took longer than {self.turn_timeout:g} s; the turn was stopped.",
            )
            return TurnOutcome("timeout")

    async def _ensure_runtime_session(self, row: Any, agent: Any) -> str:
        ref = await self.ensure_deployed(agent)
        runtime_id = await self.runtime.create_session(
            ref,
            title=row.title or f"{agent.name} ({row.source})",
            metadata={"session_id": row.id, "workspace_id": row.workspace_id, "source": row.source},
        )
        async with self.db.begin() as s:
            await sessions_store.set_anthropic_session_id(s, row.id, runtime_id)
        return runtime_id

    async def ensure_deployed(self, agent: Any) -> RuntimeAgentRef:
        if agent.anthropic_agent_id and agent.anthropic_environment_id:
            return RuntimeAgentRef(
                agent.anthropic_agent_id,
                agent.anthropic_agent_version,
                agent.anthropic_environment_id,
            )
        ref = await self.runtime.deploy_agent(spec_of(agent))
        async with self.db.begin() as s:
            await agents_store.set_runtime_ids(
                s,
                agent.id,
                anthropic_agent_id=ref.agent_id,
                anthropic_agent_version=ref.agent_version,
                anthropic_environment_id=ref.environment_id,
            )
        return ref

    async def _stream_turn(
        self, ctx: TurnContext, runtime_session: str, message: Any, content: list[dict[str, Any]]
    ) -> TurnOutcome:
        resumed = ctx.extra["resumed"]
        last_seen: datetime | None = None
        if resumed:
            async with self.db() as s:
                last_seen = await events_store.runtime_time_at(
                    s, ctx.session_id, message.mirror_seq_at_send or 0
                )
                mirrored, _more = await events_store.list_events(
                    s, ctx.session_id, after=message.mirror_seq_at_send or 0, limit=1000
                )
            self._replay(ctx, [record_of(ctx.session_id, row) for row in mirrored])
        attempt = 0
        sent = False
        while True:
            async with self.runtime.stream(runtime_session) as stream:
                queue: asyncio.Queue[Any] = asyncio.Queue()
                ctx.extra["queue"] = queue
                reader = asyncio.create_task(_pump(stream, queue))
                try:
                    if resumed or attempt > 0:
                        backlog = await self.runtime.list_events(runtime_session, after=last_seen)
                        for event in backlog:
                            queue.put_nowait(event)
                        if not sent:
                            sent = await self._was_sent(ctx, message, backlog)
                    if not sent:
                        await self._send(ctx, runtime_session, message, content)
                        sent = True
                    outcome, last_seen = await self._consume(ctx, runtime_session, queue, last_seen)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
            if outcome is not None:
                return outcome
            attempt += 1
            log.info(
                "runtime stream dropped; resuming",
                extra={"session_id": ctx.session_id, "attempt": attempt},
            )
            await asyncio.sleep(min(0.05 * 2**attempt, 2.0))

    def _replay(self, ctx: TurnContext, records: list[EventRecord]) -> None:
        """A takeover: what the runner before us mirrored of this turn may never have reached
        the observers (it died in between), so they get it again, marked `replayed_through`;
        the Slack outbox completes in the thread what was begun instead of saying it twice."""
        if not records:
            return
        ctx.extra["replayed_through"] = records[-1].seq
        for record in records:
            self._notify("turn_item", ctx, record)

    async def _was_sent(self, ctx: TurnContext, message: Any, backlog: list[RuntimeEvent]) -> bool:
        """After a takeover: did the runtime get this message before the crash? `backlog` holds
        only events after the last one mirrored before the send, so a match is this message."""
        found = any(
            event.type == "user.message" and _text_of(event.data) == message.text
            for event in backlog
        )
        if found:
            ctx.extra["delivered"] = True
        return found

    async def _send(
        self, ctx: TurnContext, runtime_session: str, message: Any, content: list[dict[str, Any]]
    ) -> None:
        """Send once; on a retryable failure look in the runtime's history before sending again
        (a send that timed out may have landed: the endpoint has no idempotency key)."""
        for attempt in range(SEND_ATTEMPTS):
            self._check_lease(ctx)
            try:
                await self.runtime.send_user_message(runtime_session, content)
                break
            except RuntimeFailure as exc:
                if not exc.retryable or attempt == SEND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
                with contextlib.suppress(RuntimeFailure):
                    recent = await self.runtime.list_events(runtime_session)
                    if any(
                        e.type == "user.message" and _text_of(e.data) == message.text
                        for e in recent[-5:]
                    ):
                        break
        ctx.extra["delivered"] = True

    async def _consume(
        self,
        ctx: TurnContext,
        runtime_session: str,
        queue: asyncio.Queue[Any],
        last_seen: datetime | None,
    ) -> tuple[TurnOutcome | None, datetime | None]:
        """Mirror and publish until the turn ends (outcome) or the stream drops (None)."""
        tool_uses: dict[str, dict[str, Any]] = ctx.extra.setdefault("tool_uses", {})
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            self._check_lease(ctx)
            ended = False
            events: list[RuntimeEvent] = []
            outcome: TurnOutcome | None = None
            waiting: list[RuntimeEvent] = []
            for item in batch:
                if item is _END:
                    ended = True
                elif isinstance(item, TextDelta):
                    if events:
                        await self._mirror(ctx, events)
                        events = []
                    self.bus.publish(ctx.session_id, [item])
                    self._notify("turn_item", ctx, item)
                else:
                    events.append(item)
                    if item.processed_at is not None:
                        last_seen = item.processed_at
                    if item.type in TOOL_USE_TYPES:
                        tool_uses[item.id] = item.data
                    if _waits_for_us(item):
                        waiting.append(item)
                    else:
                        outcome = outcome or _turn_end(item)
            if events:
                await self._mirror(ctx, events)
            if outcome is not None:
                return outcome, last_seen
            for idle in waiting:
                await self._act_on_requires_action(ctx, runtime_session, idle, tool_uses)
            if ended:
                return None, last_seen

    async def _act_on_requires_action(
        self,
        ctx: TurnContext,
        runtime_session: str,
        idle: RuntimeEvent,
        tool_uses: dict[str, dict[str, Any]],
    ) -> None:
        """The runtime waits on us: run our custom tools now, ask a human for gated tools (the
        turn waits for the decision, which may come from another process, on the same stream)."""
        event_ids = (idle.data.get("stop_reason") or {}).get("event_ids") or []
        asked_human = False
        for event_id in event_ids:
            use = tool_uses.get(event_id)
            if use is None:
                log.warning(
                    "requires_action for an unseen tool use",
                    extra={"session_id": ctx.session_id, "event_id": event_id},
                )
                continue
            if use.get("type") == "agent.custom_tool_use":
                text, is_error = await self._run_custom_tool(ctx, event_id, use)
                self._check_lease(ctx)
                await self.runtime.send_events(
                    runtime_session,
                    [
                        {
                            "type": "user.custom_tool_result",
                            "custom_tool_use_id": event_id,
                            "content": [{"type": "text", "text": text}],
                            "is_error": is_error,
                        }
                    ],
                )
            else:
                request = await approvals.request_approval(
                    self.db,
                    workspace_id=ctx.workspace_id,
                    session_id=ctx.session_id,
                    tool_use_id=event_id,
                    use=use,
                )
                if request is not None:
                    await append_app_event(
                        self,
                        ctx.session_id,
                        "app.approval_requested",
                        {
                            "approval_id": request.id,
                            "tool_use_id": event_id,
                            "tool_name": request.tool_name,
                            "input": request.tool_input,
                        },
                        ctx,
                    )
                asked_human = True
        deadline = ctx.extra.get("deadline")
        if deadline is not None:
            wait = self.approval_timeout if asked_human else self.turn_timeout
            deadline.reschedule(asyncio.get_running_loop().time() + wait)

    async def _run_custom_tool(
        self, ctx: TurnContext, event_id: str, use: dict[str, Any]
    ) -> tuple[str, bool]:
        """Run a custom tool of ours; answers (text, is_error) for the runtime."""
        name = use.get("name")
        if name == ESCALATE_TOOL["name"]:
            escalation = await escalations.open_from_tool(
                self.db,
                workspace_id=ctx.workspace_id,
                session_id=ctx.session_id,
                tool_use_id=event_id,
                use=use,
            )
            if escalation is not None:
                await append_app_event(
                    self,
                    ctx.session_id,
                    "app.escalation",
                    {"escalation_id": escalation.id, "reason": escalation.reason},
                    ctx,
                )
            return (
                "A human teammate has been notified and will follow up in this conversation. "
                "Tell the user so, and continue with what you can do meanwhile.",
                False,
            )
        return f"No tool named {name!r} is available.", True

    async def _mirror(self, ctx: TurnContext, events: list[RuntimeEvent]) -> list[EventRecord]:
        try:
            async with self.db.begin() as s:
                rows = await events_store.append_events(
                    s,
                    ctx.session_id,
                    [NewEvent(e.id, e.type, e.data, e.processed_at) for e in events],
                    runner_id=self.runner_id,
                )
        except events_store.NotTheRunner:
            self._lose_lease(ctx, "another runner holds the session")
            raise LeaseLost(ctx.extra["lease_lost"]) from None
        records = [record_of(ctx.session_id, r) for r in rows]
        self._meter(ctx, records)
        if records:
            self.bus.publish(ctx.session_id, records)
            # Lost meanwhile: the runner taking over replays these from the mirror.
            self._check_lease(ctx)
            for record in records:
                self._notify("turn_item", ctx, record)
        return records

    async def _report_error(self, ctx: TurnContext, code: str, message: str) -> None:
        """Errors are events too (`app.error`): the thread and the dashboard show them."""
        log.warning(
            "turn error", extra={"session_id": ctx.session_id, "code": code, "detail": message}
        )
        ctx.extra["error"] = f"{code}: {message}"
        await append_app_event(
            self, ctx.session_id, "app.error", {"code": code, "message": message}, ctx
        )

    def _notify(self, method: str, ctx: TurnContext, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(ctx, *args)
            except Exception:
                log.exception("turn observer failed", extra={"session_id": ctx.session_id})


async def append_app_event(
    runner: TurnRunner,
    session_id: str,
    type_: str,
    data: dict[str, Any],
    ctx: TurnContext | None = None,
) -> EventRecord:
    """Add an event of the app's own (`app.*`) to a session's mirror and publish it."""
    async with runner.db.begin() as s:
        rows = await events_store.append_events(
            s, session_id, [NewEvent(new_id("app"), type_, {"type": type_, **data})]
        )
    record = record_of(session_id, rows[0])
    runner.bus.publish(session_id, [record])
    if ctx is not None:
        runner._notify("turn_item", ctx, record)
    return record


def thread_of(row: Any) -> SlackThread | None:
    """The Slack thread a session row lives in, if it has one yet."""
    if not row.slack_conversation_key:
        return None
    return SlackThread(row.slack_team_id, row.slack_channel_id, row.slack_thread_ts)


def spec_of(agent: Any) -> AgentSpec:
    return AgentSpec(
        name=agent.name,
        model=agent.model,
        system=agent.system_prompt,
        approval_required_tools=tuple(agent.approval_required_tools or ()),
        custom_tools=(ESCALATE_TOOL,),
        metadata={"deployed_agent_id": agent.id, "workspace_id": agent.workspace_id},
    )


TOOL_USE_TYPES = ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use")


def _waits_for_us(event: RuntimeEvent) -> bool:
    if event.type != "session.status_idle":
        return False
    return (event.data.get("stop_reason") or {}).get("type") == "requires_action"


def _turn_end(event: RuntimeEvent) -> TurnOutcome | None:
    if event.type == "session.status_idle":
        stop = event.data.get("stop_reason") or {}
        return TurnOutcome(str(stop.get("type") or "end_turn"))
    if event.type == "session.status_terminated":
        return TurnOutcome("terminated")
    return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _text_of(data: dict[str, Any]) -> str:
    return "".join(
        block.get("text", "")
        for block in data.get("content") or []
        if isinstance(block, dict) and block.get("type") == "text"
    )


def _quiet_result(task: asyncio.Future[Any]) -> None:
    """Done callback of work nobody waits for any more: its failure is a log line."""
    if not task.cancelled() and task.exception() is not None:
        log.info("late work failed", extra={"error": repr(task.exception())})


async def _pump(stream: Any, queue: asyncio.Queue[Any]) -> None:
    try:
        async for item in stream:
            queue.put_nowait(item)
    except RuntimeFailure as exc:
        log.warning("runtime stream failed", extra={"code": exc.code})
    finally:
        queue.put_nowait(_END)
