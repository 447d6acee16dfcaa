"""The escalation inbox, a session's usage and the workspace's wallets over real HTTP, on both
databases."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from tests.dashboard.conftest import Api, assert_error
from tests.dashboard.test_sessions import all_events, base, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.waiting import eventually

ESCALATION_FIELDS = {
    "id",
    "session_id",
    "reason",
    "status",
    "created_at",
    "resolved_at",
    "resolved_by",
}
USAGE_FIELDS = {
    "turn",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "runtime_seconds",
    "cost_usd",
}
TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
MONEY = re.compile(r"^-?[0-9]+\.[0-9]{6}$")


async def escalate(api: Api, agent_id: str, text: str) -> tuple[str, str]:
    """A session whose agent escalated: (session id, escalation id)."""
    session = await api.session(agent_id, f"{text} [custom:escalate_to_human]")
    await settled(api, agent_id, session["id"])
    events = await all_events(api, agent_id, session["id"])
    notice = next(e for e in events if e["type"] == "app.escalation")
    return session["id"], notice["data"]["escalation_id"]


async def test_an_escalation_lands_in_the_inbox_and_resolves(api: Api) -> None:
    agent = await api.agent()
    session_id, escalation_id = await escalate(api, agent["id"], "I need a refund approved")

    inbox = await api.get("/dashboard/escalations", params={"status": "open"})
    assert inbox.status == 200, inbox.body
    [open_one] = inbox.body["data"]
    assert set(open_one) == ESCALATION_FIELDS
    assert open_one["id"] == escalation_id and open_one["session_id"] == session_id
    assert open_one["status"] == "open" and open_one["reason"]
    assert open_one["resolved_at"] is None and open_one["resolved_by"] is None

    path = f"/dashboard/escalations/{escalation_id}/resolve"
    resolved = await api.post(path)
    assert resolved.status == 200, resolved.body
    assert resolved.body["status"] == "resolved" and resolved.body["resolved_by"] == "user_1"
    assert resolved.body["resolved_at"]
    again = await api.post(path)
    assert again.status == 200 and again.body == resolved.body

    assert (await api.get("/dashboard/escalations", params={"status": "open"})).body["data"] == []
    done = await api.get("/dashboard/escalations", params={"status": "resolved"})
    assert [e["id"] for e in done.body["data"]] == [escalation_id]
    everything = await api.get("/dashboard/escalations")
    assert everything.body["data"] == [resolved.body]


async def test_the_inbox_pages_and_is_the_workspace_s_own(api: Api) -> None:
    agent = await api.agent()
    first = await escalate(api, agent["id"], "first")
    second = await escalate(api, agent["id"], "second")
    page = await api.get("/dashboard/escalations", params={"limit": "1"})
    assert page.body["has_more"] is True
    assert [e["id"] for e in page.body["data"]] == [second[1]]
    rest = await api.get(
        "/dashboard/escalations", params={"limit": "1", "cursor": page.body["next_cursor"]}
    )
    assert [e["id"] for e in rest.body["data"]] == [first[1]]
    assert rest.body["has_more"] is False and rest.body["next_cursor"] is None

    foreign = await api.get("/dashboard/escalations", token=api.other_token)
    assert foreign.status == 200 and foreign.body["data"] == []
    resolve = f"/dashboard/escalations/{first[1]}/resolve"
    assert_error(await api.post(resolve, token=api.other_token), 404)
    assert_error(await api.post(resolve, token=None), 401, "unauthenticated")
    assert_error(await api.get("/dashboard/escalations", token=None), 401)
    assert_error(await api.post("/dashboard/escalations/esc_missing/resolve"), 404)
    bad_status = await api.get("/dashboard/escalations", params={"status": "closed"})
    assert assert_error(bad_status, 422, "invalid_field")["message"].startswith("status")
    assert_error(await api.get("/dashboard/escalations", params={"cursor": "nope!"}), 422)
    still_open = await api.get("/dashboard/escalations", params={"status": "open"})
    assert len(still_open.body["data"]) == 2


async def test_usage_per_turn_sums_to_the_total_and_to_the_runtime_s_tokens(
    api: Api, fake_runtime: FakeAnthropic
) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "one")
    path = base(agent["id"], session["id"])
    assert (await api.post(path + "/messages", json={"text": "two [long:400]"})).status == 202
    done = await settled(api, agent["id"], session["id"], turns=2)

    async def charged() -> Any:
        reply = await api.get(path + "/usage")
        return len(reply.body["turns"]) == 2 and reply.body

    usage = await eventually(charged)
    assert set(usage) == {"turns", "total"}
    assert [t["turn"] for t in usage["turns"]] == [1, 2]
    for row in [*usage["turns"], usage["total"]]:
        assert set(row) == USAGE_FIELDS
        assert MONEY.match(row["cost_usd"]), row
        assert isinstance(row["runtime_seconds"], int | float) and row["runtime_seconds"] >= 0
    assert usage["total"]["turn"] is None
    for key in TOKENS:
        assert usage["total"][key] == sum(t[key] for t in usage["turns"])
    total_cost = sum(Decimal(t["cost_usd"]) for t in usage["turns"])
    assert Decimal(usage["total"]["cost_usd"]) == total_cost > 0
    seconds = sum(Decimal(str(t["runtime_seconds"])) for t in usage["turns"])
    assert Decimal(str(usage["total"]["runtime_seconds"])) == seconds

    reported = dict.fromkeys(TOKENS, 0)
    for event in fake_runtime.history(done["anthropic_session_id"]):
        if event["type"] == "span.model_request_end":
            for key in TOKENS:
                reported[key] += event["model_usage"][key]
    assert {key: usage["total"][key] for key in TOKENS} == reported


async def test_usage_of_a_fresh_session_and_refusals(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"]) + "/usage"
    empty = await api.get(path)
    assert empty.status == 200, empty.body
    assert empty.body["turns"] == []
    assert empty.body["total"] == {
        "turn": None,
        **dict.fromkeys(TOKENS, 0),
        "runtime_seconds": 0,
        "cost_usd": "0.000000",
    }
    assert_error(await api.get(path, token=api.other_token), 404)
    assert_error(await api.get(path, token=None), 401)
    assert_error(await api.get(base(agent["id"], "sess_missing") + "/usage"), 404)
    other_agent = await api.agent(name="other")
    assert_error(await api.get(base(other_agent["id"], session["id"]) + "/usage"), 404)


async def test_wallets_show_the_starting_credit_and_each_turn_s_debit(api: Api) -> None:
    fresh = await api.get("/dashboard/wallets")
    assert fresh.status == 200, fresh.body
    assert fresh.body["wallets"] == [
        {"kind": "ai", "balance_usd": "5.000000"},
        {"kind": "data", "balance_usd": "5.000000"},
    ]
    assert sorted((e["kind"], e["reason"], e["amount_usd"]) for e in fresh.body["ledger"]) == [
        ("ai", "starting_credit", "5.000000"),
        ("data", "starting_credit", "5.000000"),
    ]

    agent = await api.agent()
    session = await api.session(agent["id"], "hello")
    await settled(api, agent["id"], session["id"])
    usage_path = base(agent["id"], session["id"]) + "/usage"

    async def charged() -> Any:
        reply = await api.get(usage_path)
        return reply.body["turns"] and reply.body

    usage = await eventually(charged)
    cost = Decimal(usage["total"]["cost_usd"])
    after = (await api.get("/dashboard/wallets")).body
    balances = {w["kind"]: w["balance_usd"] for w in after["wallets"]}
    assert Decimal(balances["ai"]) == Decimal(5) - cost
    assert balances["data"] == "5.000000"
    [debit] = [e for e in after["ledger"] if e["reason"] == "turn"]
    assert set(debit) == {
        "id",
        "kind",
        "amount_usd",
        "balance_after_usd",
        "reason",
        "ref",
        "created_at",
    }
    assert debit["kind"] == "ai" and Decimal(debit["amount_usd"]) == -cost
    assert debit["balance_after_usd"] == balances["ai"]
    assert after["ledger"][0] == debit, "newest first"
    for entry in after["ledger"]:
        assert MONEY.match(entry["amount_usd"]) and MONEY.match(entry["balance_after_usd"])

    other = await api.get("/dashboard/wallets", token=api.other_token)
    assert [w["balance_usd"] for w in other.body["wallets"]] == ["5.000000", "5.000000"]
    assert not any(e["reason"] == "turn" for e in other.body["ledger"])
    assert_error(await api.get("/dashboard/wallets", token=None), 401, "unauthenticated")
