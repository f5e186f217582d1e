"""bench/gpu_visit_summary.py over real outputs of the project's own commands (plan, diagnose, bench)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "spark_tui", *args], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return r.stdout


def test_summary_compares_plan_with_the_logged_kv_cache_and_ratios(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "plan_default.json").write_text(cli("plan", "--device", "rtx-5090", "--json"))
    (keep / "launch_plan.diagnose.json").write_text(
        cli("diagnose", str(ROOT / "tests/data/logs/v0.24.0-qwen36-nvfp4-5090-two-line-kv.log"), "--json"))
    (keep / "h100-torch.json").write_text((ROOT / "tests/data/kernels_check/cpu-only.json").read_text())

    def level(c, tok_s):
        return {"concurrency": c, "output_tok_s": tok_s, "per_user_tok_s": tok_s / c, "ttft_s": {"p50": 0.05},
                "itl_s": {"p50": 0.01}, "acceptance_rate": None, "self_check_ok": True}

    (keep / "bench_plan.json").write_text(json.dumps({"levels": [level(1, 150.0), level(16, 1600.0)]}))
    (keep / "bench_defaults.json").write_text(json.dumps({"levels": [level(1, 120.0), level(16, 1000.0)]}))
    out = subprocess.run([sys.executable, str(ROOT / "bench/gpu_visit_summary.py"), str(keep)],
                         capture_output=True, text=True, check=True).stdout
    plan = json.loads((keep / "plan_default.json").read_text())
    logged = json.loads((keep / "launch_plan.diagnose.json").read_text())["summary"]["kv_cache_tokens"]
    pred = plan["memory"]["kv_cache_tokens"]
    row = next(line for line in out.splitlines() if line.startswith("| launch_plan |"))
    assert f"| {pred} | {logged} | {(pred - logged) / logged * 100:+.1f}% |" in row
    assert "| launch_ctx2 | not run |" in out and "| bench_mtp0 | not run |" in out
    assert "- plan / vLLM defaults, concurrency 1: 1.250x" in out
    assert "- plan / vLLM defaults, concurrency 16: 1.600x" in out
    assert "verdict **no GPU: nothing was run** (exit 3)" in out
