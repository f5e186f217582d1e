"""CPU cost of `spark-tui monitor` at 1 Hz against a real (CPU) vLLM under load. Target: < 2% of one core.

    PYTHONPATH=. python bench/monitor_cost.py [--seconds 30] [--interval 1] [--url URL]

Without --url it starts the tiny Qwen3.5-MoE + MTP model on the CPU vLLM of tests/support (the larger
/metrics body, spec-decode families included). A separate load process keeps streaming completions going
so every scrape sees changing counters and histograms. The monitor loop runs in THIS process (output to
/dev/null, GPU probe included); its CPU time (user + system, resource.getrusage) over the loop is divided
by the loop's wall time. The load generator runs in a child process and is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOAD = r"""
import sys, time, httpx
url, model, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
with httpx.Client(timeout=60) as c:
    while time.monotonic() < until:
        c.post(url + "/v1/completions", json={"model": model, "prompt": "def main(argv):", "max_tokens": 64,
                                               "temperature": 0, "ignore_eos": True})
"""


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--url", default=None, help="measure against this running server instead of starting one")
    a = ap.parse_args()

    from spark_tui.commands import monitor

    with contextlib.ExitStack() as stack:
        if a.url:
            url, model = a.url, None
        else:
            from tests.support.tiny_models import tiny_model
            from tests.support.vllm_server import mtp_config, start_server, stop_server

            md = tiny_model("qwen35-mtp-accept")
            h = start_server(md, mtp_config(1))
            stack.callback(stop_server, h)
            url, model = h.url, str(md)
        loader = None
        if model is not None:
            loader = subprocess.Popen([sys.executable, "-c", LOAD, url, model, str(a.seconds + 10)])
            stack.callback(loader.wait, 30)
            stack.callback(loader.terminate)
            time.sleep(2.0)
        args = argparse.Namespace(url=url, interval=a.interval, window=10.0, count=int(a.seconds / a.interval),
                                  once=False, json=False, model=None, no_gpu=False)
        scraper = monitor.Scraper(url)
        stack.callback(scraper.close)
        scraper.scrape()  # imports (httpx, prometheus_client) and first connection outside the measurement
        monitor.gpu_state()
        size = len(scraper.client.get(scraper.url).content)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            c0, w0 = cpu_s(), time.monotonic()
            monitor._loop(scraper, args)
            c1, w1 = cpu_s(), time.monotonic()
    pct = 100.0 * (c1 - c0) / (w1 - w0)
    print(f"monitor at {1 / a.interval:g} Hz for {w1 - w0:.1f} s: {c1 - c0:.3f} s CPU = {pct:.2f}% of one core "
          f"({args.count} reports, /metrics body {size / 1024:.0f} KiB, target < 2%)")
    return 0 if pct < 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
