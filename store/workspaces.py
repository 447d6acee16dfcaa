"""Workspaces, their members, and the wallets a new workspace starts with."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from store.db import DbSession, insert_for
from store.ids import new_id
from store.models import Member, Wallet, WalletLedger, Workspace, utcnow

WALLET_KINDS = ("ai", "data")


async def ensure_workspace(
    db: DbSession, workspace_id: str, *, starting_credit: Decimal, name: str = ""
) -> bool:
    """Create the workspace and its wallets on first use; True when it was created now.

    Race-free: two first requests for one workspace create it once."""
    created = await db.scalar(
        insert_for(db, Workspace)
        .values(id=workspace_id, name=name or workspace_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Workspace.id)
    )
    if created is None:
        return False
    now = utcnow()
    for kind in WALLET_KINDS:
        wallet_id = new_id("wal")
        db.add(
            Wallet(
                id=wallet_id,
                workspace_id=workspace_id,
                kind=kind,
                balance_usd=starting_credit,
                updated_at=now,
            )
        )
        db.add(
            WalletLedger(
                id=new_id("led"),
                wallet_id=wallet_id,
                workspace_id=workspace_id,
                kind=kind,
                amount_usd=starting_credit,
                balance_after_usd=starting_credit,
                reason="starting_credit",
                created_at=now,
            )
        )
    await db.flush()
    return True


async def ensure_member(db: DbSession, workspace_id: str, user_id: str) -> None:
    await db.execute(
        insert_for(db, Member)
        .values(id=new_id("mem"), workspace_id=workspace_id, user_id=user_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["workspace_id", "user_id"])
    )


async def get_workspace(db: DbSession, workspace_id: str) -> Workspace | None:
    return await db.get(Workspace, workspace_id)


async def list_members(db: DbSession, workspace_id: str) -> list[Member]:
    rows = await db.scalars(select(Member).where(Member.workspace_id == workspace_id))
    return list(rows)
