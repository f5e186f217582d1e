"""The MoE backend vLLM picks per expert scheme, SM and release (spark_tui/core/catalog/kernel_paths.py).

Expected values are read from vLLM's oracle code at each tag (the sources the module cites) and agree with
the published observations: flashinfer-ai/flashinfer#4249 (B200: nvidia W4A16 -> MARLIN, RedHatAI W4A4 ->
FLASHINFER_TRTLLM) and the DGX Spark / RTX PRO 6000 reports of FLASHINFER_CUTLASS for W4A4 on sm_12x."""

from __future__ import annotations

import pytest

from spark_tui.core.catalog import kernel_paths as kp
from spark_tui.core.catalog.kernel_paths import moe_kernel_path, rank_checkpoints

SMS = (90, 100, 103, 120, 121)

# (scheme, version) -> backend per SM in SMS
EXPECTED = {
    ("W4A4_NVFP4", "0.26.0"): ("MARLIN", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS",
                               "FLASHINFER_CUTLASS"),
    ("W4A4_NVFP4", "0.33.0"): ("HUMMING", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS",
                               "FLASHINFER_CUTLASS"),
    ("W4A16_NVFP4", "0.26.0"): ("MARLIN",) * 5,
    ("W4A16_NVFP4", "0.33.0"): ("HUMMING", "MARLIN", "MARLIN", "MARLIN", "MARLIN"),
    ("FP8_BLOCK", "0.26.0"): ("TRITON", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "TRITON", "TRITON"),
    ("FP8_BLOCK", "0.33.0"): ("TRITON", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "TRITON", "TRITON"),
    ("BF16", "0.26.0"): ("TRITON", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "FLASHINFER_CUTLASS"),
    ("BF16", "0.33.0"): ("TRITON", "FLASHINFER_TRTLLM", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS", "FLASHINFER_CUTLASS"),
}


@pytest.mark.parametrize("scheme,version", sorted(EXPECTED))
@pytest.mark.parametrize("i,sm", list(enumerate(SMS)))
def test_backend_per_scheme_sm_and_release(scheme, version, i, sm):
    k = moe_kernel_path(scheme, sm, version)
    assert k.backend == EXPECTED[(scheme, version)][i]
    assert k.verified and k.tag == version
    assert k.native_fp4 == (scheme == "W4A4_NVFP4" and sm >= 100)
    assert f"vLLM v{version}" in k.source and ":" in k.source
    assert k.candidates[0] == k.backend or all(b in k.candidates for b, _ in k.rejected)


def test_w4a16_never_uses_fp4_tensor_cores_and_says_why():
    for sm in (100, 120):
        k = moe_kernel_path("W4A16", sm, "0.26.0")
        assert not k.native_fp4 and "weight-only" in k.reason
        assert "modelopt.py:1415-1420" in k.source  # activation_key=None for W4A16 experts
        rejected = dict(k.rejected)
        assert "does not take W4A16_NVFP4 experts" in rejected["VLLM_CUTLASS"]


def test_log_lines_match_vllm_format_strings():
    k = moe_kernel_path("W4A16_NVFP4", 100, "0.26.0")
    assert k.log_line.startswith("Using 'MARLIN' NvFp4 MoE backend out of potential backends: ['FLASHINFER_TRTLLM',")
    u = moe_kernel_path("BF16", 90, "0.33.0")  # Hopper moves FlashInfer to the back; the enum values have spaces
    assert u.candidates == ("TRITON", "BATCHED_TRITON", "FLASHINFER_TRTLLM", "FLASHINFER_CUTLASS")
    assert u.log_line == ("Using TRITON Unquantized MoE backend out of potential backends: ['TRITON', "
                          "'BATCHED_TRITON', 'FlashInfer TRTLLM', 'FlashInfer CUTLASS'].")
    f = moe_kernel_path("FP8", 100, "0.33.0")
    assert f.log_line.startswith("Using FLASHINFER_TRTLLM Fp8 MoE backend") and "VLLM_CUTLASS" not in f.candidates


def test_humming_priority_only_from_0_32_and_versions_between_tags_say_so():
    assert moe_kernel_path("W4A16", 90, "0.32.0").backend == "HUMMING"
    k = moe_kernel_path("W4A16", 90, "0.29.1")
    assert k.backend == "MARLIN" and k.tag == "0.26.0" and not k.verified
    assert moe_kernel_path("W4A16", 90, "0.40.0").tag == "0.33.0"
    assert kp.rules_tag("v0.33.0") == ("0.33.0", True)


def test_deep_gemm_only_when_installed():
    assert moe_kernel_path("FP8", 120, "0.33.0").backend == "TRITON"
    k = moe_kernel_path("FP8", 120, "0.33.0", installed=frozenset({"deep_gemm"}))
    assert k.backend == "DEEPGEMM" and "deep_gemm" in k.needs and k.fallback == "TRITON"


@pytest.mark.parametrize("bad,err", [("W3A3", "unknown expert scheme"), ("", "unknown expert scheme")])
def test_bad_scheme(bad, err):
    with pytest.raises(ValueError, match=err):
        moe_kernel_path(bad, 100, "0.33.0")


def test_bad_sm_and_version():
    with pytest.raises(ValueError, match="7.5"):
        moe_kernel_path("W4A16", 70, "0.33.0")
    with pytest.raises(ValueError, match="not a vLLM version"):
        moe_kernel_path("W4A16", 90, "latest")


class _C:
    def __init__(self, id, experts, size, figs=()):
        self.id, self.experts, self.size_on_disk_gb, self._f = id, experts, size, figs

    def figures_for(self, sm):
        return [f for f in self._f if sm in f]


def test_ranking_per_sm_family():
    cs = [_C("w4a16", "W4A16_NVFP4", 23.46), _C("w4a4", "W4A4_NVFP4", 24), _C("fp8", "FP8_BLOCK", 37.5),
          _C("bf16", "BF16", 67), _C("unknown", None, 24)]
    order = lambda sm, mem=None: [r.checkpoint_id for r in rank_checkpoints(cs, sm, "0.33.0", mem)]  # noqa: E731
    assert order(90) == ["fp8", "w4a16", "w4a4", "bf16", "unknown"]  # no FP4 tensor cores: FP8 first
    assert order(100) == ["w4a4", "fp8", "w4a16", "bf16", "unknown"]  # flashinfer#4249
    assert order(121) == ["w4a4", "w4a16", "fp8", "bf16", "unknown"]
    assert order(120, 32) == ["w4a4", "w4a16", "unknown", "fp8", "bf16"]  # 32 GiB: FP8 and BF16 do not fit
    r = rank_checkpoints(cs, 100, "0.26.0")
    assert r[0].kernel.backend == "FLASHINFER_TRTLLM" and "native FP4" in r[0].reason
    assert "#4249" in next(x for x in r if x.checkpoint_id == "w4a16").reason
