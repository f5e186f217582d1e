"""Checkpoint completeness / format / MTP checks on real files written by the tests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from spark_tui.core.catalog import checkpoint as ck
from spark_tui.errors import DownloadError, ExitCode
from tests.support.runtime_ckpt import write_safetensors, write_tiny_checkpoint, tensor


def test_header_size_matches_the_safetensors_library(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": np.zeros((3, 5), np.float32), "packed": np.full((4, 8), 0x22, np.uint8)}, str(p))
    h = ck.read_safetensors_header(p)
    assert h.expected_size == p.stat().st_size
    assert set(h.tensors) == {"a", "packed"}


def test_own_writer_is_readable_by_the_safetensors_library(tmp_path):
    from safetensors import safe_open

    p = tmp_path / "y.safetensors"
    write_safetensors(p, {"w": tensor("U8", [4, 8]), "s": tensor("F32", [2])})
    with safe_open(str(p), framework="numpy") as f:
        assert sorted(f.keys()) == ["s", "w"]
        assert f.get_tensor("w").dtype == np.uint8


@pytest.mark.parametrize("fmt,modelopt_in,expected,detail", [
    ("modelopt_fp4", "hf_quant_config", "modelopt_fp4", "NVFP4"),
    ("modelopt_fp4", "config", "modelopt_fp4", "NVFP4"),
    ("compressed-tensors-nvfp4", "both", "compressed-tensors-nvfp4", "nvfp4-pack-quantized"),
    ("fp8", "both", "fp8", "fp8"),
    ("bf16", "both", "bf16", "no quantization"),
])
def test_complete_checkpoints_and_their_format(tmp_path, fmt, modelopt_in, expected, detail):
    write_tiny_checkpoint(tmp_path, fmt, shards=2, modelopt_in=modelopt_in)
    r = ck.verify_checkpoint(tmp_path, expected_format=expected)
    assert r.complete, r.problems
    assert r.quant.format == expected
    assert detail in r.quant.detail
    assert r.has_mtp and "mtp_num_hidden_layers 1" in r.mtp_detail
    assert len(r.shards) == 2 and all(s.ok for s in r.shards)
    assert r.tensor_count == len(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"])


def test_w4a16_nvfp4_is_modelopt_fp4(tmp_path):
    write_tiny_checkpoint(tmp_path, "modelopt_fp4", modelopt_in="hf_quant_config")
    q = json.loads((tmp_path / "hf_quant_config.json").read_text())
    q["quantization"]["quant_algo"] = "W4A16_NVFP4"
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(q))
    info = ck.detect_quantization(tmp_path)
    assert info.format == "modelopt_fp4" and "W4A16_NVFP4" in info.detail and info.kv_cache_quant_algo == "FP8"


def test_compressed_tensors_detected_from_config_groups_alone(tmp_path):
    write_tiny_checkpoint(tmp_path, "compressed-tensors-nvfp4")
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["quantization_config"]["format"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert ck.detect_quantization(tmp_path).format == "compressed-tensors-nvfp4"


def test_truncated_shard_is_reported_with_sizes(tmp_path):
    write_tiny_checkpoint(tmp_path, "modelopt_fp4")
    shard = tmp_path / "model-00002-of-00002.safetensors"
    full = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(full - 100)
    r = ck.verify_checkpoint(tmp_path)
    assert not r.complete
    bad = [s for s in r.shards if not s.ok]
    assert [s.name for s in bad] == ["model-00002-of-00002.safetensors"]
    assert bad[0].expected_size == full and bad[0].actual_size == full - 100
    with pytest.raises(DownloadError) as e:
        ck.require_complete(r)
    assert e.value.exit_code == ExitCode.DOWNLOAD and "truncated" in e.value.message


def test_missing_shard_and_missing_tensor(tmp_path):
    write_tiny_checkpoint(tmp_path, "bf16")
    os.remove(tmp_path / "model-00001-of-00002.safetensors")
    idx = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.layers.9.ghost.weight"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(idx))
    r = ck.verify_checkpoint(tmp_path)
    assert any("model-00001-of-00002.safetensors is missing" in p for p in r.problems)
    assert any("absent from their shards" in p and "ghost" in p for p in r.problems)


def test_another_format_than_planned_is_a_warning_a_contradicting_quantization_flag_refuses(tmp_path):
    write_tiny_checkpoint(tmp_path, "compressed-tensors-nvfp4")
    r = ck.verify_checkpoint(tmp_path, expected_format="modelopt_fp4")
    assert r.complete and any("same precision" in w for w in r.warnings)
    r = ck.verify_checkpoint(tmp_path, expected_format="fp8")  # vLLM loads it: the plan's predictions are off
    assert r.complete and any("plan was made for fp8" in w for w in r.warnings)
    r = ck.verify_checkpoint(tmp_path, quantization_flag="fp8")  # vLLM raises "does not match"
    assert not r.complete and "--quantization fp8" in r.problems[0]
    with pytest.raises(DownloadError) as e:
        ck.require_complete(r)
    assert "drop --quantization" in e.value.hint
    # a ModelOpt checkpoint's own method overrides the user's value in vLLM: no refusal
    write_tiny_checkpoint(tmp_path / "mo", "modelopt_fp4")
    assert ck.verify_checkpoint(tmp_path / "mo", quantization_flag="modelopt").complete


# --- the recorded real configuration of nvidia/Qwen3.6-35B-A3B-NVFP4 (tests/data/checkpoints/SOURCES.md)
REAL = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "nvidia-nvfp4"


def _nvfp4_w(prefix: str, out_f: int, in_f: int) -> dict:
    """A W4A16_NVFP4 module as the published checkpoint stores it (with its residual input_scale)."""
    return {f"{prefix}.weight": tensor("U8", [out_f, in_f // 2]),
            f"{prefix}.weight_scale": tensor("F8_E4M3", [out_f, in_f // 16]),
            f"{prefix}.weight_scale_2": tensor("F32", []), f"{prefix}.input_scale": tensor("F32", [])}


def _fp8_w(prefix: str, out_f: int, in_f: int) -> dict:
    return {f"{prefix}.weight": tensor("F8_E4M3", [out_f, in_f]), f"{prefix}.weight_scale": tensor("F32", []),
            f"{prefix}.input_scale": tensor("F32", [])}


def _real_nvidia_layout(d: Path, config: bool = True) -> None:
    """The recorded config files + two shards holding one module of each kind under the real names."""
    d.mkdir(parents=True)
    if config:
        shutil.copy(REAL / "config.json", d / "config.json")
    else:  # the hf_quant_config.json-only variant (ModelOpt < 0.31 exports)
        cfg = json.loads((REAL / "config.json").read_text())
        del cfg["quantization_config"]
        (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(REAL / "hf_quant_config.json", d / "hf_quant_config.json")
    lm = "model.language_model.layers"
    a = {**_nvfp4_w(f"{lm}.0.mlp.experts.0.gate_proj", 32, 64), **_nvfp4_w(f"{lm}.0.mlp.shared_expert.up_proj", 32, 64),
         **_fp8_w(f"{lm}.0.linear_attn.in_proj_qkv", 32, 64), **_fp8_w(f"{lm}.3.self_attn.q_proj", 32, 64),
         f"{lm}.0.linear_attn.in_proj_a.weight": tensor("BF16", [4, 64])}
    b = {**_nvfp4_w("lm_head", 128, 64), "mtp.fc.weight": tensor("BF16", [64, 128]),
         "mtp.layers.0.mlp.experts.gate_up_proj": tensor("BF16", [2, 64, 64]),
         "mtp.layers.0.mlp.experts.down_proj": tensor("BF16", [2, 64, 32])}
    wm = {}
    for i, part in enumerate((a, b)):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        write_safetensors(d / name, part)
        wm.update({k: name for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))


def test_recorded_nvidia_layout_is_modelopt_mixed_with_w4a16_experts(tmp_path):
    _real_nvidia_layout(tmp_path / "c")
    r = ck.verify_checkpoint(tmp_path / "c", expected_format="modelopt_mixed")
    assert r.complete, r.problems
    q = r.quant
    assert (q.format, q.quant_method) == ("modelopt_mixed", "modelopt_mixed")
    assert q.parts() == {"experts": "W4A16_NVFP4", "shared_expert": "W4A16_NVFP4", "attention": "FP8_TENSOR",
                         "deltanet": "FP8_TENSOR", "lm_head": "W4A16_NVFP4", "mtp": "BF16"}
    assert q.group_size == 16 and q.layer_algos == {"FP8": 130, "W4A16_NVFP4": 161}
    # FP8 KV only in hf_quant_config.json: vLLM reads config.json, so "auto" keeps BF16
    assert q.kv_cache_quant_algo == "FP8" and q.kv_cache_dtype_auto == "auto"
    assert any("only in hf_quant_config.json" in w for w in r.warnings)
    assert r.mtp_dtype == "BF16" and r.kv_cache_scales is False
    d = r.to_dict()
    assert d["quant_method"] == "modelopt_mixed" and d["experts"] == "W4A16_NVFP4" and d["mtp"] == "BF16"
    assert d["loadable"] and d["attention"] == "FP8_TENSOR"


def test_recorded_nvidia_layout_from_hf_quant_config_alone(tmp_path):
    _real_nvidia_layout(tmp_path / "h", config=False)
    r = ck.verify_checkpoint(tmp_path / "h")
    assert r.complete and r.quant.format == "modelopt_mixed" and r.quant.experts == "W4A16_NVFP4"
    assert r.quant.kv_cache_dtype_auto == "fp8" and "hf_quant_config.json" in r.quant.source


@pytest.mark.parametrize("edit,why", [
    (lambda q: q.update(quant_algo="INT4_AWQ_X"), "not one vLLM loads"),
    (lambda q: q.update(quantized_layers={}), "without a 'quantized_layers' map"),
    (lambda q: q["quantized_layers"]["lm_head"].update(quant_algo="INT8_SQ"), "INT8_SQ"),
])
def test_modelopt_configs_vllm_rejects_are_refused_with_the_reason(tmp_path, edit, why):
    _real_nvidia_layout(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    edit(cfg["quantization_config"])
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    if "quantized_layers" in why:  # hf_quant_config.json would supply them: remove it too
        os.remove(tmp_path / "c" / "hf_quant_config.json")
    r = ck.verify_checkpoint(tmp_path / "c")
    assert not r.complete and why in r.problems[0] and "vLLM v0.26.0" in r.problems[0]
    with pytest.raises(DownloadError) as e:
        ck.require_complete(r)
    assert e.value.exit_code == ExitCode.DOWNLOAD


def test_fp8_per_tensor_and_block_and_compressed_tensors_w4a16(tmp_path):
    write_tiny_checkpoint(tmp_path / "b", "fp8")
    assert ck.detect_quantization(tmp_path / "b").experts == "FP8_BLOCK"
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    cfg["quantization_config"]["weight_block_size"] = None
    (tmp_path / "b" / "config.json").write_text(json.dumps(cfg))
    assert ck.detect_quantization(tmp_path / "b").experts == "FP8_TENSOR"
    write_tiny_checkpoint(tmp_path / "ct", "compressed-tensors-nvfp4")
    q = ck.detect_quantization(tmp_path / "ct")
    assert (q.experts, q.lm_head, q.quant_method) == ("W4A4_NVFP4", "BF16", "compressed-tensors")
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"] = None  # NVFP4A16
    (tmp_path / "ct" / "config.json").write_text(json.dumps(cfg))
    assert ck.detect_quantization(tmp_path / "ct").experts == "W4A16_NVFP4"
    # hf_quant_config.json's exclude_modules ["lm_head", "mtp*"] are honoured (config.json's key is "ignore")
    write_tiny_checkpoint(tmp_path / "mo", "modelopt_fp4", modelopt_in="hf_quant_config")
    q = ck.detect_quantization(tmp_path / "mo")
    assert (q.format, q.experts, q.lm_head, q.mtp) == ("modelopt_fp4", "W4A4_NVFP4", "BF16", "BF16")


def test_mtp_absent_and_declared_without_weights(tmp_path):
    write_tiny_checkpoint(tmp_path / "a", "modelopt_fp4", mtp=False)
    assert not ck.verify_checkpoint(tmp_path / "a").has_mtp
    write_tiny_checkpoint(tmp_path / "b", "modelopt_fp4", mtp=False)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    cfg["text_config"] = {"mtp_num_hidden_layers": 1}
    (tmp_path / "b" / "config.json").write_text(json.dumps(cfg))
    r = ck.verify_checkpoint(tmp_path / "b")
    assert not r.has_mtp and any("MTP" in w for w in r.warnings)


def test_single_file_checkpoint_and_hf_cache_layout(tmp_path):
    write_tiny_checkpoint(tmp_path / "single", "bf16", shards=1)
    assert ck.verify_checkpoint(tmp_path / "single").complete
    # HF cache layout: models--org--name/{refs/main, snapshots/<commit>/...}
    repo = tmp_path / "models--org--tiny"
    commit = "a" * 40
    write_tiny_checkpoint(repo / "snapshots" / commit, "modelopt_fp4")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = ck.verify_checkpoint(repo)
    assert r.complete and r.path.endswith(commit)


def test_not_a_directory_and_garbage_header(tmp_path):
    with pytest.raises(DownloadError):
        ck.verify_checkpoint(tmp_path / "nope")
    write_tiny_checkpoint(tmp_path, "bf16", shards=1)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    r = ck.verify_checkpoint(tmp_path)
    assert not r.complete and "not a safetensors file" in r.problems[0]
