"""Supabase access tokens -> the Actor every dashboard call is scoped to.

A token is `Authorization: Bearer <jwt>`. HS256 tokens are checked with SUPABASE_JWT_SECRET;
asymmetric ones (RS256, ES256) with the keys published at SUPABASE_JWKS_URL (fetched once and
cached by PyJWT's PyJWKClient, off the event loop). `exp` and `aud` are always checked, `iss` only
when SUPABASE_JWT_ISSUER is set. `sub` is the member and `app_metadata.workspace_id` the workspace;
a token without either is refused. Failures never say more than "why, roughly": no key material
and no token ever reach a log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import jwt
from aiohttp import web

from dashboard_api.errors import ApiError, unauthenticated
from router.types import Actor

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 10
MAX_USER_LENGTH = 200
MAX_WORKSPACE_LENGTH = 64


class Authenticator:
    """Verifies bearer tokens; built once per app from the settings."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None,
        audience: str,
        issuer: str | None,
    ) -> None:
        self.secret = secret
        self.audience = audience
        self.issuer = issuer
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600) if jwks_url else None

    @classmethod
    def from_settings(cls, settings: Any) -> Authenticator:
        return cls(
            secret=settings.supabase_jwt_secret,
            jwks_url=settings.supabase_jwks_url,
            audience=settings.supabase_jwt_audience,
            issuer=settings.supabase_jwt_issuer,
        )

    async def actor(self, request: web.Request) -> Actor:
        """The caller, or ApiError(401) for a missing, malformed, expired or forged token."""
        token = bearer_token(request)
        claims = await self.verify(token)
        return actor_of(claims)

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated("the access token is malformed") from exc
        algorithm = header.get("alg")
        key = await self._key_for(token, algorithm)
        options = {"require": ["exp", "sub", "aud"]}
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("the access token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise unauthenticated("the access token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthenticated("the access token comes from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise unauthenticated(f"the access token has no `{exc.claim}` claim") from exc
        except jwt.PyJWTError as exc:
            raise unauthenticated("the access token is not valid") from exc

    async def _key_for(self, token: str, algorithm: Any) -> Any:
        if algorithm == "HS256":
            if not self.secret:
                raise unauthenticated("HS256 tokens are not accepted: SUPABASE_JWT_SECRET is unset")
            return self.secret
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self.jwks is None:
                raise unauthenticated(
                    f"{algorithm} tokens are not accepted: SUPABASE_JWKS_URL is unset"
                )
            return await self._jwks_key(token)
        raise unauthenticated("the access token uses an algorithm this server does not accept")

    async def _jwks_key(self, token: str) -> Any:
        assert self.jwks is not None
        try:
            signing_key = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("JWKS endpoint unreachable", extra={"error": type(exc).__name__})
            raise ApiError(
                503, "auth_unavailable", "the signing keys cannot be fetched right now"
            ) from exc
        except jwt.PyJWTError as exc:
            raise unauthenticated("the access token's signing key is unknown") from exc
        return signing_key.key


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthenticated("an `Authorization: Bearer <token>` header is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("the Authorization header must be `Bearer <token>`")
    return token.strip()


def actor_of(claims: dict[str, Any]) -> Actor:
    user = claims.get("sub")
    metadata = claims.get("app_metadata")
    workspace = metadata.get("workspace_id") if isinstance(metadata, dict) else None
    if not _usable(user, MAX_USER_LENGTH):
        raise unauthenticated("the access token has no usable `sub`")
    if not _usable(workspace, MAX_WORKSPACE_LENGTH):
        raise unauthenticated("the access token has no `app_metadata.workspace_id`")
    return Actor(workspace_id=workspace, user_id=user)


def _usable(value: Any, max_length: int) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and value.isprintable()
        and value.strip() == value
    )
