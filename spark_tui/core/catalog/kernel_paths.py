"""Which fused-MoE kernel vLLM will run for Qwen3.6-35B-A3B's routed experts, per checkpoint and GPU.

Pure data + logic (no torch, no vLLM import). vLLM picks the MoE backend with an "oracle": a priority
list of backends, each of which accepts or rejects the (weight, activation) quantization scheme and the
current device; the first that accepts wins and vLLM logs it
("Using 'MARLIN' NvFp4 MoE backend out of potential backends: [...]"). This module replays that choice
from the oracle code read at vLLM tags **v0.26.0, v0.32.0 and v0.33.0** (the `vllm/` tree of the PyPI
wheel of each release; `source` names `vllm/<path>:<line>` at the tag), for a tensor-parallel,
single-node deployment (standard activation format, no expert parallelism, no LoRA, `--moe-backend auto`).

Expert schemes (what the checkpoint stores for the routed experts, see `spark_tui/core/catalog/checkpoint.py`):

| scheme | weight / activation key vLLM passes | checkpoints |
|---|---|---|
| `W4A4_NVFP4` | kNvfp4Static / kNvfp4Dynamic | RedHatAI, Infatoshi (compressed-tensors) |
| `W4A16_NVFP4` | kNvfp4Static / None | nvidia (ModelOpt MIXED_PRECISION) |
| `FP8_BLOCK` | kFp8Static128BlockSym / kFp8Dynamic128Sym | Qwen FP8 (`quant_method fp8`, 128x128 blocks) |
| `BF16` | None / None (unquantized oracle) | Qwen BF16; every MTP drafter head here |

Only W4A4 on a backend that feeds FP4 activations to the FP4 tensor cores (FlashInfer TRT-LLM /
CUTLASS / CuTe-DSL, vLLM CUTLASS, B12X) is "native FP4"; Marlin and Humming dequantize 4-bit weights
to 16-bit, whatever the GPU.

Versions between verified tags use the rules of the newest verified tag not after them, and say so
(`KernelPath.verified` is False); the one known difference in the range is Humming's priority over Marlin
on sm_90, first seen at v0.32.0.
"""

from __future__ import annotations

import re
from typing import Any
from dataclasses import dataclass, field

SCHEMES = ("W4A4_NVFP4", "W4A16_NVFP4", "FP8_BLOCK", "BF16")
_ALIASES = {
    "W4A4": "W4A4_NVFP4", "NVFP4": "W4A4_NVFP4", "W4A4_NVFP4": "W4A4_NVFP4",
    "W4A16": "W4A16_NVFP4", "W4A16_NVFP4": "W4A16_NVFP4", "NVFP4A16": "W4A16_NVFP4",
    "FP8": "FP8_BLOCK", "FP8_BLOCK": "FP8_BLOCK", "FP8_BLOCK128": "FP8_BLOCK",
    "BF16": "BF16", "UNQUANTIZED": "BF16", "NONE": "BF16",
}
VERIFIED = ("0.26.0", "0.32.0", "0.33.0")
MOE = "vllm/model_executor/layers/fused_moe"
NATIVE_FP4_BACKENDS = frozenset({"FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "FLASHINFER_CUTEDSL",
                                 "FLASHINFER_CUTEDSL_BATCHED", "VLLM_CUTLASS", "FLASHINFER_B12X", "B12X"})


def normalize_scheme(experts: str) -> str:
    key = re.sub(r"[\s\-]+", "_", experts.strip().upper())
    if key not in _ALIASES:
        raise ValueError(f"unknown expert scheme {experts!r}; one of {', '.join(SCHEMES)}")
    return _ALIASES[key]


def _vtuple(v: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", v.strip())
    if not m:
        raise ValueError(f"not a vLLM version: {v!r} (expected e.g. 0.33.0)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def rules_tag(vllm_version: str) -> tuple[str, bool]:
    """(the verified tag whose rules apply, whether the version is that tag exactly)."""
    tags = sorted(VERIFIED, key=_vtuple)
    if vllm_version.strip().lower() in ("nightly", "main"):  # a nightly build: the newest rules read, not verified
        return tags[-1], False
    want = _vtuple(vllm_version)
    best = tags[0]
    for t in tags:
        if _vtuple(t) <= want:
            best = t
    return best, _vtuple(best) == want


# ------------------------------------------------------------------------------------------------ gates
def _dev_ok(rule: str, sm: int) -> bool:
    """vLLM's device predicates: is_device_capability(x) (`ccX`), is_device_capability_family(x) (`famX`:
    cc // 10 == x // 10, vllm/platforms/interface.py), has_device_capability(x) (`minX`)."""
    for tok in rule.split("|"):
        if tok == "any":
            return True
        if tok == "never":
            continue
        kind, num = re.match(r"([a-z]+)(\d+)", tok).groups()  # type: ignore[union-attr]
        n = int(num)
        if (kind == "cc" and sm == n) or (kind == "fam" and sm // 10 == n // 10) or (kind == "min" and sm >= n):
            return True
    return False


@dataclass(frozen=True)
class _Gate:
    backend: str  # the enum name in the oracle
    device: str  # device rule (see _dev_ok); "never" for backends of other platforms
    schemes: dict[str, str]  # scheme -> extra device rule for that scheme ("any" when none)
    file: str
    lines: dict[str, tuple[int, int]]  # tag -> (device check line, scheme check line)
    needs: str = ""  # a package outside vLLM's own requirements that the device check also needs
    batched_only: bool = False  # only the DP/EP batched activation format uses it
    log_value: str = ""  # what vLLM prints (the enum value) when it differs from the name
    why_rejected_device: str = ""

    def src(self, tag: str) -> str:
        d, s = self.lines[tag]
        return f"{self.file}:{d},{s}"


_E = f"{MOE}/experts"
_GATES: dict[str, _Gate] = {g.backend + "@" + g.file: g for g in (
    # --- NVFP4 experts (oracle/nvfp4.py)
    _Gate("FLASHINFER_TRTLLM", "fam100", {"W4A4_NVFP4": "any"}, f"{_E}/trtllm_nvfp4_moe.py",
          {"0.26.0": (173, 188), "0.32.0": (204, 219), "0.33.0": (204, 219)}),
    _Gate("FLASHINFER_CUTEDSL", "fam100", {"W4A4_NVFP4": "any"}, f"{_E}/flashinfer_cutedsl_moe.py",
          {"0.26.0": (69, 82), "0.32.0": (88, 101), "0.33.0": (88, 101)}),
    _Gate("FLASHINFER_CUTEDSL_BATCHED", "fam100", {"W4A4_NVFP4": "any"}, f"{_E}/flashinfer_cutedsl_batched_moe.py",
          {"0.26.0": (65, 78), "0.32.0": (65, 78), "0.33.0": (65, 78)}, batched_only=True),
    # one gate for every scheme: nvfp4 W4A4 needs cc >= 10.0, fp8 block exactly 9.0, unquantized cc >= 9.0
    _Gate("FLASHINFER_CUTLASS", "cc90|fam100|fam120", {"W4A4_NVFP4": "min100", "FP8_BLOCK": "cc90", "BF16": "min90"},
          f"{_E}/flashinfer_cutlass_moe.py", {"0.26.0": (131, 149), "0.32.0": (128, 146), "0.33.0": (128, 146)},
          log_value="FlashInfer CUTLASS"),
    _Gate("VLLM_CUTLASS", "fam100|fam110|fam120", {"W4A4_NVFP4": "any"}, f"{_E}/cutlass_moe.py",
          {"0.26.0": (693, 706), "0.32.0": (714, 727), "0.33.0": (716, 729)}),
    _Gate("MARLIN", "min75", {"W4A4_NVFP4": "any", "W4A16_NVFP4": "any", "FP8_BLOCK": "any"}, f"{_E}/marlin_moe.py",
          {"0.26.0": (610, 619), "0.32.0": (587, 596), "0.33.0": (592, 601)}),
    _Gate("HUMMING", "min75", {"W4A4_NVFP4": "any", "W4A16_NVFP4": "any", "FP8_BLOCK": "any"},
          f"{_E}/fused_humming_moe.py", {"0.26.0": (233, 173), "0.32.0": (400, 304), "0.33.0": (403, 307)},
          needs="humming-kernels (a requirement of the vLLM wheel: humming-kernels[cu13]==0.1.10 at 0.26.0, "
                "0.1.19 at 0.33.0)"),
    _Gate("EMULATION", "any", {"W4A4_NVFP4": "any"}, f"{_E}/nvfp4_emulation_moe.py",
          {"0.26.0": (406, 406), "0.32.0": (403, 403), "0.33.0": (403, 403)}),
    # --- FP8 block experts (oracle/fp8.py)
    _Gate("AITER", "never", {"FP8_BLOCK": "any"}, f"{_E}/rocm_aiter_moe.py", {t: (0, 0) for t in VERIFIED},
          why_rejected_device="ROCm only"),
    _Gate("FLASHINFER_TRTLLM", "fam100", {"FP8_BLOCK": "any"}, f"{_E}/trtllm_fp8_moe.py",
          {"0.26.0": (96, 295), "0.32.0": (165, 379), "0.33.0": (165, 379)}),
    _Gate("DEEPGEMM", "cc90|fam100|fam120", {"FP8_BLOCK": "any"}, f"{_E}/deep_gemm_moe.py",
          {"0.26.0": (156, 164), "0.32.0": (170, 178), "0.33.0": (170, 178)},
          needs="the deep_gemm package (not a requirement of the vLLM wheel; vLLM's docker image has it)"),
    _Gate("TRITON", "any", {"FP8_BLOCK": "min89", "BF16": "any"}, f"{_E}/triton_moe.py",
          {"0.26.0": (91, 99), "0.32.0": (118, 126), "0.33.0": (120, 128)}),
    _Gate("BATCHED_DEEPGEMM", "cc90|fam100|fam120", {"FP8_BLOCK": "any"}, f"{_E}/batched_deep_gemm_moe.py",
          {t: (0, 0) for t in VERIFIED}, batched_only=True),
    _Gate("BATCHED_TRITON", "any", {"FP8_BLOCK": "min89", "BF16": "any"}, f"{_E}/fused_batched_moe.py",
          {t: (0, 0) for t in VERIFIED}, batched_only=True),
    _Gate("BATCHED_VLLM_CUTLASS", "never", {}, f"{_E}/cutlass_moe.py", {t: (0, 0) for t in VERIFIED},
          batched_only=True),
    # --- unquantized experts (oracle/unquantized.py)
    _Gate("FLASHINFER_TRTLLM", "fam100", {"BF16": "any"}, f"{_E}/trtllm_bf16_moe.py",
          {"0.26.0": (59, 74), "0.32.0": (95, 110), "0.33.0": (95, 110)}, log_value="FlashInfer TRTLLM"),
)}


def _gate(backend: str, oracle: str) -> _Gate | None:
    files = {
        "nvfp4": {"FLASHINFER_TRTLLM": "trtllm_nvfp4_moe.py", "FLASHINFER_CUTLASS": "flashinfer_cutlass_moe.py"},
        "fp8": {"FLASHINFER_TRTLLM": "trtllm_fp8_moe.py", "FLASHINFER_CUTLASS": "flashinfer_cutlass_moe.py"},
        "unquantized": {"FLASHINFER_TRTLLM": "trtllm_bf16_moe.py", "FLASHINFER_CUTLASS": "flashinfer_cutlass_moe.py"},
    }[oracle]
    if backend in files:
        return _GATES.get(f"{backend}@{_E}/{files[backend]}")
    return next((g for k, g in _GATES.items() if g.backend == backend), None)


# ------------------------------------------------------------------------------------------------ oracles
@dataclass(frozen=True)
class _Oracle:
    name: str  # "NvFp4" | "Fp8" | "Unquantized" (the word vLLM logs)
    file: str
    order: dict[str, tuple[str, ...]]  # tag -> priority list as written
    order_lines: dict[str, str]  # tag -> line range of the list
    log_lines: dict[str, int]  # tag -> line of the "Using ... MoE backend out of potential backends" f-string


_NVFP4_ORDER = ("FLASHINFER_TRTLLM", "FLASHINFER_CUTEDSL", "FLASHINFER_CUTEDSL_BATCHED", "FLASHINFER_CUTLASS",
                "VLLM_CUTLASS", "MARLIN", "HUMMING", "EMULATION")
_FP8_ORDER_026 = ("AITER", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "DEEPGEMM", "VLLM_CUTLASS", "TRITON",
                  "MARLIN", "HUMMING", "BATCHED_DEEPGEMM", "BATCHED_VLLM_CUTLASS", "BATCHED_TRITON", "XPU", "CPU",
                  "HPC")
_FP8_ORDER_032 = ("AITER", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "DEEPGEMM", "VLLM_CUTLASS", "TRITON",
                  "MARLIN", "HUMMING", "BATCHED_DEEPGEMM", "BATCHED_VLLM_CUTLASS", "BATCHED_TRITON", "XPU",
                  "CPU_W8A8", "CPU", "HPC")
_UNQ_ORDER = ("FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "TRITON", "BATCHED_TRITON")

ORACLES = {
    "nvfp4": _Oracle("NvFp4", f"{MOE}/oracle/nvfp4.py", {t: _NVFP4_ORDER for t in VERIFIED},
                     {"0.26.0": "179-188", "0.32.0": "203-213", "0.33.0": "203-213"},
                     {"0.26.0": 211, "0.32.0": 242, "0.33.0": 242}),
    "fp8": _Oracle("Fp8", f"{MOE}/oracle/fp8.py",
                   {"0.26.0": _FP8_ORDER_026, "0.32.0": _FP8_ORDER_032, "0.33.0": _FP8_ORDER_032},
                   {"0.26.0": "80-122, 390-392", "0.32.0": "86-130, 510-512", "0.33.0": "88-132, 521-523"},
                   {"0.26.0": 297, "0.32.0": 418, "0.33.0": 422}),
    "unquantized": _Oracle("Unquantized", f"{MOE}/oracle/unquantized.py", {t: _UNQ_ORDER for t in VERIFIED},
                           {"0.26.0": "48-99", "0.32.0": "50-106", "0.33.0": "50-106"},
                           {"0.26.0": 242, "0.32.0": 266, "0.33.0": 266}),
}
HUMMING_PRIORITY = {  # tag -> source of "Humming moves ahead of Marlin on these compute capabilities"
    "0.32.0": "vllm/model_executor/layers/quantization/utils/humming/priority.py:11,26-50",
    "0.33.0": "vllm/model_executor/layers/quantization/utils/humming/priority.py:11,26-50",
}
_SCHEME_ORACLE = {"W4A4_NVFP4": "nvfp4", "W4A16_NVFP4": "nvfp4", "FP8_BLOCK": "fp8", "BF16": "unquantized"}
_SCHEME_CALLER = {  # where the checkpoint's loader hands the scheme to the oracle
    "W4A16_NVFP4": {"0.26.0": "vllm/model_executor/layers/quantization/modelopt.py:1415-1420",
                    "0.32.0": "vllm/model_executor/layers/quantization/modelopt.py:853-854",
                    "0.33.0": "vllm/model_executor/layers/quantization/modelopt.py:857-858"},
    "W4A4_NVFP4": {"0.26.0": "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors_moe/"
                             "compressed_tensors_moe_w4a4_nvfp4.py:48-52",
                   "0.32.0": "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors_moe/"
                             "compressed_tensors_moe_w4a4_nvfp4.py:63",
                   "0.33.0": "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors_moe/"
                             "compressed_tensors_moe_w4a4_nvfp4.py:66"},
    "FP8_BLOCK": {"0.26.0": "vllm/model_executor/layers/quantization/fp8.py:531",
                  "0.32.0": "vllm/model_executor/layers/quantization/fp8.py:522",
                  "0.33.0": "vllm/model_executor/layers/quantization/fp8.py:527"},
}


def _ordered(oracle: str, tag: str, scheme: str, sm: int) -> list[str]:
    """The priority list after the oracle's own reorders and removals (what vLLM logs as candidates)."""
    order = list(ORACLES[oracle].order[tag])
    if oracle in ("nvfp4", "fp8") and tag in HUMMING_PRIORITY and sm == 90 and "HUMMING" in order:
        order.remove("HUMMING")
        order.insert(order.index("MARLIN"), "HUMMING")
    if oracle == "fp8":
        order.remove("VLLM_CUTLASS")  # allow_vllm_cutlass=False for `quant_method fp8`
        order.remove("BATCHED_VLLM_CUTLASS")
        if sm == 90 and scheme == "FP8_BLOCK":  # "On Hopper for Block Fp8, prefer Triton for TP"
            order.insert(0, order.pop(order.index("TRITON")))
    if oracle == "unquantized" and sm // 10 == 9:  # FlashInfer unquantized MoE is slower than Triton on Hopper
        for b in ("FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS"):
            order.append(order.pop(order.index(b)))
    return order


# ------------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class KernelPath:
    experts: str  # normalized scheme
    sm: int
    vllm_version: str
    backend: str  # the backend vLLM picks ("MARLIN", "FLASHINFER_TRTLLM", ...)
    candidates: tuple[str, ...]  # the priority list vLLM logs, in order
    native_fp4: bool  # W4A4 on FP4 tensor cores
    reason: str
    source: str  # oracle file:line and the winning gate's file:line at the tag
    tag: str  # the verified tag whose code this replays
    verified: bool  # vllm_version is that tag exactly
    rejected: tuple[tuple[str, str], ...] = ()  # (backend, why) for every candidate tried before the winner
    needs: str = ""  # a package the winning backend needs beyond vLLM's own requirements
    fallback: str = ""  # the backend picked when that package is missing

    @property
    def log_line(self) -> str:
        """The line vLLM prints (the format string at the tag, with this backend and candidate list)."""
        o = ORACLES[_SCHEME_ORACLE[self.experts]]
        names = [_log_value(b, o.name) for b in self.candidates]
        value = _log_value(self.backend, o.name)
        if o.name == "NvFp4":
            return f"Using '{value}' NvFp4 MoE backend out of potential backends: {names}."
        return f"Using {value} {o.name} MoE backend out of potential backends: {names}."

    def to_dict(self) -> dict[str, object]:
        return {"experts": self.experts, "sm": self.sm, "vllm_version": self.vllm_version, "backend": self.backend,
                "candidates": list(self.candidates), "native_fp4": self.native_fp4, "reason": self.reason,
                "source": self.source, "tag": self.tag, "verified": self.verified,
                "rejected": [list(r) for r in self.rejected], "needs": self.needs or None,
                "fallback": self.fallback or None, "log_line": self.log_line}


def _log_value(backend: str, oracle_name: str) -> str:
    if oracle_name == "Unquantized":
        return {"FLASHINFER_TRTLLM": "FlashInfer TRTLLM", "FLASHINFER_CUTLASS": "FlashInfer CUTLASS"}.get(backend, backend)
    return backend


def _check(g: _Gate | None, scheme: str, sm: int) -> str | None:
    """None when the backend accepts (scheme, device); else why not."""
    if g is None:
        return "not a CUDA backend"
    if g.batched_only:
        return "batched (DP/EP all-to-all) activation format only"
    if not _dev_ok(g.device, sm):
        return g.why_rejected_device or f"device gate {g.device.replace('|', ' or ')} excludes sm_{sm}"
    if scheme not in g.schemes:
        return f"does not take {scheme} experts"
    if not _dev_ok(g.schemes[scheme], sm):
        return f"takes {scheme} only on {g.schemes[scheme]}"
    return None


def moe_kernel_path(experts: str, sm: int, vllm_version: str, installed: frozenset[str] = frozenset()) -> KernelPath:
    """The MoE backend vLLM picks for `experts` on compute capability `sm` (e.g. 90, 100, 103, 120, 121).

    `installed` names optional packages present beside vLLM ("deep_gemm"); without them the backends that
    need them are passed over, as vLLM's device check does."""
    scheme = normalize_scheme(experts)
    if sm < 75:
        raise ValueError(f"sm_{sm}: vLLM's MoE kernels for these checkpoints need compute capability 7.5 or newer")
    tag, exact = rules_tag(vllm_version)
    oracle = _SCHEME_ORACLE[scheme]
    o = ORACLES[oracle]
    order = _ordered(oracle, tag, scheme, sm)
    rejected: list[tuple[str, str]] = []
    for b in order:
        g = _gate(b, oracle)
        why = _check(g, scheme, sm)
        if why is None and g is not None and g.needs.startswith("the deep_gemm") and "deep_gemm" not in installed:
            why = "needs the deep_gemm package, not installed with vLLM from PyPI"
        if why is not None:
            rejected.append((b, why))
            continue
        assert g is not None
        native = scheme == "W4A4_NVFP4" and b in NATIVE_FP4_BACKENDS
        caller = _SCHEME_CALLER.get(scheme, {}).get(tag)
        src = f"vLLM v{tag} {o.file}:{o.order_lines[tag]} (priority), {g.src(tag)} (gate)"
        if caller:
            src += f", {caller} (scheme)"
        if oracle in ("nvfp4", "fp8") and tag in HUMMING_PRIORITY and sm == 90:
            src += f", {HUMMING_PRIORITY[tag]} (Humming before Marlin on sm_90)"
        kind = ("native FP4 tensor cores (W4A4)" if native else
                "4-bit weights dequantized to BF16 (weight-only)" if scheme.startswith("W4") else
                "FP8 block-scaled GEMM" if scheme == "FP8_BLOCK" else "BF16 GEMM")
        first = ", ".join(f"{r} ({w})" for r, w in rejected[:3]) + (" ..." if len(rejected) > 3 else "")
        reason = f"{scheme} experts on sm_{sm}: vLLM {tag} picks {b}, {kind}" + (f"; passed over {first}" if first else "")
        needs, fallback = "", ""
        if g.needs and "deep_gemm" in g.needs:
            needs = g.needs
            fallback = moe_kernel_path(scheme, sm, vllm_version, installed - {"deep_gemm"}).backend \
                if "deep_gemm" in installed else ""
        return KernelPath(scheme, sm, vllm_version, b, tuple(order), native, reason, src, tag, exact,
                          tuple(rejected), needs, fallback)
    raise ValueError(f"no MoE backend in vLLM {tag} takes {scheme} experts on sm_{sm}")


# ------------------------------------------------------------------------------------------------ ranking
@dataclass(frozen=True)
class Ranked:
    checkpoint_id: str
    rank: int  # 1 = best
    tier: int  # 0 native W4A4 FP4; 1-2 FP8 / 4-bit weight-only (order per SM family); 3 BF16; 4 unknown; 9 too big
    kernel: KernelPath | None  # None when the expert scheme is not verified
    reason: str
    figures: tuple = field(default=())  # profiles.KernelFigure published for this SM


# Why FP8 and 4-bit weight-only swap places between GPU families (published measurements):
ORDER_EVIDENCE = {
    9: "sm_9x has no FP4 tensor cores: FP8 runs natively (TRITON), 4-bit checkpoints are dequantized",
    10: "flashinfer-ai/flashinfer#4249, B200 batch 1: W4A4 FLASHINFER_TRTLLM 3.29 ms < FP8 3.61 ms < W4A16 MARLIN "
        "3.72 ms TPOT",
    12: "4-bit weights read half the bytes of FP8 on these lower-bandwidth GPUs: DGX Spark one-user decode, NVIDIA "
        "W4A16 on Marlin 97.7 tok/s (vllm-project/recipes PR #918, with MTP) vs FP8 28-33 tok/s without MTP "
        "(site-one-liart-13.vercel.app/en/dgx/qwen3-moe-nvfp4-benchmarks-dgx-spark)",
}


def _tier(kp: KernelPath | None, sm: int) -> int:
    if kp is None:
        return 4
    if kp.native_fp4:
        return 0
    if kp.experts == "BF16":
        return 3
    fp8_first = sm // 10 in (9, 10)
    if kp.experts == "FP8_BLOCK":
        return 1 if fp8_first else 2
    return 2 if fp8_first else 1  # 4-bit weights dequantized to 16-bit (Marlin / Humming)


def rank_checkpoints(checkpoints: Any, sm: int, vllm_version: str, memory_gib: float | None = None,
                     installed: frozenset[str] = frozenset()) -> list[Ranked]:
    """Order checkpoint profiles for one GPU by the MoE kernel vLLM will run for their routed experts:
    native W4A4 FP4 first; then FP8 and 4-bit weight-only (Marlin/Humming), FP8 first on sm_9x/sm_10x and
    4-bit first elsewhere (ORDER_EVIDENCE); then BF16; then checkpoints whose expert format is not verified;
    a checkpoint whose weights take more than 90% of the GPU's memory goes last. Inside a tier: a published
    figure on this SM first, then the smaller checkpoint. Each checkpoint needs `.id`, `.experts` (a scheme
    or None), `.size_on_disk_gb` and `.figures_for(sm)`."""
    rows = []
    for c in checkpoints:
        kp = moe_kernel_path(c.experts, sm, vllm_version, installed) if c.experts else None
        tier = _tier(kp, sm)
        size = c.size_on_disk_gb
        figs = tuple(c.figures_for(sm))
        if kp is None:
            why = "expert quantization not verified: kernel path unknown"
        else:
            why = f"{kp.experts} experts -> {kp.backend}: " + (
                "native FP4 tensor cores (W4A4)" if kp.native_fp4 else
                "4-bit weights dequantized to BF16, no FP4 tensor cores" if kp.experts.startswith("W4") else
                "FP8 block-scaled GEMM" if kp.experts == "FP8_BLOCK" else "BF16 GEMM")
            if kp.needs:
                why += f" (needs {kp.needs.split(' (')[0]}; else {kp.fallback or 'the next backend'})"
            if tier in (1, 2) and sm // 10 in ORDER_EVIDENCE:
                why += f"; {ORDER_EVIDENCE[sm // 10]}"
        if memory_gib is not None and size is not None and size * 1e9 > 0.9 * memory_gib * 2**30:
            tier = 9
            why = f"does not fit: {size:g} GB of weights on {memory_gib:g} GiB; " + why
        rows.append((tier, 0 if figs else 1, size if size is not None else 1e9, c.id, kp, why, figs))
    rows.sort(key=lambda r: r[:4])
    return [Ranked(r[3], i + 1, r[0], r[4], r[5], r[6]) for i, r in enumerate(rows)]
