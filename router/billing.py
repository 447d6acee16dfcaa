"""Usage and wallets: what a turn costs, who pays, and when a workspace is refused.

Prices are dollars per million tokens, matched on the longest model-name prefix; cache reads
cost a tenth of input, cache writes a quarter more than input (Anthropic's published ratios);
runtime is billed per session-hour. Operators override the table with MODEL_PRICES.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from router.errors import WalletEmpty
from store import usage as usage_store
from store import wallets as wallets_store

MILLION = Decimal(1_000_000)
SIX_PLACES = Decimal("0.000001")

DEFAULT_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "claude-opus-4-5": (Decimal(5), Decimal(25)),
    "claude-opus-4-6": (Decimal(5), Decimal(25)),
    "claude-opus-4": (Decimal(15), Decimal(75)),
    "claude-sonnet-4": (Decimal(3), Decimal(15)),
    "claude-haiku-4": (Decimal(1), Decimal(5)),
    "claude-3-7-sonnet": (Decimal(3), Decimal(15)),
    "claude-3-5-haiku": (Decimal("0.8"), Decimal(4)),
}
FALLBACK_PRICE = (Decimal(3), Decimal(15))
RUNTIME_PRICE_PER_HOUR = Decimal("0.08")
FUNDED_FOR_SECONDS = 2.0


@dataclass
class TurnUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    runtime_seconds: Decimal = Decimal(0)

    def add_model_usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        self.cache_read_input_tokens += int(usage.get("cache_read_input_tokens") or 0)
        self.cache_creation_input_tokens += int(usage.get("cache_creation_input_tokens") or 0)


@dataclass
class PriceTable:
    prices: dict[str, tuple[Decimal, Decimal]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    runtime_per_hour: Decimal = RUNTIME_PRICE_PER_HOUR
    tool_prices: dict[str, Decimal] = field(default_factory=dict)

    def model_price(self, model: str) -> tuple[Decimal, Decimal]:
        best = max((p for p in self.prices if model.startswith(p)), key=len, default=None)
        return self.prices[best] if best else FALLBACK_PRICE

    def turn_cost(self, model: str, usage: TurnUsage) -> Decimal:
        input_price, output_price = self.model_price(model)
        tokens = (
            usage.input_tokens * input_price
            + usage.output_tokens * output_price
            + usage.cache_read_input_tokens * input_price * Decimal("0.1")
            + usage.cache_creation_input_tokens * input_price * Decimal("1.25")
        ) / MILLION
        runtime = usage.runtime_seconds * self.runtime_per_hour / Decimal(3600)
        return (tokens + runtime).quantize(SIX_PLACES, rounding=ROUND_HALF_UP)


class Billing:
    def __init__(
        self,
        db: Any,
        prices: PriceTable | None = None,
        *,
        enforced: bool = True,
        clock: Any = time.monotonic,
    ) -> None:
        self.db = db
        self.prices = prices or PriceTable()
        self.enforced = enforced
        self.clock = clock
        self._funded_until: dict[str, float] = {}
        self._debiting: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def check_can_run(self, s: Any, workspace_id: str) -> None:
        """Refuse new work when the AI wallet is empty (unless billing is not enforced).
        `s` is the caller's open database session (the check joins its transaction)."""
        if not self.enforced or self._funded_until.get(workspace_id, 0.0) > self.clock():
            return
        balance = (await wallets_store.balances(s, workspace_id)).get("ai")
        if balance is None or balance > 0:
            # A funded wallet is not read again for a moment (the ack path of a busy workspace);
            # a debit never overdraws, so a message let in meanwhile cannot take it below zero.
            self._funded_until[workspace_id] = self.clock() + FUNDED_FOR_SECONDS
            return
        self._funded_until.pop(workspace_id, None)
        if balance <= 0:
            raise WalletEmpty(
                "This workspace's AI wallet is empty: top it up to talk to its agents again."
            )

    async def charge_turn(
        self, *, workspace_id: str, session_id: str, turn: int, model: str, usage: TurnUsage
    ) -> Decimal | None:
        """Record the turn's usage and debit the AI wallet in one transaction, once per turn."""
        cost = self.prices.turn_cost(model, usage)
        # A workspace's turns all debit one wallet row: one debit at a time per process waits
        # on its lock, the others wait here, holding no database connection (a busy workspace
        # would otherwise fill every process's pool with debits queued on that row).
        async with self._debiting[workspace_id], self.db.begin() as s:
            usage_id = await usage_store.record_turn(
                s,
                workspace_id=workspace_id,
                session_id=session_id,
                turn=turn,
                model=model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                runtime_seconds=usage.runtime_seconds.quantize(Decimal("0.001")),
                cost_usd=cost,
            )
            if usage_id is None:
                return None
            if cost > 0:
                debit = await wallets_store.debit(
                    s, workspace_id, "ai", cost, reason="turn", ref=f"{session_id}:{turn}"
                )
                if debit is not None and debit.balance_after <= 0:
                    self._funded_until.pop(workspace_id, None)
        return cost

    async def charge_tool_call(
        self, *, workspace_id: str, session_id: str, tool_use_id: str, tool_name: str
    ) -> Decimal | None:
        """A priced tool call (see `PriceTable.tool_prices`) debits the data wallet once."""
        price = self.prices.tool_prices.get(tool_name)
        if price is None:
            return None
        async with self._debiting[workspace_id], self.db.begin() as s:
            logged = await usage_store.record_tool_call(
                s,
                workspace_id=workspace_id,
                session_id=session_id,
                tool_use_id=tool_use_id,
                tool_name=tool_name,
                units=Decimal(1),
                cost_usd=price,
            )
            if logged is None:
                return None
            if price > 0:
                await wallets_store.debit(
                    s, workspace_id, "data", price, reason="tool_call", ref=tool_use_id
                )
        return price
