"""`python app.py` as an operator runs it: starts with no variables, fails in one clear line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import jwt

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "SUPABASE_", "DATABASE_"))
    }
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(extra)
    return env


async def _run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def test_serves_healthz_on_sqlite_with_no_variables_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        env=_env(tmp_path, PORT=str(port)),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        body = None
        async with aiohttp.ClientSession() as http:
            for _ in range(1200):  # up to a minute on a loaded machine
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        body = (resp.status, await resp.json())
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        ready = (resp.status, await resp.json())
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        assert body == (200, {"status": "ok"})
        assert ready == (200, {"status": "ready"})
        assert (tmp_path / "var" / "app.db").exists(), "default SQLite file, migrated at start"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    assert "SUPABASE_JWT_SECRET unset" in err.decode(), "says what is missing"


async def test_bad_database_url_is_one_clear_line_and_nonzero(tmp_path):
    for url, expected in [
        ("mysql://x@127.0.0.1/db", "use sqlite+aiosqlite:// or postgresql+asyncpg://"),
        ("not a url", "not a database URL"),
        ("postgresql+asyncpg://nobody@127.0.0.1:1/none", "cannot reach the database"),
    ]:
        code, _out, err = await _run(["migrate"], _env(tmp_path, DATABASE_URL=url), tmp_path)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
        assert "Traceback" not in err


async def test_token_command_prints_a_verifiable_token(tmp_path):
    env = _env(tmp_path, SUPABASE_JWT_SECRET="s" * 32)
    code, out, _ = await _run(["token", "--workspace", "W1", "--user", "U1"], env, tmp_path)
    assert code == 0
    claims = jwt.decode(out.strip(), "s" * 32, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == "U1" and claims["app_metadata"]["workspace_id"] == "W1"

    code, _, err = await _run(
        ["token", "--workspace", "W1", "--user", "U1"], _env(tmp_path), tmp_path
    )
    assert code == 2 and "SUPABASE_JWT_SECRET" in err
