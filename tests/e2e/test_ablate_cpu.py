"""`spark-tui ablate` against the real CPU vLLM: baseline, the required deviations and MTP k=1 on the always-accept
tiny model, benchmarked at temperature 1 (drafts rejected) and 0 (drafts accepted); resumable; no server left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _servers_of(model: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "serve" in cmd and str(model) in cmd:
            out.append(p)
    return out


@pytest.mark.vllm
def test_ablate_baseline_required_and_mtp_on_the_cpu_vllm(vllm_env, tiny_qwen35_mtp_accept, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path),
           "SPARK_TUI_VLLM": str(vllm_env / "bin" / "vllm"), "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache")}
    out = tmp_path / "ablation.json"
    cmd = [sys.executable, "-m", "spark_tui", "ablate", "--device", "cpu-test", "--model-path",
           str(tiny_qwen35_mtp_accept), "--vllm-version", "0.32.0", "--mtp-values", "1", "--temperatures", "1",
           "--mtp-temperatures", "0", "--levels", "1", "--requests", "3", "--prompt-tokens", "16",
           "--output-tokens", "24", "--startup-timeout", "400", "--json", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert json.loads(out.read_text()) == d
    assert [v["key"] for v in d["variants"]] == ["baseline", "required", "mtp-1"]
    res = d["results"]
    for key in ("baseline", "required", "mtp-1"):
        assert res[key]["ok"], res[key]
        assert res[key]["startup_s"] > 0  # reported apart from the benchmark figures
        # the KV cache vLLM logged is the plan's prediction for that variant's flags
        assert res[key]["kv_cache_tokens_logged"] == res[key]["kv_cache_tokens_predicted"] > 0
    base = {(lv["concurrency"], lv["temperature"]): lv for lv in res["baseline"]["levels"]}
    mtp = {(lv["concurrency"], lv["temperature"]): lv for lv in res["mtp-1"]["levels"]}
    assert set(base) == set(mtp) == {(1, 1.0), (1, 0.0)}
    assert {(lv["concurrency"], lv["temperature"]) for lv in res["required"]["levels"]} == {(1, 1.0)}
    # the always-accept model: greedy drafts are accepted, sampled ones (uniform logits) almost never
    assert mtp[(1, 0.0)]["acceptance_rate"] > 0.5 and mtp[(1, 1.0)]["acceptance_rate"] < 0.2
    assert base[(1, 1.0)]["acceptance_rate"] is None  # no speculative decoding: n/a, not 0
    rows = {(x["variant"], x["temperature"]): x for x in d["rows"]}
    assert rows[("baseline", 1.0)]["ratio"] == 1.0 and rows[("mtp-1", 0.0)]["ratio"] > 0
    # the MTP model was fitted on the baseline (k=0) and MTP k=1 runs, each with its error
    assert len(d["mtp_model"]["check"]) == 4 and d["mtp_model"]["max_error_pct"] >= 0
    assert not _servers_of(tiny_qwen35_mtp_accept)
    # resumable: a second run measures nothing again and starts no server
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r2.returncode == 0 and "resuming: 3 variant(s) already measured" in r2.stderr
    assert "starting vLLM" not in r2.stderr and json.loads(r2.stdout)["results"] == d["results"]
