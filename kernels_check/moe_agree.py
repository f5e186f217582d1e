"""NVFP4 MoE agreement: one small NVFP4 MoE through every NVFP4 MoE backend vLLM supports on this GPU.

Silently wrong output from a fast NVFP4 backend is the failure nothing else here would catch: each backend
repacks the same checkpoint tensors into its own layout and scales them its own way. So the check quantizes
one MoE with kernels_check's reference quantizer (kernels_check/nvfp4.py), hands the same ModelOpt-layout
tensors to vLLM's own MoE layer once per backend (vLLM does the repacking, as when it loads a checkpoint),
runs the same tokens with the same routing, and compares every output with a float64 reference of the
dequantized MoE and with each other.

Pure parts (CPU-tested in tests/unit/test_kernels_check_moe_agree.py): the problem, the references, the
ModelOpt tensors, the pairwise spread and the grading. The GPU part (`run_backends`) needs vLLM and CUDA.
vLLM entry points, read at vLLM v0.26.0 (paths inside the `vllm` package):
- model_executor/layers/fused_moe/routed_experts.py:54-175 `RoutedExperts(layer_name, params_dtype,
  moe_config, quant_config, expert_map_manager)`, :1151-1218 `forward_modular` / `forward_monolithic`;
- model_executor/layers/quantization/modelopt.py:1017-1113 `ModelOptNvFp4Config` (quant_algo NVFP4 = W4A4,
  W4A16_NVFP4 = W4A16), :1441-1555 the MoE parameters, :1557-1616 `process_weights_after_loading`
  (the oracle's convert -> quant config -> modular kernel, the path of a real checkpoint);
- model_executor/layers/fused_moe/oracle/nvfp4.py:165-292 `select_nvfp4_moe_backend` (honours
  `FusedMoEConfig.moe_backend`, the `--moe-backend` value), :295-459 the per-backend weight conversion
  (Marlin repack, Humming transform, FlashInfer / CUTLASS shuffles, emulation);
- model_executor/layers/fused_moe/config.py:1254-1271 `FusedMoEParallelConfig.make_no_parallel()` ("for
  usage in CI/CD and testing"), :1274 `FusedMoEConfig`; v1/worker/workspace.py:216 `init_workspace_manager`;
  forward_context.py:260 `set_forward_context` (Humming reads it).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import math
import os
import tempfile
import traceback
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

# Bands on ||out - ref||_F / ||ref||_F, where ref is the float64 MoE of the dequantized weights and,
# for NVFP4 activations, of the quantize-dequantized activations (what the kernel is meant to compute).
# BF16 activations: the arithmetic of the BF16 fused MoE (bf16 operands and intermediate, fp32
# accumulation): the BF16 triton MoE measured 4.19e-3 with vLLM 0.26.0 on an H200 (moe_triton_bf16 in
# tests/data/kernels_check/h200-vllm-0.26.0.json), the same arithmetic simulated on the CPU 4.8e-3 .. 5.3e-3
# (bf16 weights, intermediate and output); so the BF16 GEMM band.
A16_BAND = 1e-2
# NVFP4 activations: a kernel rounds GEMM1's output to bf16 before it quantizes the intermediate to e2m1,
# and a rounding that lands on the other side of an e2m1 decision boundary (or changes a block's e4m3
# scale) moves values by a whole e2m1 step. Simulated on the CPU with bf16 operands, bf16 intermediate and
# fp32 accumulation (torch 2.13): 3.4e-2 .. 3.6e-2 at this shape (seeds 0..3), 3.5e-2 .. 4.6e-2 at the
# smaller one tests/unit/test_kernels_check_moe_agree.py re-measures (48 tokens, hidden 256). The band is
# 8e-2: a kernel that skipped the activation quantization sits at the distance between the two references,
# 0.16 .. 0.17 at both shapes, and a wrong layout (gate and up swapped) or scale (applied twice) at 0.75 .. 1.
A4_BAND = 8e-2
BANDS = {"bf16": A16_BAND, "nvfp4": A4_BAND}

SCHEMES = ("w4a16", "w4a4")  # the ModelOpt quant_algo of each: W4A16_NVFP4, NVFP4
QUANT_ALGO = {"w4a16": "W4A16_NVFP4", "w4a4": "NVFP4"}


@dataclass(frozen=True)
class MoeShape:
    """Qwen3.6-35B-A3B's expert shape (hidden 2048, moe_intermediate 512, profiles/models/qwen3.6-35b-a3b.toml) with 16 experts, top-4."""

    tokens: int = 128
    hidden: int = 2048
    intermediate: int = 512
    experts: int = 16
    topk: int = 4

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class MoeProblem:
    shape: MoeShape
    x: Any  # (T, H) bf16
    router_logits: Any  # (T, E) float32; each value exact in bf16 and distinct within its row
    topk_weights: Any  # (T, k) float32: softmax over the k largest logits (vLLM's Renormalize routing)
    topk_ids: Any  # (T, k) int32
    w13: list[Any]  # per expert, Nvfp4Tensor of [gate; up] (2I, H): vLLM's w13 order (w1 = gate first)
    w2: list[Any]  # per expert, Nvfp4Tensor of down (H, I)
    a13_gscale: Any  # float32 scalar, 448*6/amax(x): the activation global scale of GEMM1
    a2_gscale: Any  # float32 scalar, 448*6/amax(intermediate): the activation global scale of GEMM2
    refs: dict[str, Any] = field(default_factory=dict)  # "bf16" / "nvfp4" activations -> (T, H) float64

    @property
    def device(self) -> Any:
        return self.x.device


def make_problem(torch: Any, device: Any, shape: MoeShape | None = None, seed: int = 0) -> MoeProblem:
    """Random weights and tokens, the weights quantized per expert with the reference quantizer, and both
    float64 references."""
    from kernels_check import nvfp4 as q4

    s = shape or MoeShape()
    t = torch
    g = t.Generator(device=device).manual_seed(seed)
    T, H, inter, E, k = s.tokens, s.hidden, s.intermediate, s.experts, s.topk
    x = t.randn(T, H, device=device, generator=g).to(t.bfloat16)
    w1 = t.randn(E, 2 * inter, H, device=device, generator=g) / math.sqrt(H)
    w2 = t.randn(E, H, inter, device=device, generator=g) / math.sqrt(inter)
    # router logits: a permutation of E values spaced 6/(E-1) apart, rounded to bf16, so the top-k set is
    # the same whatever precision a kernel routes in
    levels = t.linspace(-3.0, 3.0, E, device=device).to(t.bfloat16).float()
    perm = t.rand(T, E, device=device, generator=g).argsort(dim=-1)
    logits = levels[perm]
    top_vals, top_ids = t.topk(logits, k, dim=-1)
    topk_w = t.softmax(top_vals, dim=-1).float()
    p = MoeProblem(
        shape=s, x=x, router_logits=logits, topk_weights=topk_w, topk_ids=top_ids.to(t.int32),
        w13=[q4.quantize(w1[e]) for e in range(E)], w2=[q4.quantize(w2[e]) for e in range(E)],
        a13_gscale=q4.global_scale_for(x.float()), a2_gscale=t.tensor(1.0, device=device),
    )
    p.refs["bf16"], act_amax = _moe64(p, quant_acts=False)
    p.a2_gscale = (q4.E4M3_MAX * q4.E2M1_MAX / act_amax).to(t.float32)
    p.refs["nvfp4"], _ = _moe64(p, quant_acts=True)
    return p


def _qdq(t: Any, v: Any, gscale: Any) -> Any:
    from kernels_check import nvfp4 as q4

    return q4.quantize(v.to(t.float32), global_scale=gscale).dequantize(t.float64)


def _moe64(p: MoeProblem, quant_acts: bool) -> tuple[Any, Any]:
    """Float64 MoE of the dequantized weights: out = sum_j w_j * W2[e_j] (silu(gate) * up), W13[e] = [gate; up].
    With quant_acts, the input and the intermediate are NVFP4 quantize-dequantized first (global scales
    a13_gscale / a2_gscale), as a W4A4 kernel does. Returns (out, amax of the intermediate)."""
    import torch as t

    inter = p.shape.intermediate
    x = _qdq(t, p.x, p.a13_gscale) if quant_acts else p.x.to(t.float64)
    out = t.zeros(p.x.shape[0], p.shape.hidden, dtype=t.float64, device=p.device)
    amax = t.zeros((), dtype=t.float64, device=p.device)
    ids = p.topk_ids.long()
    for e in range(p.shape.experts):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        h = x[tok] @ p.w13[e].dequantize(t.float64).t()
        act = t.nn.functional.silu(h[:, :inter]) * h[:, inter:]
        amax = t.maximum(amax, act.abs().max())
        if quant_acts:
            act = _qdq(t, act, p.a2_gscale)
        y = act @ p.w2[e].dequantize(t.float64).t()
        out.index_add_(0, tok, p.topk_weights[tok, slot].to(t.float64)[:, None] * y)
    return out, amax


def modelopt_tensors(p: MoeProblem) -> dict[str, Any]:
    """The problem as a ModelOpt NVFP4 checkpoint holds it, in the shapes and dtypes of vLLM's parameters
    (modelopt.py:1441-1555 at v0.26.0): packed e2m1 (two per byte, even index in the low nibble), e4m3
    block scales (one per 16 along the input dim), and the *dequant* global scales weight_scale_2 =
    amax / (448*6) = 1 / global_scale and input_scale = activation amax / (448*6)."""
    import torch as t

    E = p.shape.experts
    ones = t.ones(E, dtype=t.float32, device=p.device)
    w13_g = t.stack([1.0 / q.global_scale.to(t.float32) for q in p.w13])
    w2_g = t.stack([1.0 / q.global_scale.to(t.float32) for q in p.w2])
    return {
        "w13_weight": t.stack([q.packed for q in p.w13]),  # (E, 2I, H/2) uint8
        "w13_weight_scale": t.stack([q.block_scale for q in p.w13]),  # (E, 2I, H/16) float8_e4m3fn
        "w13_weight_scale_2": w13_g[:, None].expand(E, 2).contiguous(),  # (E, 2): gate and up share it
        "w13_input_scale": (ones / p.a13_gscale.to(t.float32))[:, None].expand(E, 2).contiguous(),
        "w2_weight": t.stack([q.packed for q in p.w2]),  # (E, H, I/2)
        "w2_weight_scale": t.stack([q.block_scale for q in p.w2]),  # (E, H, I/16)
        "w2_weight_scale_2": w2_g,  # (E,)
        "w2_input_scale": ones / p.a2_gscale.to(t.float32),  # (E,)
    }


def rel(out: Any, ref: Any) -> float:
    from kernels_check.nvfp4 import rel_error

    return rel_error(out, ref)


def pairwise(outputs: dict[str, tuple[str, Any]], refs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pair of outputs: ||a - b|| / ||ref||, ref the reference of their activations (bf16 if they differ).
    outputs: run label -> (activations, output)."""
    import torch as t

    rows = []
    for (la, (aa, oa)), (lb, (ab, ob)) in itertools.combinations(outputs.items(), 2):
        ref = refs.get(aa if aa == ab else "bf16", refs["bf16"])
        den = float(t.linalg.vector_norm(ref.to(t.float64))) or 1.0
        d = oa.to(t.float64) - ob.to(t.float64)
        diff = float(t.linalg.vector_norm(d)) / den if bool(t.isfinite(d).all()) else float("inf")
        rows.append({"a": la, "b": lb, "rel_diff": diff, "same_activations": aa == ab})
    return rows


# ------------------------------------------------------------------------------------- grading (pure)
def grade(run: dict[str, Any]) -> dict[str, Any]:
    """Set a finished run's band, status and reason from its rel_error and activations."""
    acts = run.get("activations")
    band = BANDS.get(acts) if acts in BANDS else None
    err = run.get("rel_error")
    if band is None or err is None:
        run.update(status="fail", band=band,
                   reason=run.get("reason") or f"no reference for activations {acts!r}")
        return run
    run["band"] = band
    if err <= band:
        run.update(status="pass", reason="")
    else:
        run.update(status="fail", reason=f"relative error {err:.3g} above {band} ({acts} activations)")
    return run


def label(run: dict[str, Any]) -> str:
    return f"{run['flag']} {run['scheme']}"


def summarize(runs: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, summary) of the whole check from graded runs: status "pass", "fail" or "skipped".
    One failing or raising backend fails the check; the others still report. The spread between two
    backends on the same activations is bounded by the sum of their bands when both pass (both are that
    close to the same reference), so it is reported, not graded separately."""
    ran = [r for r in runs if r["status"] in ("pass", "fail", "error")]
    bad = [r for r in ran if r["status"] != "pass"]
    spread: dict[str, float] = {}
    for pr in pairs:
        if pr["same_activations"]:
            acts = next((r["activations"] for r in runs if label(r) == pr["a"]), None)
            if acts is not None:
                spread[acts] = max(spread.get(acts, 0.0), pr["rel_diff"])
    ok = [r for r in ran if r["status"] == "pass"]
    summary = {
        "runs": len(runs), "ran": len(ran), "passed": len(ok),
        "backends_passed": list(dict.fromkeys(r["flag"] for r in ok)),
        "backends_failed": list(dict.fromkeys(r["flag"] for r in bad)),
        "max_rel_error": {a: max(r["rel_error"] for r in ok if r["activations"] == a)
                          for a in dict.fromkeys(r["activations"] for r in ok)},
        "max_spread": spread,
    }
    if not ran:
        why = "; ".join(dict.fromkeys(f"{label(r)}: {r['reason']}" for r in runs)) or \
            "vLLM supports no NVFP4 MoE backend on this GPU"
        return "skipped", why, summary
    if bad:
        return "fail", "; ".join(f"{label(r)}: {r['reason']}" for r in bad), summary
    return "pass", "", summary


def agreement_note(details: dict[str, Any]) -> str | None:
    """One line for the verdict's notes, e.g. '3 NVFP4 MoE backends (humming, marlin, emulation) agree with the
    float64 reference within 4.2e-03 (bf16 activations) ...'; None when nothing passed."""
    s = details.get("summary") or {}
    names = s.get("backends_passed") or []
    if not names or s.get("backends_failed"):
        return None
    errs = ", ".join(f"{v:.1e} ({a} activations)" for a, v in (s.get("max_rel_error") or {}).items())
    spread = s.get("max_spread") or {}
    sp = (", largest spread between backends " + ", ".join(f"{v:.1e} ({a})" for a, v in spread.items())
          if spread else "")
    n = len(names)
    return (f"{n} NVFP4 MoE backend{'s' if n > 1 else ''} ({', '.join(names)}) "
            f"{'agree' if n > 1 else 'agrees'} with the float64 reference within {errs}{sp} (moe_nvfp4_agree)")


def flags_by_outcome(details: dict[str, Any], scheme: str) -> tuple[list[str], list[str]]:
    """(flags whose `scheme` run passed, flags whose `scheme` run failed or raised), in run order."""
    runs = [r for r in details.get("runs") or [] if r.get("scheme") == scheme]
    good = [r["flag"] for r in runs if r.get("status") == "pass"]
    bad = [r["flag"] for r in runs if r.get("status") in ("fail", "error")]
    return good, bad


# ------------------------------------------------------------------------------------- the vLLM part
_API = {  # attribute -> (module, name) as of vLLM 0.26.0
    "RoutedExperts": ("vllm.model_executor.layers.fused_moe.routed_experts", "RoutedExperts"),
    "FusedMoEConfig": ("vllm.model_executor.layers.fused_moe.config", "FusedMoEConfig"),
    "FusedMoEParallelConfig": ("vllm.model_executor.layers.fused_moe.config", "FusedMoEParallelConfig"),
    "RoutingMethodType": ("vllm.model_executor.layers.fused_moe.config", "RoutingMethodType"),
    "MoEActivation": ("vllm.model_executor.layers.fused_moe.activation", "MoEActivation"),
    "ExpertMapManager": ("vllm.model_executor.layers.fused_moe.expert_map_manager", "ExpertMapManager"),
    "ModelOptNvFp4Config": ("vllm.model_executor.layers.quantization.modelopt", "ModelOptNvFp4Config"),
    "select_nvfp4_moe_backend": ("vllm.model_executor.layers.fused_moe.oracle.nvfp4", "select_nvfp4_moe_backend"),
    "kNvfp4Static": ("vllm.model_executor.layers.quantization.utils.quant_utils", "kNvfp4Static"),
    "kNvfp4Dynamic": ("vllm.model_executor.layers.quantization.utils.quant_utils", "kNvfp4Dynamic"),
    "set_forward_context": ("vllm.forward_context", "set_forward_context"),
    "VllmConfig": ("vllm.config", "VllmConfig"),
    "set_current_vllm_config": ("vllm.config", "set_current_vllm_config"),
    "get_current_vllm_config_or_none": ("vllm.config", "get_current_vllm_config_or_none"),
    "init_distributed_environment": ("vllm.distributed.parallel_state", "init_distributed_environment"),
    "initialize_model_parallel": ("vllm.distributed.parallel_state", "initialize_model_parallel"),
    "model_parallel_is_initialized": ("vllm.distributed.parallel_state", "model_parallel_is_initialized"),
    "destroy_model_parallel": ("vllm.distributed.parallel_state", "destroy_model_parallel"),
    "destroy_distributed_environment": ("vllm.distributed.parallel_state", "destroy_distributed_environment"),
    "init_workspace_manager": ("vllm.v1.worker.workspace", "init_workspace_manager"),
    "is_workspace_manager_initialized": ("vllm.v1.worker.workspace", "is_workspace_manager_initialized"),
}


_OPTIONAL = {"get_current_vllm_config_or_none"}  # without it a fresh VllmConfig() is used


class ApiMismatch(Exception):
    """vLLM's MoE API here is not the one this check was written against: skip, saying what differs."""


def load_api() -> dict[str, Any]:
    api: dict[str, Any] = {}
    missing = []
    for key, (mod, name) in _API.items():
        try:
            api[key] = getattr(importlib.import_module(mod), name)
        except Exception as e:  # ImportError, AttributeError, or a module that fails on import
            if key in _OPTIONAL:
                api[key] = None
            else:
                missing.append(f"{mod}.{name} ({type(e).__name__})")
    if missing:
        raise ApiMismatch("not found: " + ", ".join(missing))
    for meth in ("forward_modular", "forward_monolithic"):
        if not hasattr(api["RoutedExperts"], meth):
            raise ApiMismatch(f"RoutedExperts has no {meth}")
    return api


def call_with(fn: Any, what: str, **kwargs: Any) -> Any:
    """Call a vLLM constructor with the keyword arguments it accepts; a required one we do not know means the
    API differs (ApiMismatch), and one it no longer takes is left out only if it is one we can do without."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    required = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    unknown = [n for n in required if n not in kwargs]
    if unknown:
        raise ApiMismatch(f"{what} now requires {', '.join(unknown)}")
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def _tail(e: BaseException) -> tuple[str, str]:
    """The traceback's last line (type: message) and its last frames."""
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    last = (tb[-1].strip().splitlines() or [type(e).__name__])[-1]
    return last[:400], "".join(tb[-3:])[-1500:]


def _build(api: dict[str, Any], t: Any, p: MoeProblem, flag: str, scheme: str) -> tuple[Any, Any]:
    """vLLM's RoutedExperts with the ModelOpt NVFP4 method for `--moe-backend flag`, loaded with p's tensors and
    prepared as after a checkpoint load. Returns (layer, FusedMoEConfig)."""
    s = p.shape
    pc = api["FusedMoEParallelConfig"].make_no_parallel()
    known = {f.name for f in fields(api["FusedMoEConfig"])}
    want = dict(num_experts=s.experts, experts_per_token=s.topk, hidden_dim=s.hidden,
                intermediate_size=s.intermediate, num_local_experts=s.experts, num_logical_experts=s.experts,
                activation=api["MoEActivation"].SILU, device=p.device,
                routing_method=api["RoutingMethodType"].Renormalize, moe_parallel_config=pc,
                in_dtype=t.bfloat16, moe_backend=flag)
    if "moe_backend" not in known:
        raise ApiMismatch("FusedMoEConfig has no moe_backend field")
    cfg = call_with(api["FusedMoEConfig"], "FusedMoEConfig", **{k: v for k, v in want.items() if k in known})
    wkey, akey = api["kNvfp4Static"], (api["kNvfp4Dynamic"] if scheme == "w4a4" else None)
    try:  # the oracle first: a backend it refuses for this layer is skipped, not failed
        call_with(api["select_nvfp4_moe_backend"], "select_nvfp4_moe_backend", config=cfg, weight_key=wkey,
                  activation_key=akey)
    except (ValueError, NotImplementedError) as e:
        raise ApiMismatch(f"vLLM's oracle refuses it for this layer: {_tail(e)[0]}") from e
    emm = call_with(api["ExpertMapManager"], "ExpertMapManager", max_num_batched_tokens=s.tokens, top_k=s.topk,
                    global_num_experts=s.experts, num_redundant_experts=0, num_expert_group=None,
                    moe_parallel_config=pc, placement_strategy="linear", enable_eplb=False)
    qc = api["ModelOptNvFp4Config"].from_config({"quantization": {
        "quant_algo": QUANT_ALGO[scheme], "group_size": 16, "kv_cache_quant_algo": None, "exclude_modules": []}})
    with t.device(p.device):  # vLLM creates the parameters on the default device, as its loader sets it
        layer = call_with(api["RoutedExperts"], "RoutedExperts", layer_name="kernels_check.moe_nvfp4_agree",
                          params_dtype=t.bfloat16, moe_config=cfg, quant_config=qc, expert_map_manager=emm)
    params = dict(layer.named_parameters())
    for name, v in modelopt_tensors(p).items():
        have = params.get(name)
        if have is None:
            raise ApiMismatch(f"the ModelOpt NVFP4 MoE method has no parameter {name}")
        if tuple(have.shape) != tuple(v.shape) or have.dtype != v.dtype:
            raise ApiMismatch(f"{name} is {tuple(have.shape)} {have.dtype} in vLLM, "
                              f"{tuple(v.shape)} {v.dtype} in a ModelOpt checkpoint")
        with t.no_grad():
            have.copy_(v)
    layer.quant_method.process_weights_after_loading(layer)
    return layer, cfg


def _activations(layer: Any) -> str | None:
    """What vLLM's quant config says the kernel does with the activations: bf16 (left unquantized) or nvfp4."""
    qc = getattr(layer.quant_method, "moe_quant_config", None)
    if qc is None:
        return None
    try:
        qd = qc.quant_dtype
    except Exception:
        return None
    return "bf16" if qd is None else ("nvfp4" if str(qd) == "nvfp4" else str(qd))


def run_one(api: dict[str, Any], t: Any, p: MoeProblem, backend: str, flag: str, scheme: str, vcfg: Any,
            warmup: int, repeats: int) -> tuple[dict[str, Any], Any]:
    """One backend and scheme: its result row and its output (None unless it ran). Never raises."""
    from kernels_check.timing import time_cuda

    row: dict[str, Any] = {"backend": backend, "flag": flag, "scheme": scheme}
    layer = out = None
    try:
        layer, cfg = _build(api, t, p, flag, scheme)
        qm = layer.quant_method
        kernel = getattr(qm, "moe_kernel", None)
        row["experts_class"] = type(kernel.fused_experts).__name__ if kernel is not None else None
        row["selected_backend"] = getattr(getattr(qm, "nvfp4_backend", None), "value", None)
        mono = bool(qm.is_monolithic)
        row["monolithic"] = mono
        logits = p.router_logits.to(getattr(cfg, "router_logits_dtype", None) or t.bfloat16)

        def fwd() -> Any:
            if mono:
                return layer.forward_monolithic(p.x, logits)
            return layer.forward_modular(p.x, p.topk_weights, p.topk_ids)

        with api["set_forward_context"](None, vcfg, num_tokens=p.shape.tokens):
            out = fwd().clone()  # the kernel's buffers are reused by the next call
            t.cuda.synchronize()
            tm = time_cuda(t, fwd, warmup, repeats)
        row["activations"] = _activations(layer)
        row["rel_error_vs_bf16_ref"] = rel(out, p.refs["bf16"])
        row["rel_error_vs_nvfp4_ref"] = rel(out, p.refs["nvfp4"])
        if row["activations"] not in BANDS:  # vLLM did not say: judge against the nearer reference
            row["activations_inferred"] = True
            row["activations"] = "bf16" if row["rel_error_vs_bf16_ref"] <= row["rel_error_vs_nvfp4_ref"] else "nvfp4"
        row["rel_error"] = row[f"rel_error_vs_{row['activations']}_ref"]
        row["median_ms"] = tm["median_ms"]
        grade(row)
    except ApiMismatch as e:
        row.update(status="skipped", reason=f"not run: {e}")
        out = None
    except Exception as e:  # the backend raised: this row fails, the other backends still run
        last, tail = _tail(e)
        row.update(status="error", reason=f"raised {last}", traceback_tail=tail)
    finally:
        del layer
    return row, out


def backends_to_run(support_rows: list[dict[str, Any]], order: list[str]) -> list[tuple[str, str, str]]:
    """(backend, flag, scheme) for each backend vLLM's own checks accept on this device, W4A16 then W4A4, in
    vLLM's automatic order (the backend a user gets first comes first), then any others."""
    by = {r["backend"]: r for r in support_rows}
    names = [b for b in order if b in by] + [b for b in by if b not in order]
    out, flags = [], set()
    for b in names:
        flag = by[b]["flag"]
        if flag in flags:  # FLASHINFER_CUTEDSL_BATCHED: --moe-backend flashinfer_cutedsl picks it only with EP
            continue
        for scheme in SCHEMES:
            if by[b].get(scheme):
                out.append((b, flag, scheme))
                flags.add(flag)
    return out


@contextlib.contextmanager
def single_process_group(api: dict[str, Any], t: Any) -> Iterator[None]:
    """vLLM's parameters read the tensor-parallel rank (model_executor/parameter.py:65 at v0.26.0), so the
    layer needs vLLM's parallel groups: a world of one process, set up as vLLM's own tests do (tests/conftest.py
    `dist_init`: a file:// rendezvous, NCCL, initialize_model_parallel(1, 1)) and taken down after, unless
    they already existed."""
    if api["model_parallel_is_initialized"]():
        yield
        return
    fd, path = tempfile.mkstemp(prefix="kernels_check_dist_")
    os.close(fd)
    try:
        api["init_distributed_environment"](world_size=1, rank=0, distributed_init_method=f"file://{path}",
                                            local_rank=0, backend="nccl")
        api["initialize_model_parallel"](1, 1)
        yield
    finally:
        for step in ("destroy_model_parallel", "destroy_distributed_environment"):
            try:
                api[step]()
            except Exception:  # teardown: the check's result is already known
                pass
        with contextlib.suppress(OSError):
            os.unlink(path)


def run_backends(t: Any, p: MoeProblem, plan: list[tuple[str, str, str]], warmup: int,
                 repeats: int) -> tuple[list[dict[str, Any]], dict[str, tuple[str, Any]]]:
    """Run every planned backend; a broken CUDA context (a sticky error) stops the rest, each saying why."""
    try:
        api = load_api()
    except ApiMismatch as e:
        return [{"backend": b, "flag": f, "scheme": s, "status": "skipped",
                 "reason": f"not run: vLLM's MoE API differs from 0.26.0's ({e})"} for b, f, s in plan], {}
    if not api["is_workspace_manager_initialized"]():
        api["init_workspace_manager"](t.device("cuda", t.cuda.current_device()))
    rows: list[dict[str, Any]] = []
    outputs: dict[str, tuple[str, Any]] = {}
    broken = ""
    current = api["get_current_vllm_config_or_none"]
    vcfg = (current() if current is not None else None) or api["VllmConfig"]()
    with api["set_current_vllm_config"](vcfg), single_process_group(api, t):
        for backend, flag, scheme in plan:
            if broken:
                rows.append({"backend": backend, "flag": flag, "scheme": scheme, "status": "skipped",
                             "reason": f"not run: the CUDA context broke in {broken}"})
                continue
            row, out = run_one(api, t, p, backend, flag, scheme, vcfg, warmup, repeats)
            rows.append(row)
            if out is not None and row.get("activations") in BANDS:
                outputs[label(row)] = (row["activations"], out)
            try:
                t.cuda.synchronize()
                t.cuda.empty_cache()
            except Exception as e:
                broken = f"{label(row)} ({_tail(e)[0]})"
                row.setdefault("cuda_error_after", broken)
    return rows, outputs
