"""Checkpoint completeness / format / MTP checks on real files written by the tests."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spark_tui.core import checkpoint as ck
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


def test_format_mismatch_refuses_across_precisions_warns_within(tmp_path):
    write_tiny_checkpoint(tmp_path, "compressed-tensors-nvfp4")
    r = ck.verify_checkpoint(tmp_path, expected_format="modelopt_fp4")
    assert r.complete and any("same precision" in w for w in r.warnings)
    r = ck.verify_checkpoint(tmp_path, expected_format="fp8")
    assert not r.complete and "plan expects fp8" in r.problems[0]


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
