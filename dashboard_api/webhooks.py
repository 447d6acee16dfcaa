"""`POST /webhooks/{endpoint_id}`: a webhook delivery starts a session of the endpoint's agent.

Public (no bearer token): the caller proves itself with `X-Signature: sha256=<hex HMAC-SHA256 of
the raw body with the endpoint's secret>`. 202 `{session_id, trigger_run_id}` for a new delivery;
a replay (same `Idempotency-Key`, or the same body within ten minutes) 200 with the first
delivery's ids. Refusals create nothing: unknown endpoint 404, bad signature 401, body not JSON
400, over 1 MiB 413, empty wallet 429, a bad `Idempotency-Key` 422.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from dashboard_api.errors import ApiError, invalid_field
from dashboard_api.schemas import MAX_BODY_BYTES, DeliveryOut, path_id
from router.triggers import Triggers

log = logging.getLogger(__name__)

DELIVERY = "/webhooks/{endpoint_id}"
# Visible ASCII and spaces: what a sender's UUID or request id looks like, and what both
# databases store as given (a header can carry undecodable bytes, which they cannot).
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")


def _idempotency_key(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise invalid_field("Idempotency-Key", "1 to 200 printable ASCII characters")
    return value


def _signature(request: web.Request) -> str | None:
    """The header as sent; one that is not ASCII cannot be ours, so it is as good as missing."""
    value = request.headers.get("X-Signature")
    return value if value is not None and value.isascii() else None


def add_routes(router: web.UrlDispatcher, triggers: Triggers) -> None:
    async def deliver(request: web.Request) -> web.Response:
        endpoint_id = path_id(request, "endpoint_id", "webhook endpoint")
        key = _idempotency_key(request)
        body = await request.read()  # over client_max_size: 413 from the error middleware
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", "the request body is larger than 1 MiB")
        delivery = await triggers.deliver(
            endpoint_id, body, signature=_signature(request), idempotency_key=key
        )
        log.info(
            "webhook delivery taken",
            extra={
                "endpoint_id": endpoint_id,
                "session_id": delivery.session_id,
                "trigger_run_id": delivery.trigger_run_id,
                "replay": delivery.replay,
            },
        )
        answer = DeliveryOut(session_id=delivery.session_id, trigger_run_id=delivery.trigger_run_id)
        return web.json_response(
            answer.model_dump(mode="json"), status=200 if delivery.replay else 202
        )

    router.add_post(DELIVERY, deliver)
