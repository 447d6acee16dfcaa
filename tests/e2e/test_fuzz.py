"""Bad input, fuzzed: hypothesis sends odd requests to `/slack/events`, `/webhooks/:id` and every
described dashboard route of the running app (both databases), and checks that none is a 500, that
every refusal has the contract's error shape, and that a refused request stored nothing (the rows
of the tables a request can add to are counted before and after each one).

Bounded and reproducible: `derandomize=True` and `FUZZ_EXAMPLES` examples per database (150 by
default); `FUZZ_SEED=<int>` explores elsewhere, and `FUZZ_EXAMPLES=1000` deeper. Requests are mostly near-valid (a valid body with one field broken, a good signature
over junk) so they get past the first check and reach the code behind it. Hypothesis runs in a
worker thread; each example is one coroutine on the app's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

import app as app_module
from dashboard_api.openapi import build_spec
from router.sessions import SlackBindingRequest
from router.types import Actor
from store.models import (
    AgentSession,
    AgentTriggerRun,
    DeployedAgent,
    Schedule,
    SessionInbox,
    SlackEventReceipt,
    WebhookEndpoint,
)
from tests.conftest import RunningApp, TestDatabase, start_app
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack

SECRET = "fuzz-test-jwt-secret-long-enough-for-hs256"
API_KEY = "sk-ant-fuzz"
WORKSPACE = "ws_fuzz"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SEED = os.environ.get("FUZZ_SEED")  # set: a different (still reproducible) run
COUNTED = (
    AgentSession,
    SessionInbox,
    AgentTriggerRun,
    SlackEventReceipt,
    Schedule,
    WebhookEndpoint,
    DeployedAgent,
)
SKIPPED_PATHS = ("/stream",)  # a live tail never ends; tests/dashboard/test_stream.py has it


# -- what is sent -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints it for a failing example
        body = self.body if self.body is None or len(self.body) < 300 else self.body[:300] + b"..."
        return f"Probe({self.method} {self.path} q={self.query} h={self.headers} body={body!r})"


@dataclass(frozen=True)
class Seeds:
    agent_id: str
    session_id: str
    schedule_id: str
    endpoint_id: str
    endpoint_secret: str
    tokens: tuple[str | None, ...]


NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "x" * 5000,
    "\U0001d54f",
    "\u202e",
    "../../etc/passwd",
    "%00",
    "' OR 1=1 --",
    "[tool:bash]",
]
NASTY_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"{",
    b"\x00",
    b'{"a": "\\ud800"}',
    b'{"a": "\\u0000"}',
    b"[" * 3000 + b"]" * 3000,
    b"\xff\xfe\x00",
    b"1e999",
    b"NaN",
    b'"just a string"',
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(NASTY_STRINGS),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
junk_ids = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["..", "%2e%2e", "a" * 65, "agt_missing", "sess_missing", "\x00", "-"]),
)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=210,
)


def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 5) -> Any:
    """`rare` about once in `one_in` draws: most requests should get past the first check."""
    return st.integers(0, one_in - 1).flatmap(lambda n: rare if n == one_in - 1 else usual)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def raw_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(json_values.map(encode), st.binary(max_size=64), st.sampled_from(NASTY_BODIES))


# -- Slack --------------------------------------------------------------------------------------


@st.composite
def slack_event(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["message", "app_mention", "reaction_added", "x"])),
        "channel": draw(st.sampled_from(["D1", "C1", "C9"]) | st.text(max_size=6)),
        "user": draw(st.sampled_from(["U1", "U2", "UBOT"]) | st.none()),
        "text": draw(st.text(max_size=40) | st.sampled_from(NASTY_STRINGS) | scalars),
        "ts": draw(st.sampled_from([f"{time.time():.6f}", "1.0", "abc"]) | st.text(max_size=8)),
    }
    extras = {
        "channel_type": st.sampled_from(["im", "channel", "group", "mpim"]),
        "thread_ts": st.sampled_from(["1.000001", "0"]) | st.text(max_size=8),
        "subtype": st.sampled_from(["bot_message", "message_changed", "file_share", "x"]),
        "bot_id": st.sampled_from(["B1", "BBOT"]),
        "files": json_values,
        "blocks": json_values,
    }
    for key in draw(st.sets(st.sampled_from(sorted(extras)), max_size=3)):
        event[key] = draw(extras[key])
    return event


@st.composite
def slack_probe(draw: st.DrawFn) -> Probe:
    kind = draw(st.sampled_from(["event", "event", "verification", "action", "json", "raw"]))
    content_type = "application/json"
    if kind == "event":
        envelope: Any = {
            "token": "legacy",
            "team_id": draw(st.sampled_from(["T1", "T1", "T2"]) | st.text(max_size=6)),
            "api_app_id": "A0TEST",
            "type": "event_callback",
            "event_id": draw(st.sampled_from(["Ev1", "Ev2"]) | st.text(max_size=12)),
            "event_time": int(time.time()),
            "event": draw(slack_event() | json_values),
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
        }
        body = encode(envelope)
    elif kind == "verification":
        body = encode({"type": "url_verification", "challenge": draw(scalars)})
    elif kind == "action":
        payload = {
            "type": draw(st.sampled_from(["block_actions", "view_submission", "shortcut", "x"])),
            "team": {"id": "T1"},
            "user": {"id": draw(st.sampled_from(["U1", "U2"]))},
            "channel": {"id": "C1"},
            "actions": [
                {
                    "action_id": draw(st.sampled_from(["tool_approve", "tool_deny", "other"])),
                    "block_id": draw(st.sampled_from(["approval:apr_x"]) | st.text(max_size=10)),
                    "value": draw(st.text(max_size=20)),
                }
            ],
            "message": draw(json_values),
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        content_type = "application/x-www-form-urlencoded"
    elif kind == "json":
        body = encode(draw(json_values))
    else:
        body = draw(raw_bodies())
    headers = {"Content-Type": content_type}
    signing = draw(mostly(st.just("good"), st.sampled_from(["bad", "none", "stale"])))
    stamp = str(int(time.time()) - (600 if signing == "stale" else 0))
    if signing != "none":
        base = b"v0:" + stamp.encode() + b":" + body
        digest = hmac_hex(SIGNING_SECRET if signing != "bad" else "wrong", base)
        headers |= {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    return Probe("POST", "/slack/events", body, headers)


# -- webhooks -----------------------------------------------------------------------------------


def webhook_probe(seeds: Seeds) -> st.SearchStrategy[Probe]:
    @st.composite
    def probe(draw: st.DrawFn) -> Probe:
        endpoint = draw(mostly(st.just(seeds.endpoint_id), junk_ids))
        body = draw(raw_bodies())
        signing = draw(mostly(st.just("good"), st.sampled_from(["none", "junk", "other", "upper"])))
        headers = {"Content-Type": "application/json"}
        good = hmac_hex(seeds.endpoint_secret, body)
        signatures = {
            "good": f"sha256={good}",
            "other": f"sha256={hmac_hex(seeds.endpoint_secret, body + b' ')}",
            "upper": f"sha256={good.upper()}",
            "junk": draw(header_text),
        }
        if signing in signatures:
            headers["X-Signature"] = signatures[signing]
        key = draw(mostly(st.none() | st.sampled_from(["k1", "k2"]), header_text))
        if key is not None:
            headers["Idempotency-Key"] = key
        return Probe("POST", "/webhooks/" + quote(endpoint, safe=""), body, headers)

    return probe()


# -- dashboard ----------------------------------------------------------------------------------


def body_templates(seeds: Seeds) -> dict[str, dict[str, Any]]:
    """A valid body per operation (by its body model or builder tool), to break one field of."""
    return {
        "AgentCreate": {
            "name": "fuzzed",
            "model": "claude-sonnet-4-5",
            "system": "Be brief.",
            "approval_required_tools": ["bash"],
            "slack": {"team_id": "T9", "channel_ids": ["C1"], "default": False},
        },
        "SessionCreate": {"text": "hello", "title": "fuzz"},
        "MessageCreate": {"text": "hello"},
        "ApprovalDecide": {"decision": "allow", "reason": "fine"},
        "ScheduleCreate": {
            "cron": "0 9 * * *",
            "timezone": "Europe/Paris",
            "input_text": "report",
            "enabled": True,
            "slack": {"team_id": "T1", "channel_id": "C1"},
        },
        "builder": {
            "agent_id": seeds.agent_id,
            "session_id": seeds.session_id,
            "query": "hello",
            "limit": 5,
            "cursor": None,
        },
    }


def dashboard_operations() -> list[tuple[str, str, str | None]]:
    """(method, path template, body template name) of every described /dashboard operation."""
    operations = []
    for path, methods in build_spec()["paths"].items():
        if not path.startswith("/dashboard/") or path.endswith(SKIPPED_PATHS):
            continue
        for method, spec in methods.items():
            body = spec.get("requestBody")
            template = None
            if body is not None:
                ref = body["content"]["application/json"]["schema"].get("$ref", "")
                template = ref.rsplit("/", 1)[-1] if ref else "builder"
            operations.append((method.upper(), path, template))
    return operations


def dashboard_probe(seeds: Seeds) -> st.SearchStrategy[Probe]:
    known = {
        "agent_id": seeds.agent_id,
        "session_id": seeds.session_id,
        "schedule_id": seeds.schedule_id,
        "escalation_id": "esc_missing",
        "tool_use_id": "toolu_missing",
    }
    templates = body_templates(seeds)
    query_names = ["limit", "cursor", "status", "source", "order", "after", "before", "x"]

    @st.composite
    def probe(draw: st.DrawFn) -> Probe:
        method, template_path, template = draw(st.sampled_from(dashboard_operations()))
        path = template_path
        for name, value in known.items():
            if "{" + name + "}" in path:
                chosen = draw(mostly(st.just(value), junk_ids))
                path = path.replace("{" + name + "}", quote(chosen, safe=""))
        query = draw(
            st.dictionaries(
                st.sampled_from(query_names),
                st.sampled_from(["0", "1", "201", "-1", "asc", "open", "junk!", "9" * 30])
                | st.text(max_size=10),
                max_size=3,
            )
        )
        body: bytes | None = None
        if template is not None:
            body = draw(
                st.sampled_from(["near", "near", "raw", "none"]).flatmap(
                    lambda how: _body(how, templates.get(template, {}))
                )
            )
        headers = {"Content-Type": "application/json"}
        token = draw(mostly(st.just(seeds.tokens[0]), st.sampled_from(seeds.tokens[1:]), 4))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return Probe(method, path, body, headers, query)

    return probe()


def _body(how: str, template: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    if how == "none":
        return st.none()
    if how == "raw":
        return raw_bodies()
    keys = sorted(template) + ["unexpected"]

    @st.composite
    def near(draw: st.DrawFn) -> bytes:
        body = dict(template)
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()) and key in body:
            del body[key]
        else:
            body[key] = draw(json_values)
        return encode(body)

    return near()


# -- the run ------------------------------------------------------------------------------------


@pytest.fixture
async def fuzzed_app(database: TestDatabase) -> AsyncIterator[tuple[RunningApp, Seeds]]:
    slack = await FakeSlack().start()
    async with FakeAnthropic(api_key=API_KEY) as anthropic:
        running = await start_app(
            database,
            supabase_jwt_secret=SECRET,
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token=slack.team("T1").bot_token,
            slack_api_url=slack.api_url,
            anthropic_api_key=API_KEY,
            anthropic_base_url=anthropic.base_url,
            turn_timeout_seconds=20,
        )
        # No schedule may fire meanwhile: its rows would look like a refused request's.
        await running.services.triggers.stop()
        try:
            yield running, await plant_seeds(running)
        finally:
            await running.stop()
            await running.services.close()
            await slack.stop()


async def plant_seeds(running: RunningApp) -> Seeds:
    core, triggers = running.services.core, running.services.triggers
    actor = Actor(WORKSPACE, "fuzzer")
    await core.ensure_actor(actor)
    agent = await core.deploy_agent(
        actor,
        name="fuzz target",
        model="claude-sonnet-4-5",
        system="Be brief.",
        approval_required_tools=["bash"],
        slack=SlackBindingRequest("T1", (), True),
    )
    session, _ = await core.create_session(actor, agent.id)
    schedule = await triggers.create_schedule(
        actor, agent.id, cron="0 0 1 1 *", timezone="UTC", input_text="new year"
    )
    hook = await triggers.create_webhook(actor, agent.id)
    settings_ = running.settings
    tokens = (
        app_module.make_token(settings_, WORKSPACE, "fuzzer", 3600),
        app_module.make_token(settings_, "ws_other", "stranger", 3600),
        app_module.make_token(settings_, WORKSPACE, "fuzzer", -3600),
        None,
        "not.a.token",
    )
    return Seeds(agent.id, session.id, schedule.id, hook.id, hook.secret, tokens)


async def row_counts(database: TestDatabase) -> tuple[int, ...]:
    counts = [select(func.count()).select_from(m).scalar_subquery() for m in COUNTED]
    async with database.sessionmaker() as s:
        return tuple((await s.execute(select(*counts))).one())


def check_answer(probe: Probe, status: int, body: bytes, before: Any, after: Any) -> None:
    assert status != 500, f"500 for {probe!r}: {body[:500]!r}"
    assert status < 500 or status in (502, 503), f"{status} for {probe!r}: {body[:500]!r}"
    if status < 400:
        return
    assert before == after, f"refused ({status}) but stored rows {before} -> {after}: {probe!r}"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"{status} without the error shape for {probe!r}: {body!r}") from exc
    assert isinstance(error["code"], str) and isinstance(error["message"], str), body


async def test_fuzzed_requests_are_never_a_500_and_refusals_store_nothing(
    fuzzed_app: tuple[RunningApp, Seeds], database: TestDatabase
) -> None:
    running, seeds = fuzzed_app
    loop = asyncio.get_running_loop()
    statuses: dict[str, set[int]] = {"slack": set(), "webhook": set(), "dashboard": set()}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def send(probe: Probe) -> None:
            before = await row_counts(database)
            async with http.request(
                probe.method,
                running.base_url + probe.path,
                data=probe.body,
                headers=probe.headers,
                params=probe.query,
            ) as response:
                body = await response.read()
                status = response.status
            after = await row_counts(database)
            kind = (
                "slack"
                if probe.path.startswith("/slack")
                else ("webhook" if probe.path.startswith("/webhooks") else "dashboard")
            )
            statuses[kind].add(status)
            check_answer(probe, status, body, before, after)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=SEED is None,
            suppress_health_check=list(HealthCheck),
        )
        @seed(int(SEED or 0))
        @given(st.one_of(slack_probe(), webhook_probe(seeds), dashboard_probe(seeds)))
        def fuzz(probe: Probe) -> None:
            asyncio.run_coroutine_threadsafe(send(probe), loop).result(timeout=60)

        await asyncio.to_thread(fuzz)

    # The run reached past the first checks of each edge, not only its front door.
    assert statuses["slack"] & {200} and statuses["slack"] & {400, 401}, statuses
    assert statuses["webhook"] & {200, 202} and statuses["webhook"] & {400, 401, 404}, statuses
    assert statuses["dashboard"] & {200, 201} and statuses["dashboard"] & {401, 404, 422}, statuses
