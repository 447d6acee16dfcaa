"""Wallets and their ledger. A debit never takes a balance below zero, even under races."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update

from store.db import DbSession
from store.ids import new_id
from store.models import Wallet, WalletLedger, utcnow


@dataclass(frozen=True, slots=True)
class Debit:
    requested: Decimal
    debited: Decimal
    balance_after: Decimal

    @property
    def shortfall(self) -> Decimal:
        return self.requested - self.debited


async def _locked_wallet(db: DbSession, workspace_id: str, kind: str) -> Wallet | None:
    return await db.scalar(
        select(Wallet)
        .where(Wallet.workspace_id == workspace_id, Wallet.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def debit(
    db: DbSession, workspace_id: str, kind: str, amount: Decimal, *, reason: str, ref: str | None
) -> Debit | None:
    """Take `amount` (or what is left, if less) and write the ledger row; None if no wallet.

    The wallet row is locked (PostgreSQL `FOR UPDATE`; SQLite has one writer), so two turns
    ending at once cannot both spend the same balance."""
    wallet = await _locked_wallet(db, workspace_id, kind)
    if wallet is None:
        return None
    taken = min(amount, max(wallet.balance_usd, Decimal(0)))
    after = wallet.balance_usd - taken
    await db.execute(
        update(Wallet).where(Wallet.id == wallet.id).values(balance_usd=after, updated_at=utcnow())
    )
    db.add(
        WalletLedger(
            id=new_id("led"),
            wallet_id=wallet.id,
            workspace_id=workspace_id,
            kind=kind,
            amount_usd=-taken,
            balance_after_usd=after,
            reason=reason,
            ref=ref,
            created_at=utcnow(),
        )
    )
    await db.flush()
    return Debit(amount, taken, after)


async def credit(
    db: DbSession,
    workspace_id: str,
    kind: str,
    amount: Decimal,
    *,
    reason: str,
    ref: str | None = None,
) -> Decimal | None:
    """Add credit (a top-up); returns the new balance, None if the wallet does not exist."""
    wallet = await _locked_wallet(db, workspace_id, kind)
    if wallet is None:
        return None
    after = wallet.balance_usd + amount
    await db.execute(
        update(Wallet).where(Wallet.id == wallet.id).values(balance_usd=after, updated_at=utcnow())
    )
    db.add(
        WalletLedger(
            id=new_id("led"),
            wallet_id=wallet.id,
            workspace_id=workspace_id,
            kind=kind,
            amount_usd=amount,
            balance_after_usd=after,
            reason=reason,
            ref=ref,
            created_at=utcnow(),
        )
    )
    await db.flush()
    return after


async def balances(db: DbSession, workspace_id: str) -> dict[str, Decimal]:
    rows = await db.execute(
        select(Wallet.kind, Wallet.balance_usd).where(Wallet.workspace_id == workspace_id)
    )
    return {kind: balance for kind, balance in rows.all()}


async def ledger(db: DbSession, workspace_id: str, *, limit: int = 100) -> list[WalletLedger]:
    rows = await db.scalars(
        select(WalletLedger)
        .where(WalletLedger.workspace_id == workspace_id)
        .order_by(WalletLedger.created_at.desc(), WalletLedger.id.desc())
        .limit(limit)
    )
    return list(rows)
