"""A small server-sent-events reader over an aiohttp response (what an EventSource does)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Frame:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 15.0) -> Frame:
        """The next frame: an event, or a frame holding only comment lines."""
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def _read_frame(self) -> Frame:
        frame = Frame()
        data: list[str] = []
        seen = False
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n").rstrip("\r")
            if not line:
                if seen:
                    frame.data = "\n".join(data)
                    return frame
                continue
            seen = True
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                frame.event = value
            elif name == "id":
                frame.id = value

    async def events_until(self, stop_type: str, timeout: float = 20.0) -> list[Frame]:
        """Every frame with an id up to and including the first of type `stop_type`."""
        frames: list[Frame] = []
        while True:
            frame = await self.next(timeout)
            if frame.id is not None:
                frames.append(frame)
                if frame.event == stop_type:
                    return frames
