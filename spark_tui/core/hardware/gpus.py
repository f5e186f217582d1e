"""Several GPUs in one box: pin the server to one GPU (--gpu-index N), and for N identical GPUs compare tensor
parallel, vLLM data parallel and independent replicas with the memory arithmetic of each.

Pure functions over a ProbeResult and the memory model (spark_tui.core.planning.memory); the planner calls them.

Pinning. vLLM reads integers in CUDA_VISIBLE_DEVICES as NVML (PCI bus order) indices and resolves GPU UUIDs
through NVML (vllm v0.32.0 vllm/platforms/cuda.py:749-754), while CUDA itself numbers GPUs fastest-first unless
CUDA_DEVICE_ORDER=PCI_BUS_ID, which vLLM asks for on mixed boxes (vllm/platforms/cuda.py:979-994; CUDA
Programming Guide, "CUDA Environment Variables"). So a pin is CUDA_DEVICE_ORDER=PCI_BUS_ID plus
CUDA_VISIBLE_DEVICES=<the probe's NVML index>, the same number nvidia-smi and `spark-tui probe` show.

Busy. vLLM's startup check needs free >= utilization x total (vllm/v1/worker/utils.py:761-770); at its default
0.92 (vllm/config/cache.py:102) a GPU with more than 8% of its memory in use already fails it, so that is the
line between idle and busy; a GPU running compute processes is busy too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from spark_tui.core.planning import memory as mem

if TYPE_CHECKING:
    from spark_tui.core.hardware.probe import ProbeResult

GiB = 2**30
BUSY_FRACTION = 0.08  # 1 - vLLM's default gpu_memory_utilization 0.92
BUSY_SOURCE = ("vllm v0.32.0 vllm/config/cache.py:102 (default utilization 0.92) and vllm/v1/worker/utils.py:761-770 "
               "(startup check): more than 8% in use fails the default")
PIN_SOURCE = ("vllm v0.32.0 vllm/platforms/cuda.py:749-754 (CUDA_VISIBLE_DEVICES entries are NVML indices or UUIDs), "
              "979-994 (set CUDA_DEVICE_ORDER=PCI_BUS_ID); CUDA Programming Guide, CUDA Environment Variables")
DP_DOCS = "https://docs.vllm.ai/en/latest/serving/data_parallel_deployment/"
SCALING_DOCS = "https://docs.vllm.ai/en/latest/serving/parallelism_scaling/"
ROUTER_DOCS = "https://blog.vllm.ai/2025/12/13/vllm-router-release.html (vllm-router, PyPI `vllm-router`)"


def _gib(b: float) -> str:
    return f"{b / GiB:.1f} GiB"


def gpu_busy(g: Any) -> str | None:
    """Why a probed GPU is busy, or None when it is idle (unknown usage counts as idle: nothing to go by)."""
    procs = getattr(g, "compute_processes", None)
    if procs:
        return f"{procs} compute process{'es' if procs != 1 else ''} running"
    used, total = g.memory_used_bytes, g.memory_total_bytes
    if used is not None and total and not g.unified_memory and used > BUSY_FRACTION * total:
        return f"{_gib(used)} of {_gib(total)} in use (more than the {BUSY_FRACTION:.0%} vLLM's default 0.92 leaves)"
    return None


def idle_gpus(probe: ProbeResult) -> list[int]:
    return [g.index for g in probe.gpus if gpu_busy(g) is None]


@dataclass(frozen=True)
class GpuPin:
    index: int
    name: str
    uuid: str | None
    env: tuple[tuple[str, str], ...]  # (("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", "1"))
    reason: str
    source: str

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


def pin_gpu(probe: ProbeResult, gpu_index: int, *, allow_busy: bool = False) -> GpuPin:
    """The environment that runs vLLM on probed GPU `gpu_index`. Refuses (PlanError, exit 5) a busy GPU and names
    the idle ones; an index the probe does not have is a UsageError (exit 2)."""
    from spark_tui.errors import PlanError, UsageError

    if not probe.gpus:
        raise UsageError("--gpu-index needs a probe with GPUs", "run on the GPU machine, or pass --probe-file FILE")
    indices = [g.index for g in probe.gpus]
    if gpu_index not in indices:
        raise UsageError(f"--gpu-index {gpu_index}: the probe has GPUs {', '.join(map(str, indices))}",
                         f"pick one of {', '.join(map(str, indices))} (see `spark-tui probe`)")
    g = next(x for x in probe.gpus if x.index == gpu_index)
    why = gpu_busy(g)
    if why and not allow_busy:
        idle = [i for i in idle_gpus(probe) if i != gpu_index]
        if idle:
            names = ", ".join(f"{i} ({next(x.name for x in probe.gpus if x.index == i)})" for i in idle)
            hint = f"use an idle GPU: --gpu-index {idle[0]} (idle: {names})"
        else:
            busy = ", ".join(str(x.index) for x in probe.gpus)
            hint = (f"no GPU is idle (busy: {busy}): stop the other GPU processes and re-probe, or plan for the bare "
                    "card with --device ID")
        raise PlanError(f"GPU {gpu_index} ({g.name}) is busy: {why}", hint)
    env = (("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", str(gpu_index)))
    uuid = f", {g.uuid}" if g.uuid else ""
    return GpuPin(index=gpu_index, name=g.name, uuid=g.uuid, env=env,
                  reason=f"run on GPU {gpu_index} ({g.name}{uuid}, PCI {g.pci_bus_id or 'n/a'}) only; PCI bus order "
                         "so CUDA, NVML and nvidia-smi number the GPUs alike",
                  source=PIN_SOURCE)


# ------------------------------------------------------------------------------------------ TP / DP / replicas
def expert_weight_fraction(arch: mem.Arch, scheme: str) -> float:
    """Share of the weight bytes that are routed experts (what vLLM's data parallel shards for MoE models)."""
    total = mem.estimate_weight_bytes(arch, scheme)
    experts = arch.num_hidden_layers * arch.num_experts * 3 * arch.hidden_size * arch.moe_intermediate_size
    per = {"nvfp4": 4.5 / 8, "fp8": 1.0}.get(scheme, 2.0)
    return min(experts * per / total, 1.0) if total else 0.0


def tp_arch(arch: mem.Arch, tp: int) -> mem.Arch:
    """What one tensor-parallel rank holds of the KV cache and DeltaNet state: KV heads split (at least one per
    rank; vLLM replicates when TP > KV heads), linear-attention heads split."""
    return replace(arch, num_kv_heads=max(1, arch.num_kv_heads // tp),
                   linear_num_key_heads=max(1, arch.linear_num_key_heads // tp) if arch.linear_num_key_heads else 0,
                   linear_num_value_heads=max(1, arch.linear_num_value_heads // tp) if arch.linear_num_value_heads else 0)


@dataclass(frozen=True)
class ParallelOption:
    kind: str  # "replicas" | "tp" | "dp"
    title: str
    gpus: int
    servers: int  # vLLM processes (endpoints) to run
    flags: tuple[tuple[str, str | None], ...]  # extra serve flags of each server
    env_per_server: tuple[tuple[tuple[str, str], ...], ...]  # CUDA_VISIBLE_DEVICES per server
    weights_per_gpu_bytes: int
    kv_pool_per_gpu_bytes: int
    kv_tokens_per_server: int  # "GPU KV cache size: N tokens" each server logs
    max_concurrency_per_server: float  # at max_model_len
    kv_tokens_total: int
    fits: bool
    communication: str
    lines: tuple[str, ...]
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParallelComparison:
    options: tuple[ParallelOption, ...]
    recommended: str  # kind
    reason: str
    sources: tuple[str, ...] = field(default=())

    def option(self, kind: str) -> ParallelOption:
        return next(o for o in self.options if o.kind == kind)

    def lines(self) -> list[str]:
        out = []
        for o in self.options:
            mark = " (recommended)" if o.kind == self.recommended else ""
            out.append(f"{o.title}{mark}:")
            out += [f"  {ln}" for ln in o.lines]
        out.append(f"recommended: {self.recommended}: {self.reason}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"options": [o.to_dict() for o in self.options], "recommended": self.recommended,
                "reason": self.reason, "sources": list(self.sources)}


def compare_parallel(arch: mem.Arch, *, gpus: int, gpu_total_bytes: int, util: float, weights_bytes: int,
                     overhead_bytes: int, scheme: str, max_model_len: int, kv_dtype_bytes: int = 1, mtp_k: int = 0,
                     prefix_caching: bool = True, initial_block: int = 16, kernel_alignment: int = 16,
                     gdn_checkpoint_blocks: int = 0, gpu_indices: tuple[int, ...] | None = None) -> ParallelComparison:
    """N identical GPUs: independent replicas (one server per GPU), tensor parallel N, vLLM data parallel N.

    Per GPU: budget = util x total; KV pool = budget - weights on that GPU - overhead (the memory model's in-budget
    overhead, kept per GPU). Tokens and concurrency follow vLLM's layout (spark_tui.core.planning.memory): under TP each rank
    stores its share of every token's KV and DeltaNet state, so one server's tokens come from one rank's pool."""
    if gpus < 2:
        raise ValueError("compare_parallel needs at least 2 GPUs")
    idx = gpu_indices or tuple(range(gpus))
    budget = int(gpu_total_bytes * util)
    ef = expert_weight_fraction(arch, scheme)
    sources_common = (f"budget per GPU = {util:.2f} x {_gib(gpu_total_bytes)}", "spark_tui.core.planning.memory (vLLM's KV layout)")

    def cap(a: mem.Arch, pool: int) -> tuple[int, float]:
        lay = mem.kv_layout(a, kv_dtype_bytes, mtp_k, prefix_caching, initial_block, kernel_alignment,
                            gdn_checkpoint_blocks)
        _, _, conc, tokens = mem.capacity(lay, pool, max_model_len)
        return tokens, round(conc, 2)

    opts: list[ParallelOption] = []
    # independent replicas
    w = weights_bytes
    pool = budget - w - overhead_bytes
    tok, conc = cap(arch, max(pool, 0))
    fits = pool > 0 and conc >= 1
    opts.append(ParallelOption(
        kind="replicas", title=f"{gpus} independent replicas (one `vllm serve` per GPU, behind a router)", gpus=gpus,
        servers=gpus, flags=(), env_per_server=tuple((("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", str(i)))
                                                     for i in idx),
        weights_per_gpu_bytes=w, kv_pool_per_gpu_bytes=max(pool, 0), kv_tokens_per_server=tok,
        max_concurrency_per_server=conc, kv_tokens_total=tok * gpus, fits=fits,
        communication="none between GPUs: each server is a whole model",
        lines=(f"weights per GPU {_gib(w)} (the whole model on each)",
               f"KV pool per GPU {_gib(budget)} - {_gib(w)} - overhead {_gib(overhead_bytes)} = {_gib(pool)}",
               f"per server: {tok:,} tokens, {conc:.2f}x at {max_model_len:,} tokens; {gpus} servers: {tok * gpus:,} "
               "tokens in all",
               f"runs as {gpus} servers on ports P, P+1, ... with CUDA_VISIBLE_DEVICES=0..{gpus - 1}; a router "
               "(vllm-router, cache-aware) or any HTTP load balancer in front"),
        sources=(*sources_common, ROUTER_DOCS)))
    # tensor parallel
    w_tp = math.ceil(weights_bytes / gpus)
    pool_tp = budget - w_tp - overhead_bytes
    tok_tp, conc_tp = cap(tp_arch(arch, gpus), max(pool_tp, 0))
    kv_heads_note = ("KV heads split" if arch.num_kv_heads >= gpus else
                     f"{arch.num_kv_heads} KV heads < TP {gpus}: replicated on each rank")
    opts.append(ParallelOption(
        kind="tp", title=f"tensor parallel {gpus} (one server, --tensor-parallel-size {gpus})", gpus=gpus, servers=1,
        flags=(("--tensor-parallel-size", str(gpus)),), env_per_server=((("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
                                                                          ("CUDA_VISIBLE_DEVICES", ",".join(map(str, idx)))),),
        weights_per_gpu_bytes=w_tp, kv_pool_per_gpu_bytes=max(pool_tp, 0), kv_tokens_per_server=tok_tp,
        max_concurrency_per_server=conc_tp, kv_tokens_total=tok_tp, fits=pool_tp > 0 and conc_tp >= 1,
        communication=f"an all-reduce between the {gpus} GPUs in every layer of every step",
        lines=(f"weights per GPU ~{_gib(w_tp)} (attention, DeltaNet and expert weights split {gpus} ways)",
               f"KV pool per GPU {_gib(budget)} - {_gib(w_tp)} - overhead {_gib(overhead_bytes)} = {_gib(pool_tp)}; "
               f"{kv_heads_note}, each rank keeps 1/{gpus} of every token",
               f"one server: {tok_tp:,} tokens, {conc_tp:.2f}x at {max_model_len:,} tokens"),
        sources=(*sources_common, SCALING_DOCS)))
    # vLLM data parallel
    w_dp = int(weights_bytes * (1 - ef) + weights_bytes * ef / gpus)
    pool_dp = budget - w_dp - overhead_bytes
    tok_dp, conc_dp = cap(arch, max(pool_dp, 0))
    moe = arch.num_experts > 0
    opts.append(ParallelOption(
        kind="dp", title=f"vLLM data parallel {gpus} (one endpoint, --data-parallel-size {gpus})", gpus=gpus, servers=1,
        flags=(("--data-parallel-size", str(gpus)),), env_per_server=((("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
                                                                        ("CUDA_VISIBLE_DEVICES", ",".join(map(str, idx)))),),
        weights_per_gpu_bytes=w_dp, kv_pool_per_gpu_bytes=max(pool_dp, 0), kv_tokens_per_server=tok_dp * gpus,
        max_concurrency_per_server=round(conc_dp * gpus, 2), kv_tokens_total=tok_dp * gpus,
        fits=pool_dp > 0 and conc_dp >= 1,
        communication=("MoE: the expert layers form one DP x TP group, so every step all ranks run (dummy passes "
                       "when idle) and exchange expert activations" if moe else "none for dense models"),
        lines=(f"weights per GPU {_gib(w_dp)} (attention/DeltaNet/embeddings replicated; routed experts "
               f"({ef:.0%} of the weights) split {gpus} ways, as vLLM does for MoE)" if moe else
               f"weights per GPU {_gib(w_dp)}",
               f"KV pool per rank {_gib(budget)} - {_gib(w_dp)} - overhead {_gib(overhead_bytes)} = {_gib(pool_dp)}",
               f"per rank: {tok_dp:,} tokens, {conc_dp:.2f}x; the endpoint balances {gpus} ranks: "
               f"{tok_dp * gpus:,} tokens in all"),
        sources=(*sources_common, DP_DOCS)))

    rep, tp = opts[0], opts[1]
    if rep.fits:
        rec = "replicas"
        reason = (f"the whole model fits one GPU with {rep.max_concurrency_per_server:.2f}x at {max_model_len:,} "
                  "tokens, so independent servers need no traffic between GPUs (TP all-reduces in every layer, and "
                  "vLLM's DP for MoE synchronizes all ranks every step); a router spreads requests")
    elif tp.fits:
        rec = "tp"
        reason = (f"one GPU cannot hold the weights plus one {max_model_len:,}-token request; tensor parallel splits "
                  "the weights and the KV cache")
    else:
        rec = "tp"
        reason = "nothing fits at this context: shorten --context; tensor parallel leaves the most KV per GPU"
    return ParallelComparison(tuple(opts), rec, reason, (DP_DOCS, SCALING_DOCS, ROUTER_DOCS))
