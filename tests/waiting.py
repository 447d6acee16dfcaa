"""Bounded polling for effects that happen after a call returns (never timing assertions)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.02
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value; fail after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)
