"""Several `python app.py` replicas on one PostgreSQL, the local fakes, and a Slack-like sender.

Shared by `bench/replicas.py`, `bench/faults.py` and `tests/e2e/test_replicas.py`:

- `create_database` (a fresh database on a PostgreSQL server, migrated by `python app.py
  migrate`, dropped at the end) and `PrivatePostgres` (a throw-away cluster of our own, so a bench
  may restart it without touching anybody else's server);
- `BenchSlack` (the fake Slack Web API, indexed for thousands of messages, with time windows of
  429 or 500 answers) and the fake Anthropic API, served by the driver process over loopback HTTP;
- `Replicas`: N `python app.py` processes configured by environment variables, started, killed
  with SIGKILL, restarted and stopped;
- `plan_load` / `SlackSender`: threads of Slack messages, delivered as Slack does (signed
  envelopes, one URL per process round-robin, a retry with `X-Slack-Retry-Num` to another process
  when an answer is not a 200 within 3 s, and on purpose for a share of the events);
- `tally`: what a user would see at the end (one answer per message in each thread), checked
  against the database (one session per thread, one mirrored `user.message` per Slack message)
  and the runtime (each message sent to it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from runtime.scripted import parse_script  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.models import AgentSession, SessionEvent, SessionInbox, SlackEventReceipt  # noqa: E402
from tests.fakes.anthropic_api import FakeAnthropic  # noqa: E402
from tests.fakes.slack_api import FakeSlack, Fault, Message, event_envelope, sign  # noqa: E402

SIGNING_SECRET = "bench-signing-secret"
JWT_SECRET = "bench-jwt-secret-of-at-least-32-bytes!"
SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
SLACK_ACK_TIMEOUT = 3.0  # Slack retries an event whose 200 has not come within 3 s
REPLY_PREFIX = "You said: "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class Database:
    """A database of its own on a server: `url` for the app, `drop()` at the end."""

    url: str
    server_url: str
    name: str

    async def drop(self) -> None:
        await _admin(self.server_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def _admin(server_url: str, statement: str) -> None:
    engine = make_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str = SERVER_URL, *, prefix: str = "bench") -> Database:
    """A fresh database (the app uses the default schema), migrated with `python app.py
    migrate` as an operator would."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    database = Database(url, server_url, name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        "migrate",
        env=_clean_env({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        await database.drop()
        raise RuntimeError(f"python app.py migrate failed: {out.decode()[-2000:]}")
    return database


class PrivatePostgres:
    """A PostgreSQL cluster of our own in `workdir` on a free port (trust auth, user postgres),
    so a fault bench can restart it without cutting anybody else's connections."""

    def __init__(self, workdir: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = Path(found[-1]) if found else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        self.dir = workdir / "pg"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.decode()[-1000:]}")

    def _ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "server.log"),
            "-o",
            options,
            "-w",
            action,
            *extra,
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:  # the server runs as postgres: let it reach its directory
            self.dir.parent.chmod(0o711)
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.dir / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        self._ctl("start")

    def restart(self) -> float:
        """Stop (fast: every connection is cut) and start again; returns the seconds it took."""
        started = time.monotonic()
        self._ctl("restart", "-m", "fast")
        self.restarts += 1
        return time.monotonic() - started

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._ctl("stop", "-m", "immediate")


def restart_system_postgres() -> float:
    """Restart the machine's own cluster (what the issue asks for literally); every user of that
    server loses its connections, so the benches only do this when asked (`--shared-pg`)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True
    )
    return time.monotonic() - started


# -- the fake Slack, indexed and with fault windows ----------------------------------------------


class _IndexedMessages(list[Message]):
    """The fake's message list, with an index by (channel, ts): the base class looks messages up
    by scanning, which is quadratic over thousands of streamed replies."""

    def __init__(self) -> None:
        super().__init__()
        self.by_ts: dict[tuple[str, str], Message] = {}

    def append(self, message: Message) -> None:
        super().append(message)
        self.by_ts[(message.channel, message.ts)] = message


class BenchSlack(FakeSlack):
    """`FakeSlack` for thousands of threads: indexed lookups, the time of each message's last
    change, and `fail_for(seconds, status)`: every Web API call answers that status meanwhile."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.messages = _IndexedMessages()
        self.changed_at: dict[tuple[str, str], float] = {}
        self.last_call_at = time.monotonic()
        self.fault_answers: Counter[int] = Counter()
        self._window: tuple[float, int, int] | None = None

    def fail_for(self, seconds: float, status: int, *, retry_after: int = 1) -> None:
        self._window = (time.monotonic() + seconds, status, retry_after)

    def _find(self, channel: str, ts: str) -> Message | None:
        return self.messages.by_ts.get((channel, ts))

    def _take_fault(self, method: str) -> Fault | None:
        self.last_call_at = time.monotonic()
        if self._window is not None:
            until, status, retry_after = self._window
            if time.monotonic() < until:
                self.fault_answers[status] += 1
                error = "ratelimited" if status == 429 else "internal_error"
                return Fault(status, error, 1, retry_after if status == 429 else 0)
            self._window = None
        return super()._take_fault(method)

    def _touched(self, answer: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        if answer.get("ok"):
            key = (answer.get("channel") or args.get("channel", ""), answer.get("ts") or "")
            self.changed_at[key] = time.monotonic()
        return answer

    def _m_chat_postMessage(self, team: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self._touched(super()._m_chat_postMessage(team, args), args)

    def _m_chat_startStream(self, team: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self._touched(super()._m_chat_startStream(team, args), args)

    def _m_chat_appendStream(self, team: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self._touched(super()._m_chat_appendStream(team, args), args)

    def _m_chat_stopStream(self, team: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self._touched(super()._m_chat_stopStream(team, args), args)

    def _m_chat_update(self, team: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self._touched(super()._m_chat_update(team, args), args)

    def threads(self) -> dict[tuple[str, str], list[Message]]:
        """The bot's messages by (channel, thread_ts), oldest first."""
        out: dict[tuple[str, str], list[Message]] = defaultdict(list)
        for message in self.messages:
            if message.thread_ts and not message.deleted:
                out[(message.channel, message.thread_ts)].append(message)
        return out


# -- the replicas -----------------------------------------------------------------------------


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The driver's environment without anything the app would read by itself."""
    drop = ("SLACK_", "ANTHROPIC_", "SUPABASE_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("https_proxy", None)
    env.pop("DATABASE_URL", None)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def app_env(
    database_url: str,
    slack: FakeSlack,
    anthropic: FakeAnthropic,
    *,
    lease_seconds: float = 30.0,
    recover_every: float = 5.0,
    pool_size: int = 10,
    log_level: str = "INFO",
) -> dict[str, str]:
    """Everything a replica reads, as environment variables (the contract's names)."""
    return _clean_env(
        {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": slack.team("T1").bot_token,
            "SLACK_API_URL": slack.api_url,
            "ANTHROPIC_API_KEY": anthropic.api_key,
            "ANTHROPIC_BASE_URL": anthropic.base_url,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            # A long run costs more than a new workspace's credit: meter, never refuse.
            "BILLING_ENFORCED": "false",
            "TURN_LEASE_SECONDS": str(lease_seconds),
            "RECOVER_EVERY_SECONDS": str(recover_every),
            "DB_POOL_SIZE": str(pool_size),
            "LOG_LEVEL": log_level,
        }
    )


@dataclass
class Replica:
    index: int
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/slack/events"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Replicas:
    """N `python app.py` processes on one database, each on a free port, logs in `workdir`."""

    def __init__(self, count: int, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.items = [Replica(i, free_port(), workdir / f"app{i}.log") for i in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Replica:
        return self.items[index]

    def _spawn(self, replica: Replica) -> None:
        env = {**self.env, "PORT": str(replica.port)}
        log = replica.log_path.open("ab")
        # The working directory holds no `.env`: the replica reads only what we give it.
        replica.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            env=env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        replica.pids.append(replica.proc.pid)

    async def _ready(self, replica: Replica, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if not replica.alive:
                    raise RuntimeError(f"replica {replica.index} exited: see {replica.log_path}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{replica.base_url}/readyz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {replica.index} not ready in {timeout:g} s")
                await asyncio.sleep(0.1)

    async def start(self, timeout: float = 60.0) -> None:
        for replica in self.items:
            self._spawn(replica)
        await asyncio.gather(*(self._ready(r, timeout) for r in self.items))

    def kill(self, index: int) -> int:
        """SIGKILL: no drain, no goodbye; returns the pid."""
        replica = self.items[index]
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGKILL)
        replica.proc.wait()
        return replica.proc.pid

    def index_of_pid(self, pid: int) -> int | None:
        return next((r.index for r in self.items if r.alive and r.proc and r.proc.pid == pid), None)

    async def restart(self, index: int, timeout: float = 60.0) -> None:
        replica = self.items[index]
        if replica.alive:
            self.kill(index)
        self._spawn(replica)
        await self._ready(replica, timeout)

    async def stop(self, timeout: float = 45.0) -> None:
        """SIGTERM (the app drains its turns and Slack deliveries), SIGKILL after `timeout`."""
        live = [r for r in self.items if r.alive]
        for replica in live:
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGTERM)
        for replica in live:
            assert replica.proc is not None
            try:
                await asyncio.to_thread(replica.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the live replicas used so far (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for replica in self.items:
            if not replica.alive or replica.proc is None:
                continue
            with contextlib.suppress(OSError):
                fields = (
                    Path(f"/proc/{replica.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                )
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def turns_by_process(self) -> list[int]:
        """Turns each replica finished, from its log (a killed one counts what it finished)."""
        return [self.log_count(r, '"msg": "turn finished"') for r in self.items]

    @staticmethod
    def log_count(replica: Replica, needle: str) -> int:
        if not replica.log_path.exists():
            return 0
        return replica.log_path.read_text(errors="replace").count(needle)

    def takeover_figures(self, slack: FakeSlack) -> str:
        """Turns stopped by a process (lease lost, database gone) and turns taken over (each
        resumed turn reads its Slack thread once)."""
        abandoned = sum(self.log_count(r, '"msg": "turn abandoned') for r in self.items)
        resumed = len(slack.calls_of("conversations.replies"))
        return f"turns abandoned {abandoned}, turns taken over {resumed}"


async def bind_agent(replica: Replica) -> dict[str, Any]:
    """Deploy the bench agent through the dashboard API, as the team's default in Slack."""
    import app as app_module

    settings = app_module.Settings(_env_file=None, supabase_jwt_secret=JWT_SECRET)
    token = app_module.make_token(settings, "bench", "bench-admin", 3600)
    body = {
        "name": "Bench",
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "approval_required_tools": [],
        "slack": {"team_id": "T1", "channel_ids": [], "default": True},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{replica.base_url}/dashboard/agents",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            answer = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"deploying the agent answered {resp.status}: {answer}")
            return answer


# -- the load ---------------------------------------------------------------------------------


@dataclass
class SlackMessage:
    """One message a user writes in a thread; `events` are its Events API deliveries (a channel
    mention arrives twice: `app_mention` and `message`)."""

    thread: int
    k: int
    text: str
    channel: str
    ts: str
    thread_ts: str | None
    events: list[dict[str, Any]]
    slow: bool = False
    retried: bool = False
    sent_at: float | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def expected(self) -> str:
        """What the scripted agent answers (its directives removed, whitespace collapsed)."""
        cleaned = parse_script(self.text).text
        return f"{REPLY_PREFIX}{cleaned}" if cleaned else "You said nothing."

    @property
    def thread_key(self) -> tuple[str, str]:
        return (self.channel, self.thread_ts or self.ts)


@dataclass
class LoadPlan:
    threads: int
    messages: list[SlackMessage]
    order: list[SlackMessage]

    @property
    def events(self) -> int:
        return sum(len(m.events) for m in self.messages)


def plan_load(
    threads: int,
    per_thread: int,
    *,
    burst_share: float = 0.3,
    slow_threads: int = 0,
    slow_seconds: float = 1.0,
    seed: int = 1,
) -> LoadPlan:
    """Half the threads are DMs, half channel threads opened by a mention (two events each).

    Most threads get one message per round (the answer comes before the next message); a
    `burst_share` of them get all their messages back to back, so messages queue behind a
    running turn, often taken by another process. `slow_threads` answer slowly (a turn of
    several seconds) to show that a slow session does not hold the others back."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    base = int(time.time())
    serial = itertools.count(1)
    all_messages: list[SlackMessage] = []
    by_thread: list[list[SlackMessage]] = []
    for i in range(threads):
        dm = i % 2 == 0
        channel = f"D{i:05d}" if dm else f"C{i % 25:03d}"
        user = f"U{i:05d}"
        slow = i < slow_threads
        thread_msgs: list[SlackMessage] = []
        root_ts = ""
        for k in range(per_thread):
            n = next(serial)
            ts = f"{base}.{n:06d}"
            root_ts = root_ts or ts
            # The full stop ends the answer too: no answer reads as the start of another one.
            text_ = f"t{i}-m{k} hello from {user}."
            if slow:
                text_ += f" [slow:{slow_seconds:g}]"
            event: dict[str, Any] = {
                "type": "message",
                "channel": channel,
                "channel_type": "im" if dm else "channel",
                "user": user,
                "text": text_,
                "ts": ts,
                "event_ts": ts,
            }
            if k > 0:
                event["thread_ts"] = root_ts
            events = [event]
            if k == 0 and not dm:
                mentioned = {**event, "text": f"<@UBOT> {text_}"}
                mention = {**mentioned, "type": "app_mention"}
                mention.pop("channel_type")
                events = [mention, mentioned]
            envelopes = [
                event_envelope(e, team_id="T1", event_id=f"Ev{run}{n:07d}{j}")
                for j, e in enumerate(events)
            ]
            thread_msgs.append(
                SlackMessage(
                    thread=i,
                    k=k,
                    text=text_,
                    channel=channel,
                    ts=ts,
                    thread_ts=None if k == 0 else root_ts,
                    events=envelopes,
                    slow=slow,
                )
            )
        by_thread.append(thread_msgs)
        all_messages.extend(thread_msgs)
    order: list[SlackMessage] = []
    bursty = {i for i in range(threads) if rng.random() < burst_share}
    for k in range(per_thread):
        for i in range(threads):
            if i in bursty:
                if k == 0:
                    order.extend(by_thread[i])
            else:
                order.append(by_thread[i][k])
    return LoadPlan(threads, all_messages, order)


@dataclass
class SendStats:
    posts: int = 0
    originals: int = 0
    deliberate_retries: int = 0
    failure_retries: int = 0
    non_200: Counter[str] = field(default_factory=Counter)
    undelivered: int = 0
    ack_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


class SlackSender:
    """Delivers the plan like Slack: each event to one process (round-robin), retried to the
    next process with `X-Slack-Retry-Num` when the answer is not a 200 within 3 s; a share of
    the events is also retried on purpose, to another process, while the first delivery may
    still be in flight."""

    def __init__(
        self,
        replicas: Replicas,
        *,
        rate: float | None,
        concurrency: int = 64,
        retry_share: float = 0.1,
        max_attempts: int = 12,
        seed: int = 2,
    ) -> None:
        self.replicas = replicas
        self.rate = rate
        self.retry_share = retry_share
        self.max_attempts = max_attempts
        self.rng = random.Random(seed)
        self.stats = SendStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._round_robin = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self.http: aiohttp.ClientSession | None = None
        self.sent = asyncio.Event()  # set at each first delivery of an event

    async def __aenter__(self) -> SlackSender:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=SLACK_ACK_TIMEOUT),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    async def _post(self, target: int, envelope: dict[str, Any], retry_num: int) -> str:
        """One delivery; "200" or what went wrong."""
        assert self.http is not None
        body = json.dumps(envelope)
        headers = {"Content-Type": "application/json", **sign(body, secret=SIGNING_SECRET)}
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        self.stats.posts += 1
        started = time.perf_counter()
        try:
            async with self._slots:
                async with self.http.post(
                    self.replicas[target].events_url, data=body.encode(), headers=headers
                ) as resp:
                    await resp.read()
                    outcome = str(resp.status)
        except TimeoutError:
            outcome = "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            outcome = type(exc).__name__
        if outcome == "200" and not retry_num:
            self.stats.ack_ms.append((time.perf_counter() - started) * 1000)
        return outcome

    async def deliver(self, envelope: dict[str, Any], target: int) -> bool:
        """Until a 200, trying the next process after each failure (Slack backs off for minutes;
        this compresses it to a fraction of a second to a few seconds)."""
        for attempt in range(self.max_attempts):
            outcome = await self._post((target + attempt) % len(self.replicas), envelope, attempt)
            if outcome == "200":
                return True
            self.stats.non_200[outcome] += 1
            self.stats.failure_retries += 1
            await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
        self.stats.undelivered += 1
        return False

    async def _deliberate_retry(self, envelope: dict[str, Any], target: int) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        outcome = await self._post((target + 1) % len(self.replicas), envelope, 1)
        if outcome != "200":
            self.stats.non_200[f"retry {outcome}"] += 1

    async def send_message(self, message: SlackMessage) -> None:
        """Every event of the message (a mention's two events go to two processes); done when
        all were acknowledged."""
        message.sent_at = time.monotonic()
        deliveries = []
        for envelope in message.events:
            target = next(self._round_robin) % len(self.replicas)
            self.stats.originals += 1
            self.sent.set()
            if self.rng.random() < self.retry_share:
                message.retried = True
                self.stats.deliberate_retries += 1
                self._spawn(self._deliberate_retry(envelope, target))
            deliveries.append(self.deliver(envelope, target))
        await asyncio.gather(*deliveries)
        message.acked.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, plan: LoadPlan) -> SendStats:
        """Send the plan in order at `rate` events/s; a message waits for the one before it in
        its thread to be acknowledged (a thread reply needs its session)."""
        previous: dict[int, SlackMessage] = {}
        self.stats.started = time.monotonic()
        sent_events = 0
        for message in plan.order:
            if self.rate:
                due = self.stats.started + sent_events / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent_events += len(message.events)
            before = previous.get(message.thread)
            previous[message.thread] = message
            self._spawn(self._after(before, message))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.stats.finished = time.monotonic()
        return self.stats

    async def _after(self, before: SlackMessage | None, message: SlackMessage) -> None:
        if before is not None:
            await before.acked.wait()
        await self.send_message(message)


# -- settling and counting ------------------------------------------------------------------


async def settle(
    engine: Any,
    slack: BenchSlack,
    anthropic: FakeAnthropic,
    plan: LoadPlan,
    *,
    timeout: float,
    quiet: float = 1.5,
) -> float:
    """Until no message waits in any inbox, no session runs, every expected answer is in its
    thread, and neither fake has heard anything for `quiet` s (a late duplicate would show up
    by then); returns when the last answer came (monotonic). Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    wanted = {(m.thread_key, m.expected) for m in plan.messages}
    runtime_requests, runtime_changed = -1, time.monotonic()
    while True:
        pending = running = -1
        with contextlib.suppress(Exception):  # the database may be restarting
            async with engine.connect() as conn:
                pending = await conn.scalar(
                    select(func.count())
                    .select_from(SessionInbox)
                    .where(SessionInbox.state.in_(("queued", "sending")))
                )
                running = await conn.scalar(
                    select(func.count())
                    .select_from(AgentSession)
                    .where(AgentSession.status == "running")
                )
        answered = _answered(slack, wanted)
        now = time.monotonic()
        if len(anthropic.requests) != runtime_requests:
            runtime_requests, runtime_changed = len(anthropic.requests), now
        still = now - slack.last_call_at > quiet and now - runtime_changed > quiet
        if pending == 0 and running == 0 and answered >= len(wanted) and still:
            break
        if now > deadline:
            break
        await asyncio.sleep(0.25)
    return max(slack.changed_at.values(), default=time.monotonic())


def _answered(slack: BenchSlack, wanted: set[tuple[tuple[str, str], str]]) -> int:
    texts = {key: "".join(m.text for m in messages) for key, messages in slack.threads().items()}
    return sum(1 for key, expected in wanted if expected in texts.get(key, ""))


@dataclass
class Tally:
    threads: int
    messages: int
    sessions: int = 0
    replies: int = 0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    partial: int = 0
    notices: int = 0
    mirror_user_messages: int = 0
    mirror_duplicates: int = 0
    mirror_missing: int = 0
    runtime_duplicates: int = 0
    runtime_missing: int = 0
    inbox_states: Counter[str] = field(default_factory=Counter)
    receipts: int = 0
    lost_examples: list[str] = field(default_factory=list)
    duplicate_examples: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.sessions == self.threads
            and self.replies == self.messages
            and self.duplicates == 0
            and self.lost == 0
            and self.mirror_duplicates == 0
            and self.mirror_missing == 0
            and self.runtime_duplicates == 0
        )

    def summary(self) -> str:
        return (
            f"sessions {self.sessions}/{self.threads}, replies {self.replies}/{self.messages}, "
            f"duplicates {self.duplicates}, lost {self.lost}, "
            f"mirror user.message {self.mirror_user_messages}/{self.messages} "
            f"(dup {self.mirror_duplicates}), runtime sends dup {self.runtime_duplicates}"
        )

    def latency(self) -> str:
        if not self.latency_ms:
            return "reply latency n/a"
        values = sorted(self.latency_ms)
        p99 = values[max(0, int(len(values) * 0.99) - 1)]
        return f"reply p50 {statistics.median(values):.0f} ms p99 {p99:.0f} ms"


async def tally(engine: Any, slack: BenchSlack, anthropic: FakeAnthropic, plan: LoadPlan) -> Tally:
    """What each thread shows, what the database holds, what the runtime was sent."""
    result = Tally(plan.threads, len(plan.messages))
    threads = slack.threads()
    by_thread: dict[tuple[str, str], list[SlackMessage]] = defaultdict(list)
    for message in plan.messages:
        by_thread[message.thread_key].append(message)
    for key, expected_msgs in by_thread.items():
        posted = threads.get(key, [])
        # A reply streamed and then completed by plain posts (a stream that broke) still reads
        # as one answer: look at the thread's text as a whole.
        whole = "".join(m.text for m in posted)
        positions = []
        for message in expected_msgs:
            found = whole.count(message.expected)
            if found == 0:
                result.lost += 1
                if len(result.lost_examples) < 5:
                    result.lost_examples.append(f"{key[0]}/{key[1]} {message.text!r}")
            else:
                result.replies += 1
                result.duplicates += found - 1
                if found > 1 and len(result.duplicate_examples) < 5:
                    result.duplicate_examples.append(f"{key[0]}/{key[1]} {message.text!r}")
                positions.append(whole.find(message.expected))
                done = _completed_at(slack, posted, message.expected)
                if done is not None and message.sent_at is not None and not message.slow:
                    result.latency_ms.append((done - message.sent_at) * 1000)
        if positions != sorted(positions):
            result.out_of_order += 1
        expected_texts = {m.expected for m in expected_msgs}
        for m in posted:
            if m.text in expected_texts:
                continue
            if m.text.startswith(":warning:") or not m.text.startswith(REPLY_PREFIX[:4]):
                result.notices += 1
            elif m.streaming or any(e.startswith(m.text) for e in expected_texts):
                result.partial += 1
    async with engine.connect() as conn:
        result.sessions = await conn.scalar(
            select(func.count()).select_from(AgentSession).where(AgentSession.source == "slack")
        )
        keys = dict(
            (await conn.execute(select(AgentSession.id, AgentSession.slack_conversation_key))).all()
        )
        rows = (
            await conn.execute(
                select(SessionEvent.session_id, SessionEvent.data).where(
                    SessionEvent.type == "user.message"
                )
            )
        ).all()
        states = (
            await conn.execute(
                select(SessionInbox.state, func.count()).group_by(SessionInbox.state)
            )
        ).all()
        result.inbox_states = Counter({state: n for state, n in states})
        result.receipts = await conn.scalar(select(func.count()).select_from(SlackEventReceipt))
    mirrored: Counter[tuple[str, str]] = Counter()
    for session_id, data in rows:
        mirrored[(keys.get(session_id) or "", _text(data))] += 1
    result.mirror_user_messages = sum(mirrored.values())
    sent_to_runtime = Counter(_text(e) for e in anthropic.sent_events(event_type="user.message"))
    for message in plan.messages:
        key = f"T1:{message.channel}:{message.thread_key[1]}"
        n = mirrored.get((key, message.text), 0)
        if n == 0:
            result.mirror_missing += 1
        result.mirror_duplicates += max(0, n - 1)
        sends = sent_to_runtime.get(message.text, 0)
        if sends == 0:
            result.runtime_missing += 1
        result.runtime_duplicates += max(0, sends - 1)
    return result


def _completed_at(slack: BenchSlack, posted: list[Message], expected: str) -> float | None:
    for m in posted:
        if expected in m.text:
            return slack.changed_at.get((m.channel, m.ts))
    return None


def _text(data: dict[str, Any]) -> str:
    return "".join(
        block.get("text", "")
        for block in data.get("content") or []
        if isinstance(block, dict) and block.get("type") == "text"
    )


# -- one whole run ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """What a run's fault schedule can reach while the load goes on."""

    replicas: Replicas
    slack: BenchSlack
    anthropic: FakeAnthropic
    sender: SlackSender
    plan: LoadPlan
    engine: Any
    restart_postgres: Any = None
    notes: list[str] = field(default_factory=list)

    def progress(self) -> float:
        """Share of the plan's events sent so far."""
        return self.sender.stats.originals / max(1, self.plan.events)

    async def until_progress(self, share: float) -> None:
        while self.progress() < share:
            self.sender.sent.clear()
            await self.sender.sent.wait()


@dataclass
class Outcome:
    plan: LoadPlan
    stats: SendStats
    tally: Tally
    turns_by_process: list[int]
    send_seconds: float
    answer_seconds: float
    notes: list[str]
    cpu: str = ""
    takeovers: str = ""


@dataclass
class Scenario:
    processes: int = 3
    threads: int = 1000
    per_thread: int = 3
    rate: float | None = 100.0
    retry_share: float = 0.1
    burst_share: float = 0.3
    slow_threads: int = 0
    lease_seconds: float = 30.0
    recover_every: float = 5.0
    pool_size: int = 10
    settle_timeout: float = 300.0
    log_level: str = "INFO"


async def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    server_url: str = SERVER_URL,
    chaos: Any = None,
    restart_postgres: Any = None,
) -> Outcome:
    """Fakes, a fresh database, the replicas, an agent; the load (and `chaos(cluster)` beside
    it); then settle, count, and tear everything down."""
    slack = await BenchSlack().start()
    anthropic = FakeAnthropic()
    await anthropic.start()
    database = await create_database(server_url)
    engine = make_engine(database.url, pool_size=2)
    replicas = Replicas(
        scenario.processes,
        app_env(
            database.url,
            slack,
            anthropic,
            lease_seconds=scenario.lease_seconds,
            recover_every=scenario.recover_every,
            pool_size=scenario.pool_size,
            log_level=scenario.log_level,
        ),
        workdir,
    )
    try:
        await replicas.start()
        await bind_agent(replicas[0])
        plan = plan_load(
            scenario.threads,
            scenario.per_thread,
            burst_share=scenario.burst_share,
            slow_threads=scenario.slow_threads,
        )
        async with SlackSender(
            replicas, rate=scenario.rate, retry_share=scenario.retry_share
        ) as sender:
            cluster = Cluster(replicas, slack, anthropic, sender, plan, engine, restart_postgres)
            chaos_task = asyncio.create_task(chaos(cluster)) if chaos else None
            peak = [0]
            connections = asyncio.create_task(_peak_connections(engine, peak))
            stats = await sender.run(plan)
            if chaos_task is not None:
                await chaos_task
            answered_at = await settle(
                engine, slack, anthropic, plan, timeout=scenario.settle_timeout
            )
            connections.cancel()
            await asyncio.gather(connections, return_exceptions=True)
        result = await tally(engine, slack, anthropic, plan)
        async with engine.connect() as conn:
            opened = await conn.scalar(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            )
        wall = time.monotonic() - stats.started
        cpu = (
            f"peak {peak[0]} connections to the database, {opened} opened in all "
            f"(DB_POOL_SIZE={scenario.pool_size} per process) | "
            f"CPU over {wall:.0f} s: replicas {replicas.cpu_seconds():.0f} s (live ones), "
            f"driver and fakes {time.process_time():.0f} s, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        return Outcome(
            cpu=cpu,
            takeovers=replicas.takeover_figures(slack),
            plan=plan,
            stats=stats,
            tally=result,
            turns_by_process=replicas.turns_by_process(),
            send_seconds=stats.finished - stats.started,
            answer_seconds=answered_at - stats.started,
            notes=cluster.notes,
        )
    finally:
        await replicas.stop()
        await engine.dispose()
        await database.drop()
        await anthropic.close()
        await slack.stop()


async def _peak_connections(engine: Any, peak: list[int]) -> None:
    """Sample how many connections the database has (all replicas, the bus listeners, us)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    while True:
        with contextlib.suppress(Exception):  # the database may be restarting
            async with engine.connect() as conn:
                peak[0] = max(peak[0], await conn.scalar(query))
        await asyncio.sleep(0.5)


def describe(outcome: Outcome, scenario: Scenario) -> str:
    """The common part of a bench's result line."""
    stats, result = outcome.stats, outcome.tally
    acks = sorted(stats.ack_ms)
    ack_p99 = acks[max(0, int(len(acks) * 0.99) - 1)] if acks else float("nan")
    failures = ", ".join(f"{k} x{v}" for k, v in stats.non_200.most_common()) or "none"
    line = (
        f"{scenario.processes} process{'es' if scenario.processes > 1 else ''}, "
        f"{result.threads} threads, {result.messages} messages, "
        f"{stats.originals} events + {stats.deliberate_retries} Slack retries "
        f"{'to another process ' if scenario.processes > 1 else ''}"
        f"at {stats.originals / max(outcome.send_seconds, 1e-9):.0f} ev/s | "
        f"{result.summary()} | "
        f"answered in {outcome.answer_seconds:.1f} s "
        f"({result.messages / max(outcome.answer_seconds, 1e-9):.0f} msg/s), {result.latency()}, "
        f"ack p50 {statistics.median(acks) if acks else float('nan'):.0f} ms p99 {ack_p99:.0f} ms, "
        f"turns by process {'/'.join(map(str, outcome.turns_by_process))}, "
        f"non-200 acks: {failures}"
    )
    if stats.undelivered:
        line += f", undelivered events {stats.undelivered}"
    if outcome.cpu:
        line += f" | {outcome.cpu}"
    if result.partial or result.notices or result.out_of_order:
        line += (
            f" | partial messages {result.partial}, notices {result.notices}, "
            f"threads out of order {result.out_of_order}"
        )
    if result.lost_examples:
        line += f" | lost e.g. {'; '.join(result.lost_examples[:3])}"
    if result.duplicate_examples:
        line += f" | doubled e.g. {'; '.join(result.duplicate_examples[:3])}"
    return line
