"""Opaque keyset cursors for lists ordered by (created_at, id)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from router.errors import InvalidInput


def encode(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not one this API gave out") from exc


def next_of(rows: list[Any], more: bool) -> str | None:
    """The cursor for the page after `rows` (rows ordered newest first), or None at the end."""
    return encode(rows[-1].created_at, rows[-1].id) if more and rows else None
