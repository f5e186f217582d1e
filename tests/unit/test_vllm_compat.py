"""vLLM version table: parsing, per-version decisions, and --check without vLLM."""

from __future__ import annotations

import importlib.util

import pytest

from spark_tui.core.catalog import vllm_compat as c


def test_parse_and_compare() -> None:
    assert c.parse_version("0.32.0+cpu") == (0, 32, 0)
    assert c.parse_version("v0.19") == (0, 19, 0)
    assert c.parse_version("nightly") is None and c.parse_version(None) is None
    assert c.at_least("0.33.1", "0.33.0") and not c.at_least("0.32.9", "0.33.0")
    assert c.at_least("nightly", "0.33.0")  # unparseable = newest


@pytest.mark.parametrize("version,flag,gdn,legacy,fst", [
    ("0.15.0", False, 0, True, False),
    ("0.19.0", True, 0, True, False),
    ("0.24.0", True, 0, False, False),
    ("0.32.0", True, 0, False, False),
    ("0.33.0", True, 1, False, True),
])
def test_per_version_decisions(version, flag, gdn, legacy, fst) -> None:
    assert c.has_moe_backend_flag(version) is flag
    assert c.gdn_checkpoint_blocks(version) == gdn
    assert c.kv_tokens_legacy(version) is legacy
    assert c.fastsafetensors_bundled(version) is fst


def test_env_forms_and_table() -> None:
    assert c.moe_backend_as_env("flashinfer_cutlass") == {"VLLM_USE_FLASHINFER_MOE_FP4": "1",
                                                          "VLLM_FLASHINFER_MOE_BACKEND": "throughput"}
    assert c.moe_backend_as_env("marlin") is None  # no verified env form: the planner warns instead
    assert all(ch.evidence for ch in c.CHANGES)
    olds = " ".join(ch.old for ch in c.CHANGES)
    for name in ("VLLM_NVFP4_GEMM_BACKEND", "VLLM_ATTENTION_BACKEND", "qwen3_5_mtp", "--mamba-cache-mode"):
        assert name in olds


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is importable here")
def test_check_without_vllm() -> None:
    r = c.check_argv(["vllm", "serve", "m", "--max-model-len", "1024"])
    assert r["status"] == "unavailable" and r["problems"] == [] and "not importable" in r["message"]


def test_installed_version_reads_metadata_only() -> None:
    v = c.installed_vllm_version()
    assert v is None or c.parse_version(v) is not None
