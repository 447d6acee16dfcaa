"""Dashboard edge: REST, SSE and webhook routes (built in the dashboard issue)."""

from __future__ import annotations

from typing import Any


def register(app: Any, services: Any) -> None:
    """Mount the dashboard routes on the shared aiohttp application."""
