"""Summarise a GPU visit's outputs (bench/gpu_visit.sh keep/ folder) into the figures the issues ask for.

    python bench/gpu_visit_summary.py KEEP_DIR > summary.md

- Self-test: the verdict lines, BF16 / FP8 TFLOP/s and their ratio (kernels_check reports).
- Predicted vs logged "GPU KV cache size" and maximum concurrency, error in %, per launched plan.
- The MoE backend the plan predicted vs the one vLLM logged.
- Decode tok/s at concurrency 1 and 16: spark-tui's plan vs vLLM's defaults, MTP k vs off.
- Startup time to ready and GPU memory in use.
Missing inputs are reported as "not run", never filled in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _pct(pred: float | None, got: float | None) -> str:
    if pred is None or got is None or not got:
        return "n/a"
    return f"{(pred - got) / got * 100:+.1f}%"


def kv_rows(keep: Path) -> list[str]:
    rows = ["| run | predicted KV tokens | logged KV tokens | error | predicted concurrency | logged concurrency "
            "| error | MoE backend plan / log | time to ready | GPU memory used |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, plan_file in (("launch_plan", "plan_default.json"), ("launch_ctx2", "plan_ctx2.json"),
                            ("launch_mtp0", "plan_mtp0.json")):
        plan = _load(keep / plan_file)
        diag = _load(keep / f"{name}.diagnose.json")
        if plan is None or diag is None:
            rows.append(f"| {name} | not run | | | | | | | | |")
            continue
        mem = plan.get("memory") or {}
        s = diag.get("summary") or {}
        moe = next((f["value"] for f in plan.get("flags", []) if f["flag"] == "--moe-backend"), "auto")
        gpumem = ""
        csv = keep / f"{name}.gpumem.csv"
        if csv.exists():
            lines = csv.read_text().strip().splitlines()
            gpumem = lines[-1] if len(lines) > 1 else ""
        rows.append(
            f"| {name} | {mem.get('kv_cache_tokens')} | {s.get('kv_cache_tokens')} | "
            f"{_pct(mem.get('kv_cache_tokens'), s.get('kv_cache_tokens'))} | {mem.get('max_concurrency')} | "
            f"{s.get('max_concurrency')} | {_pct(mem.get('max_concurrency'), s.get('max_concurrency'))} | "
            f"{moe} / {s.get('moe_backend')} | {s.get('time_to_ready_s')} s | {gpumem} |"
        )
    return rows


def bench_rows(keep: Path) -> list[str]:
    rows = ["| server | concurrency | output tok/s | per-user tok/s | TTFT p50 ms | ITL p50 ms | acceptance | "
            "self-check |", "|---|---|---|---|---|---|---|---|"]
    by: dict[str, dict[int, dict]] = {}
    for name in ("bench_plan", "bench_mtp0", "bench_defaults"):
        d = _load(keep / f"{name}.json")
        if d is None:
            rows.append(f"| {name} | not run | | | | | | |")
            continue
        by[name] = {lv["concurrency"]: lv for lv in d["levels"]}
        for lv in d["levels"]:
            acc = lv.get("acceptance_rate")
            ttft = lv["ttft_s"]["p50"]
            itl = lv["itl_s"]["p50"]
            rows.append(
                f"| {name} | {lv['concurrency']} | {lv['output_tok_s']:.1f} | {lv['per_user_tok_s'] or 0:.1f} | "
                f"{'n/a' if ttft is None else f'{ttft * 1000:.0f}'} | {'n/a' if itl is None else f'{itl * 1000:.1f}'} | "
                f"{'n/a' if acc is None else f'{acc:.1%}'} | {lv.get('self_check_ok')} |"
            )
    rows.append("")
    for a, b, label in (("bench_plan", "bench_defaults", "plan / vLLM defaults"),
                        ("bench_plan", "bench_mtp0", "MTP on / MTP off")):
        for c in (1, 16):
            x, y = by.get(a, {}).get(c), by.get(b, {}).get(c)
            if x and y and y["output_tok_s"]:
                rows.append(f"- {label}, concurrency {c}: {x['output_tok_s'] / y['output_tok_s']:.3f}x")
    return rows


def selftest_rows(keep: Path) -> list[str]:
    out = []
    for f in sorted(keep.glob("h100-*.json")):
        d = _load(f)
        if not d:
            continue
        v = d.get("verdict") or {}
        out.append(f"- {f.name}: verdict **{v.get('title')}** (exit {v.get('exit_code')}) — {v.get('summary', '')}; "
                   f"recommended {v.get('recommended_checkpoint')} with MoE backend {v.get('recommended_moe_backend')}")
        for c in d.get("checks", []):
            if c.get("name") in ("bf16_gemm", "fp8_gemm", "nvfp4_gemm_torch", "nvfp4_gemm_vllm", "nvfp4_marlin",
                                 "moe_backends", "moe_triton_bf16", "kv_cache_fp8"):
                det = c.get("details") or {}
                figs = ", ".join(f"{k}={det[k]}" for k in sorted(det) if isinstance(det[k], (int, float, str)))[:300]
                out.append(f"  - {c['name']}: {c.get('status')} {c.get('reason') or ''} {figs}")
    return out or ["- not run"]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    keep = Path(argv[0])
    print("# GPU visit summary\n")
    steps = keep / "steps.tsv"
    if steps.exists():
        print("## Steps (name, exit code, seconds)\n")
        print("```\n" + steps.read_text() + "```\n")
    print("## Self-test\n")
    print("\n".join(selftest_rows(keep)) + "\n")
    print("## Plan vs vLLM log (KV cache, concurrency, MoE backend, startup, memory)\n")
    print("\n".join(kv_rows(keep)) + "\n")
    print("## Decode throughput\n")
    print("\n".join(bench_rows(keep)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
