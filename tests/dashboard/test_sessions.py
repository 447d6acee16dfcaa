"""Sessions over real HTTP with turns on the fake managed-agents API, on both databases."""

from __future__ import annotations

from typing import Any

from tests.dashboard.conftest import Api, assert_error
from tests.waiting import eventually


def base(agent_id: str, session_id: str) -> str:
    return f"/dashboard/agents/{agent_id}/sessions/{session_id}"


async def settled(api: Api, agent_id: str, session_id: str, turns: int = 1) -> dict[str, Any]:
    """Until `turns` turns have ended and the session is idle with nothing queued. (The row alone
    is not enough: on PostgreSQL its status and queued count are two reads, which a claim can
    fall between.)"""

    async def idle() -> Any:
        reply = await api.get(base(agent_id, session_id))
        if reply.body["status"] != "idle" or reply.body["queued"] != 0:
            return False
        events = await all_events(api, agent_id, session_id)
        ended = sum(e["type"] == "session.status_idle" for e in events)
        return ended >= turns and reply.body

    return await eventually(idle, timeout=20)


async def all_events(api: Api, agent_id: str, session_id: str) -> list[dict[str, Any]]:
    reply = await api.get(base(agent_id, session_id) + "/events", params={"limit": "200"})
    assert reply.status == 200
    return reply.body["data"]


SESSION_FIELDS = {
    "id",
    "deployed_agent_id",
    "anthropic_session_id",
    "status",
    "queued",
    "source",
    "title",
    "created_by",
    "slack",
    "created_at",
    "updated_at",
    "archived_at",
}


async def test_create_a_fresh_session_without_a_message(api: Api) -> None:
    agent = await api.agent()
    reply = await api.post(f"/dashboard/agents/{agent['id']}/sessions", data=b"")
    assert reply.status == 201, reply.body
    session = reply.body
    assert set(session) == SESSION_FIELDS
    assert session["deployed_agent_id"] == agent["id"]
    assert session["status"] == "idle" and session["queued"] == 0
    assert session["source"] == "dashboard" and session["slack"] is None
    assert session["created_by"] == "user_1"
    assert (await api.get(base(agent["id"], session["id"]))).body == session
    assert await all_events(api, agent["id"], session["id"]) == []


async def test_create_with_a_first_message_runs_a_turn(api: Api) -> None:
    agent = await api.agent()
    reply = await api.post(
        f"/dashboard/agents/{agent['id']}/sessions", json={"text": "hello", "title": "Greeting"}
    )
    assert reply.status == 201, reply.body
    session = reply.body
    assert set(session) == SESSION_FIELDS | {"message"}
    assert session["title"] == "Greeting"
    assert session["message"]["session_id"] == session["id"]
    assert session["message"]["message_id"]
    done = await settled(api, agent["id"], session["id"])
    assert done["anthropic_session_id"]
    events = await all_events(api, agent["id"], session["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "user.message"
    assert events[-1]["type"] == "session.status_idle"
    replies = [e for e in events if e["type"] == "agent.message"]
    assert replies[0]["data"]["content"][0]["text"] == "You said: hello"
    assert set(events[0]) == {"seq", "id", "type", "created_at", "data"}


async def test_a_message_is_queued_behind_a_running_turn(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "first [slow:0.2]")
    path = base(agent["id"], session["id"])

    async def running() -> bool:
        return (await api.get(path)).body["status"] == "running"

    await eventually(running)
    reply = await api.post(path + "/messages", json={"text": "second"})
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"message_id", "session_id", "status", "queued"}
    assert reply.body["session_id"] == session["id"]
    assert reply.body["queued"] >= 1
    await settled(api, agent["id"], session["id"], turns=2)
    events = await all_events(api, agent["id"], session["id"])
    said = [e["data"]["content"][0]["text"] for e in events if e["type"] == "agent.message"]
    assert said == ["You said: first", "You said: second"]


async def test_interrupt_stops_the_turn_in_flight(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "take your time [slow:0.5] [long:400]")
    path = base(agent["id"], session["id"])

    async def started() -> bool:
        events = await all_events(api, agent["id"], session["id"])
        return any(e["type"] == "span.model_request_start" for e in events)

    await eventually(started)
    reply = await api.post(path + "/interrupt")
    assert reply.status == 202, reply.body
    assert set(reply.body) == SESSION_FIELDS
    await settled(api, agent["id"], session["id"])
    idle = await api.post(path + "/interrupt")  # nothing in flight: still fine
    assert idle.status == 202 and idle.body["status"] == "idle"


async def test_archive_makes_the_session_read_only(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "hi")
    await settled(api, agent["id"], session["id"])
    path = base(agent["id"], session["id"])
    archived = await api.post(path + "/archive")
    assert archived.status == 200
    assert archived.body["status"] == "archived" and archived.body["archived_at"]
    again = await api.post(path + "/archive")
    assert again.status == 200 and again.body["archived_at"] == archived.body["archived_at"]
    refused = await api.post(path + "/messages", json={"text": "anyone?"})
    assert_error(refused, 409, "session_archived")
    assert len(await all_events(api, agent["id"], session["id"])) > 0  # history stays readable


async def test_list_filters_by_status_and_source_with_a_cursor(api: Api) -> None:
    agent = await api.agent()
    made = [(await api.session(agent["id"]))["id"] for _ in range(5)]
    await api.post(base(agent["id"], made[1]) + "/archive")
    path = f"/dashboard/agents/{agent['id']}/sessions"
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await api.get(path, params=params)
        assert reply.status == 200, reply.body
        seen += [s["id"] for s in reply.body["data"]]
        cursor = reply.body["next_cursor"]
        if not reply.body["has_more"]:
            assert cursor is None
            break
    assert seen == list(reversed(made))
    archived = await api.get(path, params={"status": "archived"})
    assert [s["id"] for s in archived.body["data"]] == [made[1]]
    idle = await api.get(path, params={"status": "idle", "source": "dashboard"})
    assert len(idle.body["data"]) == 4
    assert (await api.get(path, params={"source": "slack"})).body["data"] == []
    for params, field in [({"status": "asleep"}, "status"), ({"source": "fax"}, "source")]:
        error = assert_error(await api.get(path, params=params), 422, "invalid_field")
        assert error["message"].startswith(field)


async def test_sessions_are_404_across_workspaces_and_agents(api: Api) -> None:
    mine = await api.agent()
    other_agent = await api.agent(name="second")
    theirs = await api.agent(token=api.other_token)
    their_session = await api.session(theirs["id"], token=api.other_token)
    my_session = await api.session(mine["id"])
    foreign = base(theirs["id"], their_session["id"])
    wrong_agent = base(other_agent["id"], my_session["id"])
    missing = base(mine["id"], "sess_nope")
    for path in (foreign, wrong_agent, missing):
        assert_error(await api.get(path), 404, "session_not_found")
        assert_error(await api.get(path + "/events"), 404, "session_not_found")
        assert_error(await api.get(path + "/stream"), 404, "session_not_found")
        assert_error(await api.post(path + "/messages", json={"text": "x"}), 404)
        assert_error(await api.post(path + "/interrupt"), 404)
        assert_error(await api.post(path + "/archive"), 404)
    assert_error(await api.get(f"/dashboard/agents/{theirs['id']}/sessions"), 404)
    # The foreign session is untouched.
    still = await api.get(foreign, token=api.other_token)
    assert still.body["status"] == "idle"


async def test_message_and_session_bodies_are_validated(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    for body, field in [({}, "text"), ({"text": ""}, "text"), ({"text": "a", "x": 1}, "x")]:
        error = assert_error(await api.post(path + "/messages", json=body), 422)
        assert error["message"].startswith(field), error
    assert_error(await api.post(path + "/messages", data=b"{"), 400, "bad_request")
    big = b'{"text": "' + b"y" * (1024 * 1024 + 10) + b'"}'
    assert_error(await api.post(path + "/messages", data=big), 413, "payload_too_large")
    error = assert_error(
        await api.post(f"/dashboard/agents/{agent['id']}/sessions", json={"title": "t" * 301}), 422
    )
    assert error["message"].startswith("title")


async def test_events_pages_both_ways_with_cursors(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "one")
    await settled(api, agent["id"], session["id"])
    await api.post(base(agent["id"], session["id"]) + "/messages", json={"text": "two"})
    await settled(api, agent["id"], session["id"], turns=2)
    everything = await all_events(api, agent["id"], session["id"])
    total = len(everything)
    assert total >= 10
    path = base(agent["id"], session["id"]) + "/events"

    async def walk(**params: str) -> list[int]:
        seqs: list[int] = []
        cursor = None
        while True:
            query = {"limit": "3", **params, **({"cursor": cursor} if cursor else {})}
            reply = await api.get(path, params=query)
            assert reply.status == 200, reply.body
            seqs += [e["seq"] for e in reply.body["data"]]
            cursor = reply.body["next_cursor"]
            if not reply.body["has_more"]:
                assert cursor is None
                return seqs
            assert cursor == str(seqs[-1])

    assert await walk() == list(range(1, total + 1))
    assert await walk(order="desc") == list(range(total, 0, -1))
    assert await walk(after="4") == list(range(5, total + 1))
    assert await walk(before="5", order="desc") == [4, 3, 2, 1]
    assert await walk(after="2", before="6") == [3, 4, 5]
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"after": "-1"}, "after"),
        ({"before": "x"}, "before"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "abc"}, "cursor"),
        ({"after": str(2**60)}, "after"),
    ]:
        error = assert_error(await api.get(path, params=params), 422, "invalid_field")
        assert error["message"].startswith(field), error
