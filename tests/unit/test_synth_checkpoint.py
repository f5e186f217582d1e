"""bench/synth_checkpoint.py: sizes, NVFP4 packing, file layout and values of a tiny build."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("synth_checkpoint", REPO / "bench" / "synth_checkpoint.py")
sc = importlib.util.module_from_spec(_spec)
sys.modules["synth_checkpoint"] = sc
_spec.loader.exec_module(sc)

torch = pytest.importorskip("torch")
safe_open = pytest.importorskip("safetensors").safe_open


# ---- full-scale arithmetic -------------------------------------------------------------------


def test_full_bf16_is_the_published_parameter_count():
    # the hub config inventory: "35.95B params" (Qwen3_5MoeForConditionalGeneration incl. vision + MTP)
    size = sc.planned_bytes(sc.FULL, "bf16")
    assert size == 71_903_647_328
    assert round(size / 2 / 1e9, 2) == 35.95


def test_full_nvfp4_matches_the_model_card_ratio():
    # model card: "reducing the disk size and GPU memory requirements by approximately 3.06x"
    bf16, fp4 = sc.planned_bytes(sc.FULL, "bf16"), sc.planned_bytes(sc.FULL, "nvfp4")
    assert fp4 == 23_578_959_408
    assert 3.0 < bf16 / fp4 < 3.1


def test_layers_option_scales_the_decoder_only():
    full, eight = sc.planned_bytes(sc.FULL, "nvfp4"), sc.planned_bytes(sc.arch_for("full", 8), "nvfp4")
    per_layer = (full - eight) / 32
    assert eight < full and 300e6 < per_layer < 600e6  # ~0.45 GB of NVFP4 experts per layer


def test_layer_types_put_full_attention_at_every_fourth_layer():
    types = [sc.FULL.layer_type(i) for i in range(40)]
    assert [i for i, t in enumerate(types) if t == "full_attention"] == list(range(3, 40, 4))


def test_full_config_numbers():
    cfg = sc.model_config(sc.FULL, "nvfp4", {t: i for i, t in enumerate(sc.SPECIAL_TOKENS)})
    t = cfg["text_config"]
    assert cfg["architectures"] == ["Qwen3_5MoeForConditionalGeneration"]
    assert (t["num_hidden_layers"], t["hidden_size"], t["vocab_size"], t["max_position_embeddings"]) == (40, 2048, 248320, 262144)
    assert (t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]) == (16, 2, 256)
    assert (t["linear_num_key_heads"], t["linear_num_value_heads"], t["linear_key_head_dim"], t["linear_value_head_dim"]) == (16, 32, 128, 128)
    assert (t["num_experts"], t["num_experts_per_tok"], t["moe_intermediate_size"], t["shared_expert_intermediate_size"]) == (256, 8, 512, 512)
    assert t["rope_parameters"]["rope_theta"] == 1e7 and t["partial_rotary_factor"] == 0.25
    assert sum(t["rope_parameters"]["mrope_section"]) == 256 * 0.25 / 2
    assert t["mtp_num_hidden_layers"] == 1 and cfg["tie_word_embeddings"] is False
    assert cfg["vision_config"]["out_hidden_size"] == 2048


# ---- NVFP4 encoding --------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_e2m1_pack_round_trip(codes):
    arr = np.array(codes, np.uint8).reshape(1, -1)
    packed = sc.pack_e2m1(arr)
    assert packed.shape == (1, len(codes) // 2)
    assert (sc.unpack_e2m1(packed) == arr).all()


def test_e2m1_low_nibble_holds_the_first_element():
    assert sc.pack_e2m1(np.array([[0x1, 0xF]], np.uint8)).tolist() == [[0xF1]]


def test_e4m3_decoder_agrees_with_torch_on_every_code():
    codes = np.arange(256, dtype=np.uint8)
    ours = sc.e4m3_to_float(codes)
    ref = torch.from_numpy(codes).view(torch.float8_e4m3fn).float().numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    finite = ~np.isnan(ref)
    assert np.array_equal(ours[finite], ref[finite])


def test_block_scale_codes_are_finite_and_in_range():
    vals = sc.e4m3_to_float(sc.E4M3_SCALE_CODES)
    assert np.isfinite(vals).all() and vals.min() == 64 and vals.max() == 448


def test_dequantized_weights_have_the_intended_spread():
    pools = sc.Pools(1, pool_bytes=1 << 20)
    w = next(pools.chunks(pools.fp4, 256 * 64)).reshape(256, 64)
    s = next(pools.chunks(pools.e4m3, 256 * 8)).reshape(256, 8)
    deq = sc.dequantize_nvfp4(w, s, sc.WEIGHT_SCALE_2)
    assert deq.shape == (256, 128) and np.isfinite(deq).all()
    assert 0.012 < deq.std() < 0.03


def test_bf16_conversion_rounds_to_nearest():
    x = np.array([1.0, -2.5, 0.1, 3.0e38], np.float32)
    bits = sc._to_bf16_bits(x)
    back = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert np.array_equal(back, ref)


# ---- a tiny build, read back -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nvfp4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nvfp4")
    r = sc.build_checkpoint(out, "nvfp4", "tiny", workers=2)
    assert r.tensors > 500 and r.total_bytes > 0
    return out


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bf16")
    sc.build_checkpoint(out, "bf16", "tiny", workers=1)
    return out


def _tensors(ckpt: Path) -> dict[str, "torch.Tensor"]:
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    out = {}
    for f in sorted(set(index["weight_map"].values())):
        with safe_open(str(ckpt / f), "pt") as fh:
            for k in fh.keys():
                assert index["weight_map"][k] == f
                out[k] = fh.get_tensor(k)
    assert set(out) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in out.values())
    return out


def test_tiny_nvfp4_quantized_modules_have_the_modelopt_quartet(tiny_nvfp4):
    t = _tensors(tiny_nvfp4)
    scales = [k[: -len(".weight_scale")] for k in t if k.endswith(".weight_scale")]
    assert len(scales) == 3 * (3 * 8 + 3 + 3) + 1 * (3 * 8 + 3 + 4)  # 3 DeltaNet + 1 attention layer
    for m in scales:
        w, s, s2, a = (t[f"{m}.{x}"] for x in ("weight", "weight_scale", "weight_scale_2", "input_scale"))
        assert w.dtype == torch.uint8 and s.dtype == torch.float8_e4m3fn
        assert s2.dtype == torch.float32 and a.dtype == torch.float32 and s2.shape == () and a.shape == ()
        assert s.shape == (w.shape[0], w.shape[1] * 2 // 16)
        assert torch.isfinite(s.float()).all() and s2 > 0 and a > 0
    assert t["model.language_model.layers.0.mlp.experts.7.down_proj.weight"].shape == (128, 32)


def test_tiny_nvfp4_keeps_bf16_where_modelopt_does(tiny_nvfp4):
    t = _tensors(tiny_nvfp4)
    for k in ("lm_head.weight", "model.language_model.embed_tokens.weight", "mtp.fc.weight",
              "model.language_model.layers.0.linear_attn.in_proj_a.weight",
              "model.language_model.layers.0.mlp.gate.weight",
              "model.language_model.layers.0.mlp.shared_expert_gate.weight",
              "mtp.layers.0.mlp.experts.gate_up_proj", "model.visual.blocks.0.attn.qkv.weight"):
        assert t[k].dtype == torch.bfloat16, k
    assert not any(k.startswith("mtp.") and "scale" in k for k in t)


def test_tiny_values_are_finite_and_sane(tiny_bf16):
    t = _tensors(tiny_bf16)
    for k, v in t.items():
        assert torch.isfinite(v.float()).all(), k
    assert float(t["model.language_model.layers.0.input_layernorm.weight"].abs().max()) == 0.0  # 1 + w
    assert float(t["model.language_model.layers.0.linear_attn.norm.weight"].float().mean()) == 1.0
    a_log = t["model.language_model.layers.0.linear_attn.A_log"]
    assert a_log.dtype == torch.float32 and 0 <= float(a_log.min()) and float(a_log.max()) <= np.log(16)
    dt = torch.nn.functional.softplus(t["model.language_model.layers.0.linear_attn.dt_bias"].float())
    assert 5e-4 < float(dt.min()) and float(dt.max()) < 0.11
    experts = t["model.language_model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.shape == (8, 128, 128) and 0.015 < float(experts.float().std()) < 0.025


def test_quant_configs_agree(tiny_nvfp4):
    hq = json.loads((tiny_nvfp4 / "hf_quant_config.json").read_text())
    cfg = json.loads((tiny_nvfp4 / "config.json").read_text())["quantization_config"]
    assert hq["producer"]["name"] == "modelopt"
    q = hq["quantization"]
    assert q["quant_algo"] == "NVFP4" and q["group_size"] == 16 and "kv_cache_quant_algo" in q
    assert cfg["quant_method"] == "modelopt" and cfg["quant_algo"] == "NVFP4"
    assert cfg["ignore"] == q["exclude_modules"]
    assert {"lm_head", "model.visual*", "mtp.fc", "mtp.layers.0*"} <= set(q["exclude_modules"])
    grp = cfg["config_groups"]["group_0"]
    assert grp["weights"]["group_size"] == 16 and grp["input_activations"]["num_bits"] == 4


def test_tokenizer_ids_fit_the_vocab(tiny_bf16):
    cfg = json.loads((tiny_bf16 / "config.json").read_text())
    tok = json.loads((tiny_bf16 / "tokenizer.json").read_text())
    vocab = cfg["text_config"]["vocab_size"]
    ids = list(tok["model"]["vocab"].values()) + [a["id"] for a in tok["added_tokens"]]
    assert max(ids) < vocab and len(set(ids)) == len(ids)
    assert cfg["image_token_id"] in ids and cfg["text_config"]["eos_token_id"] in ids
    assert len(tok["model"]["merges"]) == 200


def test_cli_dry_run_prints_the_planned_size(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench/synth_checkpoint.py"), "--format", "nvfp4",
                          "--scale", "full", "--out", str(tmp_path / "x"), "--dry-run", "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == {"format": "nvfp4", "scale": "full", "layers": 40, "bytes": 23_578_959_408}
    assert not (tmp_path / "x").exists()


def test_cli_refuses_when_the_disk_is_too_small(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sc, "_free_bytes", lambda path: 10**9)
    assert sc.main(["--format", "bf16", "--scale", "full", "--out", str(tmp_path / "y")]) == 2
    assert "--layers" in capsys.readouterr().err


# ---- the published layouts (bench/SYNTH_LAYOUTS.md) ------------------------------------------

REAL = REPO / "tests" / "data" / "checkpoints" / "nvidia-nvfp4"


def test_full_nvidia_mixed_config_is_the_published_one():
    """config.json quantization_config and hf_quant_config.json equal the recorded originals
    (tests/data/checkpoints/SOURCES.md), group for group and layer for layer."""
    real = json.loads((REAL / "config.json").read_text())
    assert sc.config_quantization(sc.FULL, "nvidia-mixed") == real["quantization_config"]
    assert sc.hf_quant_config(sc.FULL, "nvidia-mixed") == json.loads((REAL / "hf_quant_config.json").read_text())
    cfg = sc.model_config(sc.FULL, "nvidia-mixed", {t: i for i, t in enumerate(sc.SPECIAL_TOKENS)})
    ours, theirs = cfg["text_config"], real["text_config"]
    assert {k for k in ours if ours[k] != theirs.get(k)} == {"bos_token_id", "eos_token_id"}  # our tokenizer's ids
    assert cfg["vision_config"] == real["vision_config"]


def test_full_sizes_and_tensor_counts():
    # nvidia mixed: 124,468 tensors and 23.46 GB on disk as published (inference-atlas PR #151)
    assert sc.planned_tensors(sc.FULL, "nvidia-mixed") == 124_468
    mixed = sc.planned_bytes(sc.FULL, "nvidia-mixed")
    assert mixed == 23_407_582_776 and abs(mixed / 23.46e9 - 1) < 0.01
    assert sc.planned_bytes(sc.FULL, "ct-nvfp4") == 25_025_993_568
    assert sc.planned_bytes(sc.FULL, "ct-nvfp4-fp8") == 25_201_260_128
    # the experts alone are the same bytes in both NVFP4 encodings (only the global scale shapes differ)
    assert sc.planned_bytes(sc.FULL, "nvfp4") == 23_578_959_408


@pytest.fixture(scope="module", params=["nvidia-mixed", "ct-nvfp4", "ct-nvfp4-fp8"])
def tiny_layout(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    sc.build_checkpoint(out, request.param, "tiny", workers=1, bpe_merges=20, always_accept=True)
    return request.param, out


EXPECTED_TENSORS = {  # one module per part: the tensor suffixes and dtypes its vLLM loader registers
    "nvidia-mixed": {"mlp.experts.0.gate_proj": {"weight": "U8", "weight_scale": "F8_E4M3", "weight_scale_2": "F32",
                                                 "input_scale": "F32"},
                     "self_attn.q_proj": {"weight": "F8_E4M3", "weight_scale": "F32", "input_scale": "F32"},
                     "linear_attn.in_proj_qkv": {"weight": "F8_E4M3", "weight_scale": "F32", "input_scale": "F32"}},
    "ct-nvfp4": {"mlp.experts.0.gate_proj": {"weight_packed": "U8", "weight_scale": "F8_E4M3",
                                             "weight_global_scale": "F32", "input_global_scale": "F32"},
                 "self_attn.q_proj": {"weight_packed": "U8", "weight_scale": "F8_E4M3", "weight_global_scale": "F32",
                                      "input_global_scale": "F32"},
                 "linear_attn.in_proj_qkv": {"weight": "BF16"}},
    "ct-nvfp4-fp8": {"mlp.experts.0.gate_proj": {"weight_packed": "U8", "weight_scale": "F8_E4M3",
                                                 "weight_global_scale": "F32", "input_global_scale": "F32"},
                     "self_attn.q_proj": {"weight": "F8_E4M3", "weight_scale": "F32"},
                     "mlp.shared_expert.up_proj": {"weight": "F8_E4M3", "weight_scale": "F32"},
                     "linear_attn.in_proj_qkv": {"weight": "BF16"}},
}
DT = {"U8": "torch.uint8", "F8_E4M3": "torch.float8_e4m3fn", "F32": "torch.float32", "BF16": "torch.bfloat16"}


def test_tiny_layout_tensors_and_dtypes(tiny_layout):
    fmt, d = tiny_layout
    t = _tensors(d)
    lm = "model.language_model.layers"
    for module, suffixes in EXPECTED_TENSORS[fmt].items():
        layer = 3 if "self_attn" in module else 0
        names = {k[len(f"{lm}.{layer}.{module}."):] for k in t if k.startswith(f"{lm}.{layer}.{module}.")}
        assert names == set(suffixes), (module, names)
        for suf, dt in suffixes.items():
            assert str(t[f"{lm}.{layer}.{module}.{suf}"].dtype) == DT[dt], (module, suf)
    w = t[f"{lm}.3.self_attn.k_proj.weight" if fmt != "ct-nvfp4" else f"{lm}.3.self_attn.k_proj.weight_packed"]
    assert w.shape[1] == sc.TINY.hidden // (2 if w.dtype == torch.uint8 else 1)
    # the MTP head stays BF16 with fused experts, as published
    assert t["mtp.layers.0.mlp.experts.gate_up_proj"].dtype == torch.bfloat16
    assert not any(k.startswith("mtp.") and "scale" in k for k in t)
    assert not any(k.endswith(("k_scale", "v_scale")) for k in t)
    # --always-accept: lm_head all zero (every logit equal)
    head = t["lm_head.weight"]
    assert not head.view(torch.uint8).any()
    if fmt != "nvidia-mixed":
        assert head.dtype == torch.bfloat16
    else:
        assert head.dtype == torch.uint8 and t["lm_head.weight_scale_2"] > 0


def test_tiny_quantized_weights_dequantize_to_the_intended_spread(tiny_layout):
    fmt, d = tiny_layout
    t = _tensors(d)
    k = "model.language_model.layers.3.self_attn.o_proj"
    if fmt == "ct-nvfp4":  # compressed-tensors stores the inverse global scale
        w = sc.dequantize_nvfp4(t[f"{k}.weight_packed"].numpy(), t[f"{k}.weight_scale"].view(torch.uint8).numpy(),
                                1.0 / float(t[f"{k}.weight_global_scale"]))
        w = torch.from_numpy(w)
    else:
        w = t[f"{k}.weight"].float() * t[f"{k}.weight_scale"].float()
    assert torch.isfinite(w).all() and 0.012 < float(w.std()) < 0.03


def test_spark_tui_detects_each_tiny_layout(tiny_layout):
    from spark_tui.core.catalog import checkpoint as ck

    fmt, d = tiny_layout
    r = ck.verify_checkpoint(d)
    assert r.complete, r.problems
    q = r.quant
    want = {"nvidia-mixed": ("modelopt_mixed", "W4A16_NVFP4", "FP8_TENSOR", "FP8_TENSOR", "W4A16_NVFP4"),
            "ct-nvfp4": ("compressed-tensors-nvfp4", "W4A4_NVFP4", "W4A4_NVFP4", "BF16", "BF16"),
            "ct-nvfp4-fp8": ("compressed-tensors-nvfp4-fp8", "W4A4_NVFP4", "FP8_CHANNEL", "BF16", "BF16")}[fmt]
    assert (q.format, q.experts, q.attention, q.deltanet, q.lm_head) == want
    assert r.mtp_dtype == "BF16" and r.has_mtp and r.kv_cache_scales is False


def test_e4m3_encoder_round_trips_every_finite_code():
    codes = np.array([c for c in range(256) if (c & 0x7F) != 0x7F], np.uint8)
    assert np.array_equal(sc.float_to_e4m3(sc.e4m3_to_float(codes)), np.where(codes == 0x80, 0, codes))
    assert sc.float_to_e4m3(np.array([1e6, -1e6], np.float32)).tolist() == [0x7E, 0xFE]  # saturates at 448
