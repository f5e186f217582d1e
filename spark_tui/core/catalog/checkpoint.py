"""Offline checkpoint verification: are all shards there and whole, how is it quantized, has it an MTP head.

Pure stdlib (json + struct + fnmatch): no torch, no safetensors import. A safetensors file is
`<u64 little-endian header length N><N bytes of JSON header><data>`, and every tensor entry in the header
carries `data_offsets: [begin, end]` relative to the start of the data, so a complete file is exactly
`8 + N + max(end)` bytes long. That catches truncated downloads without reading the data.

What is read, and where vLLM reads it (vLLM v0.26.0 `vllm/<path>:<line>`): config.json's
`quantization_config` first, `hf_quant_config.json` only when config.json has none
(`transformers_utils/config.py:756-767`), except that a ModelOpt MIXED_PRECISION config.json without
`quantized_layers` takes them from hf_quant_config.json (`model_executor/model_loader/weight_utils.py:281-291`).

| `format` | recognised by | vLLM method (`quant_method`) |
|---|---|---|
| `modelopt_mixed` | ModelOpt `quant_algo MIXED_PRECISION` + per-layer `quantized_layers` | `modelopt_mixed` |
| `modelopt_fp4` | ModelOpt `quant_algo NVFP4` (W4A4) or `W4A16_NVFP4` for every quantized layer | `modelopt_fp4` |
| `modelopt_fp8` | ModelOpt `quant_algo FP8`, `FP8_PER_CHANNEL_PER_TOKEN`, `FP8_PB_WO` | `modelopt` |
| `compressed-tensors-nvfp4` | compressed-tensors, NVFP4 groups only (4-bit float weights, group 16) | `compressed-tensors` |
| `compressed-tensors-nvfp4-fp8` | compressed-tensors with NVFP4 and FP8 groups | `compressed-tensors` |
| `compressed-tensors-fp8` | compressed-tensors with 8-bit float weights only | `compressed-tensors` |
| `fp8` | `quant_method: fp8` (Qwen's FP8, 128x128 blocks) | `fp8` |
| `bf16` | no quantization config | none |

Per part of the model it reports the precision vLLM will run (`experts`, `shared_expert`, `attention` =
full-attention q/k/v/o, `deltanet` = Gated DeltaNet in_proj_qkv/in_proj_z/out_proj, `lm_head`, `mtp`):
`W4A4_NVFP4`, `W4A16_NVFP4`, `FP8_TENSOR`, `FP8_CHANNEL`, `FP8_BLOCK`, `BF16`, ... The expert scheme
is what picks the MoE kernel (`spark_tui/core/catalog/kernel_paths.py`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_tui.errors import DownloadError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

@dataclass(frozen=True)
class SafetensorsHeader:
    header_len: int
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]

    @property
    def expected_size(self) -> int:
        end = max((int(t["data_offsets"][1]) for t in self.tensors.values()), default=0)
        return 8 + self.header_len + end


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read the 8-byte length and the JSON header of a safetensors file (never the tensor data)."""
    p = Path(path)
    with p.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise DownloadError(f"{p}: not a safetensors file (shorter than 8 bytes)", "re-download it")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 1024 * 1024:  # the format caps headers at 100 MB
            raise DownloadError(f"{p}: not a safetensors file (header length {n})", "re-download it")
        blob = f.read(n)
    if len(blob) < n:
        raise DownloadError(f"{p}: truncated inside its header ({len(blob)} of {n} bytes)", "re-download it")
    try:
        header = json.loads(blob)
    except ValueError as e:
        raise DownloadError(f"{p}: unreadable safetensors header ({e})", "re-download it") from e
    meta = header.pop("__metadata__", {}) or {}
    return SafetensorsHeader(header_len=n, tensors=header, metadata=meta)


@dataclass(frozen=True)
class ShardCheck:
    name: str
    expected_size: int | None  # from the header; None when the file is missing or unreadable
    actual_size: int | None
    problem: str | None = None  # None: the shard is complete

    @property
    def ok(self) -> bool:
        return self.problem is None


# format families: a format the plan did not expect is reported as a warning (the plan's memory, KV and
# kernel predictions were made for another checkpoint); inside one family the precision is the same.
FAMILY = {
    "modelopt_mixed": "nvfp4",
    "modelopt_fp4": "nvfp4",
    "compressed-tensors-nvfp4": "nvfp4",
    "compressed-tensors-nvfp4-fp8": "nvfp4",
    "nvfp4": "nvfp4",
    "modelopt_fp8": "fp8",
    "compressed-tensors-fp8": "fp8",
    "fp8": "fp8",
    "bf16": "bf16",
    "fp16": "bf16",
}

# vLLM v0.26.0 model_executor/layers/quantization/modelopt.py:105-121 (QUANT_ALGOS): what ModelOpt
# configs vLLM accepts; anything else raises "ModelOpt currently only supports: ...".
MODELOPT_ALGOS = ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8",
                  "MIXED_PRECISION")
# per-layer algos ModelOptMixedPrecisionConfig.get_quant_method dispatches (modelopt.py:2508-2566); a layer
# with any other algo is left unquantized and its packed weights cannot load into it.
MIXED_LAYER_ALGOS = ("FP8", "NVFP4", "W4A16_NVFP4", "MXFP8")
_MODELOPT_SCHEME = {"NVFP4": "W4A4_NVFP4", "W4A16_NVFP4": "W4A16_NVFP4", "FP8": "FP8_TENSOR",
                    "FP8_PER_CHANNEL_PER_TOKEN": "FP8_CHANNEL", "FP8_PB_WO": "FP8_BLOCK_WO", "MXFP8": "MXFP8"}
PARTS = ("experts", "shared_expert", "attention", "deltanet", "lm_head", "mtp")
NOT_VERIFIED = "not verified"


@dataclass(frozen=True)
class QuantInfo:
    format: str  # see the module table
    detail: str  # e.g. "ModelOpt quant_algo MIXED_PRECISION, kv_cache_quant_algo FP8"
    source: str  # the file and key it was read from
    kv_cache_quant_algo: str | None = None  # as the checkpoint declares it (either file)
    quant_method: str = "none"  # the method vLLM resolves (modelopt_mixed, modelopt_fp4, compressed-tensors, fp8...)
    experts: str = NOT_VERIFIED  # routed experts: W4A4_NVFP4 | W4A16_NVFP4 | FP8_BLOCK | FP8_TENSOR | BF16 ...
    shared_expert: str = NOT_VERIFIED
    attention: str = NOT_VERIFIED  # full-attention q/k/v/o
    deltanet: str = NOT_VERIFIED  # Gated DeltaNet in_proj_qkv / in_proj_z / out_proj
    lm_head: str = NOT_VERIFIED
    mtp: str = NOT_VERIFIED  # the MTP head (its experts), from the config; verify_checkpoint reads the tensors
    group_size: int | None = None
    kv_cache_dtype_auto: str = "auto"  # what --kv-cache-dtype auto becomes in vLLM: fp8 | auto (model dtype)
    kv_note: str = ""
    ignore: tuple[str, ...] = ()  # the ignore / exclude list vLLM reads
    layer_algos: dict[str, int] = field(default_factory=dict, compare=False)  # MIXED_PRECISION: algo -> count
    not_loadable: str = ""  # non-empty: why vLLM cannot load it (with the vLLM file:line)

    def parts(self) -> dict[str, str]:
        return {p: getattr(self, p) for p in PARTS}


@dataclass(frozen=True)
class CheckpointReport:
    path: str
    shards: tuple[ShardCheck, ...]
    quant: QuantInfo
    has_mtp: bool
    mtp_detail: str
    tensor_count: int
    total_bytes: int
    problems: tuple[str, ...] = ()  # completeness / loadability refusals
    warnings: tuple[str, ...] = ()
    mtp_dtype: str | None = None  # from the MTP tensors' dtypes (BF16, FP8, NVFP4) when present
    kv_cache_scales: bool | None = None  # k_scale / v_scale tensors present

    @property
    def complete(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        q = self.quant
        return {
            "path": self.path,
            "complete": self.complete,
            "format": q.format,
            "format_detail": q.detail,
            "format_source": q.source,
            "quant_method": q.quant_method,
            "loadable": not q.not_loadable,
            "not_loadable": q.not_loadable or None,
            "experts": q.experts,
            "shared_expert": q.shared_expert,
            "attention": q.attention,
            "deltanet": q.deltanet,
            "lm_head": q.lm_head,
            "mtp": self.mtp_dtype or q.mtp,
            "group_size": q.group_size,
            "kv_cache_quant_algo": q.kv_cache_quant_algo,
            "kv_cache_dtype_auto": q.kv_cache_dtype_auto,
            "kv_cache_scales": self.kv_cache_scales,
            "kv_note": q.kv_note or None,
            "layer_algos": q.layer_algos,
            "has_mtp": self.has_mtp,
            "mtp_detail": self.mtp_detail,
            "tensor_count": self.tensor_count,
            "total_bytes": self.total_bytes,
            "shards": [
                {"name": s.name, "expected_size": s.expected_size, "actual_size": s.actual_size, "problem": s.problem}
                for s in self.shards
            ],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def _load_json(p: Path) -> dict[str, Any] | None:
    if not p.is_file():
        return None
    try:
        v = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DownloadError(f"{p}: unreadable JSON ({e})", "re-download the checkpoint's config files") from e
    return v if isinstance(v, dict) else None


# ------------------------------------------------------------------------------------- model parts
def _layer_indexes(cfg: dict[str, Any]) -> tuple[int, int]:
    """(first linear-attention layer, first full-attention layer) from the config (0 and 3 for this model)."""
    tc = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    types = tc.get("layer_types") if isinstance(tc, dict) else None
    if isinstance(types, list) and types:
        lin = next((i for i, t in enumerate(types) if t == "linear_attention"), 0)
        full = next((i for i, t in enumerate(types) if t == "full_attention"), 3)
        return lin, full
    return 0, 3


def _representatives(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Checkpoint module names standing for each part (both prefixes vLLM maps between)."""
    lin, full = _layer_indexes(cfg)
    out: dict[str, list[str]] = {}
    for pre in ("model.language_model.layers", "model.layers"):
        out.setdefault("experts", []).append(f"{pre}.{lin}.mlp.experts.0.gate_proj")
        out.setdefault("shared_expert", []).append(f"{pre}.{lin}.mlp.shared_expert.gate_proj")
        out.setdefault("attention", []).append(f"{pre}.{full}.self_attn.q_proj")
        out.setdefault("deltanet", []).append(f"{pre}.{lin}.linear_attn.in_proj_qkv")
    out["lm_head"] = ["lm_head"]
    out["mtp"] = ["mtp.layers.0.mlp.experts.0.gate_proj", "mtp.fc"]
    return out


def _modelopt_excluded(name: str, patterns: list[str]) -> bool:
    """ModelOpt exclude_modules / ignore: exact, substring (older exports) or fnmatch wildcard
    (vLLM v0.26.0 modelopt.py:145-182)."""
    for p in patterns:
        if not isinstance(p, str):
            continue
        if p == name or (not any(ch in p for ch in "*?[") and p in name) or fnmatch.fnmatch(name, p):
            return True
        if p.endswith("*") and not p.endswith(".*") and fnmatch.fnmatch(name, p[:-1] + ".*"):
            return True
    return False


def _part_of(key: str) -> str | None:
    k = key.lower()
    if k == "lm_head" or k.endswith(".lm_head"):
        return "lm_head"
    if k.startswith("mtp") or ".mtp." in k:
        return "mtp"
    if ".shared_expert." in k or k.endswith(".shared_expert"):
        return "shared_expert"
    if ".mlp.experts" in k:
        return "experts"
    if ".self_attn." in k:
        return "attention"
    if ".linear_attn." in k and not k.endswith(("in_proj_a", "in_proj_b", "in_proj_ba")):
        return "deltanet"
    return None


def _one(algos: set[str]) -> str:
    if not algos:
        return "BF16"
    if len(algos) == 1:
        return next(iter(algos))
    return "mixed (" + ", ".join(sorted(algos)) + ")"


def _kv_from(cfg_qc: dict[str, Any] | None, hq: dict[str, Any] | None) -> tuple[str | None, str, str]:
    """(declared kv algo, what --kv-cache-dtype auto resolves to, note). vLLM resolves "auto" from the
    quantization config it read (vLLM v0.26.0 utils/torch_utils.py:310-399)."""
    def algo_of(q: dict[str, Any] | None) -> str | None:
        if not isinstance(q, dict):
            return None
        inner: dict[str, Any] = q["quantization"] if isinstance(q.get("quantization"), dict) else q
        v = inner.get("kv_cache_scheme") or q.get("kv_cache_scheme") or inner.get("kv_cache_quant_algo") \
            or q.get("kv_cache_quant_algo")
        if isinstance(v, dict):
            if v.get("type") == "float" and v.get("num_bits") == 8:
                return "FP8"
            if v.get("type") == "float" and v.get("num_bits") == 4:
                return "NVFP4"
            return f"{v.get('type')}{v.get('num_bits')}"
        return str(v).upper() if v else None

    read = cfg_qc if cfg_qc is not None else hq
    in_read = algo_of(read)
    declared = in_read or algo_of(hq)
    auto = in_read.lower() if in_read in ("FP8", "NVFP4") else "auto"
    note = ""
    if declared and not in_read:
        note = (f"kv_cache_quant_algo {declared} is only in hf_quant_config.json; vLLM reads config.json's "
                "quantization_config, so --kv-cache-dtype auto keeps the model dtype (pass --kv-cache-dtype "
                f"{declared.lower()} for a {declared} cache)")
    return declared, auto, note


def _modelopt(qc: dict[str, Any], hq: dict[str, Any] | None, cfg: dict[str, Any], source: str,
              cfg_qc: dict[str, Any] | None) -> QuantInfo:
    inner: dict[str, Any] = qc["quantization"] if isinstance(qc.get("quantization"), dict) else qc
    algo = str(inner.get("quant_algo") or "").upper()
    kv, kv_auto, kv_note = _kv_from(cfg_qc, hq)
    excl = inner.get("exclude_modules") if "quantization" in qc else qc.get("ignore")
    excl = [x for x in (excl or []) if isinstance(x, str)]
    detail = f"ModelOpt quant_algo {algo or '?'}" + (f", kv_cache_quant_algo {kv}" if kv else "")
    common: dict[str, Any] = dict(kv_cache_quant_algo=kv, kv_cache_dtype_auto=kv_auto, kv_note=kv_note,
                                  ignore=tuple(excl))
    if algo not in MODELOPT_ALGOS:
        return QuantInfo(f"modelopt-{algo.lower() or 'unknown'}", detail, source, quant_method="modelopt",
                         not_loadable=f"ModelOpt quant_algo {algo or '(missing)'} is not one vLLM loads ("
                                      f"{', '.join(MODELOPT_ALGOS)}; vLLM v0.26.0 model_executor/layers/"
                                      "quantization/modelopt.py:105-121, 354-360)", **common)
    reps = _representatives(cfg)
    if algo == "MIXED_PRECISION":
        layers = inner.get("quantized_layers") or qc.get("quantized_layers")
        if not layers and hq is not None:
            layers = (hq.get("quantization") or {}).get("quantized_layers")
        if not isinstance(layers, dict) or not layers:
            return QuantInfo("modelopt_mixed", detail, source, quant_method="modelopt_mixed",
                             not_loadable="MIXED_PRECISION without a 'quantized_layers' map in config.json or "
                                          "hf_quant_config.json (vLLM v0.26.0 modelopt.py:2351-2356)", **common)
        counts: dict[str, int] = {}
        per_part: dict[str, set[str]] = {p: set() for p in PARTS}
        groups: set[int] = set()
        for key, info in layers.items():
            a = str((info or {}).get("quant_algo") or "").upper()
            counts[a] = counts.get(a, 0) + 1
            if isinstance((info or {}).get("group_size"), int):
                groups.add(info["group_size"])
            part = _part_of(key)
            if part:
                per_part[part].add(_MODELOPT_SCHEME.get(a, a))
        bad = sorted(a for a in counts if a not in MIXED_LAYER_ALGOS)
        parts: dict[str, Any] = {p: _one(per_part[p]) for p in PARTS}
        if any(_modelopt_excluded(n, excl) for n in reps["mtp"]) and not per_part["mtp"]:
            parts["mtp"] = "BF16"
        detail += ", per layer " + ", ".join(f"{a} x{n}" for a, n in sorted(counts.items()))
        return QuantInfo("modelopt_mixed", detail, source + " + quantized_layers", quant_method="modelopt_mixed",
                         group_size=min(groups) if groups else None, layer_algos=counts,
                         not_loadable=(f"per-layer quant_algo {', '.join(bad)} is not dispatched by vLLM's "
                                       "ModelOptMixedPrecisionConfig (FP8, NVFP4, W4A16_NVFP4, MXFP8; vLLM v0.26.0 "
                                       "modelopt.py:2508-2566)") if bad else "",
                         **parts, **common)
    scheme = _MODELOPT_SCHEME[algo]
    if algo == "NVFP4":  # vLLM >= 0.32 routes an NVFP4 config whose groups carry no activations to W4A16
        cg = qc.get("config_groups")
        if isinstance(cg, dict) and cg and all(isinstance(g, dict) and g.get("input_activations") is None
                                               for g in cg.values()):
            scheme = "W4A16_NVFP4"
            detail += " (config_groups without input_activations: weight-only, read as W4A16 by vLLM 0.32+)"
    parts = {p: ("BF16" if any(_modelopt_excluded(n, excl) for n in names) else scheme) for p, names in reps.items()}
    gs = inner.get("group_size")
    missing = []
    if "NVFP4" in algo and "quantization" in qc:
        missing = [k for k in ("group_size", "kv_cache_quant_algo", "exclude_modules") if k not in inner]
    method = "modelopt_fp4" if "NVFP4" in algo else ("modelopt_mxfp8" if algo == "MXFP8" else "modelopt")
    fmt = "modelopt_fp4" if "NVFP4" in algo else ("modelopt_mxfp8" if algo == "MXFP8" else "modelopt_fp8")
    return QuantInfo(fmt, detail, source, quant_method=method, group_size=gs if isinstance(gs, int) else
                     (16 if "NVFP4" in algo else None),
                     not_loadable=(f"hf_quant_config.json lacks {', '.join(missing)}, which vLLM requires for NVFP4 "
                                   "(vLLM v0.26.0 modelopt.py:1093-1105)") if missing else "",
                     **parts, **common)


def _ct_args_scheme(w: dict[str, Any], a: dict[str, Any] | None) -> str:
    """A compressed-tensors (weights, input_activations) pair as a scheme name (vLLM v0.26.0
    compressed_tensors.py:404-421 `_is_nvfp4_format`, 722-745)."""
    if not isinstance(w, dict):
        return NOT_VERIFIED
    typ, bits, gs = w.get("type"), w.get("num_bits"), w.get("group_size")
    if typ == "float" and bits == 4 and gs == 16:
        if not a:
            return "W4A16_NVFP4"
        if a.get("type") == "float" and a.get("num_bits") == 4:
            return "W4A4_NVFP4"
        return "NVFP4 weights with non-NVFP4 activations"
    if typ == "float" and bits == 8:
        strat = str(w.get("strategy") or "tensor").lower()
        return {"channel": "FP8_CHANNEL", "block": "FP8_BLOCK", "tensor": "FP8_TENSOR"}.get(strat, f"FP8_{strat.upper()}")
    if typ == "int":
        return f"W{bits}A{(a or {}).get('num_bits', 16)}_INT"
    return f"{typ}{bits}"


def _ct_matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


def _compressed_tensors(qc: dict[str, Any], cfg: dict[str, Any], source: str) -> QuantInfo:
    fmt_global = str(qc.get("format") or "")
    groups: dict[str, Any] = qc["config_groups"] if isinstance(qc.get("config_groups"), dict) else {}
    ignore = [x for x in (qc.get("ignore") or []) if isinstance(x, str)]
    kv, kv_auto, kv_note = _kv_from(qc, None)
    kv_auto = "auto"  # the compressed-tensors KV scheme loads its scales, but "auto" stays the model dtype
    group_schemes: list[tuple[list[str], str]] = []
    for g in groups.values():
        if not isinstance(g, dict):
            continue
        targets = [t for t in (g.get("targets") or []) if isinstance(t, str)]
        group_schemes.append((targets, _ct_args_scheme(g.get("weights") or {}, g.get("input_activations"))))
    schemes = {s for _, s in group_schemes}
    nv = {s for s in schemes if "NVFP4" in s}
    f8 = {s for s in schemes if s.startswith("FP8")}
    if fmt_global.startswith("nvfp4"):
        nv = nv or {"W4A4_NVFP4"}
    if nv and f8:
        fmt = "compressed-tensors-nvfp4-fp8"
    elif nv:
        fmt = "compressed-tensors-nvfp4"
    elif f8 or fmt_global == "float-quantized":
        fmt = "compressed-tensors-fp8"
    else:
        fmt = "compressed-tensors-other"

    def scheme_of(names: list[str]) -> str:
        if any(any(_ct_matches(n, t) for t in ignore) for n in names):
            return "BF16"
        for targets, sch in group_schemes:  # explicit names / regexes before the "Linear" class target
            if any(t != "Linear" and _ct_matches(n, t) for t in targets for n in names):
                return sch
        for targets, sch in group_schemes:
            if "Linear" in targets:
                return sch
        return "BF16"

    parts: dict[str, Any] = {p: scheme_of(names) for p, names in _representatives(cfg).items()}
    detail = f"format {fmt_global or '?'}, groups: " + (", ".join(sorted(schemes)) or "none")
    gss = {g.get("weights", {}).get("group_size") for g in groups.values() if isinstance(g, dict)}
    gs = min((x for x in gss if isinstance(x, int)), default=None)
    return QuantInfo(fmt, detail, source, kv, quant_method="compressed-tensors", group_size=gs,
                     kv_cache_dtype_auto=kv_auto, kv_note=kv_note, ignore=tuple(ignore), **parts)


def _fp8(qc: dict[str, Any], cfg: dict[str, Any], source: str) -> QuantInfo:
    block = qc.get("weight_block_size")
    scheme = "FP8_BLOCK" if block else "FP8_TENSOR"
    skip = [x for x in (qc.get("modules_to_not_convert") or qc.get("ignored_layers") or []) if isinstance(x, str)]
    parts: dict[str, Any] = {p: ("BF16" if any(any(s in n for s in skip) for n in names) else scheme)
                             for p, names in _representatives(cfg).items()}
    detail = f"fp8 {qc.get('fmt', '')} activation_scheme {qc.get('activation_scheme', '?')} block {block}"
    return QuantInfo("fp8", " ".join(detail.split()), source, quant_method="fp8",
                     group_size=block[0] if isinstance(block, list) and block else None, ignore=tuple(skip), **parts)


def detect_quantization(model_dir: str | os.PathLike[str]) -> QuantInfo:
    """How the checkpoint is quantized, read as vLLM reads it (config.json first, hf_quant_config.json)."""
    d = Path(model_dir)
    hq = _load_json(d / "hf_quant_config.json")
    cfg = _load_json(d / "config.json") or {}
    qc = cfg.get("quantization_config")
    if qc is None and isinstance(cfg.get("text_config"), dict):
        qc = cfg["text_config"].get("quantization_config")
    cfg_qc = qc if isinstance(qc, dict) else None
    if cfg_qc is None and hq is not None and isinstance(hq.get("quantization"), dict):
        return _modelopt(hq, hq, cfg, "hf_quant_config.json quantization", None)
    if cfg_qc is None:
        bf16: dict[str, Any] = dict.fromkeys(PARTS, "BF16")
        return QuantInfo("bf16", f"no quantization config (dtype {cfg.get('torch_dtype') or cfg.get('dtype') or '?'})",
                         "config.json", quant_method="none", **bf16)
    method = str(cfg_qc.get("quant_method") or "").lower()
    if method.startswith("modelopt"):
        return _modelopt(cfg_qc, hq, cfg, "config.json quantization_config", cfg_qc)
    if method == "compressed-tensors":
        return _compressed_tensors(cfg_qc, cfg, "config.json quantization_config")
    if method == "fp8":
        return _fp8(cfg_qc, cfg, "config.json quantization_config")
    return QuantInfo(method or "unknown", f"quant_method {method or '?'}", "config.json quantization_config",
                     quant_method=method or "unknown",
                     not_loadable="" if method else "quantization_config has no quant_method (vLLM v0.26.0 "
                                                   "config/model.py:1043)")


def _mtp_layers(cfg: dict[str, Any]) -> int:
    for c in (cfg, cfg.get("text_config") or {}):
        for k in ("mtp_num_hidden_layers", "num_nextn_predict_layers"):
            v = c.get(k) if isinstance(c, dict) else None
            if isinstance(v, int):
                return v
    return 0


def format_compatible(detected: str, expected: str) -> str | None:
    """None when they agree; "same-precision" inside one family; "other-precision" otherwise. Neither stops
    vLLM from loading the checkpoint: the plan's predictions were made for the expected one."""
    if detected == expected:
        return None
    fd, fe = FAMILY.get(detected), FAMILY.get(expected)
    if fd is not None and fd == fe:
        return "same-precision"
    return "other-precision"


def quantization_flag_problem(quant: QuantInfo, flag: str | None) -> str | None:
    """Why `vllm serve --quantization FLAG` fails on this checkpoint, or None. vLLM lets a ModelOpt
    checkpoint's own method override a user's value (config/model.py:1043-1110 override scan) and otherwise
    raises "Quantization method specified in the model config (...) does not match ..."."""
    if not flag or quant.quant_method in ("none", flag) or quant.quant_method.startswith("modelopt"):
        return None
    return (f"--quantization {flag} does not match the checkpoint's {quant.quant_method}: vLLM refuses with "
            "\"Quantization method specified in the model config does not match\" (vLLM v0.26.0 "
            "config/model.py:1105-1112)")


_DTYPE_PRECISION = {"BF16": "BF16", "F16": "FP16", "F32": "FP32", "F8_E4M3": "FP8", "U8": "NVFP4 (packed)"}


def _mtp_dtype(tensors: dict[str, str]) -> str | None:
    """The MTP head's expert precision from the tensor dtypes (safetensors headers)."""
    for n, dt in sorted(tensors.items()):
        if (n.startswith("mtp.") or ".mtp." in n) and ".mlp.experts" in n and (
                n.endswith((".weight", ".weight_packed", "gate_up_proj", "down_proj"))):
            return _DTYPE_PRECISION.get(dt, dt)
    for n, dt in sorted(tensors.items()):
        if (n.startswith("mtp.") or ".mtp." in n) and n.endswith(".weight") and "norm" not in n:
            return _DTYPE_PRECISION.get(dt, dt)
    return None


def resolve_model_dir(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory, or a HF cache repo folder (`models--org--name`) resolved to its snapshot."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DownloadError(f"checkpoint directory {p} does not exist",
                            "give --model-path a local checkpoint folder, or download it: spark-tui download")
    if (p / "snapshots").is_dir() and p.name.startswith("models--"):
        ref = p / "refs" / "main"
        snaps = p / "snapshots"
        if ref.is_file() and (snaps / ref.read_text().strip()).is_dir():
            return snaps / ref.read_text().strip()
        found = sorted(snaps.iterdir(), key=lambda s: s.stat().st_mtime) if snaps.is_dir() else []
        if found:
            return found[-1]
        raise DownloadError(f"{p} is a Hugging Face cache folder with no snapshot", "run spark-tui download again")
    return p


def verify_checkpoint(path: str | os.PathLike[str], expected_format: str | None = None,
                      quantization_flag: str | None = None) -> CheckpointReport:
    """Completeness (every shard named by the index exists and has its header-computed size), how it is
    quantized, MTP. Problems (refusals) are what vLLM cannot load: missing or truncated files, a
    quantization config vLLM rejects, a `--quantization` value that contradicts the checkpoint. A format
    other than the plan's `expected_format` is a warning."""
    d = resolve_model_dir(path)
    problems: list[str] = []
    warnings: list[str] = []
    cfg = _load_json(d / "config.json")
    if cfg is None:
        problems.append("config.json is missing")
        cfg = {}
    index = _load_json(d / INDEX_NAME)
    weight_map: dict[str, str] = {}
    if index is not None:
        weight_map = dict(index.get("weight_map") or {})
        shard_names = sorted(set(weight_map.values()))
        if not shard_names:
            problems.append(f"{INDEX_NAME} has an empty weight_map")
    elif (d / SINGLE_NAME).is_file():
        shard_names = [SINGLE_NAME]
    else:
        shard_names = sorted(x.name for x in d.glob("*.safetensors"))
        if not shard_names:
            problems.append(f"no {INDEX_NAME} and no *.safetensors files")
        elif len(shard_names) > 1:
            warnings.append(f"no {INDEX_NAME}: checked the {len(shard_names)} *.safetensors files present")

    shards: list[ShardCheck] = []
    tensor_names: set[str] = set()
    dtypes: dict[str, str] = {}
    total = 0
    for name in shard_names:
        f = d / name
        if not f.is_file():
            shards.append(ShardCheck(name, None, None, "missing"))
            problems.append(f"shard {name} is missing")
            continue
        actual = f.stat().st_size
        try:
            h = read_safetensors_header(f)
        except DownloadError as e:
            shards.append(ShardCheck(name, None, actual, e.message))
            problems.append(f"shard {name}: {e.message}")
            continue
        exp = h.expected_size
        total += actual
        tensor_names.update(h.tensors)
        dtypes.update({k: str(v.get("dtype")) for k, v in h.tensors.items() if isinstance(v, dict)})
        if actual != exp:
            what = "truncated" if actual < exp else "longer than its header says"
            shards.append(ShardCheck(name, exp, actual, f"{what}: {actual} bytes, header says {exp}"))
            problems.append(f"shard {name} is {what} ({actual:,} of {exp:,} bytes)")
        else:
            shards.append(ShardCheck(name, exp, actual))
    if weight_map:
        # tensors the index promises in a shard that the shard's header does not contain
        in_ok = {s.name for s in shards if s.ok}
        lost = [t for t, s in weight_map.items() if s in in_ok and t not in tensor_names]
        if lost:
            problems.append(f"{len(lost)} tensors named by the index are absent from their shards (e.g. {lost[0]})")

    quant = detect_quantization(d)
    if quant.not_loadable:
        problems.append(f"vLLM cannot load this quantization ({quant.detail}): {quant.not_loadable}")
    flag = quantization_flag_problem(quant, quantization_flag)
    if flag:
        problems.append(flag)
    if expected_format:
        verdict = format_compatible(quant.format, expected_format)
        if verdict == "other-precision":
            warnings.append(f"checkpoint format is {quant.format} ({quant.detail}) but the plan was made for "
                            f"{expected_format}: vLLM loads it, but the plan's memory, KV cache and MoE kernel "
                            "predictions do not apply (plan again for this checkpoint)")
        elif verdict == "same-precision":
            warnings.append(f"checkpoint format is {quant.format}, the plan expects {expected_format} "
                            f"(same precision, different encoding: kernels may differ)")
    if quant.kv_note:
        warnings.append(quant.kv_note)

    names = set(weight_map) or tensor_names
    mtp_tensors = sum(1 for t in names if t.startswith("mtp.") or ".mtp." in t)
    layers = _mtp_layers(cfg)
    if mtp_tensors and layers:
        mtp_detail = f"{mtp_tensors} mtp.* tensors, mtp_num_hidden_layers {layers}"
    elif mtp_tensors:
        mtp_detail = f"{mtp_tensors} mtp.* tensors (config has no mtp_num_hidden_layers)"
    elif layers:
        mtp_detail = f"config says mtp_num_hidden_layers {layers} but no mtp.* tensors are present"
        warnings.append("the config declares an MTP head but the weights have none: MTP speculative decoding will fail")
    else:
        mtp_detail = "no MTP head"
    kv_scales = any(t.endswith((".k_scale", ".v_scale", ".kv_scale")) for t in names) if names else None
    return CheckpointReport(
        path=str(d), shards=tuple(shards), quant=quant, has_mtp=mtp_tensors > 0, mtp_detail=mtp_detail,
        tensor_count=len(names), total_bytes=total, problems=tuple(problems), warnings=tuple(warnings),
        mtp_dtype=_mtp_dtype(dtypes), kv_cache_scales=kv_scales,
    )


def require_complete(report: CheckpointReport) -> None:
    """Raise DownloadError (exit 7) naming the first problems when the checkpoint is not usable."""
    if report.complete:
        return
    shown = "; ".join(report.problems[:3]) + (f" (+{len(report.problems) - 3} more)" if len(report.problems) > 3 else "")
    if any("shard" in p or "missing" in p for p in report.problems):
        hint = "re-run `spark-tui download` to fetch the missing or truncated files (finished files are kept)"
    elif any("--quantization" in p for p in report.problems):
        hint = "drop --quantization (vLLM reads the method from the checkpoint) or plan for this checkpoint"
    else:
        hint = "use a checkpoint vLLM can load (see `spark-tui checkpoints`) or a vLLM release that supports this one"
    raise DownloadError(f"checkpoint {report.path} is not usable: {shown}", hint)

