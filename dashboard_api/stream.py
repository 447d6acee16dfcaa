"""`GET .../stream`: the SSE live tail of one session.

Frames: `id: <seq>` / `event: <type>` / `data: <event JSON>` for every mirrored event (the same
JSON as the history pages), and `event: delta` frames *without* an `id:` line for the best-effort
text fragments of an agent message being written (so they never move a client's Last-Event-ID:
the final `agent.message` event is the truth). A `: keep-alive` comment goes out after
`keepalive` seconds of silence (checked by the watchdog, so give or take `disconnect_poll`).

The seam between history and live: the watcher subscribes to the live bus *first*, then replays
the mirror after the client's last id (`Last-Event-ID`, else `?after=`, else 0: everything), then
forwards live events whose seq is above the last one sent. The turn runner publishes only after
the mirror committed, so an event is either in the replay or still to come on the bus: no gap and
no duplicate. A live seq beyond last+1 is filled from the mirror first; a subscription the bus
marked `overflowed` (a slow client) is replaced and caught up from the mirror.

One read, many writes: the bus hands the same record object to every watcher and `FrameCache`
encodes each `(session, seq)` once, so per live event the work per extra watcher is one queue put
and one socket write, never a database query or a JSON encoding. A client that goes away is
noticed by a single watchdog for all streams (it polls the transports, aiohttp does not cancel
handlers on disconnect) and its subscription is dropped at once.
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
KEEPALIVE_FRAME = b": keep-alive\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

_GONE = object()
_PING = object()


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
    """One open stream: its response, its current bus subscription, when it last wrote."""

    def __init__(self, request: web.Request, subscription: Any) -> None:
        self.request = request
        self.subscription = subscription
        self.response: web.StreamResponse | None = None
        self.gone = False
        self.ping_pending = False
        self.last_write = asyncio.get_running_loop().time()

    def disconnected(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def wake(self, signal: object) -> None:
        """Hand the handler a signal through its own queue (a full queue means the handler is
        busy and will look at `gone` or `overflowed` before waiting again)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.subscription.queue.put_nowait(signal)

    def end(self) -> None:
        """Make the handler return (client gone or server stopping)."""
        self.gone = True
        self.wake(_GONE)

    async def write(self, frames: list[bytes], stats: StreamStats) -> None:
        if frames and self.response is not None:
            await self.response.write(b"".join(frames))
            self.last_write = asyncio.get_running_loop().time()
            stats.frames_written += len(frames)


class StreamHub:
    """All SSE streams of this process.

    Each stream's handler waits on its bus queue without a timer of its own; one watchdog task
    for all streams notices closed connections and asks quiet streams for a keep-alive comment,
    so the per-event cost of a watcher is a queue wake-up and a socket write."""

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
        watcher = Watcher(request, self.bus.subscribe(session_id))
        try:
            # Authorised before the headers go out, so a foreign session is a plain JSON 404.
            await self.core.check_session(actor, agent_id, session_id)
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
        except BaseException:
            watcher.subscription.close()
            raise
        watcher.response = response
        self._add(watcher)
        log.info(
            "stream opened",
            extra={"session_id": session_id, "after": after, "watchers": self.watching},
        )
        reason = "closed"
        try:
            await self._follow(watcher, actor, agent_id, session_id, after)
        except ConnectionError:
            reason = "client gone"
        except DomainError as exc:  # the session vanished: nothing more to stream
            reason = exc.code
        except Exception:  # the headers are out: end the stream, the client resumes
            log.exception("stream failed", extra={"session_id": session_id})
            reason = "error"
        finally:
            watcher.subscription.close()
            self._watchers.discard(watcher)
        if watcher.gone and watcher.disconnected():
            reason = "client gone"
        log.info("stream ended", extra={"session_id": session_id, "reason": reason})
        return response

    async def _follow(
        self, watcher: Watcher, actor: Actor, agent_id: str, session_id: str, after: int
    ) -> None:
        async def replay(last: int, before: int | None = None) -> int:
            while True:
                records, more = await self.core.events(
                    actor, agent_id, session_id, limit=REPLAY_PAGE, after=last, before=before
                )
                self.stats.mirror_reads += 1
                if records:
                    await watcher.write([self.frames.record(r) for r in records], self.stats)
                    last = records[-1].seq
                if not more:
                    return last

        last = await replay(after)
        while not watcher.gone:
            if watcher.subscription.overflowed:
                fresh = self.bus.subscribe(session_id)
                watcher.subscription.close()
                watcher.subscription = fresh
                log.info("stream caught up after overflow", extra={"session_id": session_id})
                last = await replay(last)
                continue
            items = watcher.subscription.drain()
            if not items:
                items.append(await watcher.subscription.queue.get())
                items.extend(watcher.subscription.drain())
            frames: list[bytes] = []
            for item in items:
                if item is _GONE:
                    watcher.gone = True
                elif item is _PING:
                    watcher.ping_pending = False
                    frames.append(KEEPALIVE_FRAME)
                elif isinstance(item, EventRecord):
                    if item.seq <= last:
                        continue
                    if item.seq > last + 1:
                        await watcher.write(frames, self.stats)
                        frames = []
                        last = await replay(last, before=item.seq)
                    frames.append(self.frames.record(item))
                    last = item.seq
                elif isinstance(item, TextDelta):
                    frames.append(self.frames.delta(item))
            await watcher.write(frames, self.stats)

    def _add(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="sse:watchdog")

    async def _watch(self) -> None:
        """Every `disconnect_poll` s: end streams whose client left, ping quiet ones."""
        loop = asyncio.get_running_loop()
        while self._watchers:
            await asyncio.sleep(self.disconnect_poll)
            now = loop.time()
            for watcher in list(self._watchers):
                if watcher.gone:
                    continue
                if watcher.disconnected():
                    watcher.end()
                elif now - watcher.last_write >= self.keepalive and not watcher.ping_pending:
                    watcher.ping_pending = True
                    watcher.wake(_PING)

    async def close(self) -> None:
        """End every stream (server shutdown): clients reconnect elsewhere with Last-Event-ID."""
        self._closing = True
        for watcher in list(self._watchers):
            watcher.end()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
