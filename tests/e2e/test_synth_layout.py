"""The synthetic checkpoint's names, shapes and dtypes against the real libraries' expectations.

Run as a script under the Python of the CPU vLLM env (the `vllm_env` fixture of tests/conftest.py;
it has vllm 0.32 and transformers 5.19), which prints one JSON report; the tests below run it and
assert on that report. Checks:
- transformers' own Qwen3_5MoeForConditionalGeneration, built on the meta device from our
  config.json, has exactly our BF16 tensor names and shapes (everything but the MTP head, which
  transformers does not model), at tiny and at full scale;
- vLLM's ModelOpt NVFP4 config, read from our quantization_config and mapped with the model's own
  hf_to_vllm_mapper and packed-module table, quantizes exactly the modules we wrote packed;
- vLLM's NVFP4 linear and MoE methods create parameters whose shapes and dtypes are those of our
  tensors, and vLLM's expert mapping routes every per-expert tensor name to one of them.
(NVFP4 cannot run on a CPU; kernel selection is bypassed to let the methods create parameters.)
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


if pytest is not None:

    def _report(vllm_env: Path, scale: str) -> dict:
        env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([str(vllm_env / "bin" / "python"), __file__, scale], capture_output=True, text=True, timeout=300,
                              env=env, cwd=str(REPO))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        assert proc.returncode == 0 and lines, proc.stderr[-4000:]
        return json.loads(lines[-1])


    @pytest.fixture(scope="module")
    def tiny_report(vllm_env) -> dict:
        return _report(vllm_env, "tiny")


    @pytest.fixture(scope="module")
    def full_report(vllm_env) -> dict:
        return _report(vllm_env, "full")


    @pytest.mark.vllm
    @pytest.mark.parametrize("which", ["tiny", "full"])
    def test_bf16_names_and_shapes_match_transformers(which, request):
        r = request.getfixturevalue(f"{which}_report")
        assert r["hf_missing"] == [] and r["hf_extra"] == [] and r["hf_shape_mismatch"] == []
        assert r["hf_compared"] > 100


    @pytest.mark.vllm
    @pytest.mark.parametrize("which", ["tiny", "full"])
    def test_vllm_modelopt_quantizes_exactly_our_packed_modules(which, request):
        r = request.getfixturevalue(f"{which}_report")
        assert r["quant_name"] == "modelopt_fp4" and r["group_size"] == 16
        assert r["exclusion_mismatch"] == []
        assert r["exclusion_checked"] > 10


    @pytest.mark.vllm
    def test_vllm_nvfp4_parameters_match_our_tensors(tiny_report):
        r = tiny_report
        assert r["linear_mismatch"] == [] and r["linear_checked"] >= 6
        assert r["moe_mismatch"] == [] and r["moe_checked"] == 8
        assert r["expert_unmapped"] == [] and r["expert_mapped"] > 0


# ------------------------------------------------------------------------------------------------
# The script part (runs inside the vLLM env)
# ------------------------------------------------------------------------------------------------


def _main(scale: str) -> None:  # pragma: no cover - runs in the vLLM env's interpreter
    import types
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    import synth_checkpoint as sc

    a = sc.arch_for(scale)
    specials = {t: 1000 + i for i, t in enumerate(sc.SPECIAL_TOKENS)}
    cfg = sc.model_config(a, "nvfp4", specials)
    out: dict = {}

    # --- transformers: names and shapes of the BF16 layout -----------------------------------
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    hf_cfg = Qwen3_5MoeConfig.from_dict({k: v for k, v in cfg.items() if k != "quantization_config"})
    with torch.device("meta"):
        model = Qwen3_5MoeForConditionalGeneration(hf_cfg)
    hf = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ours = {s.name: s.shape for _, specs in sc.tensor_plan(a, "bf16") for s in specs if not s.name.startswith("mtp.")}
    out["hf_missing"] = sorted(set(hf) - set(ours))[:20]
    out["hf_extra"] = sorted(set(ours) - set(hf))[:20]
    out["hf_shape_mismatch"] = [k for k in ours if k in hf and hf[k] != tuple(ours[k])][:20]
    out["hf_compared"] = len(ours)

    # --- vLLM ModelOpt exclusion -----------------------------------------------------------------
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.quantization import modelopt
    from vllm.model_executor.models.qwen3_5 import Qwen3_5MoeForConditionalGeneration as VM

    qc = modelopt.ModelOptNvFp4Config.from_config(cfg["quantization_config"])
    qc.packed_modules_mapping = dict(VM.packed_modules_mapping)
    qc.apply_vllm_mapper(VM.hf_to_vllm_mapper)
    out["quant_name"], out["group_size"] = qc.get_name(), qc.group_size

    plan = {s.name: s for _, specs in sc.tensor_plan(a, "nvfp4") for s in specs}
    quantized = {n[: -len(".weight_scale")] for n in plan if n.endswith(".weight_scale")}
    # vLLM module prefix -> the checkpoint modules it fuses
    fused = {
        "self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        "self_attn.o_proj": ["self_attn.o_proj"],
        "linear_attn.in_proj_qkvz": ["linear_attn.in_proj_qkv", "linear_attn.in_proj_z"],
        "linear_attn.in_proj_ba": ["linear_attn.in_proj_b", "linear_attn.in_proj_a"],
        "linear_attn.out_proj": ["linear_attn.out_proj"],
        "mlp.gate": ["mlp.gate"],
        "mlp.shared_expert.gate_up_proj": ["mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj"],
        "mlp.shared_expert.down_proj": ["mlp.shared_expert.down_proj"],
        "mlp.shared_expert_gate": ["mlp.shared_expert_gate"],
        "mlp.experts": ["mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.0.down_proj"],
    }
    mismatch, checked = [], 0
    for i in range(a.layers):
        ck = f"model.language_model.layers.{i}"
        vl = f"language_model.model.layers.{i}"
        for vmod, parts in fused.items():
            present = [p for p in parts if f"{ck}.{p}.weight" in plan]
            if not present:
                continue
            want_q = {f"{ck}.{p}" in quantized for p in present}
            if len(want_q) != 1:
                mismatch.append(f"{vl}.{vmod}: parts disagree")
                continue
            excluded = qc.is_layer_excluded(f"{vl}.{vmod}")
            checked += 1
            if excluded == want_q.pop():
                mismatch.append(f"{vl}.{vmod}: vLLM excluded={excluded}")
    for head in ("language_model.lm_head", "visual.blocks.0.attn.qkv", "visual.merger.linear_fc1"):
        checked += 1
        if not qc.is_layer_excluded(head):
            mismatch.append(f"{head}: vLLM would quantize it")
    # the MTP drafter reads the same config without the target's mapper, with its own prefixes
    mtp_qc = modelopt.ModelOptNvFp4Config.from_config(cfg["quantization_config"])
    mtp_qc.packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    for p in ("mtp.fc", "mtp.layers.0.self_attn.qkv_proj", "mtp.layers.0.mlp.experts",
              "mtp.layers.0.mlp.shared_expert.gate_up_proj"):
        checked += 1
        if not mtp_qc.is_layer_excluded(p):
            mismatch.append(f"{p}: vLLM would quantize the BF16 MTP head")
    out["exclusion_mismatch"], out["exclusion_checked"] = mismatch, checked

    if scale != "tiny":
        print(json.dumps(out))
        return

    # --- vLLM parameter creation (kernel selection bypassed: no NVFP4 kernel on a CPU) ---------
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    ctx = set_current_vllm_config(VllmConfig())
    ctx.__enter__()
    init_distributed_environment(world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:29531",
                                 local_rank=0, backend="gloo")
    initialize_model_parallel(1, 1)
    modelopt.select_linear_kernel = lambda *args, **kw: None
    modelopt.expose_input_quant_key = lambda *args, **kw: None

    dt = {"U8": torch.uint8, "F8_E4M3": torch.float8_e4m3fn, "F32": torch.float32, "BF16": torch.bfloat16}
    lin_mismatch, lin_checked = [], 0
    ck = "model.language_model.layers"
    groups = [[f"{ck}.3.self_attn.q_proj", f"{ck}.3.self_attn.k_proj", f"{ck}.3.self_attn.v_proj"],
              [f"{ck}.3.self_attn.o_proj"],
              [f"{ck}.0.linear_attn.in_proj_qkv", f"{ck}.0.linear_attn.in_proj_z"],
              [f"{ck}.0.linear_attn.out_proj"],
              [f"{ck}.0.mlp.shared_expert.gate_proj", f"{ck}.0.mlp.shared_expert.up_proj"],
              [f"{ck}.0.mlp.shared_expert.down_proj"]]
    for parts in groups:
        w = [plan[f"{p}.weight"] for p in parts]
        outs = [s.shape[0] for s in w]
        in_f = w[0].shape[1] * 2
        method = modelopt.build_linear_method(qc, qc.quant_method, parts[0])
        layer = torch.nn.Module()
        method.create_weights(layer, input_size_per_partition=in_f, output_partition_sizes=outs,
                              input_size=in_f, output_size=sum(outs), params_dtype=torch.bfloat16,
                              weight_loader=lambda *args, **kw: None)
        params = dict(layer.named_parameters())
        for suffix in ("weight", "weight_scale", "weight_scale_2", "input_scale"):
            specs = [plan[f"{p}.{suffix}"] for p in parts]
            prm = params.get(suffix)
            lin_checked += 1
            if prm is None:
                lin_mismatch.append(f"{parts[0]}.{suffix}: vLLM creates no such parameter")
                continue
            if prm.dtype != dt[specs[0].dtype]:
                lin_mismatch.append(f"{parts[0]}.{suffix}: dtype {prm.dtype} vs {specs[0].dtype}")
            if specs[0].shape == ():
                ok = prm.numel() == len(parts)
            else:
                ok = (tuple(prm.shape[1:]) == specs[0].shape[1:]
                      and prm.shape[0] == sum(s.shape[0] for s in specs))
            if not ok:
                lin_mismatch.append(f"{parts[0]}.{suffix}: vLLM {tuple(prm.shape)} vs ours {[s.shape for s in specs]}")
    out["linear_mismatch"], out["linear_checked"] = lin_mismatch, lin_checked

    moe_method = object.__new__(modelopt.ModelOptNvFp4FusedMoE)
    moe_method.quant_config = qc
    moe_method.moe = types.SimpleNamespace(is_act_and_mul=True)
    moe_method.use_global_sf = False
    layer = torch.nn.Module()
    moe_method.create_weights(layer, num_experts=a.experts, hidden_size=a.hidden,
                              intermediate_size_per_partition=a.moe_inter, params_dtype=torch.bfloat16,
                              weight_loader=lambda *args, **kw: None, global_num_experts=a.experts)
    params = dict(layer.named_parameters())
    e0 = f"{ck}.0.mlp.experts.0"
    moe_mismatch, moe_checked = [], 0
    for w, parts in (("w13", ["gate_proj", "up_proj"]), ("w2", ["down_proj"])):
        for suffix in ("weight", "weight_scale", "weight_scale_2", "input_scale"):
            prm = params.get(f"{w}_{suffix}")
            specs = [plan[f"{e0}.{p}.{suffix}"] for p in parts]
            moe_checked += 1
            if prm is None:
                moe_mismatch.append(f"{w}_{suffix}: missing")
                continue
            if prm.dtype != dt[specs[0].dtype] or prm.shape[0] != a.experts:
                moe_mismatch.append(f"{w}_{suffix}: {prm.dtype} {tuple(prm.shape)} vs {specs[0]}")
            per_expert = tuple(prm.shape[1:])
            if specs[0].shape == ():
                ok = per_expert in ((), (len(parts),))
            else:
                ok = per_expert == (sum(s.shape[0] for s in specs),) + specs[0].shape[1:]
            if not ok:
                moe_mismatch.append(f"{w}_{suffix}: vLLM per expert {per_expert} vs ours {[s.shape for s in specs]}")
    out["moe_mismatch"], out["moe_checked"] = moe_mismatch, moe_checked

    from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts

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
    out["expert_unmapped"], out["expert_mapped"] = unmapped[:20], mapped
    print(json.dumps(out))


if __name__ == "__main__":
    _main(sys.argv[1])
