"""The runtime's wire events -> the core's `RuntimeEvent` / `TextDelta`.

Everything branches on the `type` string, never on the SDK's classes: the SDK parses an event type
it does not know into some other class, and such events must still reach the mirror unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router.ports import RuntimeEvent, TextDelta

logger = logging.getLogger(__name__)

# Stream-only frames that are not part of a session's history.
_PREVIEW_TYPES = frozenset({"event_start", "ping"})


def wire_dict(event: Any) -> dict[str, Any]:
    """An SDK event (a pydantic model) or an already decoded frame as a JSON-ready dict, holding
    only the fields the runtime sent."""
    if isinstance(event, Mapping):
        return dict(event)
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return to_dict(mode="json")
    return event.model_dump(mode="json", exclude_unset=True)


def from_wire(data: Mapping[str, Any]) -> RuntimeEvent | TextDelta | None:
    """One stream frame or history item -> what the core reads; None for frames it does not need
    (`event_start`, pings, deltas without text)."""
    kind = data.get("type")
    if kind == "event_delta":
        return _text_delta(data)
    if not isinstance(kind, str) or kind in _PREVIEW_TYPES:
        return None
    event_id = data.get("id")
    if not isinstance(event_id, str) or not event_id:
        logger.warning("runtime event without an id dropped", extra={"event_type": kind})
        return None
    return RuntimeEvent(
        id=event_id,
        type=kind,
        data=dict(data),
        processed_at=parse_time(data.get("processed_at")),
    )


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string (or datetime) as an aware UTC datetime; None when absent or unreadable."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _text_delta(data: Mapping[str, Any]) -> TextDelta | None:
    event_id = data.get("event_id")
    delta = data.get("delta")
    if not isinstance(event_id, str) or not isinstance(delta, Mapping):
        return None
    if delta.get("type") != "content_delta":
        return None
    content = delta.get("content")
    if not isinstance(content, Mapping) or content.get("type") != "text":
        return None
    text = content.get("text")
    if not isinstance(text, str) or not text:
        return None
    return TextDelta(event_id=event_id, text=text)
