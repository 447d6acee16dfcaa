"""Several `python app.py` replicas on one PostgreSQL behave as one product. One result line.

    python bench/replicas.py [--processes 3] [--threads 1000] [--messages 3] [--rate 30]
                             [--retry-share 0.1] [--slow-threads 10] [--keep-logs DIR]

Creates a fresh database on the PostgreSQL server at TEST_POSTGRES_URL (migrated with
`python app.py migrate`, dropped at the end), serves the fakes of Slack's Web API and Anthropic's
managed-agents API from this process, starts N `python app.py` processes configured only by
environment variables, and deploys an agent bound to the Slack team through the dashboard API.

Then Slack events for `--threads` threads of `--messages` messages each are sent round-robin to
the processes at `--rate` events/s: half the threads are DMs, half channel threads opened by a
mention (which Slack delivers twice, as `app_mention` and `message`, here to two processes); a
third of the threads send their messages back to back, so they queue behind a running turn;
`--retry-share` of the events are delivered again with `X-Slack-Retry-Num` to another process,
while the first delivery may still be in flight; a few threads ask for a slow answer.

At the end it checks what a user would see and what the database holds: sessions created =
threads, one answer per message in its thread (duplicates = 0, lost = 0), one mirrored
`user.message` per Slack message, each message sent to the runtime once; and prints throughput,
reply latency (slow threads excluded) and how the turns spread over the processes. Exit status 1
when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import Scenario, describe, run_scenario  # noqa: E402


async def main(args: argparse.Namespace) -> tuple[str, bool]:
    scenario = Scenario(
        processes=args.processes,
        threads=args.threads,
        per_thread=args.messages,
        rate=args.rate or None,
        retry_share=args.retry_share,
        slow_threads=args.slow_threads,
        pool_size=args.pool_size,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench_replicas_"))
    try:
        outcome = await run_scenario(scenario, workdir)
    finally:
        if args.keep_logs:
            shutil.copytree(workdir, args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    verdict = "OK" if outcome.tally.ok else "FAILED"
    return f"replicas {verdict}: {describe(outcome, scenario)}", outcome.tally.ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=3, help="messages per thread")
    parser.add_argument("--rate", type=float, default=30.0, help="events/s (0: as fast as can)")
    parser.add_argument("--retry-share", type=float, default=0.1)
    parser.add_argument("--slow-threads", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per process")
    parser.add_argument("--keep-logs", type=Path, help="copy the replicas' logs here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    line, ok = asyncio.run(main(parse_args(sys.argv[1:])))
    print(line)
    sys.exit(0 if ok else 1)
