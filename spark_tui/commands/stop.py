"""`spark-tui stop [--all | PID]`: stop vLLM servers that spark-tui launched (state files in state_dir()).

A record whose pid now belongs to another process (pid reuse: other start time, command line or no
spark-tui marker in its environment) is dropped without a signal (spark_tui.core.runtime.supervisor.identity_problem)."""

from __future__ import annotations

import argparse
import time

from spark_tui.commands.argtypes import positive_seconds
from spark_tui.errors import UsageError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("pid", nargs="?", type=int, help="the server's pid (or process group id); "
                   "optional when only one server is running")
    p.add_argument("--all", action="store_true", help="stop every server spark-tui launched")
    p.add_argument("--grace", type=positive_seconds, default=15.0, help="seconds between SIGTERM and SIGKILL (default 15)")
    p.add_argument("--list", action="store_true", help="only list the running servers")


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.runtime import supervisor as sv

    recs = sv.find_servers(args.pid)
    if args.list or (not recs and not args.pid):
        if not recs:
            print("no running server launched by spark-tui")
        for r in recs:
            age = time.time() - r.started_at
            print(f"pid {r.pid}  {r.url}  {r.model}  {'detached' if r.detached else 'attached'}  "
                  f"up {age / 60:.0f} min  log {r.log_path}")
        return 0
    if len(recs) > 1 and not (args.all or args.pid):
        listing = "; ".join(f"pid {r.pid} ({r.url})" for r in recs)
        raise UsageError(f"{len(recs)} servers are running: {listing}", "name one: spark-tui stop PID, or --all")
    for r in recs:  # each checked again right before its first signal: a reused pid is never signalled
        how = sv.stop_server(r, args.grace)
        r.path().unlink(missing_ok=True)
        detail = {"clean": "stopped", "killed": "stopped (SIGKILL after the grace period)", "gone": "already gone",
                  "stale": "not signalled: its pid now belongs to another process (record removed)"}
        print(f"pid {r.pid} ({r.url}): {detail[how]}")
    return 0
