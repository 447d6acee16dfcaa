"""`GET /dashboard/wallets`: the caller's workspace's balances and its latest ledger entries."""

from __future__ import annotations

from aiohttp import web

from dashboard_api.context import caller
from dashboard_api.schemas import WalletsOut

LEDGER_ENTRIES = 100


async def wallets(request: web.Request) -> web.Response:
    dashboard, actor = await caller(request)
    report = await dashboard.core.wallets(actor, ledger_limit=LEDGER_ENTRIES)
    answer = WalletsOut.model_validate(
        {
            "wallets": [
                {"kind": kind, "balance_usd": balance} for kind, balance in report.balances.items()
            ],
            "ledger": report.ledger,
        }
    )
    return web.json_response(answer.model_dump(mode="json"))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/dashboard/wallets", wallets, allow_head=False)
