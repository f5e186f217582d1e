"""`spark-tui bench` against a real CPU vLLM serving tiny models (the session servers of tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.vllm_server import mtp_config

ROOT = Path(__file__).resolve().parents[2]


def run_bench(url: str, *extra: str, home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(home)}
    r = subprocess.run(
        [sys.executable, "-m", "spark_tui", "bench", "--url", url, "--concurrency", "1,4", "--requests", "8",
         "--prompt-tokens", "24", "--output-tokens", "32", "--json", *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.mark.vllm
def test_bench_two_levels_self_check_and_mtp_acceptance(vllm_server_factory, tiny_qwen35_mtp_accept, tmp_path):
    h = vllm_server_factory(tiny_qwen35_mtp_accept, mtp_config(1))
    d = run_bench(h.url, home=tmp_path)
    assert [lv["concurrency"] for lv in d["levels"]] == [1, 4]
    for lv in d["levels"]:
        assert lv["errors"] == 0 and lv["requests"] == 8
        # exact lengths: 8 requests x 32 output tokens, 24 prompt tokens each (server-reported usage)
        assert lv["output_tokens"] == 8 * 32 and lv["prompt_tokens"] == 8 * 24
        assert lv["output_tok_s"] > 0 and lv["ttft_s"]["p50"] > 0 and lv["itl_s"]["p50"] is not None
        # the self-check: client tok/s within 5% of the server's generation-token rate, same window
        assert lv["self_check_ok"] is True, lv
        assert lv["self_check_deviation"] <= 0.05
        # the always-accept model: MTP drafts are nearly always accepted
        assert lv["acceptance_rate"] > 0.5
        assert 1.5 < lv["mean_acceptance_length"] <= 2.0  # k=1: at most 1 draft + the bonus token
    assert d["levels"][1]["output_tok_s"] > d["levels"][0]["per_user_tok_s"] * 0.5
    saved = Path(d["saved_to"])
    assert saved.parent == tmp_path / "data" / "bench" and json.loads(saved.read_text())["model"] == d["model"]
    assert d["context"]["probe"]["status"] in ("no_nvml", "no_driver", "no_gpu", "ok")


@pytest.mark.vllm
def test_bench_without_spec_decode_reports_no_acceptance(vllm_server_factory, tiny_qwen3_moe, tmp_path):
    h = vllm_server_factory(tiny_qwen3_moe)
    d = run_bench(h.url, "--no-save", "--prompts", "realistic", "--device", "rtx-pro-6000", home=tmp_path)
    pub = d["context"]["published"]
    assert {(f["checkpoint"], f["mtp"], f["tok_s"]) for f in pub} == {
        ("infatoshi-nvfp4-fp8", 0, 163.4), ("infatoshi-nvfp4-fp8", 1, 156.9), ("qwen-bf16", 0, 170.3)}
    for lv in d["levels"]:
        assert lv["errors"] == 0 and lv["output_tokens"] == 8 * 32
        assert lv["acceptance_rate"] is None and lv["mean_acceptance_length"] is None
        assert lv["self_check_ok"] is True, lv
    assert "saved_to" not in d and not (tmp_path / "data").exists()


def test_bench_unreachable_server_is_a_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "spark_tui", "bench", "--url", "http://127.0.0.1:9", "--requests", "1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 6, r.stderr
    assert "cannot list models" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
