"""Write a random-weight checkpoint with the exact layout of Qwen3.6-35B-A3B.

The Hugging Face hub is out of reach on the GPU machine, but the architecture is known, so this
builds a checkpoint with the same config, tensor names, shapes, dtypes and quantization layout as
the real ones, filled with sane random values, for serving tests (load path, kernels, memory,
throughput; the text it produces is meaningless).

Formats
- ``bf16``: the layout of ``Qwen/Qwen3.6-35B-A3B``: ``Qwen3_5MoeForConditionalGeneration``,
  language model under ``model.language_model.``, vision tower under ``model.visual.``, routed
  experts stored fused as 3-D tensors (``mlp.experts.gate_up_proj`` [E, 2I, H],
  ``mlp.experts.down_proj`` [E, H, I]: transformers >= 5 has no per-expert conversion for
  ``qwen3_5_moe``), MTP head under ``mtp.``.
- ``nvfp4``: the ModelOpt layout of ``nvidia/Qwen3.6-35B-A3B-NVFP4``: routed experts unfused per
  expert (``mlp.experts.{e}.{gate,up,down}_proj``), every quantized linear as ``weight`` (uint8,
  two e2m1 values per byte, [out, in/2]), ``weight_scale`` (float8_e4m3fn, one per 16 inputs,
  [out, in/16]), ``weight_scale_2`` (float32 scalar) and ``input_scale`` (float32 scalar);
  ``hf_quant_config.json`` plus the matching ``quantization_config`` in config.json. Quantized:
  routed and shared experts, full-attention q/k/v/o, Gated DeltaNet in_proj_qkv/in_proj_z/out_proj
  (with these the size ratio to BF16 is the model card's 3.06x; quantizing the experts only would
  give 2.8x). BF16: embeddings, lm_head, router and shared-expert gates, DeltaNet in_proj_a/b and
  conv1d, norms, the vision tower and the whole MTP head (vLLM PR #38832: "The NVFP4 checkpoint
  stores the entire MTP branch in BF16, but hf_quant_config.json only excludes mtp.layers.0*").

Use ``--scale tiny`` for the CPU tests (same code path, small dimensions) and ``--layers N`` for a
reduced-depth variant (the full BF16 checkpoint is ~72 GB and does not fit a 64 GiB disk).

Values: BF16 weights are normal (std 0.02); Gemma-style RMSNorm weights (applied as 1 + w) are 0;
the DeltaNet gated norm is 1; A_log (F32, as vLLM keeps it) = log(U(1, 16)); dt_bias (BF16: vLLM warns
when loading an F32 one into its BF16 parameter) = softplus^-1(U(1e-3, 1e-1)); e2m1
nibbles are uniform over all 16 codes (e2m1 has no NaN); e4m3 block scales are drawn from the
codes for 64..448 (never the NaN code 0x7f); weight_scale_2 makes the dequantized std 0.02.

Speed: random data comes from one pool per worker; each tensor is a slice of it at a random
offset, so generation is bound by the disk; shards are written in parallel processes.

Importable (``build_checkpoint``, ``tensor_plan``, ``pack_e2m1``/``unpack_e2m1``...) and a CLI:
``python bench/synth_checkpoint.py --format nvfp4 --scale full --out /tmp/ckpt``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

FORMATS = ("bf16", "nvfp4", "nvidia-mixed", "ct-nvfp4", "ct-nvfp4-fp8")
# How each layout stores each part (bench/SYNTH_LAYOUTS.md says which published checkpoint and source):
#   bf16       BF16 (routed experts fused 3-D)
#   mo_nvfp4   ModelOpt NVFP4: weight U8 [out, in/2], weight_scale F8_E4M3 [out, in/16], weight_scale_2 F32 [],
#              input_scale F32 [] (W4A4 and W4A16_NVFP4 store the same four; W4A16 ignores input_scale)
#   mo_fp8     ModelOpt FP8 per-tensor: weight F8_E4M3 [out, in], weight_scale F32 [], input_scale F32 []
#   ct_nvfp4   compressed-tensors NVFP4: weight_packed U8 [out, in/2], weight_scale F8_E4M3 [out, in/16],
#              weight_global_scale F32 [1], input_global_scale F32 [1]
#   ct_fp8     compressed-tensors FP8 channel (FP8_DYNAMIC): weight F8_E4M3 [out, in], weight_scale F32 [out, 1]
PARTS = ("experts", "shared_expert", "attention", "deltanet", "lm_head")
LAYOUTS: dict[str, dict[str, str]] = {
    "bf16": dict.fromkeys(PARTS, "bf16"),
    "nvfp4": {"experts": "mo_nvfp4", "shared_expert": "mo_nvfp4", "attention": "mo_nvfp4", "deltanet": "mo_nvfp4",
              "lm_head": "bf16"},
    "nvidia-mixed": {"experts": "mo_nvfp4", "shared_expert": "mo_nvfp4", "attention": "mo_fp8", "deltanet": "mo_fp8",
                     "lm_head": "mo_nvfp4"},
    "ct-nvfp4": {"experts": "ct_nvfp4", "shared_expert": "ct_nvfp4", "attention": "ct_nvfp4", "deltanet": "bf16",
                 "lm_head": "bf16"},
    "ct-nvfp4-fp8": {"experts": "ct_nvfp4", "shared_expert": "ct_fp8", "attention": "ct_fp8", "deltanet": "bf16",
                     "lm_head": "bf16"},
}
SCALES = ("full", "tiny")
NVFP4_GROUP = 16  # ModelOpt NVFP4 block size (one e4m3 scale per 16 weights)
MODELOPT_VERSION = "0.44.0"  # the model card: "NVIDIA Model Optimizer v0.44.0" (creeta.com summary)


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vision:
    depth: int
    hidden: int
    intermediate: int
    heads: int
    out_hidden: int
    patch: int = 16
    temporal_patch: int = 2
    merge: int = 2
    in_channels: int = 3
    num_position_embeddings: int = 2304


@dataclass(frozen=True)
class Arch:
    """The numbers of the text model (transformers Qwen3_5MoeTextConfig names in comments)."""

    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int
    lin_k_heads: int  # linear_num_key_heads
    lin_v_heads: int  # linear_num_value_heads
    lin_k_dim: int  # linear_key_head_dim
    lin_v_dim: int  # linear_value_head_dim
    conv_kernel: int  # linear_conv_kernel_dim
    experts: int  # num_experts
    top_k: int  # num_experts_per_tok
    moe_inter: int  # moe_intermediate_size
    shared_inter: int  # shared_expert_intermediate_size
    vocab: int
    max_positions: int
    mrope_section: tuple[int, int, int]
    vision: Vision
    mtp_layers: int = 1
    full_attention_interval: int = 4
    partial_rotary: float = 0.25
    rope_theta: float = 10_000_000.0
    rms_eps: float = 1e-6

    def layer_type(self, i: int) -> str:
        return "full_attention" if i % self.full_attention_interval == self.full_attention_interval - 1 else "linear_attention"

    @property
    def conv_dim(self) -> int:
        return 2 * self.lin_k_heads * self.lin_k_dim + self.lin_v_heads * self.lin_v_dim


# Qwen3.6-35B-A3B. Sources: transformers 5.19 Qwen3_5MoeTextConfig defaults (which are this model:
# 40 layers, hidden 2048, 16/2 heads, head_dim 256, DeltaNet 16/32 heads of 128, conv 4, 256
# experts top-8, 512/512, vocab 248320, untied lm_head, partial rotary 0.25) and FACTS.md §5 / the
# hub config inventory (rope_theta 1e7, max positions 262144, mtp_num_hidden_layers 1, vision
# depth 27 / hidden 1152 / out 2048). mrope_section [11, 11, 10] sums to the 32 rotary pairs
# (256 * 0.25 / 2).
FULL = Arch(
    layers=40, hidden=2048, heads=16, kv_heads=2, head_dim=256,
    lin_k_heads=16, lin_v_heads=32, lin_k_dim=128, lin_v_dim=128, conv_kernel=4,
    experts=256, top_k=8, moe_inter=512, shared_inter=512,
    vocab=248320, max_positions=262144, mrope_section=(11, 11, 10),
    vision=Vision(depth=27, hidden=1152, intermediate=4304, heads=16, out_hidden=2048),
)

# The same shapes scaled down for CPU tests. DeltaNet head dims stay 128 (vLLM's CPU kernel
# rejects smaller ones); everything else is small. rotary: 64 * 0.25 / 2 = 8 pairs = 3 + 3 + 2.
TINY = Arch(
    layers=4, hidden=128, heads=4, kv_heads=2, head_dim=64,
    lin_k_heads=2, lin_v_heads=4, lin_k_dim=128, lin_v_dim=128, conv_kernel=4,
    experts=8, top_k=2, moe_inter=64, shared_inter=64,
    vocab=4096, max_positions=4096, mrope_section=(3, 3, 2),
    vision=Vision(depth=2, hidden=64, intermediate=128, heads=2, out_hidden=128,
                  num_position_embeddings=64),
)


def arch_for(scale: str, layers: int | None = None) -> Arch:
    base = {"full": FULL, "tiny": TINY}[scale]
    return base if layers is None else replace(base, layers=layers)


# --------------------------------------------------------------------------------------------
# Tensor plan
# --------------------------------------------------------------------------------------------

DTYPE_BYTES = {"BF16": 2, "F32": 4, "U8": 1, "F8_E4M3": 1}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    fill: str  # normal | zeros | ones | a_log | dt_bias | fp4 | fp4_scale | fp8 | const
    value: float = 0.02  # std for "normal", the value for "const"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def _bf16(name: str, shape: tuple[int, ...], fill: str = "normal", value: float = 0.02) -> TensorSpec:
    return TensorSpec(name, "BF16", shape, fill, value)


# e2m1 RMS over the 16 codes (values 0, .5, 1, 1.5, 2, 3, 4, 6 and their negatives)
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                       dtype=np.float32)
E2M1_RMS = float(np.sqrt(np.mean(E2M1_VALUES ** 2)))
# e4m3fn codes 0x68..0x7e are 64..448 (0x7f is NaN): realistic ModelOpt block scales
E4M3_SCALE_CODES = np.arange(0x68, 0x7F, dtype=np.uint8)
INPUT_AMAX = 8.0  # assumed activation amax; input_scale = amax / (6 * 448) as ModelOpt computes it


def e4m3_to_float(codes: np.ndarray) -> np.ndarray:
    """Decode float8_e4m3fn codes (bias 7, no infinities, 0x7f/0xff NaN)."""
    c = codes.astype(np.int32)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp = (c >> 3) & 0xF
    man = c & 0x7
    val = np.where(exp == 0, man / 8.0 * 2.0 ** -6, (1 + man / 8.0) * 2.0 ** (exp - 7))
    val = np.where((c & 0x7F) == 0x7F, np.nan, val)
    return (sign * val).astype(np.float32)


def float_to_e4m3(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest finite float8_e4m3fn code (saturating at +-448), as uint8."""
    pos = np.arange(0x7F, dtype=np.uint8)  # 0x00..0x7e: the finite non-negative codes, increasing
    vals = e4m3_to_float(pos)
    a = np.minimum(np.abs(np.asarray(x, np.float32)), 448.0)
    i = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)
    lo, hi = vals[i - 1], vals[i]
    code = np.where(a - lo <= hi - a, i - 1, i).astype(np.uint8)
    return np.where(np.signbit(x) & (code != 0), code | 0x80, code).astype(np.uint8)


MEAN_BLOCK_SCALE = float(e4m3_to_float(E4M3_SCALE_CODES).mean())
WEIGHT_SCALE_2 = 0.02 / (E2M1_RMS * MEAN_BLOCK_SCALE)


FP8_WEIGHT_SCALE = 0.02  # per-tensor / per-channel FP8 scale: weights drawn ~N(0, 1) in e4m3 dequantize to std 0.02
FP8_INPUT_SCALE = INPUT_AMAX / 448.0  # ModelOpt FP8 static activation scale = amax / 448


def _linear(name: str, out_f: int, in_f: int, kind: str | bool, zero: bool = False) -> list[TensorSpec]:
    """One linear module in the given storage `kind` (see LAYOUTS); `zero` makes its weights all zero."""
    kind = {True: "mo_nvfp4", False: "bf16"}.get(kind, kind) if isinstance(kind, bool) else kind
    if kind == "bf16":
        return [_bf16(f"{name}.weight", (out_f, in_f), "zeros" if zero else "normal")]
    if kind in ("mo_nvfp4", "ct_nvfp4") and in_f % NVFP4_GROUP:
        raise ValueError(f"{name}: in_features {in_f} is not a multiple of {NVFP4_GROUP}")
    packed = TensorSpec("", "U8", (out_f, in_f // 2), "zeros" if zero else "fp4")
    blocks = TensorSpec("", "F8_E4M3", (out_f, in_f // NVFP4_GROUP), "fp4_scale")
    if kind == "mo_nvfp4":
        return [
            replace(packed, name=f"{name}.weight"),
            replace(blocks, name=f"{name}.weight_scale"),
            TensorSpec(f"{name}.weight_scale_2", "F32", (), "const", WEIGHT_SCALE_2),
            TensorSpec(f"{name}.input_scale", "F32", (), "const", INPUT_AMAX / (6.0 * 448.0)),
        ]
    if kind == "ct_nvfp4":  # compressed-tensors stores the global scales inverted (vLLM reciprocates them)
        return [
            replace(packed, name=f"{name}.weight_packed"),
            replace(blocks, name=f"{name}.weight_scale"),
            TensorSpec(f"{name}.weight_global_scale", "F32", (1,), "const", 1.0 / WEIGHT_SCALE_2),
            TensorSpec(f"{name}.input_global_scale", "F32", (1,), "const", 6.0 * 448.0 / INPUT_AMAX),
        ]
    fp8 = TensorSpec(f"{name}.weight", "F8_E4M3", (out_f, in_f), "zeros" if zero else "fp8")
    if kind == "mo_fp8":
        return [fp8, TensorSpec(f"{name}.weight_scale", "F32", (), "const", FP8_WEIGHT_SCALE),
                TensorSpec(f"{name}.input_scale", "F32", (), "const", FP8_INPUT_SCALE)]
    if kind == "ct_fp8":
        return [fp8, TensorSpec(f"{name}.weight_scale", "F32", (out_f, 1), "const", FP8_WEIGHT_SCALE)]
    raise ValueError(f"unknown storage kind {kind!r}")


def _moe(p: str, a: Arch, lay: dict[str, str]) -> list[TensorSpec]:
    """Router, routed experts, shared expert and its gate of one MoE block at prefix p."""
    t = [_bf16(f"{p}.gate.weight", (a.experts, a.hidden))]
    if lay["experts"] != "bf16":  # quantized exports store the experts unfused, one module per expert
        for e in range(a.experts):
            t += _linear(f"{p}.experts.{e}.gate_proj", a.moe_inter, a.hidden, lay["experts"])
            t += _linear(f"{p}.experts.{e}.up_proj", a.moe_inter, a.hidden, lay["experts"])
            t += _linear(f"{p}.experts.{e}.down_proj", a.hidden, a.moe_inter, lay["experts"])
    else:  # the Qwen BF16 checkpoint (and every MTP head here) stores them fused, 3-D
        t.append(_bf16(f"{p}.experts.gate_up_proj", (a.experts, 2 * a.moe_inter, a.hidden)))
        t.append(_bf16(f"{p}.experts.down_proj", (a.experts, a.hidden, a.moe_inter)))
    t += _linear(f"{p}.shared_expert.gate_proj", a.shared_inter, a.hidden, lay["shared_expert"])
    t += _linear(f"{p}.shared_expert.up_proj", a.shared_inter, a.hidden, lay["shared_expert"])
    t += _linear(f"{p}.shared_expert.down_proj", a.hidden, a.shared_inter, lay["shared_expert"])
    t.append(_bf16(f"{p}.shared_expert_gate.weight", (1, a.hidden)))
    return t


def _full_attention(p: str, a: Arch, kind: str) -> list[TensorSpec]:
    # q_proj carries the query and the output gate (attn_output_gate): 2 * heads * head_dim rows
    t = _linear(f"{p}.q_proj", 2 * a.heads * a.head_dim, a.hidden, kind)
    t += _linear(f"{p}.k_proj", a.kv_heads * a.head_dim, a.hidden, kind)
    t += _linear(f"{p}.v_proj", a.kv_heads * a.head_dim, a.hidden, kind)
    t += _linear(f"{p}.o_proj", a.hidden, a.heads * a.head_dim, kind)
    t.append(_bf16(f"{p}.q_norm.weight", (a.head_dim,), "zeros"))
    t.append(_bf16(f"{p}.k_norm.weight", (a.head_dim,), "zeros"))
    return t


def _deltanet(p: str, a: Arch, kind: str) -> list[TensorSpec]:
    v_dim = a.lin_v_heads * a.lin_v_dim
    t = [
        TensorSpec(f"{p}.A_log", "F32", (a.lin_v_heads,), "a_log"),
        _bf16(f"{p}.dt_bias", (a.lin_v_heads,), "dt_bias"),
        _bf16(f"{p}.conv1d.weight", (a.conv_dim, 1, a.conv_kernel), "normal", 0.1),
        _bf16(f"{p}.norm.weight", (a.lin_v_dim,), "ones"),
    ]
    t += _linear(f"{p}.in_proj_qkv", a.conv_dim, a.hidden, kind)
    t += _linear(f"{p}.in_proj_z", v_dim, a.hidden, kind)
    t += _linear(f"{p}.in_proj_b", a.lin_v_heads, a.hidden, "bf16")
    t += _linear(f"{p}.in_proj_a", a.lin_v_heads, a.hidden, "bf16")
    t += _linear(f"{p}.out_proj", a.hidden, v_dim, kind)
    return t


def _decoder_layer(p: str, a: Arch, layer_type: str, lay: dict[str, str] | bool) -> list[TensorSpec]:
    if isinstance(lay, bool):  # the old call form: quantized (ModelOpt W4A4 layout) or not
        lay = LAYOUTS["nvfp4" if lay else "bf16"]
    if layer_type == "full_attention":
        t = _full_attention(f"{p}.self_attn", a, lay["attention"])
    else:
        t = _deltanet(f"{p}.linear_attn", a, lay["deltanet"])
    t += _moe(f"{p}.mlp", a, lay)
    t.append(_bf16(f"{p}.input_layernorm.weight", (a.hidden,), "zeros"))
    t.append(_bf16(f"{p}.post_attention_layernorm.weight", (a.hidden,), "zeros"))
    return t


def _vision(a: Arch) -> list[TensorSpec]:
    v, p = a.vision, "model.visual"
    t = [
        _bf16(f"{p}.patch_embed.proj.weight", (v.hidden, v.in_channels, v.temporal_patch, v.patch, v.patch)),
        _bf16(f"{p}.patch_embed.proj.bias", (v.hidden,), "zeros"),
        _bf16(f"{p}.pos_embed.weight", (v.num_position_embeddings, v.hidden)),
    ]
    for i in range(v.depth):
        b = f"{p}.blocks.{i}"
        t += [
            _bf16(f"{b}.norm1.weight", (v.hidden,), "ones"), _bf16(f"{b}.norm1.bias", (v.hidden,), "zeros"),
            _bf16(f"{b}.norm2.weight", (v.hidden,), "ones"), _bf16(f"{b}.norm2.bias", (v.hidden,), "zeros"),
            _bf16(f"{b}.attn.qkv.weight", (3 * v.hidden, v.hidden)), _bf16(f"{b}.attn.qkv.bias", (3 * v.hidden,), "zeros"),
            _bf16(f"{b}.attn.proj.weight", (v.hidden, v.hidden)), _bf16(f"{b}.attn.proj.bias", (v.hidden,), "zeros"),
            _bf16(f"{b}.mlp.linear_fc1.weight", (v.intermediate, v.hidden)),
            _bf16(f"{b}.mlp.linear_fc1.bias", (v.intermediate,), "zeros"),
            _bf16(f"{b}.mlp.linear_fc2.weight", (v.hidden, v.intermediate)),
            _bf16(f"{b}.mlp.linear_fc2.bias", (v.hidden,), "zeros"),
        ]
    merged = v.hidden * v.merge * v.merge
    t += [
        _bf16(f"{p}.merger.norm.weight", (v.hidden,), "ones"), _bf16(f"{p}.merger.norm.bias", (v.hidden,), "zeros"),
        _bf16(f"{p}.merger.linear_fc1.weight", (merged, merged)),
        _bf16(f"{p}.merger.linear_fc1.bias", (merged,), "zeros"),
        _bf16(f"{p}.merger.linear_fc2.weight", (v.out_hidden, merged)),
        _bf16(f"{p}.merger.linear_fc2.bias", (v.out_hidden,), "zeros"),
    ]
    return t


def _mtp(a: Arch) -> list[TensorSpec]:
    """The MTP head: always BF16 (also in the NVFP4 checkpoint), a full-attention MoE layer."""
    t = [
        _bf16("mtp.fc.weight", (a.hidden, 2 * a.hidden)),
        _bf16("mtp.norm.weight", (a.hidden,), "zeros"),
        _bf16("mtp.pre_fc_norm_hidden.weight", (a.hidden,), "zeros"),
        _bf16("mtp.pre_fc_norm_embedding.weight", (a.hidden,), "zeros"),
    ]
    for i in range(a.mtp_layers):
        t += _decoder_layer(f"mtp.layers.{i}", a, "full_attention", LAYOUTS["bf16"])
    return t


def tensor_plan(a: Arch, fmt: str, always_accept: bool = False) -> list[tuple[str, list[TensorSpec]]]:
    """The checkpoint as (shard stem, tensors) pairs: one shard per decoder layer. `always_accept` zeroes
    lm_head (every logit equal: greedy target and greedy MTP draft always agree)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    lay = LAYOUTS[fmt]
    lm = "model.language_model"
    shards: list[tuple[str, list[TensorSpec]]] = [
        ("embed", [_bf16(f"{lm}.embed_tokens.weight", (a.vocab, a.hidden)),
                   _bf16(f"{lm}.norm.weight", (a.hidden,), "zeros")]),
        ("lm_head", _linear("lm_head", a.vocab, a.hidden, lay["lm_head"], zero=always_accept)),
    ]
    for i in range(a.layers):
        shards.append((f"layer{i:02d}", _decoder_layer(f"{lm}.layers.{i}", a, a.layer_type(i), lay)))
    if a.mtp_layers:
        shards.append(("mtp", _mtp(a)))
    shards.append(("visual", _vision(a)))
    return shards


def exclude_modules(a: Arch) -> list[str]:
    """ModelOpt's exclude list for this layout: every linear module left in BF16."""
    lm = "model.language_model"
    out = ["lm_head", "model.visual*"]
    for i in range(a.layers):
        p = f"{lm}.layers.{i}"
        if a.layer_type(i) == "linear_attention":
            out += [f"{p}.linear_attn.in_proj_a", f"{p}.linear_attn.in_proj_b"]
        out += [f"{p}.mlp.gate", f"{p}.mlp.shared_expert_gate"]
    out += ["mtp.fc"] + [f"mtp.layers.{i}*" for i in range(a.mtp_layers)]
    return out


MIXED_IGNORE = ["mtp.layers.0*", "mtp*"]  # nvidia/Qwen3.6-35B-A3B-NVFP4's ignore / exclude_modules
MIXED_CONFIG_PRODUCER = "0.37.0"  # its config.json says modelopt 0.37.0, its hf_quant_config.json 0.44.0


def mixed_quantized_layers(a: Arch) -> dict[str, dict]:
    """The per-layer map of nvidia/Qwen3.6-35B-A3B-NVFP4 (tests/data/checkpoints/nvidia-nvfp4/): FP8 for the
    attention and DeltaNet projections, W4A16_NVFP4 (group 16) for experts, shared expert and lm_head."""
    lm = "model.language_model.layers"
    w4a16 = {"quant_algo": "W4A16_NVFP4", "group_size": NVFP4_GROUP}
    out: dict[str, dict] = {}
    for i in range(a.layers):
        if a.layer_type(i) == "linear_attention":
            for m in ("out_proj", "in_proj_qkv", "in_proj_z"):
                out[f"{lm}.{i}.linear_attn.{m}"] = {"quant_algo": "FP8"}
        else:
            for m in ("k_proj", "o_proj", "q_proj", "v_proj"):
                out[f"{lm}.{i}.self_attn.{m}"] = {"quant_algo": "FP8"}
        out[f"{lm}.{i}.mlp.experts"] = dict(w4a16)
        for m in ("gate_proj", "up_proj", "down_proj"):
            out[f"{lm}.{i}.mlp.shared_expert.{m}"] = dict(w4a16)
    out["lm_head"] = dict(w4a16)
    return out


def hf_quant_config(a: Arch, fmt: str = "nvfp4") -> dict:
    """hf_quant_config.json as ModelOpt writes it (vLLM reads it only when config.json has no
    quantization_config; the KV algo of the NVIDIA mixed checkpoint is only here)."""
    if fmt == "nvidia-mixed":
        return {"producer": {"name": "modelopt", "version": MODELOPT_VERSION},
                "quantization": {"quant_algo": "MIXED_PRECISION", "kv_cache_quant_algo": "FP8",
                                 "quantized_layers": mixed_quantized_layers(a), "exclude_modules": list(MIXED_IGNORE)}}
    return {
        "producer": {"name": "modelopt", "version": MODELOPT_VERSION},
        "quantization": {
            "quant_algo": "NVFP4",
            "kv_cache_quant_algo": None,
            "group_size": NVFP4_GROUP,
            "exclude_modules": exclude_modules(a),
        },
    }


def _ct_args(bits: int, strategy: str, dynamic, group_size: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    """A compressed-tensors QuantizationArgs dict (the keys compressed-tensors serializes)."""
    return {"actorder": None, "block_structure": None, "dynamic": dynamic, "group_size": group_size,
            "num_bits": bits, "observer": "minmax" if dynamic is False else None, "observer_kwargs": {},
            "strategy": strategy, "symmetric": True, "type": "float"}


def ct_ignore(a: Arch, fmt: str) -> list[str]:
    """Every Linear module the compressed-tensors layout keeps in BF16, by name (vLLM checks the ignore list
    before the targets; for MoE it checks `<experts>.0.{gate,up,down}_proj`)."""
    lm = "model.language_model"
    out = ["lm_head"]
    for i in range(a.layers):
        p = f"{lm}.layers.{i}"
        if a.layer_type(i) == "linear_attention":
            out += [f"{p}.linear_attn.{m}" for m in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")]
        out += [f"{p}.mlp.gate", f"{p}.mlp.shared_expert_gate"]
    for i in range(a.vision.depth):
        b = f"model.visual.blocks.{i}"
        out += [f"{b}.attn.qkv", f"{b}.attn.proj", f"{b}.mlp.linear_fc1", f"{b}.mlp.linear_fc2"]
    out += ["model.visual.merger.linear_fc1", "model.visual.merger.linear_fc2", "mtp.fc"]
    for i in range(a.mtp_layers):
        p = f"mtp.layers.{i}"
        out += [f"{p}.self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj", "o_proj")]
        out += [f"{p}.mlp.gate", f"{p}.mlp.shared_expert_gate"]
        out += [f"{p}.mlp.shared_expert.{m}" for m in ("gate_proj", "up_proj", "down_proj")]
        out += [f"{p}.mlp.experts.{e}.{m}" for e in range(a.experts) for m in ("gate_proj", "up_proj", "down_proj")]
    return out


def config_quantization(a: Arch, fmt: str = "nvfp4") -> dict:
    """config.json's quantization_config (vLLM reads this first)."""
    if fmt == "nvidia-mixed":  # the published structure, group for group
        layers = mixed_quantized_layers(a)
        fp8 = {"dynamic": False, "num_bits": 8, "type": "float"}
        fp4 = {"dynamic": False, "num_bits": 4, "type": "float", "group_size": NVFP4_GROUP}
        return {
            "config_groups": {
                "group_0": {"input_activations": dict(fp8), "weights": dict(fp8),
                            "targets": sorted(k for k, v in layers.items() if v["quant_algo"] == "FP8")},
                "group_1": {"input_activations": dict(fp4), "weights": dict(fp4),
                            "targets": sorted(k for k, v in layers.items() if v["quant_algo"] != "FP8")},
            },
            "quantized_layers": layers,
            "ignore": list(MIXED_IGNORE),
            "quant_algo": "MIXED_PRECISION",
            "producer": {"name": "modelopt", "version": MIXED_CONFIG_PRODUCER},
            "quant_method": "modelopt",
        }
    if fmt in ("ct-nvfp4", "ct-nvfp4-fp8"):
        nv = {"format": "nvfp4-pack-quantized",
              "input_activations": _ct_args(4, "tensor_group", "local", NVFP4_GROUP),
              "output_activations": None, "targets": ["Linear"],
              "weights": _ct_args(4, "tensor_group", False, NVFP4_GROUP)}
        groups = {"group_0": nv}
        if fmt == "ct-nvfp4-fp8":  # experts NVFP4; attention and shared expert FP8_DYNAMIC
            nv["targets"] = [r"re:.*mlp\.experts\.\d+\.(gate|up|down)_proj$"]
            groups["group_1"] = {"format": "float-quantized", "input_activations": _ct_args(8, "token", True),
                                 "output_activations": None,
                                 "targets": [r"re:.*self_attn\.(q|k|v|o)_proj$",
                                             r"re:.*mlp\.shared_expert\.(gate|up|down)_proj$"],
                                 "weights": _ct_args(8, "channel", False)}
        return {
            "config_groups": groups,
            "format": "nvfp4-pack-quantized" if fmt == "ct-nvfp4" else "mixed-precision",
            "global_compression_ratio": None,
            "ignore": ct_ignore(a, fmt),
            "kv_cache_scheme": None,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
        }
    fp4 = {"dynamic": False, "num_bits": 4, "type": "float", "group_size": NVFP4_GROUP}
    return {
        "config_groups": {"group_0": {"input_activations": dict(fp4), "weights": dict(fp4), "targets": ["Linear"]}},
        "ignore": exclude_modules(a),
        "quant_algo": "NVFP4",
        "producer": {"name": "modelopt", "version": MODELOPT_VERSION},
        "quant_method": "modelopt",
    }


# --------------------------------------------------------------------------------------------
# Tokenizer (a small real byte-level BPE, written as tokenizer.json without extra dependencies)
# --------------------------------------------------------------------------------------------

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _corpus() -> str:
    """Local text to learn merges from: this file and a few standard-library modules."""
    import json as _j
    import argparse as _a
    parts = [Path(__file__).read_text(encoding="utf-8")]
    for mod in (_j, _a):
        parts.append(Path(mod.__file__).read_text(encoding="utf-8"))
    return "\n".join(parts)


def train_bpe(text: str, merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A plain byte-level BPE trainer (greedy most-frequent pair), small corpora only."""
    import re
    from collections import Counter

    b2u = _bytes_to_unicode()
    words = Counter(re.findall(r" ?\w+| ?[^\s\w]+|\s+", text))
    seqs = {w: tuple(b2u[b] for b in w.encode("utf-8")) for w in words}
    vocab = {b2u[b]: b for b in range(256)}
    merge_list: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter = Counter()
        for w, s in seqs.items():
            f = words[w]
            for x, y in zip(s, s[1:]):
                pairs[(x, y)] += f
        if not pairs:
            break
        (x, y), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merge_list.append((x, y))
        vocab[x + y] = len(vocab)
        for w, s in seqs.items():
            if len(s) < 2:
                continue
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == x and s[i + 1] == y:
                    out.append(x + y)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = tuple(out)
    return vocab, merge_list


def write_tokenizer(out: Path, merges: int, vocab_limit: int) -> dict[str, int]:
    """tokenizer.json / vocab.json / merges.txt / tokenizer_config.json; returns special ids."""
    vocab, merge_list = train_bpe(_corpus(), merges)
    specials = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    if max(specials.values()) >= vocab_limit:
        raise ValueError(f"tokenizer has {max(specials.values()) + 1} ids, over vocab_size {vocab_limit}")
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t, i in specials.items()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r" ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+"},
                 "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [[x, y] for x, y in merge_list],
        },
    }
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{x} {y}\n" for x, y in merge_list),
                                    encoding="utf-8")
    cfg = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 262144,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "split_special_tokens": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for t, i in specials.items()
        },
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return specials


# --------------------------------------------------------------------------------------------
# Config files
# --------------------------------------------------------------------------------------------


def model_config(a: Arch, fmt: str, specials: dict[str, int]) -> dict:
    eos = specials["<|im_end|>"]
    text = {
        "model_type": "qwen3_5_moe_text",
        "vocab_size": a.vocab,
        "hidden_size": a.hidden,
        "num_hidden_layers": a.layers,
        "layer_types": [a.layer_type(i) for i in range(a.layers)],
        "full_attention_interval": a.full_attention_interval,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "attn_output_gate": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "linear_num_key_heads": a.lin_k_heads,
        "linear_num_value_heads": a.lin_v_heads,
        "linear_key_head_dim": a.lin_k_dim,
        "linear_value_head_dim": a.lin_v_dim,
        "linear_conv_kernel_dim": a.conv_kernel,
        "mamba_ssm_dtype": "float32",
        "num_experts": a.experts,
        "num_experts_per_tok": a.top_k,
        "moe_intermediate_size": a.moe_inter,
        "shared_expert_intermediate_size": a.shared_inter,
        "router_aux_loss_coef": 0.001,
        "output_router_logits": False,
        "hidden_act": "silu",
        "rms_norm_eps": a.rms_eps,
        "initializer_range": 0.02,
        "max_position_embeddings": a.max_positions,
        "partial_rotary_factor": a.partial_rotary,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": a.rope_theta,
            "partial_rotary_factor": a.partial_rotary,
            "mrope_interleaved": True,
            "mrope_section": list(a.mrope_section),
        },
        "mtp_num_hidden_layers": a.mtp_layers,
        "mtp_use_dedicated_embeddings": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "dtype": "bfloat16",
        "bos_token_id": None,
        "eos_token_id": eos,
        "pad_token_id": None,
    }
    v = a.vision
    vision = {
        "model_type": "qwen3_5_moe_vision",
        "depth": v.depth,
        "hidden_size": v.hidden,
        "intermediate_size": v.intermediate,
        "num_heads": v.heads,
        "out_hidden_size": v.out_hidden,
        "patch_size": v.patch,
        "temporal_patch_size": v.temporal_patch,
        "spatial_merge_size": v.merge,
        "in_channels": v.in_channels,
        "num_position_embeddings": v.num_position_embeddings,
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.02,
        "deepstack_visual_indexes": [],
        "dtype": "bfloat16",
    }
    cfg = {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"],
        "model_type": "qwen3_5_moe",
        "text_config": text,
        "vision_config": vision,
        "image_token_id": specials["<|image_pad|>"],
        "video_token_id": specials["<|video_pad|>"],
        "vision_start_token_id": specials["<|vision_start|>"],
        "vision_end_token_id": specials["<|vision_end|>"],
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "transformers_version": "5.2.0",
    }
    if fmt != "bf16":
        cfg["quantization_config"] = config_quantization(a, fmt)
    return cfg


def processor_configs(a: Arch) -> dict[str, dict]:
    """preprocessor / video preprocessor configs of the Qwen3-VL family (for multimodal serving)."""
    v = a.vision
    common = {
        "patch_size": v.patch, "temporal_patch_size": v.temporal_patch, "merge_size": v.merge,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True, "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
    }
    return {
        "preprocessor_config.json": {**common, "image_processor_type": "Qwen2VLImageProcessorFast",
                                     "size": {"longest_edge": 16777216, "shortest_edge": 65536},
                                     "processor_class": "Qwen3VLProcessor"},
        "video_preprocessor_config.json": {**common, "video_processor_type": "Qwen3VLVideoProcessor",
                                           "size": {"longest_edge": 25165824, "shortest_edge": 4096},
                                           "fps": 2, "processor_class": "Qwen3VLProcessor"},
    }


# --------------------------------------------------------------------------------------------
# Random data and the safetensors writer
# --------------------------------------------------------------------------------------------

POOL_BYTES = 64 << 20  # per worker and kind; tensors are slices of a pool at random offsets
NORMAL_POOL_BYTES = 16 << 20  # normal pools cost ~35 ns per value to make (bf16 rounding)


class Pools:
    """Random pools from which tensors are sliced (one set per worker process)."""

    def __init__(self, seed: int, pool_bytes: int = POOL_BYTES, normal_need: dict[float, int] | None = None):
        self.rng = np.random.default_rng(seed)
        self.pool_bytes = pool_bytes
        self.normal_need = normal_need or {}  # std -> bytes of the largest tensor drawing from it
        self._normal: dict[float, np.ndarray] = {}
        self._fp4: np.ndarray | None = None
        self._e4m3: np.ndarray | None = None
        self._e4m3n: np.ndarray | None = None

    @property
    def fp4(self) -> np.ndarray:
        if self._fp4 is None:
            self._fp4 = self.rng.integers(0, 256, self.pool_bytes, dtype=np.uint8)
        return self._fp4

    @property
    def e4m3(self) -> np.ndarray:
        if self._e4m3 is None:
            self._e4m3 = self.rng.choice(E4M3_SCALE_CODES, size=self.pool_bytes)
        return self._e4m3

    @property
    def e4m3_normal(self) -> np.ndarray:
        """e4m3 codes of ~N(0, 1) values (FP8 weights; times FP8_WEIGHT_SCALE that is std 0.02)."""
        if self._e4m3n is None:
            size = min(self.pool_bytes, NORMAL_POOL_BYTES)
            self._e4m3n = float_to_e4m3(self.rng.standard_normal(max(size, 1024), dtype=np.float32))
        return self._e4m3n

    def normal_bf16(self, std: float) -> np.ndarray:
        if std not in self._normal:
            size = min(NORMAL_POOL_BYTES, self.pool_bytes, 2 * self.normal_need.get(std, NORMAL_POOL_BYTES))
            x = self.rng.standard_normal(max(size // 2, 1024), dtype=np.float32) * np.float32(std)
            self._normal[std] = _to_bf16_bits(x)
        return self._normal[std]

    def chunks(self, pool: np.ndarray, count: int):
        """count elements as slices of pool at random offsets (chunks of at most half the pool)."""
        step = max(1, len(pool) // 2)
        while count > 0:
            k = min(count, step)
            start = int(self.rng.integers(0, len(pool) - k + 1))
            yield pool[start:start + k]
            count -= k


def _to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def tensor_chunks(spec: TensorSpec, pools: Pools):
    """The tensor's little-endian bytes as flat numpy chunks (no NaN/inf anywhere)."""
    n = math.prod(spec.shape)
    if spec.fill == "zeros" and spec.dtype in ("U8", "F8_E4M3"):
        yield np.zeros(n, np.uint8)  # e2m1 / e4m3 code 0 is 0.0
    elif spec.fill == "fp4":
        yield from pools.chunks(pools.fp4, n)
    elif spec.fill == "fp8":
        yield from pools.chunks(pools.e4m3_normal, n)
    elif spec.fill == "fp4_scale":
        yield from pools.chunks(pools.e4m3, n)
    elif spec.dtype == "BF16" and spec.fill == "normal":
        yield from pools.chunks(pools.normal_bf16(spec.value), n)
    elif spec.dtype == "BF16" and spec.fill == "zeros":
        yield np.zeros(n, np.uint16)
    elif spec.dtype == "BF16" and spec.fill == "ones":
        yield np.full(n, 0x3F80, np.uint16)
    elif spec.dtype == "F32" and spec.fill == "const":
        yield np.full(n, spec.value, np.float32)
    elif spec.dtype == "F32" and spec.fill == "a_log":
        yield np.log(pools.rng.uniform(1.0, 16.0, n)).astype(np.float32)
    elif spec.dtype == "BF16" and spec.fill == "dt_bias":
        yield _to_bf16_bits(np.log(np.expm1(pools.rng.uniform(1e-3, 1e-1, n))).astype(np.float32))
    else:
        raise ValueError(f"no fill {spec.fill!r} for dtype {spec.dtype} ({spec.name})")


def safetensors_header(specs: list[TensorSpec]) -> bytes:
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [off, off + s.nbytes]}
        off += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_shard(path: str, specs: list[TensorSpec], seed: int) -> int:
    biggest = max(s.nbytes for s in specs)
    need: dict[float, int] = {}
    for s in specs:
        if s.fill == "normal":
            need[s.value] = max(need.get(s.value, 0), s.nbytes)
    pools = Pools(seed, pool_bytes=min(POOL_BYTES, max(1 << 16, 2 * biggest)), normal_need=need)
    with open(path, "wb") as f:
        f.write(safetensors_header(specs))
        for s in specs:
            written = 0
            for chunk in tensor_chunks(s, pools):
                f.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
                written += chunk.nbytes
            if written != s.nbytes:
                raise AssertionError(f"{s.name}: {written} bytes written, {s.nbytes} planned")
    return os.path.getsize(path)


# --------------------------------------------------------------------------------------------
# NVFP4 packing helpers (for tests and for readers of this format)
# --------------------------------------------------------------------------------------------


def pack_e2m1(codes: np.ndarray) -> np.ndarray:
    """[..., 2k] e2m1 codes (0..15) -> [..., k] bytes; element 2j in the low nibble (ModelOpt order)."""
    c = np.asarray(codes, dtype=np.uint8)
    if c.shape[-1] % 2 or (c > 15).any():
        raise ValueError("need an even last dimension of 4-bit codes")
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def unpack_e2m1(packed: np.ndarray) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint8)
    out = np.empty(p.shape[:-1] + (p.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = p & 0xF
    out[..., 1::2] = p >> 4
    return out


def dequantize_nvfp4(weight: np.ndarray, weight_scale: np.ndarray, weight_scale_2: float) -> np.ndarray:
    """uint8 [out, in/2] + e4m3 codes [out, in/16] + fp32 scalar -> float32 [out, in]."""
    vals = E2M1_VALUES[unpack_e2m1(weight)]
    scales = np.repeat(e4m3_to_float(weight_scale), NVFP4_GROUP, axis=-1)
    return vals * scales * np.float32(weight_scale_2)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    out: str
    fmt: str
    scale: str
    layers: int
    shards: int
    tensors: int
    total_bytes: int
    seconds: float

    @property
    def gb_per_s(self) -> float:
        return self.total_bytes / 1e9 / max(self.seconds, 1e-9)


def planned_bytes(a: Arch, fmt: str) -> int:
    return sum(s.nbytes for _, specs in tensor_plan(a, fmt) for s in specs)


def planned_tensors(a: Arch, fmt: str) -> int:
    return sum(len(specs) for _, specs in tensor_plan(a, fmt))


def build_checkpoint(out: str | os.PathLike, fmt: str = "nvfp4", scale: str = "full", layers: int | None = None,
                     workers: int | None = None, seed: int = 0, bpe_merges: int = 200,
                     always_accept: bool = False) -> Result:
    """Write the whole checkpoint directory; returns what was written and how fast."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    a = arch_for(scale, layers)
    if a.layers < 1:
        raise ValueError("need at least one decoder layer")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    specials = write_tokenizer(outp, bpe_merges, a.vocab)
    cfg = model_config(a, fmt, specials)
    (outp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    gen = {"bos_token_id": specials["<|endoftext|>"], "pad_token_id": specials["<|endoftext|>"],
           "eos_token_id": [specials["<|im_end|>"], specials["<|endoftext|>"]]}
    (outp / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")
    for name, body in processor_configs(a).items():
        (outp / name).write_text(json.dumps(body, indent=2), encoding="utf-8")
    if fmt in ("nvfp4", "nvidia-mixed"):
        (outp / "hf_quant_config.json").write_text(json.dumps(hf_quant_config(a, fmt), indent=2), encoding="utf-8")

    plan = tensor_plan(a, fmt, always_accept)
    n = len(plan)
    files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map = {s.name: files[i] for i, (_, specs) in enumerate(plan) for s in specs}
    total = sum(s.nbytes for _, specs in plan for s in specs)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (outp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")

    workers = workers or min(os.cpu_count() or 1, n, 16)
    jobs = [(str(outp / files[i]), specs, seed * 100_003 + i) for i, (_, specs) in enumerate(plan)]
    written = 0
    if workers <= 1:
        for job in jobs:
            written += write_shard(*job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for size in ex.map(write_shard, *zip(*jobs)):
                written += size
    secs = time.perf_counter() - t0
    return Result(str(outp), fmt, scale, a.layers, n, len(weight_map), total, secs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=FORMATS, default="nvfp4")
    p.add_argument("--scale", choices=SCALES, default="full")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: 40 full, 4 tiny)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: cores, max 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--always-accept", action="store_true",
                   help="zero lm_head: every logit equal, so greedy MTP drafts are always accepted")
    p.add_argument("--dry-run", action="store_true", help="print the planned size only")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    a = arch_for(args.scale, args.layers)
    if args.dry_run:
        size = planned_bytes(a, args.format)
        print(json.dumps({"format": args.format, "scale": args.scale, "layers": a.layers, "bytes": size})
              if args.json else f"{args.format} {args.scale} layers={a.layers}: {size} bytes ({size / 1e9:.2f} GB)")
        return 0
    free = _free_bytes(args.out)
    need = planned_bytes(a, args.format)
    if free is not None and need > free:
        print(f"error: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free under {args.out}; "
              f"hint: use --layers N for a shallower checkpoint", file=sys.stderr)
        return 2
    r = build_checkpoint(args.out, args.format, args.scale, args.layers, args.workers, args.seed,
                         always_accept=args.always_accept)
    if args.json:
        print(json.dumps({**asdict(r), "gb_per_s": round(r.gb_per_s, 3)}))
    else:
        print(f"wrote {r.out}: {r.fmt} {r.scale} layers={r.layers}, {r.shards} shards, {r.tensors} tensors, "
              f"{r.total_bytes} bytes in {r.seconds:.1f} s ({r.gb_per_s:.2f} GB/s)")
    return 0


def _free_bytes(path: str) -> int | None:
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


if __name__ == "__main__":
    sys.exit(main())
