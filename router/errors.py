"""Domain errors. The edges translate each `code` once: dashboard_api to an HTTP status, bot to a
short message in the thread."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    code = "not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class SessionArchived(DomainError):
    code = "session_archived"


class Conflict(DomainError):
    code = "conflict"


class WalletEmpty(DomainError):
    code = "wallet_empty"


class InvalidInput(DomainError):
    code = "invalid_input"


class RuntimeFailure(DomainError):
    """The agent runtime could not do what was asked.

    `code` is one of: runtime_not_configured (no API key), runtime_auth (401/403),
    runtime_rate_limited (429), runtime_overloaded (529), runtime_unavailable (5xx, connection),
    runtime_bad_request (4xx), runtime_timeout. `retryable` says whether trying again later may work.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
