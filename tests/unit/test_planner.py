"""Planner: real values for each device, recipe reproduction, overrides, version adaptation, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_tui.core.planner import make_plan, parse_set, parse_size, split_args
from spark_tui.core.probe import ProbeResult
from spark_tui.core.profiles import load_catalog
from spark_tui.errors import PlanError, UsageError

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"
SPEC3 = '{"method":"mtp","num_speculative_tokens":3,"moe_backend":"triton"}'


@pytest.fixture(scope="module")
def cat():
    return load_catalog(user=False)


def plan(cat, **kw):
    return make_plan(catalog=cat, **kw)


def flags(p) -> dict:
    return {f.flag: f.value for f in p.flags}


@pytest.mark.parametrize("device,ckpt,backend,util", [
    ("dgx-spark", "nvidia/Qwen3.6-35B-A3B-NVFP4", "marlin", "0.8"),
    ("rtx-pro-6000", "nvidia/Qwen3.6-35B-A3B-NVFP4", "marlin", "0.9"),
    ("rtx-5090", "nvidia/Qwen3.6-35B-A3B-NVFP4", "marlin", "0.95"),
    ("b200", "nvidia/Qwen3.6-35B-A3B-NVFP4", "auto", "0.92"),
    ("b300", "nvidia/Qwen3.6-35B-A3B-NVFP4", "auto", "0.92"),
    ("h100", "Qwen/Qwen3.6-35B-A3B-FP8", None, "0.92"),
])
def test_device_plans(cat, device, ckpt, backend, util) -> None:
    p = plan(cat, device=device)
    f = flags(p)
    assert p.argv()[:3] == ["vllm", "serve", ckpt]
    assert f.get("--moe-backend") == backend
    assert f["--gpu-memory-utilization"] == util
    assert f["--kv-cache-dtype"] == "fp8" and f["--speculative-config"] == SPEC3
    assert f["--reasoning-parser"] == "qwen3" and f["--tool-call-parser"] == "qwen3_coder"
    assert "--enable-auto-tool-choice" in f and "--language-model-only" in f and "--quantization" not in f
    assert f["--load-format"] == "fastsafetensors" and f["--host"] == "127.0.0.1"
    assert all(x.reason and x.source for x in p.flags)
    m = p.memory
    assert m.fits and m.max_concurrency >= 1 and m.block_size_tokens == 2144  # FP8 KV, k=3
    assert m.kv_cache_tokens == int(m.num_blocks / m.blocks_per_request * m.max_model_len)
    assert m.mamba_slots_per_seq == 6  # 0.33: 2 + k + 1 (prefix caching, align mode)


def test_spark_utilisation_from_mem_available(cat) -> None:
    # no probe: typical MemAvailable at boot 102 GiB - 4 GiB margin over 121.7 GiB -> 0.80
    p = plan(cat, device="dgx-spark")
    assert flags(p)["--gpu-memory-utilization"] == "0.8" and "--kv-cache-memory-bytes" not in flags(p)
    assert any("--gpu-memory-utilization: recipe 0.5, plan 0.8" in d for d in p.differences)
    # recorded GB10 probe: MemAvailable 121,411,960,832 B (113.1 GiB) -> 0.89 and an explicit KV pool
    pr = ProbeResult.load(PROBES / "gb10" / "probe.json")
    q = plan(cat, probe=pr)
    f = flags(q)
    assert q.device.id == "dgx-spark" and f["--gpu-memory-utilization"] == "0.89"
    assert f["--kv-cache-memory-bytes"].endswith("G")  # vLLM's human-readable form: upper case = GiB
    kv = parse_size(f["--kv-cache-memory-bytes"])
    assert kv % 2**30 == 0 and q.memory.exact_kv_pool and q.memory.kv_cache_bytes == kv
    assert 70 * 2**30 < kv < 90 * 2**30
    assert q.memory.num_blocks == kv // (11 * 2144 * 1024)


def test_rtx_5090_memory_figures(cat) -> None:
    m = plan(cat, device="rtx-5090").memory
    assert m.device_total_bytes == 32 * 2**30 and m.weights_bytes == 21_900_000_000
    assert m.budget_bytes == int(32 * 2**30 * 0.95)
    assert m.kv_cache_bytes == m.budget_bytes - m.weights_bytes - m.overhead_bytes
    assert 1 <= m.max_concurrency < 4 and m.max_model_len == 262144


def test_hopper_choices(cat) -> None:
    p = plan(cat, device="h100")
    assert p.checkpoint.repo_id == "Qwen/Qwen3.6-35B-A3B-FP8" and "Hopper" in p.checkpoint_reason
    q = plan(cat, device="h100", checkpoint="nvidia-nvfp4")
    assert flags(q)["--moe-backend"] == "marlin"
    assert any("no FP4 tensor cores" in w for w in q.warnings)


def test_refuses_pre_hopper(cat) -> None:
    with pytest.raises(PlanError, match="sm_80") as e:
        plan(cat, device="a100")
    assert e.value.exit_code == 5
    with pytest.raises(PlanError, match="A100"):
        plan(cat, probe=ProbeResult.load(PROBES / "a100" / "probe.json"))


def test_recorded_probes_plan(cat) -> None:
    want = {"rtx-pro-6000": ("rtx-pro-6000-maxq", "marlin"), "rtx-5090": ("rtx-5090", "marlin")}  # busy ones below
    for pid, (dev, backend) in want.items():
        pr = ProbeResult.load(PROBES / pid / "probe.json")
        p = plan(cat, probe=pr)
        assert p.device.id == dev and flags(p).get("--moe-backend") == backend
        assert p.device.memory_bytes == pr.gpus[0].memory_total_bytes
        assert p.device.source.startswith("probe-file:")
    # the recorded 5090 had 0.5 GiB in use: 0.95 x 31.8 GiB still fits in what is free
    assert flags(plan(cat, probe=ProbeResult.load(PROBES / "rtx-5090" / "probe.json")))["--gpu-memory-utilization"] == "0.95"
    # the recorded B200 / H100 / H200 snapshots come from busy servers (e.g. 162.7 of 179.1 GiB in use on the
    # B200): the plan says so and points at --device instead of planning into memory that is taken
    for pid, dev in (("b200", "b200"), ("h100", "h100"), ("h200", "h200"), ("multi-b200", "b200")):
        with pytest.raises(PlanError, match="in use by other processes") as e:
            plan(cat, probe=ProbeResult.load(PROBES / pid / "probe.json"))
        assert f"--device {dev}" in e.value.hint


def test_multi_gpu_probe(cat, tmp_path) -> None:
    d = json.loads((PROBES / "multi-b200" / "probe.json").read_text())
    for g in d["gpus"]:  # the same box, idle
        g["memory_free_bytes"], g["memory_used_bytes"] = g["memory_total_bytes"], 0
    multi = plan(cat, probe=ProbeResult.from_dict(d))
    assert multi.device.id == "b200" and multi.device.gpu_count == 2
    assert any("--data-parallel-size 2" in w for w in multi.warnings)


def test_model_card_spark_recipe_reproduced_verbatim(cat) -> None:
    p = plan(cat, device="dgx-spark", recipe="model-card-spark")
    assert p.argv() == [
        "vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4", "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "1", "--trust-remote-code", "--kv-cache-dtype", "fp8", "--attention-backend",
        "flashinfer", "--moe-backend", "marlin", "--gpu-memory-utilization", "0.4", "--max-model-len", "262144",
        "--max-num-seqs", "4", "--max-num-batched-tokens", "8192", "--enable-chunked-prefill", "--async-scheduling",
        "--enable-prefix-caching", "--speculative-config", SPEC3, "--load-format", "fastsafetensors",
        "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_xml", "--enable-auto-tool-choice"]
    assert all(f.source.startswith("nvidia/Qwen3.6-35B-A3B-NVFP4 model card") for f in p.flags)
    d = "\n".join(p.differences)
    assert "qwen3_xml" in d and "aliases" in d and "--trust-remote-code" in d and "#37754" in d
    assert "--gpu-memory-utilization" in d and "MemAvailable" in d
    # the memory picture is computed from the recipe's own flags: 0.4 x 121.7 GiB
    assert p.memory.budget_bytes == int(121.7 * 2**30 * 0.4) and p.memory.max_model_len == 262144


# vllm-project/recipes@8959cf6 models/Qwen/Qwen3.6-35B-A3B.yaml: the guide's RTX Pro 6000 command (lines 238-254), and
# the command the recipes site assembles for RTX 5090 (variant nvfp4 + hardware_overrides.rtx_5090, default features)
OFFICIAL = {
    "rtx-pro-6000": [
        "--tensor-parallel-size", "1", "--trust-remote-code", "--kv-cache-dtype", "fp8", "--moe-backend", "marlin",
        "--gpu-memory-utilization", "0.9", "--max-model-len", "262144", "--max-num-seqs", "8",
        "--max-num-batched-tokens", "8192", "--enable-chunked-prefill", "--async-scheduling",
        "--enable-prefix-caching", "--speculative-config", SPEC3, "--load-format", "fastsafetensors",
        "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder", "--enable-auto-tool-choice"],
    "rtx-5090": [
        "--trust-remote-code", "--kv-cache-dtype", "fp8", "--moe-backend", "marlin", "--enable-prefix-caching",
        "--gpu-memory-utilization", "0.95", "--max-num-seqs", "4", "--max-num-batched-tokens", "8192",
        "--enable-chunked-prefill", "--tensor-parallel-size", "1", "--enable-auto-tool-choice",
        "--tool-call-parser", "qwen3_coder", "--reasoning-parser", "qwen3", "--mm-encoder-tp-mode", "data"],
}


@pytest.mark.parametrize("device", sorted(OFFICIAL))
def test_official_recipe_variants(cat, device) -> None:
    p = plan(cat, device=device, recipe=f"vllm-recipes-{device}")
    assert p.argv() == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4", *OFFICIAL[device]]


def test_default_plan_differences_explain_the_recipe(cat) -> None:
    p = plan(cat, device="rtx-pro-6000")
    d = p.differences
    assert any("--enable-chunked-prefill" in x and "default" in x for x in d)
    assert any("--async-scheduling" in x for x in d)
    assert any("--language-model-only" in x and "added" in x for x in d)
    assert not any("--moe-backend" in x for x in d)  # same as the recipe
    b = plan(cat, device="b200")
    assert any("--quantization modelopt" in x and "modelopt_fp4" in x for x in b.differences)
    assert b.differences[0].startswith("compared with NVIDIA model card") and "--recipe model-card-blackwell" in b.differences[0]
    s = plan(cat, device="b200", recipe="model-card-blackwell")
    assert flags(s)["--quantization"] == "modelopt" and any("FP8" in w for w in s.warnings)
    # a W4A4-verified checkpoint gets the TRT-LLM backend pinned on sm_10x
    r = plan(cat, device="b200", checkpoint="redhatai-nvfp4")
    assert flags(r)["--moe-backend"] == "flashinfer_trtllm" and any("size" in n for n in r.memory.notes)
    # on Spark the RedHatAI checkpoint is compared with Steve Scargall's recipe
    sp = plan(cat, device="dgx-spark", checkpoint="redhatai-nvfp4")
    assert flags(sp)["--moe-backend"] == "flashinfer_cutlass" and "Scargall" in sp.differences[0]
    assert any(x.startswith("--quantization compressed-tensors: left out") for x in sp.differences)


def test_set_overrides(cat) -> None:
    p = plan(cat, device="rtx-pro-6000", set_flags=["max-num-seqs=32", "--enforce-eager", "--load-format=",
                                                    "no-enable-prefix-caching", "VLLM_USE_DEEP_GEMM=0"])
    f = flags(p)
    assert f["--max-num-seqs"] == "32" and p.flag("--max-num-seqs").reason == "user --set"
    assert "--enforce-eager" in f and f["--enforce-eager"] is None
    assert "--load-format" not in f
    assert "--no-enable-prefix-caching" in f and "--enable-prefix-caching" not in f
    assert p.env_dict() == {"VLLM_USE_DEEP_GEMM": "0"}
    # the memory picture follows the overrides: no prefix caching -> 1 + k slots, no CUDA graphs
    assert p.memory.mamba_slots_per_seq == 4 and p.memory.cuda_graph_bytes == 0 and p.memory.max_num_seqs == 32
    q = plan(cat, device="rtx-pro-6000", set_flags=["kv-cache-dtype=auto"])
    assert q.memory.block_size_tokens == 1072 and q.memory.kv_bytes_per_token == 22528


def test_set_parsing() -> None:
    assert parse_set(["a=1", "--b", "c=", "HF_HOME=/x"]) == [("--a", "1", False), ("--b", None, False),
                                                              ("--c", None, True), ("HF_HOME", "/x", False)]
    with pytest.raises(UsageError):
        parse_set(["=3"])
    assert parse_size("16M") == 16 * 2**20 and parse_size("16m") == 16_000_000 and parse_size("1G") == 2**30
    assert split_args(["--a", "1", "--b", "--c=x"]) == [("--a", "1"), ("--b", None), ("--c", "x")]


def test_goals_and_fit(cat) -> None:
    t = plan(cat, device="b200", goal="throughput")
    f = flags(t)
    assert json.loads(f["--speculative-config"])["num_speculative_tokens"] == 1
    assert int(f["--max-num-seqs"]) > 8 and f["--max-num-batched-tokens"] == "16384"
    assert plan(cat, device="rtx-5090", goal="latency").flag("--max-num-seqs").value == "4"
    # a context that cannot fit is refused with the longest that does
    with pytest.raises(PlanError, match="--context"):
        plan(cat, device="rtx-5090", context=10_000_000)
    # the context goal with a concurrency target shortens max_model_len until it fits
    c = plan(cat, device="rtx-5090", goal="context", concurrency=8)
    assert c.memory.max_concurrency >= 8 and c.memory.max_model_len < 262144
    with pytest.raises(PlanError, match="does not fit"):
        plan(cat, device="rtx-5090", checkpoint="qwen-bf16")


def test_version_adaptation(cat) -> None:
    old = plan(cat, device="rtx-pro-6000", checkpoint="infatoshi-nvfp4-fp8", vllm_version="0.15.0")
    assert "--moe-backend" not in flags(old)
    assert old.env_dict() == {"VLLM_USE_FLASHINFER_MOE_FP4": "1", "VLLM_FLASHINFER_MOE_BACKEND": "throughput"}
    assert "pip install fastsafetensors" in old.flag("--load-format").reason
    new = plan(cat, device="rtx-pro-6000", checkpoint="infatoshi-nvfp4-fp8", vllm_version="0.32.0")
    assert flags(new)["--moe-backend"] == "flashinfer_cutlass" and new.env_dict() == {}
    assert new.memory.mamba_slots_per_seq == 5  # 0.32: no GDN prefill checkpoint block
    assert any("#43559" in w for w in new.warnings)


def test_cpu_test_plan_predicts_recorded_runs(cat, tmp_path) -> None:
    from tests.unit.test_memory import QWEN35_MTP, QWEN3_MOE

    for name, cfg, want in (("qwen3-moe", QWEN3_MOE, (32768, 64.0)), ("qwen35-mtp", QWEN35_MTP, (6528, 12.75))):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        p = plan(cat, device="cpu-test", model_path=str(d), vllm_version="0.32.0")
        f = flags(p)
        assert f["--kv-cache-memory-bytes"] == "16M" and f["--max-model-len"] == "512" and "--enforce-eager" in f
        assert (p.memory.kv_cache_tokens, p.memory.max_concurrency) == want
        if name == "qwen35-mtp":
            assert json.loads(f["--speculative-config"]) == {"method": "mtp", "num_speculative_tokens": 1}
            assert "--no-enable-prefix-caching" in f
    with pytest.raises(UsageError, match="--model-path"):
        plan(cat, device="cpu-test")


def test_input_errors(cat) -> None:
    with pytest.raises(UsageError):
        plan(cat, device="rtx-5090", goal="fastest")
    with pytest.raises(UsageError):
        plan(cat, device="rtx-5090", mtp=20)
    with pytest.raises(UsageError, match="recipe"):
        plan(cat, device="rtx-5090", recipe="nope")
    with pytest.raises(UsageError, match="no device profile 'rtx-9090'"):
        plan(cat, device="rtx-9090")
    with pytest.raises(UsageError, match="no checkpoint profile"):
        plan(cat, device="rtx-5090", checkpoint="someone/else")
    with pytest.raises(PlanError, match="no NVIDIA GPU"):
        plan(cat, probe=ProbeResult(status="no_nvml", message="libnvidia-ml.so not found"))


def test_forced_flash_attn_on_sm100_pages_by_128(cat) -> None:
    auto = plan(cat, device="b200")
    fa = plan(cat, device="b200", set_flags=["attention-backend=FLASH_ATTN"])
    assert auto.memory.block_size_tokens == 2144  # FLASHINFER: 16-token alignment
    assert fa.memory.block_size_tokens == 2176  # 128 x ceil(2,195,456 / (128 x 1024))
    assert plan(cat, device="rtx-pro-6000", set_flags=["attention-backend=FLASH_ATTN"]).memory.block_size_tokens == 2144


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=st.sampled_from(["dgx-spark", "rtx-pro-6000", "rtx-5090", "b200", "gb300", "h100", "h200",
                               "generic-sm12x"]),
       checkpoint=st.sampled_from([None, "nvidia-nvfp4", "redhatai-nvfp4", "infatoshi-nvfp4-fp8", "qwen-fp8",
                                   "qwen-bf16"]),
       goal=st.sampled_from(["latency", "throughput", "context", "balanced"]),
       context=st.one_of(st.none(), st.integers(1024, 400_000)), concurrency=st.one_of(st.none(), st.integers(1, 64)),
       mtp=st.one_of(st.none(), st.integers(0, 4)), version=st.sampled_from([None, "0.15.0", "0.24.0", "0.32.0"]))
def test_any_plan_is_consistent_or_refused(cat, device, checkpoint, goal, context, concurrency, mtp, version) -> None:
    try:
        p = plan(cat, device=device, checkpoint=checkpoint, goal=goal, context=context, concurrency=concurrency,
                 mtp=mtp, vllm_version=version)
    except PlanError as e:
        assert e.message and e.hint
        return
    f = flags(p)
    m = p.memory
    # what the plan says is what vLLM would log for its own flags
    assert m.max_model_len == int(f["--max-model-len"]) and m.max_num_seqs == int(f["--max-num-seqs"])
    assert m.fits and m.max_concurrency >= 1
    assert m.kv_cache_tokens == int(m.num_blocks / m.blocks_per_request * m.max_model_len) or version == "0.15.0"
    if context is None and concurrency and goal == "context":
        assert m.max_concurrency >= concurrency or m.max_model_len == 262144
    if context is not None:
        assert m.max_model_len == context
    k = json.loads(f["--speculative-config"])["num_speculative_tokens"] if "--speculative-config" in f else 0
    assert m.mamba_slots_per_seq == 2 + k + (1 if version is None else 0)
    assert len(f) == len(p.flags)  # no flag twice
    assert all(x.reason and x.source for x in p.flags) and all(e.reason and e.source for e in p.env)


@pytest.mark.parametrize("host,port,ok", [
    ("127.0.0.1", 8000, True), ("::1", 8000, True), ("0.0.0.0", 1, True), ("spark-01.lan", 65535, True),
    ("bad host", 8000, False), ("a;rm -rf", 8000, False), ("", 8000, False), ("127.0.0.1", 0, False),
    ("127.0.0.1", 70000, False), ("-leading.dash", 8000, False),
])
def test_bind_address_is_validated(cat, host, port, ok) -> None:
    if ok:
        assert plan(cat, device="rtx-5090", host=host, port=port).port == port
    else:
        with pytest.raises(UsageError):
            plan(cat, device="rtx-5090", host=host, port=port)
