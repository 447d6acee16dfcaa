"""Slack edge: `POST /slack/events` and the OAuth routes (built in the Slack issue)."""

from __future__ import annotations

from typing import Any


def register(app: Any, services: Any) -> None:
    """Mount the Slack routes on the shared aiohttp application."""
