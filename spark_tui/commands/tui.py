"""Plain `spark-tui`: open the Textual app (the only command module that imports textual).

`--url URL` watches a running vLLM server on the Dashboard. `SPARK_TUI_PROBE_FILE=box.json` replays a saved
probe (`spark-tui probe --json`) instead of reading NVML: to plan for another machine, or to run without a GPU.

No orphan server: a server launched from the app is stopped when the app ends (quit, crash, SIGTERM/SIGHUP),
unless the user chose "keep running" in the quit dialog; then it is said how to stop it later.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

PROBE_FILE_ENV = "SPARK_TUI_PROBE_FILE"


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.probe import ProbeResult
    from spark_tui.ui.app import SparkApp

    probe = None
    path = os.environ.get(PROBE_FILE_ENV)
    if path:
        probe = ProbeResult.load(path)  # UsageError (exit 2) with a hint when missing or invalid
    app = SparkApp(url=getattr(args, "url", None), probe=probe)

    def on_signal(signum: int, frame) -> None:  # terminal closed / killed politely: stop our server first
        signal.signal(signum, signal.SIG_IGN)
        _stop_unkept(app)
        os._exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        app.run()
    finally:
        _stop_unkept(app)
    kept = app.kept_server
    if kept is not None:
        print(f"vLLM keeps running: pid {kept.pid} at {kept.url} (log {kept.log_path}).\n"
              f"Stop it later with `spark-tui stop {kept.pid}` (or `spark-tui stop` to list servers).")
    return int(app.return_code or 0)


def _stop_unkept(app) -> None:
    sup = getattr(app, "supervisor", None)
    if sup is not None and app.kept_server is None and sup.alive():
        print("spark-tui: stopping the vLLM server started here …", file=sys.stderr, flush=True)
        sup.stop()
