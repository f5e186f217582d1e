"""Plain `spark-tui`: open the Textual app (the only command module that imports textual).

`--url URL` watches a running vLLM server on the Dashboard. `SPARK_TUI_PROBE_FILE=box.json` replays a saved
probe (`spark-tui probe --json`) instead of reading NVML: to plan for another machine, or to run without a GPU.

No orphan server: a server launched from the app is stopped when the app ends (quit, crash, SIGTERM/SIGHUP,
and SIGKILL through the supervisor's watchdog), unless the user chose "keep running" in the quit dialog;
then it is said how to stop it later. On SIGTERM/SIGHUP the app ends normally, so the terminal is restored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

PROBE_FILE_ENV = "SPARK_TUI_PROBE_FILE"


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.hardware.probe import ProbeResult
    from spark_tui.ui.app import SparkApp

    probe = None
    path = os.environ.get(PROBE_FILE_ENV)
    if path:
        probe = ProbeResult.load(path)  # UsageError (exit 2) with a hint when missing or invalid
    app = SparkApp(url=getattr(args, "url", None), probe=probe)  # UsageError for a bad --url
    tty = _save_tty()
    timers: list[threading.Timer] = []

    def on_signal(signum: int, frame) -> None:  # terminal closed / killed politely
        signal.signal(signum, signal.SIG_IGN)
        code = 128 + signum
        # end the app the normal way, so Textual restores the terminal (alternate screen, cursor, mouse, tty
        # mode); the `finally` below then stops our server. Should the app not end within 5 s, restore the
        # terminal here and exit (the server's watchdog stops it if this process dies first).
        t = threading.Timer(_HARD_EXIT_AFTER_S, _hard_exit, args=(app, code, tty))
        t.daemon = True
        timers.append(t)
        t.start()
        try:
            asyncio.get_running_loop().call_soon_threadsafe(lambda: app.exit(return_code=code))
        except RuntimeError:  # the app is not running (yet, or any more)
            _hard_exit(app, code, tty)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        app.run()
    finally:
        for t in timers:  # the app ended by itself: no hard exit
            t.cancel()
        _stop_unkept(app)
    kept = app.kept_server
    if kept is not None:
        print(f"vLLM keeps running: pid {kept.pid} at {kept.url} (log {kept.log_path}).\n"
              f"Stop it later with `spark-tui stop {kept.pid}` (or `spark-tui stop` to list servers).")
    return int(app.return_code or 0)


_HARD_EXIT_AFTER_S = 5.0
# leave the alternate screen, show the cursor, stop mouse reporting and bracketed paste (what Textual's
# LinuxDriver.stop_application_mode writes), for the rare case the app cannot end by itself
_RESET = b"\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?2004l\x1b[?1004l"


def _save_tty():
    try:
        import termios

        fd = sys.__stdin__.fileno()
        return fd, termios.tcgetattr(fd)
    except Exception:  # noqa: BLE001 - not a terminal (tests, pipes): nothing to restore
        return None


def _hard_exit(app, code: int, tty) -> None:
    try:
        _stop_unkept(app)
    finally:
        try:
            if sys.__stdout__ is not None:
                os.write(sys.__stdout__.fileno(), _RESET)
            if tty is not None:
                import termios

                termios.tcsetattr(tty[0], termios.TCSANOW, tty[1])
        except Exception:  # noqa: BLE001 - the terminal may be gone (SIGHUP)
            pass
        os._exit(code)


def _stop_unkept(app) -> None:
    sup = getattr(app, "supervisor", None)
    if sup is not None and app.kept_server is None and sup.alive():
        print("spark-tui: stopping the vLLM server started here …", file=sys.stderr, flush=True)
        sup.stop()
