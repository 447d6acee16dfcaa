"""`GET /dashboard/sub-agents/{agent_id}/chat/{session_id}`: the transcript page (HTML).

The server renders only a shell: the ids, the layout, the stylesheet and the script
(`static/transcript.css` and `static/transcript.js`, inlined once at startup: no build step and
no extra route). The shell holds no session data, so it is served without a token: a browser
cannot put an `Authorization` header on a navigation. The page is opened as
`.../chat/{sid}#token=<jwt>` (a fragment never reaches the server or its logs); the script keeps
the token in `sessionStorage`, drops it from the address bar, and talks to the JSON routes with
`Authorization: Bearer`: the session, its event history, its usage, the approvals and messages
routes, and the SSE tail read with `fetch()` (an `EventSource` cannot send the header either).

The Content-Security-Policy lets only the inlined script and stylesheet run (by hash) and the
page talk only to its own origin, so even a bug in the script's escaping could not load code.
"""

from __future__ import annotations

import base64
import hashlib
import html
from importlib import resources
from typing import Any

from aiohttp import web

from dashboard_api.schemas import ID_PATTERN, path_id

PAGE = "/dashboard/sub-agents/{agent_id}/chat/{session_id}"
# The session row is re-read this often (archived elsewhere, queued messages from Slack) while
# the page is visible; events themselves arrive over the stream.
SESSION_POLL_SECONDS = 15

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="light dark">
<title>Session transcript</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body data-agent-id="{agent_id}" data-session-id="{session_id}" data-poll-seconds="{poll}">
<a class="skip" href="#composer-text">Skip to the message box</a>
<header class="bar">
  <div class="bar-inner">
    <h1 id="title">Session transcript</h1>
    <p class="meta">
      <span id="session-status" class="pill" data-state="loading">Loading…</span>
      <span id="queued" class="pill" hidden></span>
      <span id="total-cost" class="cost" hidden></span>
    </p>
    <p class="connection-line">
      <span id="connection" role="status" data-state="connecting">Connecting…</span>
      <button id="reconnect" type="button" class="link" hidden>Reconnect now</button>
    </p>
  </div>
</header>
<main id="main">
  <div id="notice" class="notice" role="alert" hidden></div>
  <p id="loading" class="quiet">Loading the transcript…</p>
  <ol id="timeline" class="timeline" role="log" aria-live="polite" aria-busy="true"
      aria-label="Transcript"></ol>
  <p id="working" class="working" role="status" hidden></p>
</main>
<footer class="composer-bar">
  <form id="composer" class="composer" novalidate>
    <label for="composer-text">Message the agent
      <span class="hint">(Ctrl+Enter sends)</span></label>
    <div class="composer-row">
      <textarea id="composer-text" name="text" rows="2" required disabled
                aria-describedby="composer-note"></textarea>
      <button id="send" type="submit" class="primary" disabled>Send</button>
    </div>
    <p id="composer-note" class="note" role="status"></p>
  </form>
</footer>
<script>{js}</script>
</body>
</html>
"""


def _asset(name: str) -> str:
    text = resources.files("dashboard_api").joinpath("static", name).read_text(encoding="utf-8")
    if "</" + ("script" if name.endswith(".js") else "style") in text.lower():
        raise ValueError(f"{name} would end its inline element early")
    return text


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def _policy(css: str, js: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hash(js)}",
            f"style-src {_hash(css)}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def render(agent_id: str, session_id: str, css: str, js: str) -> str:
    """The page shell; the ids are the only values from the request (escaped anyway)."""
    return SHELL.format(
        css=css,
        js=js,
        agent_id=html.escape(agent_id, quote=True),
        session_id=html.escape(session_id, quote=True),
        poll=SESSION_POLL_SECONDS,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    css, js = _asset("transcript.css"), _asset("transcript.js")
    headers = {
        "Content-Security-Policy": _policy(css, js),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }

    async def page(request: web.Request) -> web.Response:
        agent_id = path_id(request, "agent_id", "agent")
        session_id = path_id(request, "session_id", "session")
        return web.Response(
            text=render(agent_id, session_id, css, js),
            content_type="text/html",
            charset="utf-8",
            headers=headers,
        )

    router.add_get(PAGE, page, allow_head=False)


def openapi_paths() -> dict[str, Any]:
    """The page as an OpenAPI 3.1 path item: HTML, and no token (the script brings its own)."""
    ids = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN},
        }
        for name in ("agent_id", "session_id")
    ]
    return {
        PAGE: {
            "get": {
                "operationId": "transcriptPage",
                "summary": "The transcript page: an HTML shell whose script loads the session",
                "description": (
                    "Served without a token: the shell holds no session data. Open it as "
                    "`.../chat/{session_id}#token=<access token>`; the script reads the token "
                    "from the fragment and calls the JSON routes and the SSE tail with it."
                ),
                "security": [],
                "parameters": ids,
                "responses": {
                    "200": {
                        "description": "The page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "404": {
                        "description": "An id that cannot exist",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorOut"}
                            }
                        },
                    },
                },
            }
        }
    }
