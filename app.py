"""Composition root and CLI: `python app.py [serve|migrate|token|demo|wallet]`.

This is the only module that reads the environment (through `Settings`); everything else gets its
dependencies passed in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("app")


class Settings(BaseSettings):
    """Every variable of the contract (DESIGN.md, "Environment"), read from the environment and `.env`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = "sqlite+aiosqlite:///./var/app.db"
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)

    slack_signing_secret: str | None = None
    slack_bot_token: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None

    supabase_jwt_secret: str | None = None
    supabase_jwks_url: str | None = None
    supabase_jwt_audience: str = "authenticated"
    supabase_jwt_issuer: str | None = None

    starting_credit_usd: Decimal = Decimal("5.00")
    billing_enforced: bool = True

    test_postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

    # Operational knobs beyond the contract (documented in .env.example).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    turn_timeout_seconds: float = Field(default=600.0, gt=0)
    # A turn's claim on its session lasts this long unless renewed (every third of it): after a
    # crash, another replica takes the session over once the lease has run out.
    turn_lease_seconds: float = Field(default=30.0, gt=0)
    # How often each process looks for orphaned work (expired leases, messages never kicked).
    recover_every_seconds: float = Field(default=5.0, gt=0)
    dashboard_origin: str | None = None
    public_url: str | None = None
    log_level: str = "INFO"
    # {"model-prefix": {"input": 3, "output": 15}} in dollars per million tokens.
    model_prices: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    runtime_price_per_hour: Decimal = Decimal("0.08")
    # {"tool name": dollars per call}, debited from the data wallet.
    tool_prices: dict[str, Decimal] = Field(default_factory=dict)

    def price_overrides(self) -> dict[str, Any]:
        from router.billing import DEFAULT_PRICES

        prices = dict(DEFAULT_PRICES)
        for prefix, price in self.model_prices.items():
            prices[prefix] = (Decimal(price["input"]), Decimal(price["output"]))
        return {
            "prices": prices,
            "runtime_per_hour": self.runtime_price_per_hour,
            "tool_prices": dict(self.tool_prices),
        }

    @field_validator(
        "slack_signing_secret",
        "slack_bot_token",
        "slack_client_id",
        "slack_client_secret",
        "anthropic_api_key",
        "anthropic_base_url",
        "supabase_jwt_secret",
        "supabase_jwks_url",
        "supabase_jwt_issuer",
        "dashboard_origin",
        "public_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    def missing_features(self) -> list[str]:
        """What is not configured, and what therefore does not work (one log line at start)."""
        missing = []
        if not self.slack_signing_secret:
            missing.append("SLACK_SIGNING_SECRET unset: /slack/events refuses every request")
        if not (self.slack_bot_token or (self.slack_client_id and self.slack_client_secret)):
            missing.append(
                "no SLACK_BOT_TOKEN or SLACK_CLIENT_ID/SECRET: no replies can be posted to Slack"
            )
        if not self.anthropic_api_key:
            missing.append("ANTHROPIC_API_KEY unset: turns end with a clear `app.error` event")
        if not (self.supabase_jwt_secret or self.supabase_jwks_url):
            missing.append("SUPABASE_JWT_SECRET unset: dashboard routes answer 401")
        return missing


class JsonLogFormatter(logging.Formatter):
    """One JSON line per log event, with whatever `extra=` fields the caller gave."""

    _skip = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


@dataclass
class Services:
    """Everything `build` wires together; the web app and the CLI commands use it."""

    settings: Settings
    engine: Any
    sessionmaker: Any
    bus: Any = None
    runtime: Any = None
    runner: Any = None
    core: Any = None
    triggers: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.shutdown()
        if self.runtime is not None:
            await self.runtime.close()
        await self.engine.dispose()


class StartupError(Exception):
    """A configuration problem worth one clear line, not a traceback."""


async def open_database(
    settings: Settings, *, migrate_sqlite: bool = True, engine: Any = None
) -> Services:
    from sqlalchemy.exc import SQLAlchemyError

    from store.db import DatabaseConfigError, is_sqlite, make_engine, make_sessionmaker, ping
    from store.migrate import upgrade

    try:
        engine = engine or make_engine(settings.database_url, pool_size=settings.db_pool_size)
    except DatabaseConfigError as exc:
        raise StartupError(str(exc)) from exc
    try:
        await asyncio.wait_for(ping(engine), timeout=10)
        if migrate_sqlite and is_sqlite(engine):
            await upgrade(engine)
    except (TimeoutError, OSError, SQLAlchemyError) as exc:
        await engine.dispose()
        raise StartupError(
            f"cannot reach the database at {_redact(settings.database_url)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'timed out'}"
        ) from exc
    return Services(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: say nothing of its contents
        return "<DATABASE_URL>"


async def build(
    settings: Settings,
    *,
    runtime: Any = None,
    engine: Any = None,
    lease_seconds: float = 30.0,
    recover_every: float = 5.0,
    search_path: str | None = None,
) -> Services:
    """Open the database and wire the core: runtime, live bus, turn runner, session service.

    Tests pass their own `engine` (a PostgreSQL schema of their own) and `runtime`."""
    from router.billing import Billing, PriceTable
    from router.sessions import SessionService
    from router.triggers import Triggers
    from router.turns import TurnRunner
    from runtime.client import build_runtime
    from store.bus import LiveBus, PgLiveBus
    from store.db import is_sqlite

    services = await open_database(settings, engine=engine)
    if is_sqlite(services.engine):
        services.bus = LiveBus()
    else:
        # Replicas on one PostgreSQL: a watcher on any process sees every process's turns.
        services.bus = PgLiveBus(
            services.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
            load=lambda sid, after, up_to: services.core.load_records(sid, after, up_to),
            channel=f"session_events_{search_path}" if search_path else "session_events",
            search_path=search_path,
        )
    services.runtime = runtime or build_runtime(
        settings.anthropic_api_key, settings.anthropic_base_url
    )
    services.runner = TurnRunner(
        services.sessionmaker,
        services.runtime,
        services.bus,
        turn_timeout=settings.turn_timeout_seconds,
        lease_seconds=lease_seconds,
        recover_every=recover_every,
        billing=Billing(
            services.sessionmaker,
            PriceTable(**settings.price_overrides()),
            enforced=settings.billing_enforced,
        ),
    )
    services.core = SessionService(
        services.sessionmaker,
        services.runner,
        services.runtime,
        starting_credit=settings.starting_credit_usd,
    )
    services.triggers = Triggers(services.core)
    return services


def build_web_app(services: Services) -> Any:
    """One aiohttp application: health, Slack, dashboard API and webhooks on one port."""
    from aiohttp import web

    from bot.http import register as register_slack
    from dashboard_api.health import register as register_health
    from dashboard_api.routes import register as register_dashboard

    app = web.Application(client_max_size=1024 * 1024)
    register_health(app, services.engine)
    register_slack(app, services)
    register_dashboard(app, services)

    async def start_runner(_app: web.Application) -> None:
        if hasattr(services.bus, "start"):
            await services.bus.start()
        services.runner.start()
        services.triggers.start()

    async def drain_runner(_app: web.Application) -> None:
        await services.triggers.stop()
        await services.runner.shutdown()
        if hasattr(services.bus, "close"):
            await services.bus.close()

    app.on_startup.append(start_runner)
    app.on_shutdown.append(drain_runner)
    return app


async def serve(settings: Settings, services: Services | None = None) -> None:
    import signal

    from aiohttp import web

    services = services or await build(
        settings,
        lease_seconds=settings.turn_lease_seconds,
        recover_every=settings.recover_every_seconds,
    )
    for line in settings.missing_features():
        log.warning("not configured", extra={"detail": line})
    app = build_web_app(services)
    runner = web.AppRunner(app, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("serving", extra={"url": f"http://{settings.host}:{settings.port}"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight work")
    await runner.cleanup()  # on_shutdown drains the turn runner, then connections close
    await services.close()
    log.info("stopped")


DEMO_WORKSPACE = "demo"


async def demo(settings: Settings) -> None:
    """The whole product offline: a scripted runtime in process, a seeded workspace and agent."""
    import secrets

    from router.types import Actor
    from runtime.scripted import ScriptedRuntime

    update: dict[str, Any] = {}
    if "database_url" not in settings.model_fields_set:
        update["database_url"] = "sqlite+aiosqlite:///./var/demo.db"
    if not settings.supabase_jwt_secret:
        update["supabase_jwt_secret"] = secrets.token_urlsafe(32)
    settings = settings.model_copy(update=update)
    services = await build(settings, runtime=ScriptedRuntime())
    actor = Actor(DEMO_WORKSPACE, "demo-user")
    page = await services.core.list_agents(actor, limit=1, cursor=None)
    if page.items:
        agent = page.items[0]
    else:
        agent = await services.core.deploy_agent(
            actor,
            name="Demo agent",
            model="claude-sonnet-4-5",
            system="A scripted stand-in: it streams, asks before running bash, and escalates.",
            approval_required_tools=["bash"],
            slack=None,
        )
    session, _ = await services.core.create_session(
        actor,
        agent.id,
        text="Hello! Show me how you stream. [slow:0.1]",
        title="Welcome",
    )
    token = make_token(settings, DEMO_WORKSPACE, actor.user_id, 7 * 24 * 3600)
    base = f"http://{settings.host}:{settings.port}"
    print(
        "\nDemo ready (offline: a scripted agent stands in for Anthropic's runtime).\n"
        f"  token:      {token}\n"
        f"  transcript: {base}/dashboard/sub-agents/{agent.id}/chat/{session.id}#token={token}\n"
        f"  API:        curl -H 'Authorization: Bearer <token>' {base}/dashboard/agents\n"
        "Try messages with [tool:bash] (an approval card), [custom:escalate_to_human],\n"
        "[long:3000] or [fail:overloaded]. Ctrl-C stops.\n",
        flush=True,
    )
    await serve(settings, services)


async def migrate(settings: Settings) -> None:
    from store.migrate import upgrade

    services = await open_database(settings, migrate_sqlite=False)
    try:
        await upgrade(services.engine)
    finally:
        await services.close()
    log.info("migrations applied", extra={"database": _redact(settings.database_url)})


def make_token(settings: Settings, workspace: str, user: str, ttl_seconds: int) -> str:
    import jwt

    if not settings.supabase_jwt_secret:
        raise StartupError("SUPABASE_JWT_SECRET is not set: there is no key to sign a token with")
    now = int(time.time())
    claims = {
        "sub": user,
        "aud": settings.supabase_jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
        "role": "authenticated",
        "app_metadata": {"workspace_id": workspace},
    }
    if settings.supabase_jwt_issuer:
        claims["iss"] = settings.supabase_jwt_issuer
    return jwt.encode(claims, settings.supabase_jwt_secret, algorithm="HS256")


def _dollars(text: str) -> Decimal:
    from decimal import InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount of dollars: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not an amount of dollars: {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve Slack, the dashboard API and the workers (default)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("demo", help="run offline with a scripted agent and a seeded workspace")
    token = sub.add_parser("token", help="print a dashboard access token")
    token.add_argument("--workspace", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default a day)")
    wallet = sub.add_parser("wallet", help="operate on a workspace's wallets")
    wallet_sub = wallet.add_subparsers(dest="wallet_command", required=True)
    topup = wallet_sub.add_parser("topup", help="add credit to a wallet")
    topup.add_argument("--workspace", required=True)
    topup.add_argument("--amount", required=True, type=_dollars)
    topup.add_argument("--kind", choices=["ai", "data"], default="ai")
    return parser.parse_args(argv)


async def wallet_topup(settings: Settings, workspace: str, amount: Decimal, kind: str) -> Decimal:
    from router.errors import NotFound
    from router.sessions import top_up

    if amount <= 0:
        raise StartupError("--amount must be positive")
    services = await open_database(settings)
    try:
        return await top_up(services.sessionmaker, workspace, amount, kind=kind)
    except NotFound as exc:
        raise StartupError(exc.message) from exc
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "configuration"
        print(f"error: {name}: {first['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "token":
            print(make_token(settings, args.workspace, args.user, args.ttl))
        elif args.command == "wallet":
            balance = asyncio.run(wallet_topup(settings, args.workspace, args.amount, args.kind))
            print(f"{args.kind} wallet of {args.workspace}: {balance:.6f} USD")
        elif args.command == "migrate":
            asyncio.run(migrate(settings))
        elif args.command == "demo":
            asyncio.run(demo(settings))
        else:
            asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
