"""Fixtures of the dashboard tests: the whole app on a free port (behind HS256 tokens), the fake
managed-agents API for turns, and a small HTTP client that speaks the dashboard's JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

import app as app_module
from tests.conftest import FAKE_API_KEY, RunningApp, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic

SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
API_KEY = FAKE_API_KEY  # the key the shared `fake_runtime` fixture expects
WORKSPACE = "ws_alpha"
OTHER_WORKSPACE = "ws_beta"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class Api:
    """A dashboard client: JSON in and out, with a bearer token per call (default: workspace A)."""

    def __init__(self, running: RunningApp, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.base_url = running.base_url
        self.http = http
        self.token = self.token_for(WORKSPACE)
        self.other_token = self.token_for(OTHER_WORKSPACE)

    def token_for(self, workspace: str, user: str = "user_1", ttl: int = 3600) -> str:
        return app_module.make_token(self.running.settings, workspace, user, ttl)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method,
            self.base_url + path,
            json=json,
            data=data,
            headers=all_headers,
            params=params,
        ) as response:
            raw = await response.read()
            body: Any = None
            if response.content_type == "application/json":
                body = await response.json()
            elif raw:
                body = raw.decode(errors="replace")
            return Reply(response.status, body, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("POST", path, **kwargs)

    async def agent(self, token: str | None = "default", **fields: Any) -> dict[str, Any]:
        body = {"name": "helper", "model": "claude-sonnet-4-5", "system": "Be brief.", **fields}
        reply = await self.post("/dashboard/agents", json=body, token=token)
        assert reply.status == 201, reply.body
        return reply.body

    async def session(
        self, agent_id: str, text: str | None = None, token: str | None = "default"
    ) -> dict[str, Any]:
        body = {} if text is None else {"text": text}
        reply = await self.post(f"/dashboard/agents/{agent_id}/sessions", json=body, token=token)
        assert reply.status == 201, reply.body
        return reply.body


def assert_error(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    assert set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) == {"code", "message"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture
async def running(database: TestDatabase, fake_runtime: FakeAnthropic) -> AsyncIterator[RunningApp]:
    app = await start_app(
        database,
        supabase_jwt_secret=SECRET,
        anthropic_api_key=API_KEY,
        anthropic_base_url=fake_runtime.base_url,
        dashboard_origin="https://dash.example.com",
        turn_timeout_seconds=30,
    )
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def api(running: RunningApp) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(running, http)
