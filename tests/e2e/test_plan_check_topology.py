"""The real vLLM 0.32.0 (CPU build) parser accepts the topology plans: one pinned GPU of several, tensor parallel and
data parallel over two identical GPUs, and the sized DGX Spark plan (spark_tui.core.catalog.vllm_compat.check_argv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.vllm_env import vllm_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vllm

SCRIPT = r"""
import dataclasses, json, sys
from spark_tui.core.planning.planner import make_plan
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.core.catalog.vllm_compat import check_argv

probes = sys.argv[1]
box = ProbeResult.load(probes + "/2x-rtx-5090/probe.json")
box = dataclasses.replace(box, gpus=tuple(dataclasses.replace(g, memory_used_bytes=0,
                                                              memory_free_bytes=g.memory_total_bytes) for g in box.gpus))
plans = {
    "pinned": make_plan(probe=box, gpu_index=1, vllm_version="0.32.0"),
    "tp": make_plan(probe=box, parallel="tp", vllm_version="0.32.0"),
    "dp": make_plan(probe=box, parallel="dp", vllm_version="0.32.0"),
    "spark": make_plan(probe=ProbeResult.load(probes + "/gb10/probe.json"), nodes=2, vllm_version="0.32.0"),
}
print(json.dumps({k: {"argv": p.argv(), "check": check_argv(p.argv())} for k, p in plans.items()}))
"""


def test_vllm_accepts_the_topology_plans(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path), "VLLM_NO_USAGE_STATS": "1"}
    p = subprocess.run([str(vllm_python()), "-c", SCRIPT, str(ROOT / "tests" / "data" / "probes")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["check"]["status"] == "ok", (name, r["check"])
        assert r["check"]["version"].startswith("0.32.0")
    tp, dp = out["tp"]["argv"], out["dp"]["argv"]
    assert tp[tp.index("--tensor-parallel-size") + 1] == "2" and dp[dp.index("--data-parallel-size") + 1] == "2"
    spark = out["spark"]["argv"]
    assert spark[spark.index("--gpu-memory-utilization") + 1] == "0.84" and "--kv-cache-memory-bytes" in spark
