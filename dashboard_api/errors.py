"""The one translation table from failures to HTTP answers: `{"error": {"code", "message"}}`.

`error_middleware` wraps every handler of the app: domain errors from `router/` get their status
here (and nowhere else), aiohttp's own HTTP errors (unknown route, wrong method, body too large)
become the same JSON shape, and anything unexpected is logged and answered as a bare 500 so no
traceback ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from router.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    RuntimeFailure,
    SessionArchived,
    WalletEmpty,
)
from router.triggers import BadSignature, MalformedBody

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Checked in order: the first class the error is an instance of decides the status.
DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (SessionArchived, 409),
    (Conflict, 409),
    (WalletEmpty, 429),
    (InvalidInput, 422),
    (BadSignature, 401),
    (MalformedBody, 400),
)

# RuntimeFailure codes that mean "the runtime is not there right now": 503, the rest 502.
UNAVAILABLE_RUNTIME_CODES = frozenset(
    {
        "runtime_not_configured",
        "runtime_unavailable",
        "runtime_overloaded",
        "runtime_rate_limited",
        "runtime_timeout",
    }
)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An edge-level failure with its status and code (bad token, bad field, malformed body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


def invalid_field(field: str, problem: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {problem}")


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
    if status == 401 and code == "unauthenticated":  # not a webhook's bad signature
        response.headers["WWW-Authenticate"] = 'Bearer realm="dashboard"'
    return response


def domain_status(exc: DomainError) -> int:
    if isinstance(exc, RuntimeFailure):
        return 503 if exc.code in UNAVAILABLE_RUNTIME_CODES else 502
    for cls, status in DOMAIN_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 413:
        message = "the request body is larger than 1 MiB"
    elif status == 404:
        message = f"no route {request.path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.path}"
    else:
        message = exc.reason
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(status, HTTP_CODES.get(status, "error"), message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except DomainError as exc:
        status = domain_status(exc)
        if status >= 500:
            log.warning(
                "runtime failure answered",
                extra={"path": request.path, "code": exc.code, "status": status},
            )
        return error_response(status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through untouched
        return _from_http_exception(request, exc)
    except Exception:
        log.exception(
            "unexpected error answering a request",
            extra={"method": request.method, "path": request.path},
        )
        return error_response(500, "internal_error", "something went wrong on our side")
