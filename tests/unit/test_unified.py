"""Unified-memory sizing (spark_tui.core.hardware.unified) on the recorded GB10 probe and around it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_tui.core.hardware import unified as u
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.errors import PlanError

ROOT = Path(__file__).resolve().parents[2]
GB10 = ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json"
GiB = 2**30
MiB = 2**20
WEIGHTS = int(21.9e9)  # nvidia/Qwen3.6-35B-A3B-NVFP4 on disk (profiles/checkpoints/nvidia-nvfp4.toml)
OVERHEAD = int(3.14 * GiB)  # the memory model's in-budget overhead for the Spark plan (activations, graphs, non-torch)


@pytest.fixture(scope="module")
def gb10() -> ProbeResult:
    return ProbeResult.load(GB10)


def test_recorded_gb10_arithmetic(gb10):
    s = u.size_for_probe(gb10, weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD)
    # MemTotal 127600748 kB = 121.69 GiB; MemAvailable 118566368 kB = 113.07 GiB (XuehaiPan/nvitop PR #208)
    assert s.inputs.total_bytes == 127600748 * 1024 and s.inputs.mem_available_bytes == 118566368 * 1024
    proc = 1810 * MiB + GiB
    assert s.inputs.vllm_process_bytes == proc
    assert s.available_at_check_bytes == 118566368 * 1024 - proc
    usable = s.available_at_check_bytes - 8 * GiB
    assert s.gpu_memory_utilization == 0.84 == math.floor(usable / s.inputs.total_bytes * 100) / 100
    assert s.requested_bytes == math.ceil(127600748 * 1024 * 0.84)  # vllm/v1/worker/utils.py:724
    assert s.kv_cache_memory_bytes == 78 * GiB
    assert s.available_after_start_bytes >= 8 * GiB  # the reserve holds after start
    assert s.fits and not s.blocked_by_page_cache and s.drop_caches_command is None
    assert s.lines[:7] == (
        "total (CUDA total_memory = host MemTotal)        121.69 GiB",
        "MemAvailable now                                 113.07 GiB",
        "- vLLM's own processes before its check            2.77 GiB",
        "= MemAvailable when vLLM checks                  110.31 GiB",
        "- reserve kept for the OS after start              8.00 GiB",
        "- page cache that will not drop                    0.00 GiB",
        "= usable by vLLM                                 102.31 GiB",
    )
    assert s.lines[7] == ("--gpu-memory-utilization = 102.31 / 121.69 = 0.8407, rounded down: 0.84; vLLM requests "
                          "ceil(0.84 x 121.69 GiB) = 102.22 GiB")
    assert s.lines[8] == "startup check: MemAvailable 110.31 GiB >= requested 102.22 GiB: passes"
    assert s.lines[9] == ("KV pool = 102.22 GiB - weights 20.40 GiB - in-budget overhead 3.14 GiB = 78.68 GiB "
                          "-> --kv-cache-memory-bytes 78G")
    assert s.lines[10] == "MemAvailable after start = 110.31 GiB - 102.22 GiB = 8.09 GiB (reserve 8.00 GiB)"
    assert any("utils.py:724-726, 761-770" in src for src in s.sources)


def test_the_old_4_gib_margin_would_leave_almost_nothing(gb10):
    """What the sizing guards against: 0.89 (MemAvailable - 4 GiB) ignores vLLM's own processes."""
    total, avail = gb10.host.ram_total_bytes, gb10.host.mem_available_bytes
    after = avail - u.vllm_overhead().bytes - u.requested_bytes(total, 0.89)
    assert after < 2.1 * GiB
    assert u.size_for_probe(gb10, weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD).gpu_memory_utilization < 0.89


def test_sticky_page_cache_blocks_and_offers_drop_caches(gb10):
    # 60 GiB of page cache that will not drop in time: nothing fits; without it, it would
    s = u.size_for_probe(gb10, weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD, sticky_cache_bytes=80 * GiB)
    assert not s.fits and s.blocked_by_page_cache
    assert s.drop_caches_command == "sync; echo 3 | sudo tee /proc/sys/vm/drop_caches"
    assert any("page cache blocks the plan" in ln and "drop_caches" in ln for ln in s.lines)
    assert any("drop_caches" in w for w in s.warnings)


def test_not_fitting_without_page_cache_is_not_blamed_on_it(gb10):
    s = u.size_unified(u.UnifiedInputs(total_bytes=gb10.host.ram_total_bytes, mem_available_bytes=20 * GiB,
                                       weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD))
    assert not s.fits and not s.blocked_by_page_cache and s.drop_caches_command is None
    assert s.kv_cache_memory_bytes == 0


def test_low_memfree_means_the_plan_relies_on_reclaim(gb10):
    host = dataclasses.replace(gb10.host, mem_free_bytes=40 * GiB, page_cache_bytes=75 * GiB)
    s = u.size_for_probe(dataclasses.replace(gb10, host=host), weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD)
    assert s.fits and not s.blocked_by_page_cache
    need = s.inputs.vllm_process_bytes + s.requested_bytes - 40 * GiB
    assert s.page_cache_to_reclaim_bytes == need
    assert s.drop_caches_command and any("of the 75.00 GiB page cache reclaimed" in ln for ln in s.lines)


def test_plenty_of_memfree_needs_no_reclaim(gb10):
    host = dataclasses.replace(gb10.host, mem_free_bytes=112 * GiB, page_cache_bytes=1 * GiB)
    s = u.size_for_probe(dataclasses.replace(gb10, host=host), weights_bytes=WEIGHTS, overhead_bytes=OVERHEAD)
    assert s.page_cache_to_reclaim_bytes == 0 and s.drop_caches_command is None


def test_cap_at_vllm_default():
    s = u.size_unified(u.UnifiedInputs(total_bytes=100 * GiB, mem_available_bytes=100 * GiB + 20 * GiB,
                                       weights_bytes=10 * GiB, os_reserve_bytes=0))
    assert s.gpu_memory_utilization == 0.92 and "capped at vLLM's default" in s.lines[7]


def test_probe_without_host_memory_is_refused(gb10):
    bare = dataclasses.replace(gb10, host=dataclasses.replace(gb10.host, mem_available_bytes=None))
    with pytest.raises(PlanError) as e:
        u.size_for_probe(bare, weights_bytes=WEIGHTS)
    assert e.value.exit_code == 5


def test_measurement_record_backs_the_constant():
    rec = json.loads((ROOT / "tests" / "data" / "measurements" / "vllm-cpu-process-memory.json").read_text())
    pss = [r["total"]["pss"] for r in rec["runs"]]
    assert max(pss) // MiB == u.VLLM_PROCESSES.bytes // MiB == 1810
    for r in rec["runs"]:
        names = {p["name"] for p in r["processes"]}
        assert {"VLLM::EngineCore", "VLLM::Worker"} <= names  # the engine processes were counted, not just the API


@settings(max_examples=200, deadline=None)
@given(total=st.integers(16 * GiB, 512 * GiB), avail_frac=st.floats(0.05, 1.0), weights=st.integers(0, 200 * GiB),
       overhead=st.integers(0, 8 * GiB), reserve=st.integers(0, 16 * GiB), sticky=st.integers(0, 32 * GiB))
def test_invariants(total, avail_frac, weights, overhead, reserve, sticky):
    avail = int(total * avail_frac)
    s = u.size_unified(u.UnifiedInputs(total_bytes=total, mem_available_bytes=avail, weights_bytes=weights,
                                       overhead_bytes=overhead, os_reserve_bytes=reserve, sticky_cache_bytes=sticky))
    assert 0 <= s.gpu_memory_utilization <= 0.92
    if s.gpu_memory_utilization > 0:
        # vLLM's check passes, and the reserve (plus the cache that will not drop) is left after start
        assert s.available_at_check_bytes >= s.requested_bytes
        assert s.available_after_start_bytes >= reserve + sticky - 1
        assert s.kv_cache_memory_bytes % GiB == 0
    if s.fits:  # the KV pool plus weights and overhead stay inside what vLLM requested (and was checked for)
        assert weights + overhead + s.kv_cache_memory_bytes <= s.requested_bytes
        assert s.kv_cache_memory_bytes >= GiB and not s.blocked_by_page_cache
    else:
        assert s.kv_cache_memory_bytes < GiB or s.gpu_memory_utilization == 0


def test_a_figure_read_at_vllms_check_is_not_charged_for_vllms_processes_again():
    """A published 'free memory at startup' figure is MemAvailable at vLLM's check: its processes are already out of
    it (the planner's no-probe DGX Spark plan uses the profile's 102 GiB this way)."""
    total = 127600748 * 1024
    s = u.size_unified(u.UnifiedInputs(total_bytes=total, mem_available_bytes=102 * GiB, weights_bytes=WEIGHTS,
                                       overhead_bytes=OVERHEAD, at_check_source="MiaAI-Lab #47"))
    assert s.available_at_check_bytes == 102 * GiB
    assert s.gpu_memory_utilization == math.floor((102 - 8) * GiB / total * 100) / 100 == 0.77
    assert s.lines[1] == ("MemAvailable when vLLM checks (typical)          102.00 GiB  (published at vLLM's check: its "
                          "processes are in it)")
    assert not any("vLLM's own processes" in ln for ln in s.lines)
    assert any(src == "typical MemAvailable at vLLM's check: MiaAI-Lab #47" for src in s.sources)
    assert not any(src.startswith("vLLM's processes") for src in s.sources)
    assert "MiaAI-Lab #47" in u.flag_source(s.inputs) and "1,810 MiB" not in u.flag_source(s.inputs)
    now = u.size_unified(dataclasses.replace(s.inputs, at_check_source=None))
    assert now.available_at_check_bytes == 102 * GiB - u.vllm_overhead().bytes
    assert "1,810 MiB measured" in u.flag_source(now.inputs)
