"""`spark-tui monitor`: live tok/s, MTP acceptance, KV-cache use and latency from a vLLM `/metrics`.

    spark-tui monitor [--url U] [--interval S] [--window W] [--count N] [--once] [--json] [--model M]

`--once`: one scrape, cumulative figures since server start. Otherwise: one line (or one JSON object per
line with --json) every interval, rates over the last `--window` seconds. GPU state comes from
`spark_tui.core.hardware.live.gpu_state()` at most every 2 s; where there is no GPU it says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from spark_tui.core.observe.metrics import MetricsScraper, Snapshot, Stats, Window, server_url, window_stats
from spark_tui.core.hardware.live import format_gpu, gpu_state
from spark_tui.errors import UsageError, VllmError

DEFAULT_URL = "http://127.0.0.1:8000"
GPU_EVERY_S = 2.0
JSON_SCHEMA_VERSION = 1


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"vLLM server base URL (default {DEFAULT_URL})")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    p.add_argument("--window", type=float, default=10.0, help="rates over this many seconds (default 10)")
    p.add_argument("--count", type=int, default=0, help="stop after this many reports (default: until Ctrl-C)")
    p.add_argument("--once", action="store_true", help="one scrape: cumulative figures since server start")
    p.add_argument("--json", action="store_true", help="JSON output (one object per line when repeating)")
    p.add_argument("--model", default=None, help="only this served model name (default: all on the server)")
    p.add_argument("--no-gpu", action="store_true", help="do not read GPU state")


def metrics_url(url: str) -> str:
    return server_url(url) + "/metrics"


# The bounded scraper lives in core (the TUI dashboard uses it too); `Scraper` is its name here.
Scraper = MetricsScraper


# ---- human output ---------------------------------------------------------------------------------


def _f(v: float | None, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if v is None else format(v * scale, fmt) + unit


def format_stats(s: Stats) -> str:
    if s.cumulative:
        head = f"since start: gen {_f(s.generation_tokens, '.0f')} tok, prompt {_f(s.prompt_tokens, '.0f')} tok"
    else:
        head = f"gen {_f(s.generation_tok_s, '.1f')} tok/s, prompt {_f(s.prompt_tok_s, '.1f')} tok/s"
    parts = [
        head,
        f"run {_f(s.requests_running, '.0f')} wait {_f(s.requests_waiting, '.0f')}",
        f"KV {_f(s.kv_cache_usage, '.1f', 100, '%')}",
        f"TTFT p50 {_f(s.ttft_p50_s, '.0f', 1000, 'ms')} p95 {_f(s.ttft_p95_s, '.0f', 1000, 'ms')}",
        f"ITL p50 {_f(s.itl_p50_s, '.1f', 1000, 'ms')} p95 {_f(s.itl_p95_s, '.1f', 1000, 'ms')}",
    ]
    if s.spec is None:
        parts.append("MTP n/a")
    else:
        pos = ",".join(_f(p, ".2f") for p in s.spec.per_position)
        parts.append(f"MTP accept {_f(s.spec.acceptance_rate, '.1f', 100, '%')} "
                     f"len {_f(s.spec.mean_acceptance_length, '.2f')} pos [{pos}]")
    parts.append(f"prefix hit {_f(s.prefix_cache_hit_rate, '.1f', 100, '%')}")
    parts.append(f"preempt {_f(s.preemptions, '.0f')}")
    if s.counter_reset:
        parts.append("(server restarted)")
    return ", ".join(parts)


def report(stats: Stats, snap: Snapshot, url: str, gpu: dict[str, Any] | None) -> dict[str, Any]:
    d = {"schema_version": JSON_SCHEMA_VERSION, "url": url, "time": snap.wall, **stats.to_dict()}
    d["skipped_lines"] = snap.skipped_lines
    d["truncated"] = snap.truncated
    d["gpu"] = gpu
    return d


# ---- loop -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import math

    # `not x > 0` also catches nan (which would make the loop spin), and inf would never report
    if not (args.interval > 0 and args.window > 0) or not math.isfinite(args.interval + args.window):
        raise UsageError("--interval and --window must be positive, finite seconds", "e.g. --interval 1 --window 10")
    if args.count < 0:
        raise UsageError("--count must be 0 (until Ctrl-C) or more", "e.g. --count 10")
    scraper = Scraper(args.url, args.model)
    try:
        if args.once:
            snap = scraper.scrape()
            gpu = None if args.no_gpu else gpu_state()
            st = window_stats([snap])
            if args.json:
                print(json.dumps(report(st, snap, scraper.url, gpu)))
            else:
                print(format_stats(st) + snap.scrape_note())
                if gpu is not None:
                    print(format_gpu(gpu))
            return 0
        return _loop(scraper, args)
    finally:
        scraper.close()


def _loop(scraper: Scraper, args: argparse.Namespace) -> int:
    win = Window(args.window)
    gpu: dict[str, Any] | None = None
    gpu_at = -1e9
    reports = 0
    next_t = time.monotonic()
    down = False
    while args.count <= 0 or reports < args.count:
        try:
            snap = scraper.scrape()
            if down:
                print(f"{time.strftime('%H:%M:%S')} server back", file=sys.stderr, flush=True)
                down = False
        except VllmError as e:
            if not win.snaps:
                raise
            if not down:
                print(f"{time.strftime('%H:%M:%S')} {e.message} (retrying)", file=sys.stderr, flush=True)
            down = True
            snap = None
        if snap is not None:
            win.add(snap)
            if not args.no_gpu and snap.t - gpu_at >= GPU_EVERY_S:
                gpu, gpu_at = gpu_state(), snap.t
            st = win.stats()
            if st is not None:
                if args.json:
                    print(json.dumps(report(st, snap, scraper.url, gpu)), flush=True)
                else:
                    line = f"{time.strftime('%H:%M:%S')} {format_stats(st)}{snap.scrape_note()}"
                    g = format_gpu(gpu)
                    print(line + (f" | {g}" if g else ""), flush=True)
                reports += 1
        next_t += args.interval
        time.sleep(max(0.0, next_t - time.monotonic()))
    return 0
