"""`spark-tui launch`: start vLLM with the plan, follow its startup, verify it against the plan, stay attached.

Foreground (default): prints startup phases as they happen, then a stats line every --stats-interval
seconds until Ctrl-C (which stops the server) or until vLLM exits. `--detach`: returns once the server is
ready and leaves it running; `spark-tui stop` ends it.

A --host other than loopback (0.0.0.0, ::, a LAN address) needs an API key (--api-key-env, default
VLLM_API_KEY, or --api-key-file with mode 0600): vLLM gets it as VLLM_API_KEY in its environment, never in argv.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING

from spark_tui.commands.argtypes import positive_seconds
from spark_tui.errors import VllmError

_SAY_LOCK = threading.Lock()


def _say(*args: object, file=None, flush: bool = False, sep: str = " ", end: str = "\n") -> None:
    """print(), one whole line at a time: the startup printer runs on the log reader's thread, and print() writes
    the text and the newline separately, so two threads could join two lines into one."""
    stream = file or sys.stdout
    with _SAY_LOCK:
        stream.write(sep.join(str(a) for a in args) + end)
        if flush:
            stream.flush()

if TYPE_CHECKING:
    from spark_tui.core.hardware.memguard import GuardThresholds
    from spark_tui.core.observe.metrics import Snapshot
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.launch import GuardStopped
    from spark_tui.core.runtime.supervisor import Supervisor, SupervisorEvent


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.plan import add_plan_arguments

    add_plan_arguments(p)
    g = p.add_argument_group("launch")
    g.add_argument("--runtime", choices=("native", "docker"), default="native",
                   help="native: the vllm program ($SPARK_TUI_VLLM, PATH, or python -m vllm); docker: docker run")
    g.add_argument("--startup-timeout", type=positive_seconds, default=1800.0,
                   help="seconds to wait for /health and /v1/models before stopping the start (default 1800)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--foreground", dest="detach", action="store_false", default=False,
                      help="stay attached, print stats, Ctrl-C stops the server (default)")
    mode.add_argument("--detach", dest="detach", action="store_true",
                      help="return once ready and leave the server running (stop it with `spark-tui stop`)")
    g.add_argument("--stats-interval", type=positive_seconds, default=10.0, help="seconds between stats lines (default 10)")
    g.add_argument("--image", help="docker image for --runtime docker (default: vllm/vllm-openai for the plan's "
                   "vLLM version)")
    g.add_argument("--no-preflight", action="store_true", help="skip the port / memory / checkpoint checks")
    g.add_argument("--dry-run", action="store_true",
                   help="print the exact argv and environment it would run, then exit 0 without starting anything")
    g.add_argument("--json", action="store_true", help="with --dry-run: print {argv, env} as JSON")
    g.add_argument("--api-key-env", metavar="NAME", default="VLLM_API_KEY",
                   help="the environment variable holding the API key (default VLLM_API_KEY); a --host other than "
                   "loopback needs one. It reaches vLLM as VLLM_API_KEY in its environment, never on its command line")
    g.add_argument("--api-key-file", metavar="FILE",
                   help="read the API key from this file (mode 0600; the key alone, or VLLM_API_KEY=key as "
                   "`spark-tui export --generate-api-key` writes it)")
    add_guard_arguments(g)


def add_guard_arguments(g) -> None:
    """The memory guard's options (spark_tui.core.hardware.memguard): on by default on unified memory (GB10)."""
    onoff = g.add_mutually_exclusive_group()
    onoff.add_argument("--mem-guard", dest="mem_guard", action="store_true", default=None,
                       help="watch MemAvailable, swap and memory pressure and stop vLLM before the host stalls "
                            "(default: on for unified memory, e.g. DGX Spark)")
    onoff.add_argument("--no-mem-guard", dest="mem_guard", action="store_false", help="do not run the memory guard")
    g.add_argument("--mem-guard-warn", type=float, metavar="GIB", help="warn below this MemAvailable (default 4)")
    g.add_argument("--mem-guard-stop", type=float, metavar="GIB", help="stop vLLM below this MemAvailable (default 2)")
    g.add_argument("--mem-guard-psi-stop", type=float, metavar="PCT",
                   help="stop vLLM at this memory pressure, PSI full avg10 %% (default 30)")
    g.add_argument("--mem-guard-interval", type=float, metavar="S", help="seconds between samples (default 0.5)")


def guard_thresholds(args: argparse.Namespace, plan: Plan) -> GuardThresholds | None:
    """GuardThresholds when the guard runs for this plan, else None (UsageError, exit 2, on bad values)."""
    from spark_tui.core.hardware import memguard

    on = getattr(args, "mem_guard", None)
    if on is None:
        on = memguard.default_enabled(plan.device.unified_memory)
    if not on:
        return None
    return memguard.thresholds_from_options(
        warn_gib=getattr(args, "mem_guard_warn", None), stop_gib=getattr(args, "mem_guard_stop", None),
        psi_stop=getattr(args, "mem_guard_psi_stop", None), interval_s=getattr(args, "mem_guard_interval", None))


GUARD_OPTIONS = "; its thresholds: --mem-guard-warn/--mem-guard-stop/--mem-guard-psi-stop, or --no-mem-guard"


def _guard_error(e: GuardStopped) -> VllmError:
    """Core's GuardStopped with the options that tune the guard named in the hint (exit 6)."""
    return VllmError(e.message, e.hint + GUARD_OPTIONS)


class _StartupPrinter:
    """Prints each startup phase (vllm_log.StartupTracker) as it becomes active or done, with its detail."""

    def __init__(self, stream=None) -> None:
        self.stream = stream  # None: sys.stdout when printing (not the one at import time)
        self.t0 = time.monotonic()
        self.shown: dict[str, tuple[str, str]] = {}

    def __call__(self, ev: SupervisorEvent) -> None:
        from spark_tui.core.runtime import supervisor as sv

        if not isinstance(ev, sv.PhaseChanged):
            return
        for ph in ev.phases:
            if ph.status == "pending" or ph.key == "serving":  # serving: the stats line below says it
                continue
            key = (ph.status, ph.detail if ph.status != "active" else "")
            if self.shown.get(ph.key) == key:
                continue
            self.shown[ph.key] = key
            mark = {"active": "..", "done": "ok", "failed": "!!"}.get(ph.status, ph.status)
            detail = f" ({ph.detail})" if ph.detail and ph.status != "active" else ""
            _say(f"[{time.monotonic() - self.t0:6.1f}s] {mark} {ph.title}{detail}", file=self.stream or sys.stdout,
                  flush=True)


class _Stats:
    """One line from /metrics through core's bounded scraper (spark_tui.core.observe.metrics): requests, tok/s over the
    last interval (counter increases between two scrapes), KV-cache use, tokens generated since the server started."""

    def __init__(self, url: str) -> None:
        from spark_tui.core.observe.metrics import MetricsScraper

        self.scraper = MetricsScraper(url)
        self.prev: Snapshot | None = None

    def line(self) -> str | None:
        from spark_tui.core.observe.metrics import window_stats
        from spark_tui.errors import SparkError

        try:
            snap = self.scraper.scrape()
        except SparkError:  # unreachable, or not vLLM's metrics: no line this time
            return None
        prev, self.prev = self.prev, snap
        now = window_stats([snap])  # gauges, and counters since the server started
        rates = ""
        if prev is not None and snap.t > prev.t:
            w = window_stats([prev, snap])
            rates = f"  gen {_n(w.generation_tok_s, '.1f')} tok/s  prompt {_n(w.prompt_tok_s, '.1f')} tok/s"
        kv = None if now.kv_cache_usage is None else 100 * now.kv_cache_usage
        return (f"running {_n(now.requests_running, '.0f')}  waiting {_n(now.requests_waiting, '.0f')}  "
                f"KV cache {_n(kv, '.1f')}%{rates}  total generated {_n(now.generation_tokens, '.0f')}")

    def close(self) -> None:
        self.scraper.close()


def _n(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _follow(sup: Supervisor, stats: _Stats, interval_s: float) -> None:
    """A stats line every interval until vLLM exits."""
    while sup.alive():
        end = time.monotonic() + interval_s
        while time.monotonic() < end and sup.alive():
            time.sleep(0.2)
        if sup.alive():
            line = stats.line()
            if line:
                _say(line, flush=True)


def dry_run_command(plan: Plan, runtime: str = "native", image: str | None = None,
                    api_key: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment additions) `launch` would run for this plan: the same construction as a real start. The
    API key's value is never returned: the environment shows where it comes from instead."""
    from spark_tui.core.runtime import supervisor as sv

    try:
        sup = sv.supervisor_for_plan(plan, runtime=runtime, image=image, api_key=api_key)
    except VllmError:
        if runtime == "docker":
            raise
        # vLLM not installed yet: show the command with the `vllm` program name
        plan_env = sv.plan_env(plan)
        if api_key or sv.API_KEY_ENV in plan_env:
            plan_env[sv.API_KEY_ENV] = api_key or ""
        sup = sv.Supervisor(sv.native_argv(plan, ["vllm"]), host=plan.host, port=plan.port, model=plan.model,
                            served_model_name=plan.served_model_name, env=plan_env)
    env = dict(sup.env or {})
    if env.get(sv.API_KEY_ENV):
        env[sv.API_KEY_ENV] = "<the API key, not shown>"
    return list(sup.argv), env


def _dry_run(plan: Plan, args: argparse.Namespace, api_key: str | None = None) -> int:
    import json
    import shlex

    argv, env = dry_run_command(plan, args.runtime, args.image, api_key)
    if getattr(args, "json", False):
        _say(json.dumps({"argv": argv, "env": env}, indent=2))
    else:
        for k, v in env.items():
            _say(f"{k}={shlex.quote(v)}")
        _say(" ".join(shlex.quote(a) for a in argv))
    return 0


def run(args: argparse.Namespace) -> int:
    from spark_tui.commands.plan import plan_from_args
    from spark_tui.core.runtime import launch as ls
    from spark_tui.core.runtime import supervisor as sv

    plan = plan_from_args(args)
    port = plan.port  # one flag model: the plan's --port (from --port or --set port=N) is the port served on
    api_key = sv.resolve_api_key(args.api_key_env, args.api_key_file)
    if args.dry_run:
        return _dry_run(plan, args, api_key)
    guard = guard_thresholds(args, plan)
    # the API-key rule (a non-loopback bind needs one) is checked before anything else runs
    sup = sv.supervisor_for_plan(plan, port=port, runtime=args.runtime, detach=args.detach, image=args.image,
                                 api_key=api_key)
    sup.subscribe(_StartupPrinter())

    def step(ev: ls.LaunchStep) -> None:
        if isinstance(ev, ls.PreflightDone):
            for line in ev.preflight.lines():
                _say(line)
        elif isinstance(ev, ls.Started):
            if not args.detach:  # the server exists now: SIGTERM / SIGHUP / Ctrl-C stop it, then exit
                sv.install_signal_handlers(sup)
            _say(f"vLLM starting: pid {ev.record.pid}, log {ev.record.log_path}", flush=True)
        elif isinstance(ev, ls.GuardWatching):
            from spark_tui.core.hardware import memguard

            for line in memguard.guard_description(True, ev.thresholds, unified=plan.device.unified_memory):
                _say(line, flush=True)
            if args.detach:
                _say("  (--detach: the guard watches the start only)", flush=True)

    try:
        started = ls.launch(plan, sup, startup_timeout_s=args.startup_timeout, checks=not args.no_preflight,
                            guard=guard, on_guard=lambda ev: _say(ev.text, file=sys.stderr, flush=True),
                            on_step=step, diagnose=ls.diagnosis_summary)
    except ls.GuardStopped as e:
        raise _guard_error(e) from None
    rec, ready = started.record, started.ready
    try:
        _say(f"ready in {ready.seconds:.1f}s at {ready.url} (models: {', '.join(ready.models)})", flush=True)
        for line in started.verification.lines():
            _say(line, flush=True)
        if args.detach:
            _say(f"detached: pid {rec.pid} keeps running; stop it with `spark-tui stop {rec.pid}`")
            return 0
        stats = _Stats(ready.url)
        try:
            stats.line()
            _follow(sup, stats, args.stats_interval)
        finally:
            stats.close()
        err = ls.guard_stopped(started.watcher)
        if err is not None:
            raise _guard_error(err) from None
        rc = sup.proc.returncode if sup.proc else None
        raise VllmError(f"vLLM exited with code {rc}{sup._diagnosis(ls.diagnosis_summary)}", f"full log: {rec.log_path}")
    except KeyboardInterrupt:
        _say("\nstopping vLLM...", file=sys.stderr, flush=True)
        how = sup.stop()
        _say(f"vLLM stopped ({how})", file=sys.stderr)
        return 0
    except BaseException:
        if sup.alive():  # a failed or interrupted start never leaves a server behind, detached or not
            sup.stop()
        raise
