"""End to end on this machine: torch is installed without CUDA, so every GPU check is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
GPU_CHECKS = ["torch_arch", "bf16_gemm", "fp8_gemm", "nvfp4_gemm_torch", "nvfp4_gemm_vllm", "nvfp4_marlin",
              "moe_backends", "moe_nvfp4_agree", "moe_triton_bf16", "kv_cache_fp8"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def _has_cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return torch.cuda.is_available()


pytestmark = pytest.mark.skipif(_has_cuda(), reason="these tests assert the no-GPU path")


@pytest.mark.parametrize("argv", [["-m", "kernels_check", "--json"], ["-m", "spark_tui", "selftest", "--json"]])
def test_no_gpu_json_exit_3_and_every_gpu_check_skipped(argv):
    p = _run(*argv)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr
    d = json.loads(p.stdout)
    assert d["verdict"]["id"] == "no_gpu" and d["verdict"]["exit_code"] == 3
    checks = {c["name"]: c for c in d["checks"]}
    for name in GPU_CHECKS:
        assert checks[name]["status"] == "skipped"
        assert "no CUDA GPU" in checks[name]["reason"]
    # the reference quantizer is plain torch: it still runs, on the CPU
    assert checks["nvfp4_reference"]["status"] == "pass"
    assert checks["nvfp4_reference"]["details"]["device"] == "cpu"
    assert d["environment"]["torch"].startswith("2.")


def test_markdown_and_text_formats_exit_3():
    md = _run("-m", "kernels_check", "--markdown")
    assert md.returncode == 3 and md.stdout.startswith("### spark-tui self-test: no GPU")
    txt = _run("-m", "spark_tui", "selftest")
    assert txt.returncode == 3 and "Verdict: no GPU: nothing was run (exit 3)" in txt.stdout


def test_list_runs_nothing_and_exits_0():
    p = _run("-m", "kernels_check", "--list", "--json")
    assert p.returncode == 0
    planned = {c["name"]: c for c in json.loads(p.stdout)}
    assert planned["nvfp4_reference"]["will_run"] is True
    assert planned["bf16_gemm"]["will_run"] is False and "no CUDA GPU" in planned["bf16_gemm"]["reason"]


def test_unknown_check_is_a_usage_error():
    p = _run("-m", "kernels_check", "--only", "nope")
    assert p.returncode == 2 and "unknown check nope" in p.stderr


def test_without_torch_everything_is_skipped_with_the_reason():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from kernels_check.cli import main\nraise SystemExit(main(['--json']))")
    p = _run("-c", code)
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    assert all(c["status"] == "skipped" for c in d["checks"])
    assert all("torch is not importable" in c["reason"] for c in d["checks"])
    assert "torch is not importable" in d["verdict"]["summary"]


def test_help_does_not_import_torch():
    code = ("import sys\nfrom spark_tui.cli import main\n"
            "try:\n    main(['selftest', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'vllm' not in sys.modules, 'heavy import'\nprint('ok')")
    p = _run("-c", code)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr
