"""`spark-tui plan --check` against the real vLLM 0.32.0 (CPU build): its own argument parser accepts every
plan the planner writes, and rejects bad flags and values with the installed version named."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.vllm_env import vllm_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vllm


def check(tmp_path: Path, *argv: str) -> tuple[int, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path), "VLLM_NO_USAGE_STATS": "1"}
    p = subprocess.run([str(vllm_python()), "-m", "spark_tui", "plan", "--check", "--json", *argv], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, json.loads(p.stdout)


def test_check_accepts_the_plans_and_rejects_bad_flags(tmp_path) -> None:
    # one vLLM import per process is ~20 s on 2 cores: the good and the bad cases share this test
    gb10 = ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json"
    rc, d = check(tmp_path, "--probe-file", str(gb10), "--vllm-version", "0.32.0")
    assert rc == 0, d.get("check")
    assert d["check"]["status"] == "ok" and d["check"]["version"].startswith("0.32.0")
    assert d["argv"][:3] == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4"]
    assert "--kv-cache-memory-bytes" in d["argv"] and "--language-model-only" in d["argv"]

    rc, d = check(tmp_path, "--device", "rtx-pro-6000", "--set", "frobnicate=1")
    assert rc == 1 and d["check"]["status"] == "invalid"
    probs = "\n".join(d["check"]["problems"])
    assert "--frobnicate: unknown to vLLM 0.32.0" in probs
    # a known flag's bad value is refused before anything else (exit 2), naming the flag and what it takes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path), "VLLM_NO_USAGE_STATS": "1"}
    p = subprocess.run([str(vllm_python()), "-m", "spark_tui", "plan", "--check", "--json", "--device", "rtx-pro-6000",
                        "--set", "kv-cache-dtype=fp9"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--kv-cache-dtype" in p.stderr and "fp9" in p.stderr and not p.stdout


def test_check_accepts_published_recipes(tmp_path) -> None:
    # the model-card Spark command: every flag (flashinfer attention, trust-remote-code, qwen3_xml) parses
    rc, d = check(tmp_path, "--device", "dgx-spark", "--recipe", "model-card-spark")
    assert rc == 0 and d["check"]["status"] == "ok", d["check"]
