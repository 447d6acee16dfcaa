"""The builder tools over MCP (streamable HTTP at /mcp), driven by the official `mcp` client over
loopback HTTP with the dashboard's bearer token, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from router.builder import BUILDER_TOOLS
from tests.builder.conftest import OTHER_ACTOR, chat, deploy
from tests.dashboard.conftest import assert_error


@asynccontextmanager
async def mcp_session(base_url: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                yield session


async def test_a_claude_agent_can_list_and_call_the_builder_tools(api, running):
    agent = await deploy(running)
    session_id = await chat(running, agent, "the invoice for acme is overdue")

    async with mcp_session(api.base_url, api.token) as client:
        hello = await client.initialize()
        assert hello.server_info.name == "slack-agents-builder"
        assert hello.capabilities.tools is not None
        await client.send_ping()

        listed = await client.list_tools()
        tools = {t.name: t for t in listed.tools}
        assert set(tools) == set(BUILDER_TOOLS)
        for name, listed_tool in tools.items():
            assert listed_tool.input_schema == BUILDER_TOOLS[name].input_schema
            assert listed_tool.output_schema == BUILDER_TOOLS[name].output_schema
            assert listed_tool.description

        # The client checks structured content against the listed output schema itself.
        sessions = await client.call_tool("list_live_agent_sessions", {"agent_id": agent})
        assert not sessions.is_error
        assert [s["id"] for s in sessions.structured_content["sessions"]] == [session_id]
        assert session_id in sessions.content[0].text

        found = await client.call_tool(
            "search_live_agent_sessions", {"agent_id": agent, "query": "overdue invoice"}
        )
        results = found.structured_content["results"]
        assert {r["type"] for r in results} == {"user.message", "agent.message"}
        assert all("**invoice**" in r["snippet"] for r in results)

        history = await client.call_tool(
            "read_live_agent_session", {"agent_id": agent, "session_id": session_id}
        )
        assert history.structured_content["events"][0]["type"] == "user.message"

        usage = await client.call_tool(
            "get_agent_session_usage", {"agent_id": agent, "session_id": session_id}
        )
        assert not usage.is_error
        runs = await client.call_tool("list_agent_trigger_runs", {"agent_id": agent})
        assert runs.structured_content["runs"] == []


async def test_tool_failures_come_back_as_error_results_a_model_can_read(api, running):
    theirs = await deploy(running, OTHER_ACTOR)
    async with mcp_session(api.base_url, api.token) as client:
        await client.initialize()
        missing = await client.call_tool("list_live_agent_sessions", {})
        assert missing.is_error and "agent_id" in missing.content[0].text
        bad = await client.call_tool("list_live_agent_sessions", {"agent_id": "a", "limit": 0})
        assert bad.is_error and "limit" in bad.content[0].text
        foreign = await client.call_tool("list_live_agent_sessions", {"agent_id": theirs})
        assert foreign.is_error and "agent_not_found" in foreign.content[0].text
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("drop_all_tables", {})


async def test_mcp_requires_the_dashboard_token(api):
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert_error(await api.post("/mcp", json=request, token=None), 401, "unauthenticated")
    assert_error(await api.post("/mcp", json=request, token="forged"), 401)
    with pytest.raises(ExceptionGroup) as refused:
        async with mcp_session(api.base_url, "forged") as client:
            await client.initialize()
    assert refused.group_contains(MCPError, depth=None)


async def test_raw_json_rpc_edges(api):
    listed = await api.post("/mcp", json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    assert listed.status == 200 and listed.body["id"] == 7
    assert len(listed.body["result"]["tools"]) == len(BUILDER_TOOLS)

    notified = await api.post(
        "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert notified.status == 202 and not notified.body

    unknown = await api.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "resources/list"})
    assert unknown.body["error"]["code"] == -32601

    parse = await api.post("/mcp", data=b"{", headers={"Content-Type": "application/json"})
    assert parse.status == 400 and parse.body["error"]["code"] == -32700

    invalid = await api.post("/mcp", json={"id": 3, "method": "ping"})
    assert invalid.body["error"]["code"] == -32600

    batch = await api.post(
        "/mcp",
        json=[
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ],
    )
    assert batch.body == [{"jsonrpc": "2.0", "id": "a", "result": {}}]

    old = await api.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 4,
            "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}},
        },
    )
    assert old.body["result"]["protocolVersion"] == "2025-03-26"

    wrong_version = await api.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 5, "method": "ping"},
        headers={"MCP-Protocol-Version": "1999-01-01"},
    )
    assert wrong_version.status == 400

    assert_error(await api.get("/mcp"), 405)

    rebound = await api.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 6, "method": "ping"},
        headers={"Origin": "https://evil.example"},
    )
    assert rebound.status == 403 and rebound.body["error"]["code"] == -32600
