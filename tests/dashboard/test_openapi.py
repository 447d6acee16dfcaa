"""The OpenAPI description: served without a token, covers every dashboard route, and
schemathesis finds no difference between it and the live app's behaviour.

The schemathesis run is bounded (10 examples per operation and phase, a fixed seed); for a deeper
hunt set SCHEMATHESIS_MAX_EXAMPLES, SCHEMATHESIS_SEED or SCHEMATHESIS_CHECKS (e.g. `all`: its
`positive_data_acceptance` then reports made-up list cursors, which are opaque by design)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from dashboard_api.openapi import build_spec
from tests.conftest import RunningApp
from tests.dashboard.conftest import Api

CHECKS = os.environ.get("SCHEMATHESIS_CHECKS") or (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def described_routes() -> set[tuple[str, str]]:
    spec = build_spec()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def served_routes(running: RunningApp) -> set[tuple[str, str]]:
    served = set()
    for route in running.runner.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/dashboard/") and route.method != "HEAD":
            served.add((route.method, path))
    return served


async def test_the_document_is_openapi_3_1_and_needs_no_token(api: Api) -> None:
    reply = await api.get("/dashboard/openapi.json", token=None)
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    assert reply.body == build_spec()


async def test_every_dashboard_route_is_described(running: RunningApp) -> None:
    assert served_routes(running) <= described_routes()


async def test_schemathesis_finds_no_difference_from_the_spec(
    api: Api, running: RunningApp, tmp_path: Path
) -> None:
    agent = await api.agent()  # something to find, so not every answer is a 404
    await api.session(agent["id"])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.base_url}/dashboard/openapi.json",
        "--header",
        f"Authorization: Bearer {api.token}",
        "--checks",
        CHECKS,
        "--exclude-path-regex",
        "/stream$",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "20260401"),
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
