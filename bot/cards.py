"""Pure Block Kit builders: the approval card (before and after the decision), the escalation
notice. Plain dicts, within Slack's limits (section text 3,000, button value 2,000 characters)."""

from __future__ import annotations

import json
from typing import Any

APPROVE_ACTION = "tool_approve"
DENY_ACTION = "tool_deny"
APPROVAL_BLOCK_PREFIX = "approval:"
INPUT_PREVIEW_CHARS = 2_500


def input_preview(tool_input: Any) -> str:
    """The tool input as readable JSON, shortened to fit a section block (with a marker)."""
    text = json.dumps(tool_input, indent=2, ensure_ascii=False, default=str)
    if len(text) > INPUT_PREVIEW_CHARS:
        text = text[:INPUT_PREVIEW_CHARS] + "\n… (shortened; the full input is in the dashboard)"
    return text.replace("```", "`\u200b``")


def approval_text(tool_name: str) -> str:
    """The notification / fallback text of the card."""
    return f"Approval needed: the agent wants to run `{tool_name}`."


def approval_blocks(approval_id: str, tool_name: str, tool_input: Any) -> list[dict[str, Any]]:
    """The card posted in the thread when a tool call waits for a human."""
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f":raised_hand: *Approval needed:* the agent wants to run `{tool_name}`",
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"```{input_preview(tool_input)}```"},
        },
        {
            "type": "actions",
            "block_id": f"{APPROVAL_BLOCK_PREFIX}{approval_id}"[:255],
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": approval_id,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": approval_id,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Deny this tool call?"},
                        "text": {"type": "plain_text", "text": "The agent will be told no."},
                        "confirm": {"type": "plain_text", "text": "Deny"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
            ],
        },
    ]


def decided_text(tool_name: str, decision: str, decided_by: str) -> str:
    verdict = "approved" if decision == "allow" else "denied"
    return f"`{tool_name}` {verdict} by {decided_by}"


def decided_blocks(
    tool_name: str, tool_input: Any, decision: str, decided_by: str
) -> list[dict[str, Any]]:
    """The same card once decided: no buttons, the verdict and who gave it."""
    icon = ":white_check_mark:" if decision == "allow" else ":no_entry_sign:"
    return [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{icon} {decided_text(tool_name, decision, decided_by)}",
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"```{input_preview(tool_input)}```"},
        },
    ]


def escalation_text(reason: str) -> str:
    reason = reason.strip() or "no reason given"
    return f":sos: The agent asked for a human teammate to step in: {reason[:2_000]}"
