"""`spark-tui tune` against the real CPU vLLM: MTP off vs k=1 on the always-accept tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import pytest

from tests.support.vllm_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def vllm_procs_of(pid_marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "serve" in cmd and pid_marker in cmd:
            out.append(p)
    return out


@pytest.mark.vllm
def test_tune_latency_mtp_off_vs_k1_picks_its_own_best(vllm_env, tiny_qwen35_mtp_accept, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path),
           "SPARK_TUI_VLLM": str(vllm_env / "bin" / "vllm"), "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1",
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache")}
    cmd = [sys.executable, "-m", "spark_tui", "tune", "--device", "cpu-test", "--model-path",
           str(tiny_qwen35_mtp_accept), "--goal", "latency", "--mtp-values", "0,1", "--requests", "4",
           "--prompt-tokens", "16", "--output-tokens", "48", "--port", str(port), "--startup-timeout", "400", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    res = {x["candidate"]["mtp"]: x for x in d["results"]}
    assert set(res) == {0, 1} and all(x["ok"] for x in res.values()), d
    assert res[0]["acceptance_rate"] is None  # no speculative decoding: no acceptance figure
    assert res[1]["acceptance_rate"] > 0.5  # the always-accept model
    # the choice matches its own measurements
    best_mtp = max(res, key=lambda k: res[k]["score"])
    assert d["best"] == f"mtp={best_mtp},seqs=None,mbt=None"
    if res[1]["score"] < res[0]["score"]:
        assert any("slower than MTP off" in w for w in d["warnings"])
    ov = tomllib.loads(Path(d["override_file"]).read_text())
    assert ov["mtp"] == best_mtp and ov["device"] == "cpu-test" and "measured on this machine" in ov["sources"]["mtp"]
    # every server the tune started is gone
    assert vllm_procs_of(f"--port {port}") == [] and vllm_procs_of(str(port)) == []
    # resumable: a second run measures nothing new and gives the same answer
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r2.returncode == 0 and "resuming: 2 candidate(s)" in r2.stderr and "starting vLLM" not in r2.stderr
    assert json.loads(r2.stdout)["best"] == d["best"]
    # --probe on the same results: this machine's acceptance is read from the k=1 run; cpu-test has no measured MTP
    # speed model, so the probe says so and (nothing else being asked for) starts nothing
    r3 = subprocess.run(cmd + ["--probe"], capture_output=True, text=True, env=env, timeout=120)
    assert r3.returncode == 0 and "starting vLLM" not in r3.stderr, r3.stderr[-2000:]
    pr = json.loads(r3.stdout)["probe"]
    assert pr["k"] is None and pr["acceptance"] > 0.5 and "no MTP speed model" in pr["reason"]
    # the plan now carries the measured winner, with "measured on this machine" as its source
    rp = subprocess.run([sys.executable, "-m", "spark_tui", "plan", "--device", "cpu-test", "--model-path",
                         str(tiny_qwen35_mtp_accept), "--json"], capture_output=True, text=True, env=env, timeout=60)
    plan = json.loads(rp.stdout)
    spec = next((f for f in plan["flags"] if f["flag"] == "--speculative-config"), None)
    if best_mtp == 0:
        assert spec is None
    else:
        assert json.loads(spec["value"])["num_speculative_tokens"] == best_mtp
        assert spec["source"].startswith("measured on this machine")
