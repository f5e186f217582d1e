"""`spark-tui launch`: start vLLM with the plan, follow its startup, verify it against the plan, stay attached.

Foreground (default): prints startup phases as they happen, then a stats line every --stats-interval
seconds until Ctrl-C (which stops the server) or until vLLM exits. `--detach`: returns once the server is
ready and leaves it running; `spark-tui stop` ends it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from spark_tui.errors import VllmError


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.plan import add_plan_arguments

    add_plan_arguments(p)
    g = p.add_argument_group("launch")
    g.add_argument("--runtime", choices=("native", "docker"), default="native",
                   help="native: the vllm program ($SPARK_TUI_VLLM, PATH, or python -m vllm); docker: docker run")
    if not any("--port" in a.option_strings for a in p._actions):
        g.add_argument("--port", type=int, help="port to serve on (default: the plan's)")
    g.add_argument("--startup-timeout", type=float, default=1800.0,
                   help="seconds to wait for /health and /v1/models before stopping the start (default 1800)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--foreground", dest="detach", action="store_false", default=False,
                      help="stay attached, print stats, Ctrl-C stops the server (default)")
    mode.add_argument("--detach", dest="detach", action="store_true",
                      help="return once ready and leave the server running (stop it with `spark-tui stop`)")
    g.add_argument("--stats-interval", type=float, default=10.0, help="seconds between stats lines (default 10)")
    g.add_argument("--image", help="docker image for --runtime docker (default: vllm/vllm-openai for the plan's "
                   "vLLM version)")
    g.add_argument("--no-preflight", action="store_true", help="skip the port / memory / checkpoint checks")


class _StartupPrinter:
    """Prints each startup phase (vllm_log.StartupTracker) as it becomes active or done, with its detail."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.t0 = time.monotonic()
        self.shown: dict[str, tuple[str, str]] = {}

    def __call__(self, ev: Any) -> None:
        from spark_tui.core import supervisor as sv

        if not isinstance(ev, sv.PhaseChanged):
            return
        for ph in ev.phases:
            if ph.status == "pending":
                continue
            key = (ph.status, ph.detail if ph.status != "active" else "")
            if self.shown.get(ph.key) == key:
                continue
            self.shown[ph.key] = key
            mark = {"active": "..", "done": "ok", "failed": "!!"}.get(ph.status, ph.status)
            detail = f" ({ph.detail})" if ph.detail and ph.status != "active" else ""
            print(f"[{time.monotonic() - self.t0:6.1f}s] {mark} {ph.title}{detail}", file=self.stream, flush=True)


def _diagnose(lines: list[str]) -> str | None:
    try:
        from spark_tui.core import diagnose
    except ImportError:
        return None
    fn = getattr(diagnose, "diagnose_lines", None) or getattr(diagnose, "diagnose", None)
    if fn is None:
        return None
    res = fn(lines)
    if res is None:
        return None
    text = getattr(res, "to_text", None)
    return text() if callable(text) else str(res)


class _Stats:
    """One line from /metrics: requests, tok/s (from counter deltas), KV-cache use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prev: tuple[float, float, float] | None = None  # t, generation tokens, prompt tokens

    def line(self) -> str | None:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(self.url + "/metrics", timeout=3).text
        except httpx.HTTPError:
            return None
        v: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                              "vllm:generation_tokens_total", "vllm:prompt_tokens_total"):
                    v[s.name] = v.get(s.name, 0.0) + s.value
        now = time.monotonic()
        gen, prompt = v.get("vllm:generation_tokens_total", 0.0), v.get("vllm:prompt_tokens_total", 0.0)
        rates = ""
        if self.prev is not None and now > self.prev[0]:
            dt = now - self.prev[0]
            rates = f"  gen {(gen - self.prev[1]) / dt:.1f} tok/s  prompt {(prompt - self.prev[2]) / dt:.1f} tok/s"
        self.prev = (now, gen, prompt)
        return (f"running {v.get('vllm:num_requests_running', 0):.0f}  waiting "
                f"{v.get('vllm:num_requests_waiting', 0):.0f}  KV cache {100 * v.get('vllm:kv_cache_usage_perc', 0):.1f}%"
                f"{rates}  total generated {gen:.0f}")


def _plan_summary(plan: Any) -> dict[str, Any]:
    mem = plan.memory
    fc = plan.flag("--moe-backend")
    return {"device": plan.device.id, "checkpoint": plan.checkpoint.repo_id, "format": plan.checkpoint.format,
            "goal": plan.goal, "kv_cache_tokens": getattr(mem, "kv_cache_tokens", None),
            "moe_backend": fc.value if fc else None}


def run(args: argparse.Namespace) -> int:
    from spark_tui.commands.plan import plan_from_args
    from spark_tui.core import supervisor as sv

    plan = plan_from_args(args)
    port = getattr(args, "port", None) or plan.port
    if not args.no_preflight:
        sv.check_port_free(plan.host, port)
        note = sv.check_memory(plan)
        if note:
            print(f"memory: {note}")
        rep = sv.check_checkpoint(plan)
        if rep is not None:
            print(f"checkpoint: {rep.path} complete, {rep.quant.format}, MTP {'yes' if rep.has_mtp else 'no'}")
            for w in rep.warnings:
                print(f"  warning: {w}")
    if args.runtime == "docker":
        import shutil

        if shutil.which("docker") is None:
            raise VllmError("docker is not installed or not on PATH", "install docker, or use --runtime native")
        argv = sv.docker_argv(plan, port=port, image=args.image, name=f"spark-tui-vllm-{port}")
    else:
        argv = sv.native_argv(plan, sv.resolve_vllm(), port=port)
    env = dict(plan.env_dict())
    if plan.host in ("127.0.0.1", "localhost") and "VLLM_HOST_IP" not in os.environ:
        env["VLLM_HOST_IP"] = "127.0.0.1"  # keep vLLM's internal sockets on loopback too
    sup = sv.Supervisor(argv, host=plan.host, port=port, model=plan.model,
                        served_model_name=plan.served_model_name, env=env, detach=args.detach,
                        runtime=args.runtime, plan_summary=_plan_summary(plan))
    printer = _StartupPrinter()
    sup.subscribe(printer)
    if not args.detach:
        sv.install_signal_handlers(sup)
    rec = sup.start()
    print(f"vLLM starting: pid {rec.pid}, log {rec.log_path}", flush=True)
    try:
        ready = sup.wait_ready(args.startup_timeout, diagnose=_diagnose)
        print(f"ready in {ready.seconds:.1f}s at {ready.url} (models: {', '.join(ready.models)})", flush=True)
        v = sv.verify_against_plan(plan, sup.summary())
        for line in v.lines():
            print(line, flush=True)
        if args.detach:
            print(f"detached: pid {rec.pid} keeps running; stop it with `spark-tui stop {rec.pid}`")
            return 0
        stats = _Stats(ready.url)
        stats.line()
        while sup.alive():
            end = time.monotonic() + args.stats_interval
            while time.monotonic() < end and sup.alive():
                time.sleep(0.2)
            if sup.alive():
                line = stats.line()
                if line:
                    print(line, flush=True)
        rc = sup.proc.returncode if sup.proc else None
        raise VllmError(f"vLLM exited with code {rc}{sup._diagnosis(_diagnose)}", f"full log: {rec.log_path}")
    except KeyboardInterrupt:
        print("\nstopping vLLM...", file=sys.stderr, flush=True)
        how = sup.stop()
        print(f"vLLM stopped ({how})", file=sys.stderr)
        return 0
    except BaseException:
        if sup.alive():  # a failed or interrupted start never leaves a server behind, detached or not
            sup.stop()
        raise
