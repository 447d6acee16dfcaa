"""Agents over real HTTP: deploy, list, read; validation, workspace isolation, error shapes."""

from __future__ import annotations

from tests.dashboard.conftest import Api, assert_error


async def test_deploy_answers_the_agent_and_echoes_what_was_asked(api: Api) -> None:
    body = {
        "name": "triage",
        "model": "claude-sonnet-4-5",
        "system": "Sort the tickets.",
        "approval_required_tools": ["bash", "web_fetch"],
        "slack": {"team_id": "T1", "channel_ids": ["C1", "C2"], "default": True},
    }
    reply = await api.post("/dashboard/agents", json=body)
    assert reply.status == 201, reply.body
    agent = reply.body
    assert {k: agent[k] for k in body} == body
    assert agent["id"].startswith("agt_")
    assert agent["workspace_id"] == "ws_alpha"
    assert agent["anthropic_agent_id"]  # deployed to the (fake) runtime at once
    assert agent["created_at"]

    read = await api.get(f"/dashboard/agents/{agent['id']}")
    assert read.status == 200
    assert read.body == agent


async def test_agent_without_slack_binding_answers_slack_null(api: Api) -> None:
    agent = await api.agent()
    assert agent["slack"] is None
    assert agent["approval_required_tools"] == []


async def test_list_pages_newest_first_with_a_keyset_cursor(api: Api) -> None:
    made = [(await api.agent(name=f"agent {i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await api.get("/dashboard/agents", params=params)
        assert reply.status == 200, reply.body
        assert set(reply.body) == {"data", "has_more", "next_cursor"}
        seen += [a["id"] for a in reply.body["data"]]
        pages += 1
        if not reply.body["has_more"]:
            assert reply.body["next_cursor"] is None
            break
        cursor = reply.body["next_cursor"]
    assert pages == 3
    assert seen == list(reversed(made))


async def test_another_workspaces_agent_is_exactly_like_a_missing_one(api: Api) -> None:
    theirs = await api.agent(token=api.other_token)
    foreign = await api.get(f"/dashboard/agents/{theirs['id']}")
    missing = await api.get("/dashboard/agents/agt_doesnotexist")
    assert_error(foreign, 404, "agent_not_found")
    assert_error(missing, 404, "agent_not_found")
    listed = await api.get("/dashboard/agents")
    assert theirs["id"] not in [a["id"] for a in listed.body["data"]]
    # Sessions of a foreign agent: also 404, and nothing is created.
    create = await api.post(f"/dashboard/agents/{theirs['id']}/sessions", json={})
    assert_error(create, 404, "agent_not_found")
    sessions = await api.get(f"/dashboard/agents/{theirs['id']}/sessions", token=api.other_token)
    assert sessions.body["data"] == []


async def test_an_id_that_cannot_exist_is_404(api: Api) -> None:
    assert_error(await api.get("/dashboard/agents/not%20an%20id"), 404)
    assert_error(await api.get("/dashboard/agents/" + "a" * 65), 404)


async def test_invalid_fields_are_422_naming_the_field(api: Api) -> None:
    cases = [
        ({"model": "m"}, "name"),
        ({"name": "", "model": "m"}, "name"),
        ({"name": "x" * 201, "model": "m"}, "name"),
        ({"name": "n", "model": "m", "sytem": "typo"}, "sytem"),
        ({"name": "n", "model": "m", "system": "nul\x00"}, "system"),
        ({"name": "n", "model": "m", "approval_required_tools": "bash"}, "approval_required_tools"),
        (
            {"name": "n", "model": "m", "approval_required_tools": ["ok", ""]},
            "approval_required_tools[1]",
        ),
        ({"name": "n", "model": "m", "slack": {"channel_ids": ["C1"]}}, "slack.team_id"),
        ({"name": "n", "model": "m", "slack": {"team_id": "T1"}}, "slack"),
        ({"name": 5, "model": "m"}, "name"),
    ]
    for body, field in cases:
        reply = await api.post("/dashboard/agents", json=body)
        error = assert_error(reply, 422, "invalid_field")
        assert error["message"].startswith(f"{field}:"), (body, error)
    not_an_object = await api.post("/dashboard/agents", json=[1, 2])
    assert_error(not_an_object, 422, "invalid_field")


async def test_malformed_json_is_400_and_an_empty_body_too(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    assert_error(
        await api.post("/dashboard/agents", data=b"{nope", headers=headers), 400, "bad_request"
    )
    assert_error(await api.post("/dashboard/agents", data=b"", headers=headers), 400, "bad_request")
    lone_surrogate = b'{"name": "\\ud800", "model": "m"}'
    assert_error(await api.post("/dashboard/agents", data=lone_surrogate, headers=headers), 400)


async def test_a_body_over_one_mib_is_413(api: Api) -> None:
    big = b'{"name": "n", "model": "m", "system": "' + b"x" * (1024 * 1024) + b'"}'
    reply = await api.post(
        "/dashboard/agents", data=big, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 413, "payload_too_large")
    # Just under the limit is accepted.
    filler = 1024 * 1024 - len(b'{"name": "n", "model": "m", "system": ""}')
    fits = b'{"name": "n", "model": "m", "system": "' + b"x" * filler + b'"}'
    assert len(fits) == 1024 * 1024
    ok = await api.post(
        "/dashboard/agents", data=fits, headers={"Content-Type": "application/json"}
    )
    assert ok.status == 201, ok.body


async def test_list_query_is_validated(api: Api) -> None:
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!"}, "cursor"),
        ({"cursor": "bm90LWpzb24"}, "cursor"),
    ]:
        error = assert_error(await api.get("/dashboard/agents", params=params), 422)
        assert error["message"].startswith(f"{field}:"), error
    assert (await api.get("/dashboard/agents", params={"limit": "200"})).status == 200


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert_error(await api.get("/dashboard/nothing-here"), 404, "not_found")
    wrong = await api.call("DELETE", "/dashboard/agents")
    assert_error(wrong, 405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]


async def test_cors_for_the_dashboard_origin_only(api: Api) -> None:
    origin = "https://dash.example.com"
    preflight = await api.call(
        "OPTIONS",
        "/dashboard/agents",
        token=None,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    listed = await api.get("/dashboard/agents", headers={"Origin": origin})
    assert listed.headers["Access-Control-Allow-Origin"] == origin
    refused = await api.get("/dashboard/agents", token=None, headers={"Origin": origin})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == origin
    stranger = await api.get("/dashboard/agents", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
