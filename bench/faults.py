"""Replicas under faults: nothing lost, nothing doubled. One result line.

    python bench/faults.py [--processes 3] [--threads 1000] [--messages 3] [--rate 25]
                           [--lease 3] [--shared-pg] [--keep-logs DIR]

The load of `bench/replicas.py` (Slack threads sent round-robin to N `python app.py` processes,
10% of the events retried to another process), and while it runs:

- at 15% of the events, one process is killed with SIGKILL in the middle of its turns; its
  sessions are taken over by the others once their lease (`--lease`, TURN_LEASE_SECONDS) runs out,
  and it is started again 5 s later;
- at 30%, the fake runtime cuts every open event stream (twice, 1 s apart);
- at 45%, the fake Slack answers 429 (Retry-After: 1) to every call for 2 s, and at 55% 500 for
  1 s;
- at 70%, PostgreSQL restarts (fast shutdown: every connection is cut).

Events whose delivery fails (the killed process, the database down) are retried by the sender
to another process, as Slack retries them. At the end every thread must hold exactly one answer
per message, the database one session per thread and one mirrored `user.message` per message,
and the runtime must have received each message once. Exit status 1 when a check fails.

PostgreSQL: by default a throw-away cluster of our own (initdb on a free port), so restarting it
touches nobody else; `--shared-pg` uses the machine's server (TEST_POSTGRES_URL) and restarts it
with `pg_ctlcluster`, which cuts every other client of that server too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import (  # noqa: E402
    SERVER_URL,
    Cluster,
    PrivatePostgres,
    Scenario,
    describe,
    restart_system_postgres,
    run_scenario,
)

KILLED = 1  # which process dies


async def chaos(cluster: Cluster) -> None:
    """The fault schedule, keyed to how much of the load has been sent."""
    notes = cluster.notes
    started = time.monotonic()

    def at() -> str:
        return f"{time.monotonic() - started:.1f}s"

    await cluster.until_progress(0.15)
    pid = cluster.replicas.kill(KILLED)
    notes.append(f"kill -9 process {KILLED} (pid {pid}) at {at()}")
    restart = asyncio.create_task(_restart_later(cluster, KILLED, 5.0))

    await cluster.until_progress(0.30)
    streams = cluster.anthropic.open_streams
    cluster.anthropic.cut_streams()
    await asyncio.sleep(1.0)
    streams += cluster.anthropic.open_streams
    cluster.anthropic.cut_streams()
    notes.append(f"runtime streams cut twice ({streams} streams) at {at()}")

    await cluster.until_progress(0.45)
    cluster.slack.fail_for(2.0, 429, retry_after=1)
    notes.append(f"Slack 429 for 2 s at {at()}")
    await cluster.until_progress(0.55)
    cluster.slack.fail_for(1.0, 500)
    notes.append(f"Slack 500 for 1 s at {at()}")

    await cluster.until_progress(0.70)
    took = await asyncio.to_thread(cluster.restart_postgres)
    notes.append(f"PostgreSQL restarted at {at()} (down {took:.1f} s)")
    await restart


async def _restart_later(cluster: Cluster, index: int, delay: float) -> None:
    await asyncio.sleep(delay)
    await cluster.replicas.restart(index)
    cluster.notes.append(f"process {index} started again")


async def main(args: argparse.Namespace) -> tuple[str, bool]:
    scenario = Scenario(
        processes=args.processes,
        threads=args.threads,
        per_thread=args.messages,
        rate=args.rate or None,
        retry_share=args.retry_share,
        slow_threads=args.slow_threads,
        lease_seconds=args.lease,
        recover_every=max(0.5, args.lease / 3),
        pool_size=args.pool_size,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench_faults_"))
    private = None
    try:
        if args.shared_pg:
            server_url, restart = SERVER_URL, restart_system_postgres
        else:
            private = PrivatePostgres(workdir)
            await asyncio.to_thread(private.start)
            server_url, restart = private.url, private.restart
        outcome = await run_scenario(
            scenario, workdir, server_url=server_url, chaos=chaos, restart_postgres=restart
        )
    finally:
        if private is not None:
            await asyncio.to_thread(private.stop)
        if args.keep_logs:
            shutil.copytree(workdir, args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    verdict = "OK" if outcome.tally.ok else "FAILED"
    faults = "; ".join(outcome.notes)
    line = (
        f"faults {verdict}: {describe(outcome, scenario)} | lease {args.lease:g} s, "
        f"{outcome.takeovers} | {faults}"
    )
    return line, outcome.tally.ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=3, help="messages per thread")
    parser.add_argument("--rate", type=float, default=25.0, help="events/s (0: as fast as can)")
    parser.add_argument("--retry-share", type=float, default=0.1)
    parser.add_argument("--slow-threads", type=int, default=10)
    parser.add_argument("--lease", type=float, default=3.0, help="TURN_LEASE_SECONDS")
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per process")
    parser.add_argument("--shared-pg", action="store_true", help="restart the machine's server")
    parser.add_argument("--keep-logs", type=Path, help="copy the replicas' logs here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    line, ok = asyncio.run(main(parse_args(sys.argv[1:])))
    print(line)
    sys.exit(0 if ok else 1)
