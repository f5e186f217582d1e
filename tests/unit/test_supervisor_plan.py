"""Pure supervisor logic: argv building, preflight checks, log facts and plan verification."""

from __future__ import annotations

import os
import stat

import pytest

from spark_tui.core.runtime import supervisor as sv
from spark_tui.core.planning.flags import Flag, Flags
from spark_tui.core.planning.plan import CheckpointRef, DeviceRef, MemoryEstimate, Plan
from spark_tui.errors import DownloadError, VllmError
from tests.support.runtime_ckpt import write_tiny_checkpoint

GIB = 1024**3


def _plan(model="nvidia/Qwen3.6-35B-A3B-NVFP4", moe="marlin", kv_tokens=1_000_000, unified=True,
          budget=60 * GIB, fmt="modelopt_fp4", extra=()):
    mem = MemoryEstimate(device_total_bytes=121 * GIB, budget_bytes=budget, weights_bytes=22 * GIB,
                         overhead_bytes=4 * GIB, kv_cache_bytes=34 * GIB, kv_bytes_per_token=20480,
                         state_bytes_per_seq=64 * 1024**2, block_size_tokens=2096, kv_cache_tokens=kv_tokens,
                         max_model_len=262144, max_concurrency=3.8, headroom_bytes=61 * GIB)
    flags = [Flag("--kv-cache-dtype", "fp8", "r", "s"), Flag("--max-model-len", "262144", "r", "s")]
    if moe:
        flags.append(Flag("--moe-backend", moe, "r", "s"))
    flags += [Flag("--host", "127.0.0.1", "r", "s"), Flag("--port", 8011, "r", "s")]
    flags += list(extra)
    return Plan(device=DeviceRef("dgx-spark", "DGX Spark", 121, 121 * GIB, unified),
                checkpoint=CheckpointRef("nvidia-nvfp4", model, None, fmt),
                model=model, flags=Flags(flags), memory=mem)


def test_native_argv_replaces_vllm_and_the_port_flag():
    p = _plan()
    argv = sv.native_argv(p, ["/opt/v/bin/vllm"], port=9000)
    assert argv == ["/opt/v/bin/vllm", "serve", p.model, "--kv-cache-dtype", "fp8", "--max-model-len", "262144",
                    "--moe-backend", "marlin", "--host", "127.0.0.1", "--port", "9000"]
    p2 = _plan(extra=[Flag("--port", 8011, "r", "s")])
    argv2 = sv.native_argv(p2, ["python", "-m", "vllm.entrypoints.cli.main"], port=9001)
    assert argv2[:5] == ["python", "-m", "vllm.entrypoints.cli.main", "serve", p2.model]
    assert argv2.count("--port") == 1 and argv2[argv2.index("--port") + 1] == "9001"
    argv3 = sv.native_argv(p2, ["vllm"])  # no override: the plan's own --port stays
    assert argv3[argv3.index("--port") + 1] == "8011"


def test_docker_argv_references_secrets_without_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue")
    argv = sv.docker_argv(_plan(), port=8012, image="vllm/vllm-openai:v0.33.0")
    joined = " ".join(argv)
    assert argv[:2] == ["docker", "run"] and "--gpus" in argv
    assert "-e HF_TOKEN" in joined and "hf_secretvalue" not in joined
    i = argv.index("vllm/vllm-openai:v0.33.0")
    assert argv[i + 1] == "nvidia/Qwen3.6-35B-A3B-NVFP4"  # the image's entrypoint is `vllm serve`
    assert argv[argv.index("-p") + 1] == "127.0.0.1:8012:8012"
    tail = argv[i + 1:]
    assert tail[tail.index("--host") + 1] == "0.0.0.0" and tail[tail.index("--port") + 1] == "8012"
    assert "--moe-backend marlin" in joined


def test_resolve_vllm_prefers_env(tmp_path, monkeypatch):
    exe = tmp_path / "vllm"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("SPARK_TUI_VLLM", str(exe))
    assert sv.resolve_vllm() == [str(exe)]
    monkeypatch.setenv("SPARK_TUI_VLLM", str(tmp_path / "missing"))
    with pytest.raises(VllmError):
        sv.resolve_vllm()


def test_memory_check_on_unified_memory():
    from spark_tui.core.hardware.unified import vllm_overhead

    proc = vllm_overhead().bytes  # vLLM's own processes start before its check: 1,810 MiB measured + 1 GiB CUDA
    assert proc == 1810 * 2**20 + GIB
    with pytest.raises(VllmError) as e:
        sv.check_memory(_plan(budget=112 * GIB), available=104 * GIB)
    assert "the plan needs 114.8 GiB (112.0 GiB: its budget" in e.value.message
    assert "+ 2.8 GiB for vLLM's own processes" in e.value.message and "10.8 GiB short" in e.value.message
    assert "drop_caches" in e.value.hint
    assert sv.check_memory(_plan(budget=60 * GIB), available=104 * GIB).startswith("MemAvailable 104.0 GiB")
    # a budget that fits MemAvailable but not with vLLM's processes on top is refused
    with pytest.raises(VllmError, match=r"\(1\.8 GiB short\)"):
        sv.check_memory(_plan(budget=103 * GIB), available=104 * GIB)
    assert sv.check_memory(_plan(budget=101 * GIB), available=104 * GIB) is not None
    # with --kv-cache-memory-bytes the budget is small, but vLLM's startup check still asks ceil(util x total)
    util = [Flag("--gpu-memory-utilization", 0.84, "r", "s")]
    with pytest.raises(VllmError, match=r"ceil\(0.84 x 121.0 GiB\) for vLLM's startup check"):
        sv.check_memory(_plan(budget=60 * GIB, extra=util), available=102 * GIB)
    assert sv.check_memory(_plan(budget=60 * GIB, extra=util), available=106 * GIB) == (
        "MemAvailable 106.0 GiB >= 104.4 GiB (vLLM 101.6 GiB + its processes 2.8 GiB)")  # ceil(0.84 x 121) + 2.77
    assert sv.check_memory(_plan(unified=False), available=1) is None
    assert sv.mem_available_bytes() > 0


def test_checkpoint_check_for_local_paths_and_the_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    rep, note = sv.check_checkpoint(_plan())  # a hub repo id that is not cached: a note, no refusal
    assert rep is None and "not in the Hugging Face cache" in note
    snap = tmp_path / "cache" / "models--nvidia--Qwen3.6-35B-A3B-NVFP4" / "snapshots" / ("c" * 40)
    write_tiny_checkpoint(snap, "modelopt_fp4")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("c" * 40)
    rep, note = sv.check_checkpoint(_plan())  # cached: verified
    assert rep.complete and note is None and rep.path == str(snap)
    os.remove(snap / "model-00001-of-00002.safetensors")
    with pytest.raises(DownloadError):
        sv.check_checkpoint(_plan())
    d = tmp_path / "local"
    write_tiny_checkpoint(d, "modelopt_fp4")
    assert sv.check_checkpoint(_plan(model=str(d)))[0].complete
    # a plan made for another format: vLLM still loads it, so a warning, not a refusal
    rep, _ = sv.check_checkpoint(_plan(model=str(d), fmt="fp8"))
    assert rep.complete and any("plan was made for fp8" in w for w in rep.warnings)
    # a --quantization vLLM would reject for this checkpoint is refused with the reason
    ct = tmp_path / "ct"
    write_tiny_checkpoint(ct, "compressed-tensors-nvfp4")
    with pytest.raises(DownloadError) as e:
        sv.check_checkpoint(_plan(model=str(ct), extra=[Flag("--quantization", "fp8", "r", "s")]))
    assert "--quantization fp8" in e.value.message and "compressed-tensors" in e.value.message
    os.remove(d / "model-00002-of-00002.safetensors")
    with pytest.raises(DownloadError):
        sv.check_checkpoint(_plan(model=str(d)))


def test_launch_preflight_accepts_the_recorded_nvidia_mixed_precision_layout(tmp_path):
    """nvidia/Qwen3.6-35B-A3B-NVFP4 (ModelOpt MIXED_PRECISION) used to be refused with exit 7."""
    from tests.unit.test_checkpoint_verify import _real_nvidia_layout

    d = tmp_path / "nv"
    _real_nvidia_layout(d)
    for fmt in ("modelopt_mixed", "modelopt_fp4"):  # the corrected profile format, and the old one
        rep, note = sv.check_checkpoint(_plan(model=str(d), fmt=fmt))
        assert rep.complete and note is None and rep.quant.experts == "W4A16_NVFP4"


LOG = [
    "(EngineCore pid=812) INFO 11-23 10:00:01 [nvfp4.py:239] Using 'FLASHINFER_CUTLASS' NvFp4 MoE backend out of "
    "potential backends: ['FLASHINFER_CUTLASS', 'VLLM_CUTLASS', 'MARLIN'].",
    "(EngineCore pid=812) INFO 11-23 10:00:09 [kv_cache_utils.py:1147] GPU KV cache size: 1,150,000 tokens, "
    "Maximum concurrency for 262,144 tokens per request: 4.39x",
]


def _summary(lines):
    from spark_tui.core.runtime.vllm_log import StartupTracker, parse_text

    ls, evs = parse_text("\n".join(lines) + "\n")
    return StartupTracker().observe_all(ls, evs).summary()


def test_facts_and_verification_report_mismatches():
    f = _summary(LOG)
    assert f.kv_cache_tokens == 1_150_000 and f.moe_backend == "FLASHINFER_CUTLASS"
    v = sv.verify_against_plan(_plan(moe="marlin", kv_tokens=1_000_000), f)
    assert v.kv_error_pct == pytest.approx(15.0)
    assert len(v.mismatches) == 2
    assert "+15.0%" in v.mismatches[0] and "plan asked for marlin" in v.mismatches[1]
    ok = sv.verify_against_plan(_plan(moe="flashinfer_cutlass", kv_tokens=1_120_000), f)
    assert ok.mismatches == () and ok.kv_error_pct == pytest.approx(2.678, abs=0.01)
    assert any("1,150,000 tokens, plan predicted 1,120,000 (+2.7%)" in ln for ln in ok.lines())
    auto = sv.verify_against_plan(_plan(moe=None), f)
    assert auto.planned_moe_backend is None and len(auto.mismatches) == 1


def test_cpu_kv_line_and_unquantized_backend():
    # lines of the real CPU vLLM 0.32 log recorded by the logs helper (tests/data/logs/)
    f = _summary([
        "(Worker pid=8510) INFO 11-23 11:10:44 [unquantized.py:364] Using CPU Unquantized MoE backend out of "
        "potential backends: ['CPU'].",
        "(EngineCore pid=8397) INFO 11-23 11:10:46 [kv_cache_utils.py:2327] CPU KV cache size: 6,528 tokens, "
        "Maximum concurrency for 512 tokens per request: 12.75x",
    ])
    assert f.kv_cache_tokens == 6528 and f.moe_backend == "CPU"
    v = sv.verify_against_plan(_plan(moe=None, kv_tokens=6528), f)
    assert v.kv_error_pct == 0.0 and v.mismatches == ()


def test_runtime_core_modules_import_no_heavy_module():
    import subprocess
    import sys

    code = ("import sys; import spark_tui.core.runtime.download, spark_tui.core.catalog.checkpoint, spark_tui.core.runtime.supervisor, "
            "spark_tui.commands.download, spark_tui.commands.stop; "
            "print(sorted(m for m in ('textual', 'torch', 'vllm', 'huggingface_hub', 'httpx', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
