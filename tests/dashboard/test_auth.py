"""Dashboard auth over real HTTP: Supabase access tokens (HS256 secret or JWKS keys)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import TestDatabase, start_app
from tests.dashboard.conftest import SECRET, Api, assert_error

AUDIENCE = "authenticated"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "user_1",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "app_metadata": {"workspace_id": "ws_alpha"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


async def test_missing_token_is_401_with_a_challenge(api: Api) -> None:
    reply = await api.get("/dashboard/agents", token=None)
    assert_error(reply, 401, "unauthenticated")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    basic = await api.get("/dashboard/agents", token=None, headers={"Authorization": "Basic eDp5"})
    assert_error(basic, 401, "unauthenticated")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="malformed"),
        pytest.param(hs256(claims(exp=int(time.time()) - 120)), id="expired"),
        pytest.param(hs256(claims(), secret="some-other-secret-of-enough-length"), id="forged"),
        pytest.param(hs256(claims(aud="anon")), id="wrong-audience"),
        pytest.param(hs256(claims(exp=None)), id="no-exp"),
        pytest.param(hs256(claims(app_metadata={})), id="no-workspace"),
        pytest.param(hs256(claims(app_metadata={"workspace_id": "x" * 65})), id="huge-workspace"),
        pytest.param(hs256(claims(sub=None)), id="no-sub"),
        pytest.param(jwt.encode(claims(), key=None, algorithm="none"), id="alg-none"),
        pytest.param(hs256(claims())[:-4] + "AAAA", id="tampered-signature"),
    ],
)
async def test_bad_tokens_are_401(api: Api, token: str) -> None:
    reply = await api.get("/dashboard/agents", token=token)
    assert_error(reply, 401, "unauthenticated")


async def test_a_fresh_workspace_token_works_at_once(api: Api) -> None:
    token = api.token_for("ws_brand_new", "someone")
    listed = await api.get("/dashboard/agents", token=token)
    assert listed.status == 200 and listed.body["data"] == []
    made = await api.agent(token=token)
    assert made["workspace_id"] == "ws_brand_new"


async def test_issuer_is_checked_when_configured(database: TestDatabase) -> None:
    issuer = "https://project.supabase.co/auth/v1"
    running = await start_app(database, supabase_jwt_secret=SECRET, supabase_jwt_issuer=issuer)
    try:
        async with aiohttp.ClientSession() as http:
            for token, status in [
                (hs256(claims(iss=issuer)), 200),
                (hs256(claims(iss="https://elsewhere")), 401),
                (hs256(claims()), 401),
            ]:
                async with http.get(
                    running.base_url + "/dashboard/agents",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert response.status == status, await response.text()
    finally:
        await running.stop()


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A JWKS endpoint (as Supabase publishes) with one RSA and one EC key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = {"rsa-1": rsa_key, "ec-1": ec_key}
    jwks = {"keys": []}
    for kid, key in keys.items():
        algorithm = (
            jwt.algorithms.RSAAlgorithm if kid.startswith("rsa") else jwt.algorithms.ECAlgorithm
        )
        public = json.loads(algorithm.to_jwk(key.public_key()))
        public.update(
            {"kid": kid, "use": "sig", "alg": "RS256" if kid.startswith("rsa") else "ES256"}
        )
        jwks["keys"].append(public)

    async def serve_jwks(_request: web.Request) -> web.Response:
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/auth/v1/.well-known/jwks.json", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json", keys
    finally:
        await runner.cleanup()


async def test_asymmetric_tokens_are_checked_against_the_jwks(
    database: TestDatabase, jwks_server: tuple[str, dict[str, Any]]
) -> None:
    url, keys = jwks_server
    running = await start_app(database, supabase_jwt_secret=SECRET, supabase_jwks_url=url)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (jwt.encode(claims(), keys["rsa-1"], algorithm="RS256", headers={"kid": "rsa-1"}), 200),
        (jwt.encode(claims(), keys["ec-1"], algorithm="ES256", headers={"kid": "ec-1"}), 200),
        (hs256(claims()), 200),
        (jwt.encode(claims(), other_rsa, algorithm="RS256", headers={"kid": "rsa-1"}), 401),
        (jwt.encode(claims(), other_rsa, algorithm="RS256", headers={"kid": "nobody"}), 401),
        (
            jwt.encode(
                claims(exp=int(time.time()) - 60),
                keys["rsa-1"],
                algorithm="RS256",
                headers={"kid": "rsa-1"},
            ),
            401,
        ),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for token, status in cases:
                async with http.get(
                    running.base_url + "/dashboard/agents",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert response.status == status, await response.text()
    finally:
        await running.stop()


async def test_without_any_key_configured_every_token_is_401(database: TestDatabase) -> None:
    running = await start_app(database)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                running.base_url + "/dashboard/agents",
                headers={"Authorization": f"Bearer {hs256(claims())}"},
            ) as response,
        ):
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthenticated"
    finally:
        await running.stop()
