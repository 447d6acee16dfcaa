"""Deployed agents and their Slack bindings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text, update

from store.db import DbSession, insert_for, newest_first
from store.ids import new_id
from store.models import DeployedAgent, SlackBinding, utcnow


async def create_agent(
    db: DbSession,
    *,
    workspace_id: str,
    name: str,
    model: str,
    system_prompt: str,
    tools: list[Any],
    approval_required_tools: list[str],
    created_by: str | None,
) -> DeployedAgent:
    now = utcnow()
    agent = DeployedAgent(
        id=new_id("agt"),
        workspace_id=workspace_id,
        name=name,
        model=model,
        system_prompt=system_prompt,
        tools=tools,
        approval_required_tools=approval_required_tools,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    db.add(agent)
    await db.flush()
    return agent


async def set_runtime_ids(
    db: DbSession,
    agent_id: str,
    *,
    anthropic_agent_id: str,
    anthropic_agent_version: int | None,
    anthropic_environment_id: str,
) -> None:
    await db.execute(
        update(DeployedAgent)
        .where(DeployedAgent.id == agent_id)
        .values(
            anthropic_agent_id=anthropic_agent_id,
            anthropic_agent_version=anthropic_agent_version,
            anthropic_environment_id=anthropic_environment_id,
            updated_at=utcnow(),
        )
    )


async def get_agent(
    db: DbSession, agent_id: str, *, workspace_id: str | None = None
) -> DeployedAgent | None:
    """The agent, or None when it does not exist or belongs to another workspace."""
    agent = await db.get(DeployedAgent, agent_id)
    if agent is None or (workspace_id is not None and agent.workspace_id != workspace_id):
        return None
    return agent


async def list_agents(
    db: DbSession,
    workspace_id: str,
    *,
    limit: int,
    cursor: tuple[datetime, str] | None = None,
) -> tuple[list[DeployedAgent], bool]:
    """Newest first, keyset on (created_at, id)."""
    query = select(DeployedAgent).where(DeployedAgent.workspace_id == workspace_id)
    rows = list(await db.scalars(newest_first(query, DeployedAgent, cursor, limit)))
    return rows[:limit], len(rows) > limit


async def bind_slack(
    db: DbSession,
    *,
    workspace_id: str,
    agent_id: str,
    team_id: str,
    channel_ids: list[str],
    team_default: bool,
) -> bool:
    """Bind an agent to channels of a team and/or as the team's default; False (and nothing
    changed) when the team is bound in another workspace: a Slack team belongs to one workspace.

    A later binding of the same channel (or team default) in the same workspace moves it to this
    agent. Race-free: `INSERT ... ON CONFLICT DO NOTHING` on the partial unique indexes, then a
    conditional UPDATE that only moves a binding of this workspace."""
    foreign = await db.scalar(
        select(SlackBinding.id)
        .where(SlackBinding.team_id == team_id, SlackBinding.workspace_id != workspace_id)
        .limit(1)
    )
    if foreign is not None:
        return False
    targets: list[tuple[str | None, bool]] = [(c, False) for c in channel_ids]
    if team_default:
        targets.append((None, True))
    for channel_id, is_default in targets:
        if is_default:
            conflict = {"index_elements": ["team_id"], "index_where": text("is_team_default")}
            mine = SlackBinding.is_team_default.is_(True)
        else:
            conflict = {
                "index_elements": ["team_id", "channel_id"],
                "index_where": text("channel_id IS NOT NULL"),
            }
            mine = SlackBinding.channel_id == channel_id
        inserted = await db.scalar(
            insert_for(db, SlackBinding)
            .values(
                id=new_id("bnd"),
                workspace_id=workspace_id,
                team_id=team_id,
                channel_id=channel_id,
                deployed_agent_id=agent_id,
                is_team_default=is_default,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(**conflict)
            .returning(SlackBinding.id)
        )
        if inserted is not None:
            continue
        moved = await db.execute(
            update(SlackBinding)
            .where(SlackBinding.team_id == team_id, mine, SlackBinding.workspace_id == workspace_id)
            .values(deployed_agent_id=agent_id)
        )
        if not moved.rowcount:
            return False
    return True


async def resolve_slack_agent(
    db: DbSession, *, team_id: str, channel_id: str | None
) -> DeployedAgent | None:
    """A channel binding wins over the team's default; DMs (channel None) get the default.
    One statement: both candidates, the channel binding ordered first."""
    match = SlackBinding.is_team_default.is_(True)
    if channel_id is not None:
        match = or_(SlackBinding.channel_id == channel_id, match)
    return await db.scalar(
        select(DeployedAgent)
        .join(SlackBinding, SlackBinding.deployed_agent_id == DeployedAgent.id)
        .where(SlackBinding.team_id == team_id, match)
        .order_by(SlackBinding.is_team_default.asc())
        .limit(1)
    )


async def list_bindings(db: DbSession, agent_id: str) -> list[SlackBinding]:
    rows = await db.scalars(
        select(SlackBinding)
        .where(SlackBinding.deployed_agent_id == agent_id)
        .order_by(SlackBinding.created_at, SlackBinding.id)
    )
    return list(rows)
