"""`spark-tui bench`: measure a served model at several concurrency levels."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_API_KEY_ENV = "VLLM_API_KEY"  # the variable vLLM itself reads its API key from


def int_list(minimum: int, example: str):
    """An argparse type: a comma-separated list of integers >= minimum (e.g. "1,4,16")."""

    def parse(s: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(x) for x in s.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integers (e.g. {example})") from None
        if not vals or any(v < minimum for v in vals):
            raise argparse.ArgumentTypeError(f"give integers >= {minimum}, e.g. {example}")
        return vals

    return parse


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.argtypes import positive_int, positive_seconds

    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default %(default)s)")
    p.add_argument("--model", help="model name (default: the first one /v1/models lists)")
    p.add_argument("--concurrency", type=int_list(1, "1,4,16"), default=(1, 4, 8, 16, 32), help="levels, e.g. 1,4,8,16,32")
    p.add_argument("--prompt-tokens", type=positive_int, default=512, help="exact prompt length in tokens (synthetic prompts)")
    p.add_argument("--output-tokens", type=positive_int, default=128, help="exact output length in tokens")
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--duration", type=positive_seconds, help="seconds per level (default 30 unless --requests is given)")
    bound.add_argument("--requests", type=positive_int, help="requests per level")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature of every request (default 0: greedy); MTP acceptance depends on it")
    p.add_argument("--prompts", choices=("synthetic", "realistic"), default="synthetic",
                   help="synthetic: exact token counts via the server's tokenizer; realistic: shipped chat/code prompts")
    p.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, help="env var holding the server's API key, if any")
    p.add_argument("--device", metavar="ID", help="device profile for the published reference figures (default: what "
                   "`spark-tui launch` recorded for this server, else the probed GPU)")
    p.add_argument("--checkpoint", metavar="ID", help="checkpoint profile or repo id for the reference figures")
    p.add_argument("--no-save", action="store_true", help="do not save the result under the user data dir")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def gather_context() -> dict:
    """GPU, host and versions to store beside the figures, so runs can be compared."""
    import platform

    from spark_tui import __version__

    ctx: dict = {"spark_tui": __version__, "python": platform.python_version()}
    try:
        from spark_tui.core.hardware.probe import take_probe

        pr = take_probe()
        ctx["probe"] = {
            "status": pr.status,
            "driver_version": pr.driver_version,
            "cuda_driver_version": pr.cuda_driver_version,
            "gpus": [{"name": g.name, "sm": g.sm_name, "memory_total_bytes": g.memory_total_bytes} for g in pr.gpus],
        }
    except Exception as e:  # no probe available: say so rather than guess
        ctx["probe"] = {"status": "unavailable", "error": f"{type(e).__name__}: {e}"}
    return ctx


def save_result(d: dict, directory: Path | None = None) -> Path:
    from spark_tui.core.paths import data_dir, safe_filename

    out = directory or (data_dir() / "bench")
    out.mkdir(parents=True, exist_ok=True)
    stamp = (d.get("started_at") or "run").replace(":", "").replace("-", "")
    name = safe_filename(str(d.get("model", "model")))[-60:]
    path = out / f"{stamp}-{name}.json"
    i = 1
    while path.exists():
        path = out / f"{stamp}-{name}-{i}.json"
        i += 1
    path.write_text(json.dumps(d, indent=2))
    return path


def _api_key(env_name: str | None) -> str | None:
    """The API key from the variable --api-key-env names. The argument is never echoed: a user who passes the
    key itself by mistake must not see it printed (terminals and CI logs keep error output)."""
    import re

    from spark_tui.errors import UsageError

    if not env_name:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
        raise UsageError("--api-key-env takes the name of an environment variable, not the key itself",
                         f"e.g. --api-key-env {DEFAULT_API_KEY_ENV}, with the key in that variable")
    key = os.environ.get(env_name)
    if key is None and env_name != DEFAULT_API_KEY_ENV:  # named on purpose but unset: every request would get 401
        raise UsageError("the variable given to --api-key-env is not set",
                         "export it with the server's API key, or drop --api-key-env for a server without one")
    return key or None


def reference_target(url: str, device: str | None, checkpoint: str | None,
                     probe: dict | None = None) -> tuple[str | None, str | None]:
    """(device id, checkpoint id) to show published figures for: the options, else what `spark-tui launch`
    recorded for a server on this port, else the probed GPU's device profile (checkpoint then unknown)."""
    from urllib.parse import urlparse

    from spark_tui.core.catalog.profiles import catalog

    cat = catalog()
    if device is None or checkpoint is None:
        try:
            from spark_tui.core.runtime.supervisor import list_servers

            port = urlparse(url).port
            rec = next((r for r in list_servers() if r.port == port), None)
        except Exception:  # no state dir, unreadable records: no launch record, nothing to infer
            rec = None
        if rec is not None:
            device = device or rec.plan_summary.get("device")
            checkpoint = checkpoint or rec.plan_summary.get("checkpoint")
    if device is None and probe and probe.get("gpus"):
        from spark_tui.core.catalog.profiles import match_gpu

        g = probe["gpus"][0]
        sm = g.get("sm")
        m = match_gpu(cat, g.get("name"), None, int(sm[3:]) if isinstance(sm, str) and sm.startswith("sm_") else None)
        device = None if m is None else m.device.id
    ck = None
    if checkpoint:
        try:
            ck = cat.checkpoint(checkpoint).id
        except Exception:  # a local path or an unknown repo: figures for the device only
            ck = None
    return device, ck


def run(args: argparse.Namespace) -> int:
    import asyncio

    from spark_tui.core.observe.bench import (BenchConfig, auth_headers, read_server_snapshot, render_plot, render_table,
                                              run_bench)
    from spark_tui.core.observe.metrics import server_url
    from spark_tui.errors import ExitCode

    api_key = _api_key(args.api_key_env)
    cfg = BenchConfig(
        url=server_url(args.url),
        model=args.model,
        concurrency=tuple(args.concurrency),
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        requests=args.requests,
        duration_s=None if args.requests else (30.0 if args.duration is None else args.duration),
        prompts=args.prompts,
        api_key=api_key,
        temperature=args.temperature,
    )
    headers = auth_headers(cfg)

    def on_level(lv) -> None:
        if not args.json:
            print(f"  c={lv.concurrency}: {lv.output_tok_s:.1f} tok/s aggregate, {lv.errors} errors", file=sys.stderr)

    res = asyncio.run(run_bench(cfg, lambda c: read_server_snapshot(c, cfg.url, headers), on_level))
    res.context = gather_context()
    from spark_tui.core.catalog.published import figures_for, plot_reference

    dev, ck = reference_target(cfg.url, args.device, args.checkpoint, res.context.get("probe"))
    figs = figures_for(dev, ck) if dev else []
    res.context["published"] = [f.__dict__ for f in figs]
    d = res.to_dict()
    saved = None
    if not args.no_save:
        try:
            saved = save_result(d)
        except OSError as e:  # the figures are printed below either way: a minutes-long run is not lost
            print(f"spark-tui: warning: result not saved ({e.filename or 'data dir'}: {e.strerror or e}); "
                  "set SPARK_TUI_HOME to a writable directory, or pass --no-save", file=sys.stderr)
    if args.json:
        if saved:
            d["saved_to"] = str(saved)
        print(json.dumps(d, indent=2))
    else:
        print(render_table(res))
        print()
        print(render_plot(res, reference=plot_reference(figs)))
        if figs:
            print(f"\npublished for {dev}" + (f" / {ck}" if ck else "") + " (for reference; conditions differ):")
            for f in figs:
                print(f"  {f.label()}")
        elif dev:
            print(f"\nno published figures for {dev}" + (f" / {ck}" if ck else "") + " (profiles/published.toml)")
        if saved:
            print(f"\nsaved to {saved}")
    bad = [lv for lv in res.levels if lv.self_check_ok is False]
    for lv in bad:
        print(
            f"spark-tui: warning: self-check failed at c={lv.concurrency}: client {lv.output_tok_s:.1f} tok/s vs "
            f"server {lv.server_gen_tok_s:.1f} tok/s ({lv.self_check_deviation:.1%} apart; tolerance 5%)",
            file=sys.stderr,
        )
    if all(lv.errors == lv.requests for lv in res.levels):
        return int(ExitCode.FAILURE)
    return int(ExitCode.OK)
