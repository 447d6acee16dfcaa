"""LiveBus: per-session fan-out of what a turn produces (mirrored events and text deltas).

In process for now: `publish` hands the same objects to every subscriber of the session, so the
work per event does not grow with the number of watchers beyond one queue put each. A subscriber
that falls more than `max_backlog` items behind is marked `overflowed` and gets nothing more: it
must catch up from the mirror (the SSE route does), so a slow watcher never holds memory or the
publisher back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


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
