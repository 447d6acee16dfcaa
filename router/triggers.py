"""Sessions started by schedules and webhook deliveries.

Schedules: each fire creates a fresh session (source `schedule`) whose first message is the
schedule's `input_text`. A fire is claimed in the database, so several processes fire each
occurrence once. Catch-up policy: a process that finds fires missed while everything was down
runs the schedule once, now, and moves on to the next occurrence after now (never once per
missed fire). A schedule may name a Slack channel: the answer is posted there as a new message
and that message's thread continues the session.

Webhooks: `POST /webhooks/:id` signed with the endpoint's secret creates a session (source
`webhook`) whose first message is the delivery's JSON. An `Idempotency-Key` header, or else the
same body within `BODY_WINDOW`, is run once: a replay answers the first delivery's ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from router import cursors
from router.errors import AgentNotFound, DomainError, InvalidInput, NotFound, WalletEmpty
from router.sessions import SessionService
from router.types import Actor, Page
from store import agents as agents_store
from store import queue as queue_store
from store import sessions as sessions_store
from store import triggers as triggers_store
from store.models import utcnow

log = logging.getLogger(__name__)

BODY_WINDOW = timedelta(minutes=10)
MAX_INPUT_CHARS = 100_000


class BadSignature(DomainError):
    code = "bad_signature"


class MalformedBody(DomainError):
    code = "malformed_body"


@dataclass(frozen=True, slots=True)
class ScheduleView:
    id: str
    agent_id: str
    cron: str
    timezone: str
    input_text: str
    enabled: bool
    slack_team_id: str | None
    slack_channel_id: str | None
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookView:
    id: str
    agent_id: str
    secret: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    session_id: str
    trigger_run_id: str
    replay: bool


@dataclass(frozen=True, slots=True)
class TriggerRunView:
    id: str
    kind: str
    schedule_id: str | None
    webhook_endpoint_id: str | None
    session_id: str | None
    session_status: str | None
    status: str
    error: str | None
    fire_time: datetime | None
    created_at: datetime
    finished_at: datetime | None


def _schedule_view(row: Any) -> ScheduleView:
    return ScheduleView(
        row.id,
        row.deployed_agent_id,
        row.cron,
        row.timezone,
        row.input_text,
        row.enabled,
        row.slack_team_id,
        row.slack_channel_id,
        row.next_fire_at,
        row.last_fired_at,
        row.created_at,
    )


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first occurrence strictly after `after`, in the schedule's zone, as UTC."""
    zone = ZoneInfo(timezone)
    following = croniter(cron, after.astimezone(zone)).get_next(datetime)
    return following.astimezone(ZoneInfo("UTC"))


def validate_schedule(cron: str, timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"timezone: {timezone!r} is not an IANA time zone") from exc
    if not croniter.is_valid(cron):
        raise InvalidInput(f"cron: {cron!r} is not a cron expression")
    try:
        next_fire(cron, timezone, utcnow())
    except CroniterError as exc:  # valid fields that never meet (`0 0 31 2 *`)
        raise InvalidInput(f"cron: {cron!r} never fires") from exc


def _message_text(payload: Any) -> str:
    """The delivery as the session's first message; escaped where JSON carried a lone surrogate
    (`"\\ud800"`), which neither database can store as text."""
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(payload, indent=2)
    return text[:MAX_INPUT_CHARS]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Triggers:
    def __init__(self, core: SessionService, *, clock: Any = utcnow) -> None:
        self.core = core
        self.db = core.db
        self.clock = clock
        self._loop_task: asyncio.Task[None] | None = None

    # -- schedules ----------------------------------------------------------------------------

    async def _agent(self, s: Any, actor: Actor, agent_id: str) -> Any:
        agent = await agents_store.get_agent(s, agent_id, workspace_id=actor.workspace_id)
        if agent is None:
            raise AgentNotFound(f"no agent {agent_id}")
        return agent

    async def create_schedule(
        self,
        actor: Actor,
        agent_id: str,
        *,
        cron: str,
        timezone: str,
        input_text: str,
        enabled: bool = True,
        slack_team_id: str | None = None,
        slack_channel_id: str | None = None,
    ) -> ScheduleView:
        validate_schedule(cron, timezone)
        if bool(slack_team_id) != bool(slack_channel_id):
            raise InvalidInput("slack: give both team_id and channel_id, or neither")
        async with self.db.begin() as s:
            await self._agent(s, actor, agent_id)
            row = await triggers_store.create_schedule(
                s,
                workspace_id=actor.workspace_id,
                agent_id=agent_id,
                cron=cron,
                timezone=timezone,
                input_text=input_text,
                enabled=enabled,
                next_fire_at=next_fire(cron, timezone, self.clock()) if enabled else None,
                slack_team_id=slack_team_id,
                slack_channel_id=slack_channel_id,
                created_by=actor.user_id,
            )
        return _schedule_view(row)

    async def list_schedules(self, actor: Actor, agent_id: str) -> list[ScheduleView]:
        async with self.db() as s:
            await self._agent(s, actor, agent_id)
            rows = await triggers_store.list_schedules(s, agent_id)
        return [_schedule_view(r) for r in rows]

    async def delete_schedule(self, actor: Actor, agent_id: str, schedule_id: str) -> None:
        async with self.db.begin() as s:
            await self._agent(s, actor, agent_id)
            if not await triggers_store.delete_schedule(s, agent_id, schedule_id):
                raise NotFound(f"no schedule {schedule_id}")

    async def fire_due(self) -> int:
        """Fire every schedule that is due; returns how many fires this process took."""
        now = self.clock()
        async with self.db() as s:
            due = await triggers_store.due_schedules(s, now)
        fired = 0
        for schedule in due:
            try:
                following: datetime | None = next_fire(schedule.cron, schedule.timezone, now)
            except Exception:  # croniter: no occurrence left (a year field that has passed)
                log.info("schedule has no later occurrence", extra={"schedule_id": schedule.id})
                following = None
            try:
                if await self._fire(schedule, seen_next=schedule.next_fire_at, new_next=following):
                    fired += 1
            except Exception:  # one broken schedule must not stop the others from firing
                log.exception("schedule fire failed", extra={"schedule_id": schedule.id})
        return fired

    async def _fire(self, schedule: Any, *, seen_next: datetime, new_next: datetime | None) -> bool:
        now = self.clock()
        async with self.db.begin() as s:
            if not await triggers_store.claim_fire(
                s, schedule.id, seen_next=seen_next, new_next=new_next, now=now
            ):
                return False  # another process took this fire
            run = await triggers_store.start_run(
                s,
                workspace_id=schedule.workspace_id,
                agent_id=schedule.deployed_agent_id,
                kind="schedule",
                schedule_id=schedule.id,
                fire_time=seen_next,
            )
            if run is None:
                return False
            try:
                await self.core.runner.billing.check_can_run(s, schedule.workspace_id)
            except WalletEmpty as exc:
                await triggers_store.fail_run(s, run.id, exc.message)
                log.warning("schedule skipped: wallet empty", extra={"schedule_id": schedule.id})
                return True
            session = await sessions_store.create_session(
                s,
                workspace_id=schedule.workspace_id,
                deployed_agent_id=schedule.deployed_agent_id,
                source="schedule",
                title=schedule.input_text[:80],
                created_by=f"schedule:{schedule.id}",
            )
            if schedule.slack_channel_id:
                await sessions_store.set_slack_target(
                    s,
                    session.id,
                    team_id=schedule.slack_team_id,
                    channel_id=schedule.slack_channel_id,
                )
            await queue_store.enqueue(
                s, session.id, text=schedule.input_text, author=f"schedule:{schedule.id}"
            )
            await triggers_store.attach_session(s, run.id, session.id)
        log.info(
            "schedule fired",
            extra={
                "schedule_id": schedule.id,
                "session_id": session.id,
                "fire_time": str(seen_next),
            },
        )
        self.core.runner.kick(session.id)
        return True

    def start(self, every: float = 1.0) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(every), name="triggers:schedules")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None

    async def _loop(self, every: float) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                log.exception("schedule pass failed")
            await asyncio.sleep(every)

    # -- webhooks -----------------------------------------------------------------------------

    async def create_webhook(self, actor: Actor, agent_id: str) -> WebhookView:
        async with self.db.begin() as s:
            await self._agent(s, actor, agent_id)
            row = await triggers_store.create_endpoint(
                s,
                workspace_id=actor.workspace_id,
                agent_id=agent_id,
                secret=secrets.token_urlsafe(32),
                created_by=actor.user_id,
            )
        return WebhookView(row.id, agent_id, row.secret, row.created_at)

    async def deliver(
        self,
        endpoint_id: str,
        body: bytes,
        *,
        signature: str | None,
        idempotency_key: str | None,
    ) -> Delivery:
        """Check, then create the session; nothing is created for a refused delivery."""
        async with self.db() as s:
            endpoint = await triggers_store.get_endpoint(s, endpoint_id)
        if endpoint is None or not endpoint.enabled:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        expected = sign(endpoint.secret, body)
        if not signature or not hmac.compare_digest(signature.strip(), expected):
            raise BadSignature(
                "X-Signature does not match the body signed with this endpoint's secret"
            )
        try:
            text = _message_text(json.loads(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedBody(f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise MalformedBody("the body's JSON is nested too deeply") from exc
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
            raise InvalidInput("Idempotency-Key: 1 to 200 characters")
        key = (
            f"key:{idempotency_key}"
            if idempotency_key
            else f"body:{hashlib.sha256(body).hexdigest()}"
        )
        for _ in range(3):
            async with self.db.begin() as s:
                previous = await triggers_store.find_run_by_key(s, endpoint.id, key)
                if previous is not None:
                    stale = (
                        key.startswith("body:") and previous.created_at < self.clock() - BODY_WINDOW
                    )
                    if not stale:
                        return Delivery(previous.session_id or "", previous.id, replay=True)
                    await triggers_store.retire_key(s, previous.id, key)
                await self.core.runner.billing.check_can_run(s, endpoint.workspace_id)
                run = await triggers_store.start_run(
                    s,
                    workspace_id=endpoint.workspace_id,
                    agent_id=endpoint.deployed_agent_id,
                    kind="webhook",
                    webhook_endpoint_id=endpoint.id,
                    idempotency_key=key,
                )
                if run is None:
                    continue  # a concurrent delivery of the same key won: read its ids
                session = await sessions_store.create_session(
                    s,
                    workspace_id=endpoint.workspace_id,
                    deployed_agent_id=endpoint.deployed_agent_id,
                    source="webhook",
                    title=f"Webhook {endpoint.id}",
                    created_by=f"webhook:{endpoint.id}",
                )
                await queue_store.enqueue(s, session.id, text=text, author=f"webhook:{endpoint.id}")
                await triggers_store.attach_session(s, run.id, session.id)
            self.core.runner.kick(session.id)
            return Delivery(session.id, run.id, replay=False)
        raise DomainError("the delivery could not be recorded; try again")

    async def list_runs(
        self, actor: Actor, agent_id: str, *, limit: int, cursor: str | None
    ) -> Page:
        after = cursors.decode(cursor) if cursor else None
        async with self.db() as s:
            await self._agent(s, actor, agent_id)
            rows, more = await triggers_store.list_runs(s, agent_id, limit=limit, cursor=after)
            statuses = {}
            for r in rows:
                if r.session_id and r.session_id not in statuses:
                    session = await sessions_store.get_session(s, r.session_id)
                    statuses[r.session_id] = session.status if session else None
        items = [
            TriggerRunView(
                r.id,
                r.kind,
                r.schedule_id,
                r.webhook_endpoint_id,
                r.session_id,
                statuses.get(r.session_id) if r.session_id else None,
                r.status,
                r.error,
                r.fire_time,
                r.created_at,
                r.finished_at,
            )
            for r in rows
        ]
        next_cursor = cursors.next_of(rows, more)
        return Page(items, more, next_cursor)
