"""Offline checkpoint verification: are all shards there and whole, what quantization is it, has it an MTP head.

Pure stdlib (json + struct): no torch, no safetensors import. A safetensors file is
`<u64 little-endian header length N><N bytes of JSON header><data>`, and every tensor entry in the header
carries `data_offsets: [begin, end]` relative to the start of the data, so a complete file is exactly
`8 + N + max(end)` bytes long. That catches truncated downloads without reading the data.

Quantization formats (the names `CheckpointRef.format` uses):

| format | how it is recognised | vLLM method |
|---|---|---|
| `modelopt_fp4` | `hf_quant_config.json` `quantization.quant_algo` NVFP4 / W4A16_NVFP4, or config.json `quantization_config` `quant_method: modelopt` with that `quant_algo` | `modelopt_fp4` (FACTS.md §1) |
| `modelopt_fp8` | the same places with `quant_algo` FP8 (FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO) | `modelopt` |
| `compressed-tensors-nvfp4` | config.json `quantization_config.quant_method: compressed-tensors` with `format` `nvfp4-pack-quantized`, or a config group whose weights are `num_bits 4, type float, group_size 16` | `compressed-tensors` |
| `compressed-tensors-fp8` | compressed-tensors with 8-bit float weights (`float-quantized`) | `compressed-tensors` |
| `fp8` | config.json `quantization_config.quant_method: fp8` (e.g. Qwen's official FP8) | `fp8` |
| `bf16` | no quantization config | none |
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_tui.errors import DownloadError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# format families: a mismatch inside one family (e.g. modelopt_fp4 vs compressed-tensors-nvfp4) is a
# warning (same precision, different encoding and kernels); across families it is a refusal.
FAMILY = {
    "modelopt_fp4": "nvfp4",
    "compressed-tensors-nvfp4": "nvfp4",
    "nvfp4": "nvfp4",
    "modelopt_fp8": "fp8",
    "compressed-tensors-fp8": "fp8",
    "fp8": "fp8",
    "bf16": "bf16",
    "fp16": "bf16",
}


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


@dataclass(frozen=True)
class QuantInfo:
    format: str  # see the module table
    detail: str  # e.g. "quant_algo NVFP4, kv_cache_quant_algo FP8"
    source: str  # the file and key it was read from
    kv_cache_quant_algo: str | None = None


@dataclass(frozen=True)
class CheckpointReport:
    path: str
    shards: tuple[ShardCheck, ...]
    quant: QuantInfo
    has_mtp: bool
    mtp_detail: str
    tensor_count: int
    total_bytes: int
    problems: tuple[str, ...] = ()  # completeness / format refusals
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "complete": self.complete,
            "format": self.quant.format,
            "format_detail": self.quant.detail,
            "format_source": self.quant.source,
            "kv_cache_quant_algo": self.quant.kv_cache_quant_algo,
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


def _modelopt_format(algo: str) -> str | None:
    a = algo.upper()
    if "NVFP4" in a:  # NVFP4, W4A16_NVFP4 (and mixed NVFP4 variants) load as modelopt_fp4
        return "modelopt_fp4"
    if a.startswith("FP8"):
        return "modelopt_fp8"
    return None


def _compressed_tensors_format(qc: dict[str, Any]) -> tuple[str, str] | None:
    fmt = str(qc.get("format") or "")
    groups = qc.get("config_groups") or {}
    bits = set()
    for g in groups.values() if isinstance(groups, dict) else ():
        w = (g or {}).get("weights") or {}
        if w.get("type") == "float" and w.get("num_bits") == 4 and w.get("group_size") == 16:
            bits.add("nvfp4")
        elif w.get("type") == "float" and w.get("num_bits") == 8:
            bits.add("fp8")
    if fmt.startswith("nvfp4") or "nvfp4" in bits:
        extra = " + FP8 groups" if "fp8" in bits else ""
        return "compressed-tensors-nvfp4", f"format {fmt or '?'}, NVFP4 weights (4-bit float, group 16){extra}"
    if "fp8" in bits or fmt == "float-quantized":
        return "compressed-tensors-fp8", f"format {fmt or '?'}, FP8 weights"
    return None


def detect_quantization(model_dir: str | os.PathLike[str]) -> QuantInfo:
    """Quantization format from `hf_quant_config.json` and/or config.json `quantization_config`."""
    d = Path(model_dir)
    hq = _load_json(d / "hf_quant_config.json")
    if hq is not None:
        q = hq.get("quantization") or {}
        algo = str(q.get("quant_algo") or "")
        fmt = _modelopt_format(algo)
        if fmt:
            kv = q.get("kv_cache_quant_algo")
            detail = f"ModelOpt quant_algo {algo}" + (f", kv_cache_quant_algo {kv}" if kv else "")
            return QuantInfo(fmt, detail, "hf_quant_config.json quantization.quant_algo", kv)
    cfg = _load_json(d / "config.json") or {}
    qc = cfg.get("quantization_config")
    if qc is None and isinstance(cfg.get("text_config"), dict):
        qc = cfg["text_config"].get("quantization_config")
    if not isinstance(qc, dict):
        return QuantInfo("bf16", f"no quantization config (torch_dtype {cfg.get('torch_dtype') or cfg.get('dtype') or '?'})",
                         "config.json")
    method = str(qc.get("quant_method") or "").lower()
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo") or "")
        fmt = _modelopt_format(algo)
        if fmt:
            kv = qc.get("kv_cache_quant_algo")
            detail = f"ModelOpt quant_algo {algo}" + (f", kv_cache_quant_algo {kv}" if kv else "")
            return QuantInfo(fmt, detail, "config.json quantization_config.quant_algo", kv)
        return QuantInfo(f"modelopt-{algo.lower() or 'unknown'}", f"ModelOpt quant_algo {algo or '?'}",
                         "config.json quantization_config")
    if method == "compressed-tensors":
        got = _compressed_tensors_format(qc)
        kv = (qc.get("kv_cache_scheme") or {}) if isinstance(qc.get("kv_cache_scheme"), dict) else {}
        kv_algo = f"{kv.get('type')}{kv.get('num_bits')}" if kv else None
        if got:
            return QuantInfo(got[0], got[1], "config.json quantization_config", kv_algo)
        return QuantInfo("compressed-tensors-other", f"format {qc.get('format')}", "config.json quantization_config")
    if method == "fp8":
        return QuantInfo("fp8", f"fp8 {qc.get('fmt', '')} block {qc.get('weight_block_size')}".strip(),
                         "config.json quantization_config.quant_method")
    return QuantInfo(method or "unknown", f"quant_method {method or '?'}", "config.json quantization_config")


def _mtp_layers(cfg: dict[str, Any]) -> int:
    for c in (cfg, cfg.get("text_config") or {}):
        for k in ("mtp_num_hidden_layers", "num_nextn_predict_layers"):
            v = c.get(k) if isinstance(c, dict) else None
            if isinstance(v, int):
                return v
    return 0


def format_compatible(detected: str, expected: str) -> str | None:
    """None when they agree; "warn" for the same precision in another encoding; "refuse" otherwise."""
    if detected == expected:
        return None
    fd, fe = FAMILY.get(detected), FAMILY.get(expected)
    if fd is not None and fd == fe:
        return "warn"
    return "refuse"


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


def verify_checkpoint(path: str | os.PathLike[str], expected_format: str | None = None) -> CheckpointReport:
    """Completeness (every shard named by the index exists and has its header-computed size), format, MTP."""
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
    if expected_format:
        verdict = format_compatible(quant.format, expected_format)
        if verdict == "refuse":
            problems.append(f"checkpoint format is {quant.format} ({quant.detail}) but the plan expects {expected_format}")
        elif verdict == "warn":
            warnings.append(f"checkpoint format is {quant.format}, the plan expects {expected_format} "
                            f"(same precision, different encoding: kernels may differ)")

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
    return CheckpointReport(
        path=str(d), shards=tuple(shards), quant=quant, has_mtp=mtp_tensors > 0, mtp_detail=mtp_detail,
        tensor_count=len(names), total_bytes=total, problems=tuple(problems), warnings=tuple(warnings),
    )


def require_complete(report: CheckpointReport) -> None:
    """Raise DownloadError (exit 7) naming the first problems when the checkpoint is not usable."""
    if report.complete:
        return
    shown = "; ".join(report.problems[:3]) + (f" (+{len(report.problems) - 3} more)" if len(report.problems) > 3 else "")
    hint = ("re-run `spark-tui download` to fetch the missing or truncated files (finished files are kept)"
            if any("shard" in p or "missing" in p for p in report.problems)
            else "choose a checkpoint of the plan's format, or plan for this checkpoint's format")
    raise DownloadError(f"checkpoint {report.path} is not usable: {shown}", hint)

