"""`GET .../stream`: the SSE live tail of one session.

Frames: `id: <seq>` / `event: <type>` / `data: <event JSON>` for every mirrored event (the same
JSON as the history pages), and `event: delta` frames *without* an `id:` line for the best-effort
text fragments of an agent message being written (so they never move a client's Last-Event-ID:
the final `agent.message` event is the truth). A `: keep-alive` comment goes out after
`keepalive` seconds of silence (checked by the watchdog, so give or take `disconnect_poll`).

One read, many writes: each session watched in this process has one `SessionFeed`, the only bus
subscriber for it here. The feed encodes each event once (`FrameCache`) and writes the frame to
every watcher that is live, in one pass, without waking a task per watcher and without a
database query. A watcher that is not live (still replaying, behind, or slow) gets the items
queued for its own handler task instead, which writes them with proper flow control.

The seam between history and live: the feed is subscribed *before* a new watcher replays the
mirror after the client's last id (`Last-Event-ID`, else `?after=`, else 0: everything); what the
feed sees meanwhile is queued for the watcher; the handler writes the queue (events above the
last seq it sent) and turns live in the same step. The turn runner publishes only after the
mirror committed, so an event is either in the replay or still to come: no gap and no duplicate.
A live seq beyond last+1 is filled from the mirror by the watcher's handler; a feed whose bus
subscription overflowed resubscribes and every watcher catches up from the mirror. A client that
goes away is noticed by one watchdog for all streams (it polls the transports: aiohttp does not
cancel handlers on disconnect) and is dropped at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from router.errors import DomainError
from router.ports import TextDelta
from router.types import Actor, EventRecord

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
DISCONNECT_POLL_SECONDS = 0.25
REPLAY_PAGE = 500
# A watcher whose socket holds more than this unsent is written by its own task (which waits for
# the client) rather than by the feed (which must never wait for one client).
PUSH_BUFFER_LIMIT = 32 * 1024
MAX_PENDING = 10_000
KEEPALIVE_FRAME = b": keep-alive\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def encode_event(record: EventRecord) -> bytes:
    data = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False)
    kind = record.type.replace("\r", " ").replace("\n", " ")
    return f"id: {record.seq}\nevent: {kind}\ndata: {data}\n\n".encode()


def encode_delta(delta: TextDelta) -> bytes:
    data = json.dumps(
        {"event_id": delta.event_id, "text": delta.text}, separators=(",", ":"), ensure_ascii=False
    )
    return f"event: delta\ndata: {data}\n\n".encode()


@dataclass
class StreamStats:
    """Counters for the benchmark and the fan-out test: work done per event, not per watcher."""

    encoded: int = 0
    mirror_reads: int = 0
    frames_written: int = 0
    slow_handovers: int = 0  # live writes handed to a watcher's own task (socket backed up)


class FrameCache:
    """Each event encoded once for every watcher of its session (a small LRU)."""

    def __init__(self, stats: StreamStats, size: int = 4096) -> None:
        self._stats = stats
        self._size = size
        self._records: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        # Deltas have no seq: keyed by the object the bus handed out, kept alive while cached so
        # its id() cannot be reused by another delta.
        self._deltas: OrderedDict[int, tuple[TextDelta, bytes]] = OrderedDict()

    def record(self, record: EventRecord) -> bytes:
        key = (record.session_id, record.seq)
        frame = self._records.get(key)
        if frame is None:
            frame = encode_event(record)
            self._stats.encoded += 1
            self._records[key] = frame
            if len(self._records) > self._size:
                self._records.popitem(last=False)
        return frame

    def delta(self, delta: TextDelta) -> bytes:
        entry = self._deltas.get(id(delta))
        if entry is not None and entry[0] is delta:
            return entry[1]
        frame = encode_delta(delta)
        self._stats.encoded += 1
        self._deltas[id(delta)] = (delta, frame)
        if len(self._deltas) > self._size:
            self._deltas.popitem(last=False)
        return frame


class Watcher:
    """One open stream. `live`: the feed writes to it directly; otherwise its handler catches up
    (from the mirror when `resync`, then from `pending`) and turns live again."""

    def __init__(self, request: web.Request, response: web.StreamResponse, last: int) -> None:
        self.request = request
        self.response = response
        self.last = last  # the highest seq written to this client
        self.live = False
        self.resync = True
        self.pending: list[Any] = []
        self.gone = False
        self.changed = asyncio.Event()
        self.last_write = asyncio.get_running_loop().time()

    def disconnected(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def end(self) -> None:
        """Make the handler return (client gone or server stopping)."""
        self.gone = True
        self.live = False
        self.changed.set()

    def hold(self, item: Any = None, *, resync: bool = False) -> None:
        """Stop live writes; the handler takes over (with `item` first in its queue)."""
        self.live = False
        if item is not None:
            self.queue(item)
        if resync:
            self.resync = True
        self.changed.set()

    def queue(self, item: Any) -> None:
        self.pending.append(item)
        if len(self.pending) > MAX_PENDING:  # too far behind: read the mirror again instead
            self.pending.clear()
            self.resync = True

    async def write(self, frames: list[bytes], stats: StreamStats) -> None:
        """The handler's own writes: they wait for a slow client, the feed's never do."""
        if frames:
            await self.response.write(b"".join(frames))
            self.last_write = asyncio.get_running_loop().time()
            stats.frames_written += len(frames)

    async def push(self, frame: bytes, item: Any, stats: StreamStats) -> None:
        """A write by the feed or the watchdog: only when it cannot wait on this client."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.end()
            return
        if transport.get_write_buffer_size() + len(frame) > PUSH_BUFFER_LIMIT:
            if item is not None:  # a keep-alive for a busy socket is simply not needed
                stats.slow_handovers += 1
                self.hold(item)
            return
        try:
            await self.response.write(frame)
        except ConnectionError:
            self.end()
            return
        self.last_write = asyncio.get_running_loop().time()
        stats.frames_written += 1
        if isinstance(item, EventRecord):
            self.last = item.seq


class SessionFeed:
    """The one bus subscription of a session in this process, fanned out to its watchers."""

    def __init__(self, hub: StreamHub, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id
        self.subscription = hub.bus.subscribe(session_id)
        self.watchers: set[Watcher] = set()
        self.task = asyncio.create_task(self._run(), name=f"sse:{session_id}")

    async def _run(self) -> None:
        while True:
            if self.subscription.overflowed:
                self._resubscribe()
                continue
            items = self.subscription.drain()
            if not items:
                items.append(await self.subscription.queue.get())
                items.extend(self.subscription.drain())
            for item in items:
                try:
                    await self._forward(item)
                except Exception:  # never let one bad item stop the session's live tail
                    log.exception("stream feed failed", extra={"session_id": self.session_id})
                    for watcher in self.watchers:
                        watcher.hold(resync=True)

    def _resubscribe(self) -> None:
        fresh = self.hub.bus.subscribe(self.session_id)
        self.subscription.close()
        self.subscription = fresh
        log.info("stream feed caught up after overflow", extra={"session_id": self.session_id})
        for watcher in self.watchers:
            watcher.hold(resync=True)

    async def _forward(self, item: Any) -> None:
        frames = self.hub.frames
        if isinstance(item, EventRecord):
            frame, seq = frames.record(item), item.seq
        elif isinstance(item, TextDelta):
            frame, seq = frames.delta(item), None
        else:
            return
        stats = self.hub.stats
        for watcher in list(self.watchers):
            if not watcher.live:
                if not watcher.gone:
                    watcher.queue(item)
            elif seq is None:
                await watcher.push(frame, item, stats)
            elif seq > watcher.last + 1:
                watcher.hold(item)  # a gap: its handler fills it from the mirror
            elif seq == watcher.last + 1:
                await watcher.push(frame, item, stats)

    def close(self) -> None:
        self.task.cancel()
        self.subscription.close()


class StreamHub:
    """All SSE streams of this process: a feed per watched session, one watchdog."""

    def __init__(
        self,
        bus: Any,
        core: Any,
        *,
        keepalive: float = KEEPALIVE_SECONDS,
        disconnect_poll: float = DISCONNECT_POLL_SECONDS,
    ) -> None:
        self.bus = bus
        self.core = core
        self.keepalive = keepalive
        self.disconnect_poll = min(disconnect_poll, keepalive)
        self.stats = StreamStats()
        self.frames = FrameCache(self.stats)
        self._feeds: dict[str, SessionFeed] = {}
        self._watchers: set[Watcher] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def watching(self) -> int:
        return len(self._watchers)

    async def serve(
        self, request: web.Request, actor: Actor, agent_id: str, session_id: str, after: int
    ) -> web.StreamResponse:
        if self._closing:
            raise web.HTTPServiceUnavailable()
        # Authorised before the headers go out, so a foreign session is a plain JSON 404.
        await self.core.check_session(actor, agent_id, session_id)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        feed = self._feeds.get(session_id) or self._open_feed(session_id)
        watcher = Watcher(request, response, after)
        feed.watchers.add(watcher)  # subscribed before the replay reads the mirror
        self._add(watcher)
        log.info(
            "stream opened",
            extra={"session_id": session_id, "after": after, "watchers": self.watching},
        )
        reason = "closed"
        try:
            await self._follow(watcher, actor, agent_id, session_id)
        except ConnectionError:
            reason = "client gone"
        except DomainError as exc:  # the session vanished: nothing more to stream
            reason = exc.code
        except Exception:  # the headers are out: end the stream, the client resumes
            log.exception("stream failed", extra={"session_id": session_id})
            reason = "error"
        finally:
            watcher.end()
            self._watchers.discard(watcher)
            feed.watchers.discard(watcher)
            if not feed.watchers and self._feeds.get(session_id) is feed:
                del self._feeds[session_id]
                feed.close()
        if watcher.disconnected():
            reason = "client gone"
        log.info("stream ended", extra={"session_id": session_id, "reason": reason})
        return response

    def _open_feed(self, session_id: str) -> SessionFeed:
        feed = SessionFeed(self, session_id)
        self._feeds[session_id] = feed
        return feed

    async def _follow(self, watcher: Watcher, actor: Actor, agent_id: str, session_id: str) -> None:
        async def replay(before: int | None = None) -> None:
            while True:
                records, more = await self.core.events(
                    actor,
                    agent_id,
                    session_id,
                    limit=REPLAY_PAGE,
                    after=watcher.last,
                    before=before,
                )
                self.stats.mirror_reads += 1
                if records:
                    await watcher.write([self.frames.record(r) for r in records], self.stats)
                    watcher.last = records[-1].seq
                if not more:
                    return

        while not watcher.gone:
            if watcher.live:
                watcher.changed.clear()
                await watcher.changed.wait()
            elif watcher.resync:
                watcher.resync = False
                watcher.pending.clear()
                await replay()
            elif watcher.pending:
                items, watcher.pending = watcher.pending, []
                await self._write_items(watcher, items, replay)
            else:
                watcher.live = True  # no await since the queue was seen empty: no gap

    async def _write_items(self, watcher: Watcher, items: list[Any], replay: Any) -> None:
        frames: list[bytes] = []
        for item in items:
            if isinstance(item, EventRecord):
                if item.seq <= watcher.last:
                    continue
                if item.seq > watcher.last + 1:
                    await watcher.write(frames, self.stats)
                    frames = []
                    await replay(before=item.seq)
                frames.append(self.frames.record(item))
                watcher.last = item.seq
            elif isinstance(item, TextDelta):
                frames.append(self.frames.delta(item))
        await watcher.write(frames, self.stats)

    def _add(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="sse:watchdog")

    async def _watch(self) -> None:
        """Every `disconnect_poll` s: end streams whose client left, keep quiet ones alive."""
        loop = asyncio.get_running_loop()
        while self._watchers:
            await asyncio.sleep(self.disconnect_poll)
            now = loop.time()
            for watcher in list(self._watchers):
                if watcher.gone:
                    continue
                if watcher.disconnected():
                    watcher.end()
                elif watcher.live and now - watcher.last_write >= self.keepalive:
                    await watcher.push(KEEPALIVE_FRAME, None, self.stats)

    async def close(self) -> None:
        """End every stream (server shutdown): clients reconnect elsewhere with Last-Event-ID."""
        self._closing = True
        for watcher in list(self._watchers):
            watcher.end()
        for feed in list(self._feeds.values()):
            feed.close()
        self._feeds.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
