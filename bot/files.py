"""Files shared with the bot: download them from Slack and turn them into content blocks.

Images become `image` blocks and PDFs/text become `document` blocks (the managed-agents
`BetaManagedAgentsImageBlockParam` / `BetaManagedAgentsDocumentBlockParam` shapes). Anything the
agent cannot read, anything too big and any failed download becomes a note for the thread, so a
file is never dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.inbound import FileRef

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 5 * 1024 * 1024
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
PDF_TYPE = "application/pdf"
TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/javascript",
        "application/x-sh",
        "application/sql",
    }
)
READABLE = "images (PNG, JPEG, GIF, WebP), PDFs and text files"


@dataclass
class FileResult:
    """What the files of one message gave: content blocks for the agent, notes for the thread."""

    content: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def kind_of(mimetype: str) -> str | None:
    base = mimetype.split(";")[0].strip().lower()
    if base in IMAGE_TYPES:
        return "image"
    if base == PDF_TYPE:
        return "pdf"
    if base.startswith("text/") or base in TEXT_TYPES:
        return "text"
    return None


def block_for(kind: str, mimetype: str, name: str, data: bytes) -> dict[str, Any]:
    """The content block for a downloaded file (`kind` from `kind_of`)."""
    media_type = mimetype.split(";")[0].strip().lower()
    if kind == "image":
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": media_type,
                "data": base64.b64encode(data).decode(),
            },
        }
    if kind == "pdf":
        return {
            "type": "document",
            "title": name,
            "source": {
                "type": "base64",
                "media_type": PDF_TYPE,
                "data": base64.b64encode(data).decode(),
            },
        }
    return {
        "type": "document",
        "title": name,
        "source": {
            "type": "text",
            "media_type": "text/plain",
            "data": data.decode("utf-8", errors="replace"),
        },
    }


async def fetch_files(
    session: aiohttp.ClientSession,
    token: str | None,
    refs: list[FileRef],
    *,
    timeout: float = 2.5,
) -> FileResult:
    """Download what the agent can read, concurrently, within `timeout` seconds in all (this runs
    before Slack gets its ack)."""
    result = FileResult()
    wanted: list[tuple[FileRef, str]] = []
    for ref in refs:
        kind = kind_of(ref.mimetype)
        if kind is None:
            result.notes.append(
                f"I can't read *{ref.name}* ({ref.mimetype}): I can read {READABLE} "
                f"up to {MAX_FILE_BYTES // (1024 * 1024)} MB."
            )
        elif ref.size > MAX_FILE_BYTES:
            result.notes.append(too_big(ref.name))
        elif not ref.url or not token:
            result.notes.append(f"I couldn't download *{ref.name}*: Slack gave no download link.")
        else:
            wanted.append((ref, kind))
    if not wanted:
        return result
    downloads = await asyncio.gather(
        *(_download(session, token or "", ref, timeout) for ref, _kind in wanted)
    )
    for (ref, kind), (data, problem) in zip(wanted, downloads, strict=True):
        if problem is not None:
            result.notes.append(problem)
        else:
            result.content.append(block_for(kind, ref.mimetype, ref.name, data or b""))
    return result


def too_big(name: str) -> str:
    return (
        f"*{name}* is too big for me: I can read files up to {MAX_FILE_BYTES // (1024 * 1024)} MB."
    )


async def _download(
    session: aiohttp.ClientSession, token: str, ref: FileRef, timeout: float
) -> tuple[bytes | None, str | None]:
    """(data, None) or (None, a note for the thread). Without `files:read` Slack answers 200 with
    an HTML login page: that counts as a failure, not as the file."""
    failed = f"I couldn't download *{ref.name}* from Slack"
    try:
        async with session.get(
            str(ref.url),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status != 200:
                return None, f"{failed} (HTTP {resp.status})."
            content_type = resp.headers.get("Content-Type", "").lower()
            if content_type.startswith("text/html") and "html" not in ref.mimetype:
                return None, f"{failed}: the app may be missing the `files:read` permission."
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data.extend(chunk)
                if len(data) > MAX_FILE_BYTES:
                    return None, too_big(ref.name)
    except TimeoutError:
        log.warning("file download timed out", extra={"file_id": ref.id})
        return None, f"{failed} in time."
    except aiohttp.ClientError as exc:
        log.warning("file download failed", extra={"file_id": ref.id, "error": type(exc).__name__})
        return None, f"{failed} ({type(exc).__name__})."
    return bytes(data), None
