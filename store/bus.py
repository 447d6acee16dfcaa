"""LiveBus: per-session fan-out of what a turn produces (mirrored events and text deltas).

In process for now: `publish` hands the same objects to every subscriber of the session, so the
work per event does not grow with the number of watchers beyond one queue put each. A subscriber
that falls more than `max_backlog` items behind is marked `overflowed` and gets nothing more: it
must catch up from the mirror (the SSE route does), so a slow watcher never holds memory or the
publisher back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, bus: LiveBus, session_id: str, max_backlog: int) -> None:
        self._bus = bus
        self.session_id = session_id
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_backlog)
        self.overflowed = False
        self.closed = False

    def offer(self, item: Any) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self, timeout: float | None = None) -> Any:
        """The next item; raises TimeoutError after `timeout` seconds without one."""
        if timeout is None:
            return await self.queue.get()
        return await asyncio.wait_for(self.queue.get(), timeout)

    def drain(self) -> list[Any]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LiveBus:
    def __init__(self, max_backlog: int = 10_000) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._max_backlog = max_backlog

    def subscribe(self, session_id: str) -> Subscription:
        sub = Subscription(self, session_id, self._max_backlog)
        self._subs[session_id].add(sub)
        return sub

    def publish(self, session_id: str, items: Iterable[Any]) -> None:
        subs = self._subs.get(session_id)
        if not subs:
            return
        items = list(items)
        for sub in list(subs):
            for item in items:
                sub.offer(item)

    def watchers(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]


class PgLiveBus(LiveBus):
    """LiveBus across processes on one PostgreSQL: LISTEN/NOTIFY with `session:first:last`.

    `publish` fans out locally at once and NOTIFYs the other processes with the seq range it
    published (never the events themselves: payloads are capped at 8 kB). A process with local
    watchers of that session reads the range once (`load`) and fans it out to all of them, so
    the database work per event does not grow with the watchers. Text deltas stay local.
    After a lost connection (PostgreSQL restarted) the listener reconnects and reloads, for
    every watched session, what came after the last seq it delivered.
    """

    def __init__(
        self,
        dsn: str,
        load: Any,
        *,
        channel: str = "session_events",
        search_path: str | None = None,
        max_backlog: int = 10_000,
        reconnect_delay: float = 0.5,
    ) -> None:
        super().__init__(max_backlog)
        self._dsn = dsn
        self._load = load
        self._channel = channel
        self._search_path = search_path
        self._origin = uuid.uuid4().hex[:12]
        self._conn: Any = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._last: dict[str, int] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._wanted: dict[str, int] = {}
        self._reconnect_delay = reconnect_delay
        self._connected = asyncio.Event()
        self.notifications_received = 0
        self.rows_loaded = 0

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(), name="bus:listen"))
        self._tasks.append(asyncio.create_task(self._send_loop(), name="bus:notify"))
        await asyncio.wait_for(self._connected.wait(), timeout=10)

    async def close(self) -> None:
        for task in [*self._tasks, *self._loading.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._loading.values(), return_exceptions=True)
        self._tasks.clear()
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _remove(self, sub: Subscription) -> None:
        super()._remove(sub)
        if not self.watchers(sub.session_id):
            self._last.pop(sub.session_id, None)
            self._wanted.pop(sub.session_id, None)

    def publish(self, session_id: str, items: Iterable[Any]) -> None:
        items = list(items)
        super().publish(session_id, items)
        seqs = [item.seq for item in items if getattr(item, "seq", None) is not None]
        if seqs:
            if self.watchers(session_id):
                self._last[session_id] = max(self._last.get(session_id, 0), max(seqs))
            self._outbox.put_nowait(f"{self._origin}:{session_id}:{min(seqs)}:{max(seqs)}")

    async def _connect(self) -> Any:
        import asyncpg

        settings = {"search_path": self._search_path} if self._search_path else None
        conn = await asyncpg.connect(self._dsn, server_settings=settings)
        await conn.add_listener(self._channel, self._on_notify)
        return conn

    async def _supervise(self) -> None:
        first = True
        while True:
            try:
                self._conn = await self._connect()
            except Exception as exc:  # PostgreSQL down: keep trying
                log.warning("live bus cannot listen yet", extra={"error": repr(exc)})
                await asyncio.sleep(self._reconnect_delay)
                continue
            self._connected.set()
            if not first:
                self._catch_up_all()
            first = False
            lost = asyncio.Event()
            self._conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._reconnect_delay * 2)
                # asyncpg does not call termination listeners when it aborts a connection
                # itself (a failed operation while PostgreSQL shuts down): look, too.
                if self._conn.is_closed():
                    break
            self._connected.clear()
            log.warning("live bus lost its connection; reconnecting")
            await asyncio.sleep(self._reconnect_delay)

    async def _send_loop(self) -> None:
        while True:
            payload = await self._outbox.get()
            while True:
                await self._connected.wait()
                try:
                    await self._conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)
                    break
                except Exception as exc:  # connection lost mid-send: the supervisor reconnects
                    log.warning("live bus notify failed", extra={"error": repr(exc)})
                    await asyncio.sleep(self._reconnect_delay)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, session_id, first, last = payload.rsplit(":", 3)
            first_seq, last_seq = int(first), int(last)
        except ValueError:
            log.warning("live bus: bad payload", extra={"payload": payload[:200]})
            return
        self.notifications_received += 1
        if origin == self._origin or not self.watchers(session_id):
            return
        # A session first heard of now: start from the announced range, not its whole history.
        self._last.setdefault(session_id, first_seq - 1)
        self._want(session_id, last_seq)

    def _want(self, session_id: str, up_to: int) -> None:
        self._wanted[session_id] = max(self._wanted.get(session_id, 0), up_to)
        task = self._loading.get(session_id)
        if task is None or task.done():
            self._loading[session_id] = asyncio.create_task(self._load_loop(session_id))

    def _catch_up_all(self) -> None:
        for session_id in list(self._subs):
            self._want(session_id, 2**62)

    async def _load_loop(self, session_id: str) -> None:
        """One reader per session: load what was announced, in order, once for all watchers."""
        try:
            while self._wanted.get(session_id, 0) > self._last.get(session_id, 0):
                wanted = self._wanted[session_id]
                after = self._last.get(session_id)
                records = await self._load(session_id, after, None if wanted >= 2**62 else wanted)
                if not records:
                    self._wanted[session_id] = self._last.get(session_id, 0)
                    break
                self.rows_loaded += len(records)
                self._last[session_id] = max(r.seq for r in records)
                LiveBus.publish(self, session_id, records)
        except Exception:
            log.exception("live bus could not load events", extra={"session_id": session_id})
        finally:
            self._loading.pop(session_id, None)
