"""The SSE live tail over real HTTP: replay then live with no gap or duplicate, resume from
Last-Event-ID during a running turn, deltas, keep-alive comments, cleanup, fan-out."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from dashboard_api import routes
from dashboard_api.context import DASHBOARD
from dashboard_api.stream import StreamHub
from router.turns import append_app_event
from router.types import Actor
from store.bus import LiveBus
from tests.conftest import RunningApp
from tests.dashboard.conftest import Api, assert_error
from tests.dashboard.sse import SseReader
from tests.dashboard.test_sessions import all_events, base, settled
from tests.waiting import eventually

ACTOR = Actor("ws_alpha", "user_1")


@asynccontextmanager
async def open_stream(
    api: Api, path: str, *, last_event_id: str | None = None, params: dict[str, str] | None = None
) -> AsyncIterator[SseReader]:
    headers = {"Authorization": f"Bearer {api.token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with aiohttp.ClientSession() as http:
        async with http.get(api.base_url + path, headers=headers, params=params) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "text/event-stream"
            yield SseReader(response)


def mirror(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(e["seq"], e["type"], e["id"]) for e in events]


async def test_stream_replays_history_then_follows_a_turn_live(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "before [slow:0.05]")
    await settled(api, agent["id"], session["id"])
    path = base(agent["id"], session["id"])
    async with open_stream(api, path + "/stream") as stream:
        replayed = await stream.events_until("session.status_idle")
        sent = await api.post(path + "/messages", json={"text": "live [slow:0.05]"})
        assert sent.status == 202
        live = await stream.events_until("session.status_idle")
    frames = replayed + live
    history = await all_events(api, agent["id"], session["id"])
    assert [(int(f.id), f.event, f.json["id"]) for f in frames] == mirror(history)
    assert all(f.json == e for f, e in zip(frames, history, strict=True))  # same JSON as the pages


async def test_after_and_last_event_id_choose_where_the_replay_starts(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"], "hi")
    await settled(api, agent["id"], session["id"])
    path = base(agent["id"], session["id"])
    history = await all_events(api, agent["id"], session["id"])
    async with open_stream(api, path + "/stream", params={"after": "3"}) as stream:
        frames = await stream.events_until("session.status_idle")
    assert [int(f.id) for f in frames] == [e["seq"] for e in history[3:]]
    async with open_stream(
        api, path + "/stream", params={"after": "1"}, last_event_id="4"
    ) as stream:  # the header (an EventSource reconnecting) wins over the URL's `after`
        frames = await stream.events_until("session.status_idle")
    assert [int(f.id) for f in frames] == [e["seq"] for e in history[4:]]


async def test_resume_from_last_event_id_mid_turn_gives_every_event_once(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    got: list[tuple[int, str]] = []
    async with open_stream(api, path + "/stream") as stream:
        await api.post(path + "/messages", json={"text": "one [slow:0.1] [long:300]"})
        await api.post(path + "/messages", json={"text": "two [slow:0.1] [long:300]"})
        while True:  # leave in the middle of the first turn's model request
            frame = await stream.next()
            if frame.id is not None:
                got.append((int(frame.id), frame.json["id"]))
                if frame.event == "span.model_request_start":
                    break
    assert (await api.get(path)).body["status"] == "running"
    turns_ended = 0
    async with open_stream(api, path + "/stream", last_event_id=str(got[-1][0])) as stream:
        while turns_ended < 2:
            frame = await stream.next()
            if frame.id is None:
                continue
            got.append((int(frame.id), frame.json["id"]))
            turns_ended += frame.event == "session.status_idle"
    history = await all_events(api, agent["id"], session["id"])
    assert got == [(e["seq"], e["id"]) for e in history]


async def test_text_deltas_stream_without_ids(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    async with open_stream(api, path + "/stream") as stream:
        await api.post(path + "/messages", json={"text": "stream me [slow:0.02] [long:200]"})
        deltas = []
        while True:
            frame = await stream.next()
            if frame.event == "delta":
                assert frame.id is None
                deltas.append(frame.json)
            elif frame.event == "session.status_idle":
                break
    assert deltas, "the fake streams agent.message fragments"
    assert set(deltas[0]) == {"event_id", "text"}
    reply = next(
        e for e in await all_events(api, agent["id"], session["id"]) if e["type"] == "agent.message"
    )
    assert "".join(d["text"] for d in deltas) == reply["data"]["content"][0]["text"]


async def test_stream_errors_are_json_before_the_stream_starts(api: Api) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"]) + "/stream"
    assert_error(await api.get(path, token=None), 401)
    assert_error(await api.get(path, token=api.other_token), 404)
    bad = await api.get(path, headers={"Last-Event-ID": "abc"})
    assert_error(bad, 422, "invalid_field")["message"].startswith("Last-Event-ID")
    assert_error(await api.get(path, params={"after": "-3"}), 422)


async def test_a_client_that_leaves_is_cleaned_up_at_once(api: Api, running: RunningApp) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    bus = running.services.bus
    async with open_stream(api, path + "/stream"):
        await eventually(lambda: bus.watchers(session["id"]) == 1)
    await eventually(lambda: bus.watchers(session["id"]) == 0, timeout=5)


@asynccontextmanager
async def side_app(
    running: RunningApp | Any, **options: Any
) -> AsyncIterator[tuple[str, StreamHub]]:
    """The dashboard routes over the same services, mounted with other stream options; yields
    its URL and its stream hub (which counts only its own streams)."""
    services = getattr(running, "services", running)
    app = web.Application()
    routes.register(app, services, **options)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", app[DASHBOARD].hub
    finally:
        await runner.cleanup()


async def test_a_comment_keeps_a_quiet_stream_alive(api: Api, running: RunningApp) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    async with side_app(running, keepalive=0.05) as (url, _hub):
        async with aiohttp.ClientSession() as http:
            async with http.get(
                url + base(agent["id"], session["id"]) + "/stream",
                headers={"Authorization": f"Bearer {api.token}"},
            ) as response:
                frame = await SseReader(response).next(timeout=10)
    assert frame.id is None and frame.comments == ["keep-alive"]


async def test_many_watchers_share_one_encoding_and_no_reads_per_event(
    api: Api, running: RunningApp
) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    watchers = 5
    async with side_app(running) as (url, hub), aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {api.token}"}
        responses = [
            await http.get(url + path + "/stream", headers=headers) for _ in range(watchers)
        ]
        try:
            # Each watcher reads the (empty) mirror once when it connects.
            await eventually(lambda: hub.stats.mirror_reads == watchers)
            await api.post(path + "/messages", json={"text": "to all [slow:0.02] [long:100]"})
            seen = [await _until_idle(SseReader(r)) for r in responses]
        finally:
            for response in responses:
                response.close()
    expected = mirror(await all_events(api, agent["id"], session["id"]))
    for frames in seen:
        assert [(int(f.id), f.event, f.json["id"]) for f in frames if f.id] == expected
        assert [f.data for f in frames] == [f.data for f in seen[0]]
    distinct = len(seen[0])
    assert any(f.event == "delta" for f in seen[0])
    assert hub.stats.mirror_reads == watchers  # none per live event
    assert hub.stats.encoded == distinct  # each frame encoded once, not once per watcher
    assert hub.stats.frames_written == distinct * watchers


async def _until_idle(reader: SseReader) -> list[Any]:
    frames = []
    while True:
        frame = await reader.next()
        if frame.comments and frame.id is None and frame.event == "message":
            continue
        frames.append(frame)
        if frame.event == "session.status_idle":
            return frames


async def _app_events(running: RunningApp, session_id: str, count: int) -> None:
    """Mirror `count` app events the way the turn runner does (published on the app's own bus)."""
    for i in range(count):
        await append_app_event(running.services.runner, session_id, "app.note", {"n": i})


async def test_a_watcher_the_bus_dropped_catches_up_from_the_mirror(
    api: Api, running: RunningApp
) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    small_bus = LiveBus(max_backlog=2)
    services = dataclasses.replace(running.services, bus=small_bus)
    async with side_app(services) as (url, hub), aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {api.token}"}
        async with http.get(url + path + "/stream", headers=headers) as response:
            await eventually(lambda: hub.stats.mirror_reads == 1)
            await _app_events(running, session["id"], 5)
            records, _ = await running.services.core.events(
                ACTOR, agent["id"], session["id"], limit=10
            )
            small_bus.publish(session["id"], records)  # five at once: the backlog of 2 overflows
            reader = SseReader(response)
            seqs = [int((await _next_event(reader)).id) for _ in range(5)]
            await _app_events(running, session["id"], 1)
            small_bus.publish(session["id"], (await _records(running, agent, session))[-1:])
            seqs.append(int((await _next_event(reader)).id))
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert hub.stats.mirror_reads == 2  # the connect, and one catch-up after the overflow


async def test_a_seq_jump_on_the_bus_is_filled_from_the_mirror(
    api: Api, running: RunningApp
) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    bus = LiveBus()
    async with side_app(dataclasses.replace(running.services, bus=bus)) as (url, hub):
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {api.token}"}
            async with http.get(url + path + "/stream", headers=headers) as response:
                await eventually(lambda: hub.stats.mirror_reads == 1)
                await _app_events(running, session["id"], 4)
                records = await _records(running, agent, session)
                reader = SseReader(response)
                bus.publish(session["id"], [records[0]])
                seqs = [int((await _next_event(reader)).id)]
                bus.publish(session["id"], [records[2], records[1], records[3]])
                seqs += [int((await _next_event(reader)).id) for _ in range(3)]
    assert seqs == [1, 2, 3, 4]  # 2 read from the mirror before 3; the late 2 is not repeated


async def _records(running: RunningApp, agent: dict[str, Any], session: dict[str, Any]) -> list:
    records, _ = await running.services.core.events(ACTOR, agent["id"], session["id"], limit=100)
    return records


async def _next_event(reader: SseReader) -> Any:
    while True:
        frame = await reader.next()
        if frame.id is not None:
            return frame


async def test_a_watcher_whose_socket_backs_up_gets_everything_once_in_order(
    api: Api, running: RunningApp
) -> None:
    agent = await api.agent()
    session = await api.session(agent["id"])
    path = base(agent["id"], session["id"])
    bus = LiveBus()
    async with side_app(dataclasses.replace(running.services, bus=bus)) as (url, hub):
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {api.token}"}
            async with http.get(url + path + "/stream", headers=headers) as response:
                await eventually(lambda: hub.stats.mirror_reads == 1)
                big = "x" * 40_000  # more than a live write may leave unsent on one socket
                for i in range(30):
                    await append_app_event(
                        running.services.runner, session["id"], "app.note", {"i": i, "pad": big}
                    )
                    records = await _records(running, agent, session)
                    bus.publish(session["id"], records[-1:])
                reader = SseReader(response)  # only now does the client read anything
                seqs = [int((await _next_event(reader)).id) for _ in range(30)]
                await _app_events(running, session["id"], 1)
                bus.publish(session["id"], (await _records(running, agent, session))[-1:])
                seqs.append(int((await _next_event(reader)).id))
    assert seqs == list(range(1, 32))
    assert hub.stats.slow_handovers >= 1
