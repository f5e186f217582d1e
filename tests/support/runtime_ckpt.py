"""Tiny real checkpoints in the quantization layouts spark-tui recognises (written byte by byte).

safetensors layout: u64 little-endian header length, JSON header (`dtype`, `shape`, `data_offsets` per
tensor), then the data. numpy has no float8/bfloat16, so those tensors are raw bytes of the right size
(0x38 is 1.0 in float8_e4m3fn; 0x3F80 is 1.0 in bfloat16). NVFP4 weights are uint8 with two 4-bit values
per byte (the packed layout both ModelOpt and compressed-tensors export), one float8 scale per 16 values.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

DTYPE_BYTES = {"U8": 1, "F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4, "I64": 8}


def tensor(dtype: str, shape: list[int], fill: int | None = None) -> tuple[str, list[int], bytes]:
    n = int(np.prod(shape)) if shape else 1
    size = n * DTYPE_BYTES[dtype]
    if dtype == "F32":
        raw = np.ones(n, dtype=np.float32).tobytes()
    elif dtype == "BF16":
        raw = np.full(n, 0x3F80, dtype=np.uint16).tobytes()
    elif dtype == "F8_E4M3":
        raw = np.full(n, 0x38, dtype=np.uint8).tobytes()
    else:  # packed NVFP4 nibbles: 0x2 (=1.0 in e2m1) low and high
        raw = np.full(size, 0x22 if fill is None else fill, dtype=np.uint8).tobytes()
    assert len(raw) == size
    return dtype, list(shape), raw


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]], pad: bool = True) -> int:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        hb += b" " * (-len(hb) % 8)  # the safetensors writer aligns the data to 8 bytes
    data = b"".join(raw for _, _, raw in tensors.values())
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return 8 + len(hb) + len(data)


def _linear(prefix: str, fmt: str, out_f: int = 32, in_f: int = 64) -> dict:
    if fmt == "modelopt_fp4":
        return {
            f"{prefix}.weight": tensor("U8", [out_f, in_f // 2]),
            f"{prefix}.weight_scale": tensor("F8_E4M3", [out_f, in_f // 16]),
            f"{prefix}.weight_scale_2": tensor("F32", []),
            f"{prefix}.input_scale": tensor("F32", []),
        }
    if fmt == "compressed-tensors-nvfp4":
        return {
            f"{prefix}.weight_packed": tensor("U8", [out_f, in_f // 2]),
            f"{prefix}.weight_scale": tensor("F8_E4M3", [out_f, in_f // 16]),
            f"{prefix}.weight_global_scale": tensor("F32", [1]),
            f"{prefix}.input_global_scale": tensor("F32", [1]),
        }
    if fmt == "fp8":
        return {f"{prefix}.weight": tensor("F8_E4M3", [out_f, in_f]),
                f"{prefix}.weight_scale_inv": tensor("F32", [1, 1])}
    return {f"{prefix}.weight": tensor("BF16", [out_f, in_f])}


QUANT_CONFIG = {
    "modelopt_fp4": {"quant_method": "modelopt", "quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8",
                     "group_size": 16, "exclude_modules": ["lm_head", "mtp*"]},
    "compressed-tensors-nvfp4": {
        "quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                        "symmetric": True, "dynamic": False},
            "input_activations": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                                  "dynamic": "local"}}},
        "ignore": ["lm_head"]},
    "fp8": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
}


def write_tiny_checkpoint(d: Path, fmt: str = "modelopt_fp4", shards: int = 2, mtp: bool = True,
                          modelopt_in: str = "both") -> dict[str, bytes]:
    """Write config + index + shards into `d`; return {relative path: bytes} (for serving from FakeHub).

    modelopt_in: "hf_quant_config" | "config" | "both" (where the ModelOpt quant_algo is recorded)."""
    d.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
                              "hidden_size": 64, "num_hidden_layers": 2, "torch_dtype": "bfloat16"}
    if mtp:
        cfg["mtp_num_hidden_layers"] = 1
    if fmt in QUANT_CONFIG and not (fmt == "modelopt_fp4" and modelopt_in == "hf_quant_config"):
        cfg["quantization_config"] = QUANT_CONFIG[fmt]
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    if fmt == "modelopt_fp4" and modelopt_in in ("hf_quant_config", "both"):
        (d / "hf_quant_config.json").write_text(json.dumps({
            "producer": {"name": "modelopt", "version": "0.37.0"},
            "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16,
                             "exclude_modules": ["lm_head", "mtp*"]}}, indent=1))
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    (d / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    groups = []
    for layer in range(2):
        t = {f"model.layers.{layer}.input_layernorm.weight": tensor("BF16", [64])}
        t.update(_linear(f"model.layers.{layer}.mlp.experts.0.gate_proj", fmt))
        t.update(_linear(f"model.layers.{layer}.mlp.experts.0.down_proj", fmt))
        groups.append(t)
    extra = {"model.embed_tokens.weight": tensor("BF16", [128, 64]), "lm_head.weight": tensor("BF16", [128, 64])}
    if mtp:
        extra.update({"mtp.fc.weight": tensor("BF16", [64, 128]), "mtp.norm.weight": tensor("BF16", [64]),
                      "mtp.layers.0.input_layernorm.weight": tensor("BF16", [64])})
    groups[-1].update(extra)
    n = max(1, shards)
    per_shard: list[dict] = [dict() for _ in range(n)]
    for i, g in enumerate(groups):
        per_shard[min(i, n - 1)].update(g)
    weight_map = {}
    total = 0
    for i, ts in enumerate(per_shard):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors" if n > 1 else "model.safetensors"
        total += write_safetensors(d / name, ts)
        weight_map.update({k: name for k in ts})
    if n > 1:
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}, indent=1))
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
