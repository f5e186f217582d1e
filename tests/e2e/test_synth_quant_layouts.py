"""The published quantized layouts of bench/synth_checkpoint.py, read by vLLM's own quantization classes.

Run as a script under the Python of the CPU vLLM 0.32 env (the `vllm_env` fixture), which prints one JSON
report per layout; the tests assert on it. The CPU backend has no NVFP4, W4A16 Marlin or FP8 MoE kernel,
so these layouts are parsed, not served: for each tiny layout (`nvidia-mixed`, `ct-nvfp4`,
`ct-nvfp4-fp8`) and for the full-scale `nvidia-mixed` config (which is the published one),
- vLLM's override scan resolves the method (`modelopt_mixed` / `compressed-tensors`) and its config class
  is built from our config.json with `from_config`, mapped with the model's `hf_to_vllm_mapper`;
- for every vLLM module (fused names: qkv_proj, in_proj_qkvz, gate_up_proj, experts; lm_head; vision; the
  MTP head) the scheme vLLM assigns equals the storage we wrote for it;
- the vLLM linear / MoE methods for those schemes create parameters whose names, shapes and dtypes are our
  tensors' (kernel selection bypassed: no such kernel on a CPU), and vLLM's expert mapping routes every
  per-expert tensor name to one of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

try:
    import pytest
except ImportError:  # the script part runs in the vLLM env, which has no pytest
    pytest = None

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = ("nvidia-mixed", "ct-nvfp4", "ct-nvfp4-fp8")

if pytest is not None:

    @pytest.fixture(scope="module")
    def reports(vllm_env) -> dict:
        env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([str(vllm_env / "bin" / "python"), __file__], capture_output=True, text=True,
                              timeout=600, env=env, cwd=str(REPO))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        assert proc.returncode == 0 and lines, proc.stderr[-4000:]
        return json.loads(lines[-1])

    @pytest.mark.vllm
    @pytest.mark.parametrize("fmt", LAYOUTS + ("nvidia-mixed@full",))
    def test_vllm_resolves_the_method_and_assigns_our_scheme_to_every_module(reports, fmt):
        r = reports[fmt]
        assert r["method"] == {"nvidia-mixed": "modelopt_mixed"}.get(fmt.split("@")[0], "compressed-tensors")
        assert r["scheme_mismatch"] == [] and r["scheme_checked"] >= 14

    @pytest.mark.vllm
    @pytest.mark.parametrize("fmt", LAYOUTS)
    def test_vllm_parameters_match_our_tensors(reports, fmt):
        r = reports[fmt]
        assert r["param_mismatch"] == [] and r["param_checked"] >= 12
        assert r["expert_unmapped"] == [] and r["expert_mapped"] > 0

    @pytest.mark.vllm
    def test_vllm_reads_the_mixed_kv_algo_only_from_hf_quant_config(reports):
        r = reports["nvidia-mixed"]
        assert r["kv_from_config_json"] is None and r["kv_from_hf_quant_config"] == "FP8"
        assert r["kv_auto_resolves_to"] == "auto"


# ------------------------------------------------------------------------------------------------
# The script part (runs inside the vLLM env)
# ------------------------------------------------------------------------------------------------

def _kind_of(plan: dict, module: str) -> str:  # pragma: no cover - vLLM env
    """The storage we wrote for a checkpoint module (bench/synth_checkpoint.py LAYOUTS kinds)."""
    if module in plan:  # a fused 3-D BF16 tensor (experts.gate_up_proj)
        return "bf16"
    if f"{module}.weight_packed" in plan:
        return "ct_nvfp4"
    w = plan.get(f"{module}.weight")
    if w is None:
        return "absent"
    if w.dtype == "U8":
        return "mo_nvfp4"
    if w.dtype == "F8_E4M3":
        return "ct_fp8" if f"{module}.input_scale" not in plan else "mo_fp8"
    return "bf16"


def _report(sc, fmt: str, scale: str) -> dict:  # pragma: no cover - vLLM env
    import torch
    from vllm.model_executor.layers.quantization import get_quantization_config
    from vllm.model_executor.models.qwen3_5 import Qwen3_5MoeForConditionalGeneration as VM
    from vllm.model_executor.models.qwen3_5_mtp import Qwen3_5MTP

    a = sc.arch_for(scale)
    specials = {t: 1000 + i for i, t in enumerate(sc.SPECIAL_TOKENS)}
    cfg = sc.model_config(a, fmt, specials)
    qc_json = cfg["quantization_config"]
    out: dict = {}
    method = None
    for name in ("modelopt", "modelopt_fp4", "modelopt_mixed"):
        method = get_quantization_config(name).override_quantization_method(qc_json, None) or method
    method = method or qc_json["quant_method"]
    out["method"] = method
    cls = get_quantization_config(method)

    def build(mapper, packed):
        q = cls.from_config(json.loads(json.dumps(qc_json)))
        q.packed_modules_mapping = dict(packed)
        if mapper is not None:
            q.apply_vllm_mapper(mapper)
        return q

    target = build(VM.hf_to_vllm_mapper, VM.packed_modules_mapping)
    drafter = build(Qwen3_5MTP.hf_to_vllm_mapper if hasattr(Qwen3_5MTP, "hf_to_vllm_mapper") else None,
                    Qwen3_5MTP.packed_modules_mapping)

    plan = {s.name: s for _, specs in sc.tensor_plan(a, fmt) for s in specs}
    lin, full = 0, 3
    ck, vl = "model.language_model.layers", "language_model.model.layers"
    # vLLM module -> the checkpoint modules it is made of
    modules = {
        f"{vl}.{full}.self_attn.qkv_proj": [f"{ck}.{full}.self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj")],
        f"{vl}.{full}.self_attn.o_proj": [f"{ck}.{full}.self_attn.o_proj"],
        f"{vl}.{lin}.linear_attn.in_proj_qkvz": [f"{ck}.{lin}.linear_attn.in_proj_qkv", f"{ck}.{lin}.linear_attn.in_proj_z"],
        f"{vl}.{lin}.linear_attn.in_proj_ba": [f"{ck}.{lin}.linear_attn.in_proj_b", f"{ck}.{lin}.linear_attn.in_proj_a"],
        f"{vl}.{lin}.linear_attn.out_proj": [f"{ck}.{lin}.linear_attn.out_proj"],
        f"{vl}.{lin}.mlp.gate": [f"{ck}.{lin}.mlp.gate"],
        f"{vl}.{lin}.mlp.shared_expert.gate_up_proj": [f"{ck}.{lin}.mlp.shared_expert.gate_proj",
                                                       f"{ck}.{lin}.mlp.shared_expert.up_proj"],
        f"{vl}.{lin}.mlp.shared_expert.down_proj": [f"{ck}.{lin}.mlp.shared_expert.down_proj"],
        f"{vl}.{lin}.mlp.shared_expert_gate": [f"{ck}.{lin}.mlp.shared_expert_gate"],
        f"{vl}.{lin}.mlp.experts": [f"{ck}.{lin}.mlp.experts.0.{m}" for m in ("gate_proj", "up_proj", "down_proj")],
        "language_model.lm_head": ["lm_head"],
        "visual.blocks.0.attn.qkv": ["model.visual.blocks.0.attn.qkv"],
        "visual.merger.linear_fc1": ["model.visual.merger.linear_fc1"],
    }
    mtp = {
        "mtp.fc": ["mtp.fc"],
        "mtp.layers.0.self_attn.qkv_proj": [f"mtp.layers.0.self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj")],
        "mtp.layers.0.mlp.shared_expert.gate_up_proj": ["mtp.layers.0.mlp.shared_expert.gate_proj",
                                                        "mtp.layers.0.mlp.shared_expert.up_proj"],
        "mtp.layers.0.mlp.experts": ["mtp.layers.0.mlp.experts.gate_up_proj"],  # fused BF16 in the checkpoint
    }

    def vllm_scheme(q, prefix: str, is_moe: bool) -> str:
        """What vLLM's config assigns to a module, in our storage-kind words."""
        if method == "modelopt_mixed":
            if q.is_layer_excluded(prefix):
                return "bf16"
            algo = q._resolve_quant_algo(prefix)
            return {"W4A16_NVFP4": "mo_nvfp4", "NVFP4": "mo_nvfp4", "FP8": "mo_fp8", None: "bf16"}.get(algo, str(algo))
        if is_moe:  # what CompressedTensorsMoEMethod.get_moe_method asks for
            q._add_fused_moe_to_target_scheme_map()
            names = [prefix + p for p in (".0.gate_proj", ".0.up_proj", ".0.down_proj")]
        else:
            names = [prefix]
        # vLLM matches the "Linear" target against the module's class name: use vLLM's class names
        cls_name = ("RoutedExperts" if is_moe else "ParallelLMHead" if prefix.endswith("lm_head")
                    else "QKVParallelLinear")
        module = type(cls_name, (torch.nn.Module,), {})()
        dicts = [q.get_scheme_dict(module, n) for n in names]
        d = dicts[0]
        if d is None:
            return "bf16"
        w = d["weights"]
        if w.num_bits == 4:
            return "ct_nvfp4"
        return "ct_fp8" if w.num_bits == 8 else f"{w.type}{w.num_bits}"

    mismatch, checked = [], 0
    for q, table in ((target, modules), (drafter, mtp)):
        for prefix, parts in table.items():
            kinds = {_kind_of(plan, p) for p in parts}
            kinds.discard("absent")
            if len(kinds) != 1:
                mismatch.append(f"{prefix}: our parts disagree {kinds}")
                continue
            ours = kinds.pop()
            got = vllm_scheme(q, prefix, prefix.endswith(".experts"))
            checked += 1
            if got != ours:
                mismatch.append(f"{prefix}: vLLM {got}, ours {ours}")
    out["scheme_mismatch"], out["scheme_checked"] = mismatch, checked

    if method == "modelopt_mixed":
        from vllm.utils.torch_utils import get_kv_cache_quant_algo_string

        out["kv_from_config_json"] = target.kv_cache_quant_method
        hq = sc.hf_quant_config(a, fmt)
        out["kv_from_hf_quant_config"] = hq["quantization"]["kv_cache_quant_algo"]
        out["kv_auto_resolves_to"] = get_kv_cache_quant_algo_string(qc_json) or "auto"
    if scale != "tiny":
        return out
    out.update(_params(sc, a, fmt, plan, target, method))
    return out


def _params(sc, a, fmt: str, plan: dict, q, method: str) -> dict:  # pragma: no cover - vLLM env
    """Create vLLM's parameters for each quantized module kind and compare them with our tensors."""
    import types

    import torch
    from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts

    dt = {"U8": torch.uint8, "F8_E4M3": torch.float8_e4m3fn, "F32": torch.float32, "BF16": torch.bfloat16}
    ck = "model.language_model.layers"
    groups = [[f"{ck}.3.self_attn.q_proj", f"{ck}.3.self_attn.k_proj", f"{ck}.3.self_attn.v_proj"],
              [f"{ck}.3.self_attn.o_proj"],
              [f"{ck}.0.linear_attn.in_proj_qkv", f"{ck}.0.linear_attn.in_proj_z"],
              [f"{ck}.0.linear_attn.out_proj"],
              [f"{ck}.0.mlp.shared_expert.gate_proj", f"{ck}.0.mlp.shared_expert.up_proj"],
              [f"{ck}.0.mlp.shared_expert.down_proj"], ["lm_head"]]
    mism, checked = [], 0

    def linear_method(parts: list[str]):
        kind = _kind_of(plan, parts[0])
        if kind == "bf16":
            return None, kind
        if method == "modelopt_mixed":
            from vllm.model_executor.layers.quantization import modelopt

            modelopt.select_linear_kernel = lambda *args, **kw: None
            modelopt.expose_input_quant_key = lambda *args, **kw: None
            algo = q._resolve_quant_algo(parts[0]) or q._resolve_quant_algo(
                parts[0].replace("model.language_model.", "language_model.model."))
            if hasattr(modelopt, "LINEAR_ALGOS"):  # 0.32+: one generic linear method
                sub = getattr(q, modelopt.LINEAR_ALGOS[algo][1])
                return modelopt.build_linear_method(sub, algo, parts[0]), kind
            # 0.26: one class per algo (modelopt.py:2508-2566)
            modelopt.init_fp8_linear_kernel = lambda **kw: None
            if algo == "FP8":
                m = object.__new__(modelopt.ModelOptFp8LinearMethod)
                m.quant_config, m.out_dtype, m.input_dtype = q.fp8_config, torch.bfloat16, torch.bfloat16
                return m, kind
            m = object.__new__(modelopt.ModelOptNvFp4W4A16LinearMethod)  # its Marlin kernel needs CUDA
            m.quant_config, m.marlin_input_dtype, m.kernel = q.w4a16_nvfp4_config, None, None
            return m, kind
        from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w4a4_nvfp4 as n4
        from vllm.model_executor.layers.quantization.compressed_tensors.schemes import compressed_tensors_w8a8_fp8 as f8

        if kind == "ct_nvfp4":  # kernel selection bypassed: no NVFP4 kernel on a CPU
            n4.expose_input_quant_key = lambda *args, **kw: None
            m = object.__new__(n4.CompressedTensorsW4A4Fp4)
            m.use_a16, m.group_size, m.kernel = False, 16, None
            return m, kind
        f8.init_fp8_linear_kernel = lambda **kw: None
        f8.expose_input_quant_key = lambda *args, **kw: None
        m = object.__new__(f8.CompressedTensorsW8A8Fp8)
        d = q.get_scheme_dict(type("QKVParallelLinear", (torch.nn.Module,), {})(),
                              parts[0].replace("model.language_model.", "language_model.model."))
        m.weight_quant, m.strategy = d["weights"], d["weights"].strategy
        m.is_static_input_scheme = bool(d.get("input_activations") is not None and not d["input_activations"].dynamic)
        m.weight_block_size, m.out_dtype, m.input_dtype = None, torch.bfloat16, torch.bfloat16
        m.activation_quant_key = f8.activation_quant_key_mapping[m.is_static_input_scheme]
        m.weight_quant_key = f8.weight_quant_key_mapping[m.strategy]
        return m, kind

    for parts in groups:
        method_obj, kind = linear_method(parts)
        if method_obj is None:
            continue
        first = plan.get(f"{parts[0]}.weight") or plan[f"{parts[0]}.weight_packed"]
        outs = [first.shape[0]] + [(plan.get(f"{p}.weight") or plan[f"{p}.weight_packed"]).shape[0] for p in parts[1:]]
        in_f = first.shape[1] * (2 if first.dtype == "U8" else 1)
        layer = torch.nn.Module()
        kw = dict(layer=layer, input_size_per_partition=in_f, output_partition_sizes=outs, input_size=in_f,
                  output_size=sum(outs), params_dtype=torch.bfloat16, weight_loader=lambda *args, **k: None)
        try:
            method_obj.create_weights(**kw)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            mism.append(f"{parts[0]}: create_weights failed: {type(e).__name__}: {e}")
            continue
        params = dict(layer.named_parameters())
        ours = {n[len(parts[0]) + 1:] for n in plan if n.startswith(parts[0] + ".")}
        for suffix in sorted(ours):
            specs = [plan[f"{p}.{suffix}"] for p in parts]
            prm = params.get(suffix)
            checked += 1
            if prm is None:
                mism.append(f"{parts[0]}.{suffix}: vLLM creates no such parameter ({sorted(params)})")
                continue
            if prm.dtype != dt[specs[0].dtype]:
                mism.append(f"{parts[0]}.{suffix}: dtype {prm.dtype} vs {specs[0].dtype}")
            s0 = specs[0].shape
            if s0 in ((), (1,)):
                ok = prm.numel() == len(parts)
            elif len(s0) == 2 and s0[1] == 1 and kind == "ct_fp8":  # per-channel scale [out, 1]
                ok = tuple(prm.shape) in ((sum(s.shape[0] for s in specs), 1), (sum(s.shape[0] for s in specs),))
            else:
                ok = tuple(prm.shape[1:]) == s0[1:] and prm.shape[0] == sum(s.shape[0] for s in specs)
            if not ok:
                mism.append(f"{parts[0]}.{suffix}: vLLM {tuple(prm.shape)} vs ours {[s.shape for s in specs]}")
        extra = sorted(set(params) - ours - {"input_scale"})  # W4A16 keeps an input_scale placeholder
        if extra:
            mism.append(f"{parts[0]}: vLLM parameters with no tensor of ours: {extra}")

    # routed experts
    e0 = f"{ck}.0.mlp.experts.0"
    ekind = _kind_of(plan, f"{e0}.gate_proj")
    layer = torch.nn.Module()
    if method == "modelopt_mixed":
        from vllm.model_executor.layers.quantization import modelopt

        moe = object.__new__(modelopt.ModelOptNvFp4FusedMoE)
        moe.quant_config = q.w4a16_nvfp4_config
        moe.use_a16 = True
        suffixes, names = ("weight", "weight_scale", "weight_scale_2", "input_scale"), "{w}_{s}"
    else:
        from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe import (
            compressed_tensors_moe_w4a4_nvfp4 as cm,
        )

        moe = object.__new__(cm.CompressedTensorsW4A4Nvfp4MoEMethod)
        moe.group_size, moe.use_a16 = 16, False
        suffixes, names = ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"), "{w}_{s}"
    moe.moe = types.SimpleNamespace(is_act_and_mul=True)
    moe.use_global_sf = False
    moe.create_weights(layer, num_experts=a.experts, hidden_size=a.hidden, intermediate_size_per_partition=a.moe_inter,
                       params_dtype=torch.bfloat16, weight_loader=lambda *args, **kw: None,
                       global_num_experts=a.experts)
    params = dict(layer.named_parameters())
    for w, parts in (("w13", ["gate_proj", "up_proj"]), ("w2", ["down_proj"])):
        for s in suffixes:
            prm = params.get(names.format(w=w, s=s))
            specs = [plan[f"{e0}.{p}.{s}"] for p in parts]
            checked += 1
            if prm is None:
                mism.append(f"experts {w}_{s}: vLLM has no such parameter ({sorted(params)})")
                continue
            if prm.dtype != dt[specs[0].dtype] or prm.shape[0] != a.experts:
                mism.append(f"experts {w}_{s}: {prm.dtype} {tuple(prm.shape)} vs {specs[0]}")
            per = tuple(prm.shape[1:])
            if specs[0].shape in ((), (1,)):
                ok = per in ((), (len(parts),))
            else:
                ok = per == (sum(x.shape[0] for x in specs),) + specs[0].shape[1:]
            if not ok:
                mism.append(f"experts {w}_{s}: vLLM per expert {per} vs ours {[x.shape for x in specs]} ({ekind})")
    mapping = RoutedExperts.build_expert_params_mapping("gate_proj", "down_proj", "up_proj", a.experts,
                                                        routed_experts_prefix="experts")
    unmapped, mapped = [], 0
    for name in plan:
        if ".mlp.experts." not in name or name.startswith("mtp."):
            continue
        hits = [param.split(".")[-1] + name.split(weight)[-1] for param, weight, _, _ in mapping if weight in name]
        if len(hits) != 1 or hits[0] not in params:
            unmapped.append(f"{name} -> {hits}")
        else:
            mapped += 1
    return {"param_mismatch": mism, "param_checked": checked, "expert_unmapped": unmapped[:20],
            "expert_mapped": mapped}


def _main() -> None:  # pragma: no cover - runs in the vLLM env's interpreter
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    sys.path.insert(0, str(REPO / "bench"))
    import synth_checkpoint as sc

    ctx = set_current_vllm_config(VllmConfig())
    ctx.__enter__()
    init_distributed_environment(world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:29537",
                                 local_rank=0, backend="gloo")
    initialize_model_parallel(1, 1)
    out = {fmt: _report(sc, fmt, "tiny") for fmt in LAYOUTS}
    out["nvidia-mixed@full"] = _report(sc, "nvidia-mixed", "full")
    print(json.dumps(out))


if __name__ == "__main__":
    _main()
