"""Planner v2: vLLM's defaults as the baseline, deviations with evidence classes, recipes, overrides, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spark_tui.core.catalog.evidence import Measured, MtpStep, choose_mtp
from spark_tui.core.planning.flags import split_args
from spark_tui.core.planning.planner import make_plan
from spark_tui.core.planning.request import parse_set
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.core.catalog.profiles import load_catalog
from spark_tui.core.planning.sizes import parse_size
from spark_tui.errors import PlanError, UsageError

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"
SPEC3 = '{"method":"mtp","num_speculative_tokens":3,"moe_backend":"triton"}'
NOT_PUBLIC = re.compile(r"FACTS\.md|\bseeds? 0|(^|[\s(;])(/work|/tmp|/root|/home|\.\./shared)")


@pytest.fixture(scope="module")
def cat():
    return load_catalog(user=False)


def plan(cat, **kw):
    kw.setdefault("vllm_version", "0.33.0")
    return make_plan(catalog=cat, **kw)


def flags(p) -> dict:
    return {f.name: f.text for f in p.flags}


SHIPPED = ["b200", "b300", "dgx-spark", "gb200", "gb300", "h100", "h200", "rtx-5090", "rtx-pro-6000",
           "rtx-pro-6000-maxq", "rtx-pro-6000-server"]
GENERIC = ["generic-sm10x", "generic-sm12x", "generic-sm9x"]


def test_every_gpu_profile_is_planned(cat) -> None:
    gpus = {d.id for d in cat.devices.values() if d.supported and not d.cpu}
    assert gpus == set(SHIPPED) | set(GENERIC)


@pytest.mark.parametrize("device", GENERIC)
def test_generic_rules_need_the_probed_memory(cat, device) -> None:
    with pytest.raises(PlanError, match="total memory unknown") as e:
        plan(cat, device=device)
    assert "--probe-file" in e.value.hint


@pytest.mark.parametrize("device", SHIPPED)
@pytest.mark.parametrize("goal", ["balanced", "latency", "throughput", "context"])
def test_default_plan_has_no_unmeasured_deviation_and_public_sources(cat, device, goal) -> None:
    p = plan(cat, device=device, goal=goal)
    assert p.baseline is not None and p.baseline.argv == ("vllm", "serve", p.model)
    assert not [f.name for f in p.flags if f.evidence == "unmeasured"]
    for f in [*p.flags, *p.omitted]:
        assert f.reason and f.source and f.evidence in ("required", "measured", "unmeasured"), f
        assert not NOT_PUBLIC.search(f.source), (f.name, f.source)
    for e in p.env:
        assert not NOT_PUBLIC.search(e.source), e
    for d in p.baseline.defaults:
        assert d["source"].startswith("vLLM v"), d
    assert all(f.evidence == "unmeasured" for f in p.omitted)
    # no request caps or batch sizes without a measurement or a memory need (with the arithmetic)
    assert "--max-num-batched-tokens" not in flags(p)
    if "--max-num-seqs" in flags(p):
        f = p.flag("--max-num-seqs")
        assert f.evidence == "required" and "Mamba cache block" in f.reason and f.value <= p.memory.num_blocks
    # the plan always starts where the baseline cannot
    assert p.memory.fits and p.memory.max_concurrency >= 1


def test_h200_plan_is_the_baseline_plus_required_flags(cat) -> None:
    p = plan(cat, device="h200", checkpoint="nvidia-nvfp4", vllm_version="0.26.0")
    assert p.argv() == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4", "--served-model-name", "qwen3.6-35b-a3b",
                        "--host", "127.0.0.1", "--language-model-only", "--reasoning-parser", "qwen3",
                        "--tool-call-parser", "qwen3_coder", "--enable-auto-tool-choice"]
    assert {f.evidence for f in p.flags} == {"required"}
    assert p.baseline.starts and not p.baseline.problems
    d = {x["key"]: x for x in p.baseline.defaults}
    assert d["gpu_memory_utilization"]["value"] == 0.92 and "v0.26.0 vllm/config/cache.py:68" in \
        d["gpu_memory_utilization"]["source"]
    assert d["max_num_seqs"]["value"] == 1024 and d["max_num_batched_tokens"]["value"] == 8192
    assert d["max_model_len"]["value"] == 262144
    # what was left out is listed with how to add it
    assert {f.name for f in p.omitted} == {"--load-format"}
    assert any("spark-tui tune --device h200" in n for n in p.notes)
    # measured on the H200 (profiles/measured.toml, bench/results/h200-summary.json): FP8 KV no gain, MTP off
    assert any(n.startswith("--kv-cache-dtype fp8: measured, no gain") for n in p.notes)
    mtp = next(n for n in p.notes if n.startswith("MTP is off"))
    assert "MTP speed model" in mtp and "bench/results/h200-summary.json" in mtp
    j = p.to_dict()
    assert j["baseline_argv"] == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4"]
    assert [f["evidence"] for f in j["flags"]] == ["required"] * 6


def test_include_unmeasured_adds_them_marked(cat) -> None:
    p = plan(cat, device="h200", include_unmeasured=True)
    f = flags(p)
    assert f["--kv-cache-dtype"] == "fp8" and f["--load-format"] == "fastsafetensors"
    assert json.loads(f["--speculative-config"]) == {"method": "mtp", "num_speculative_tokens": 1}
    assert p.flag("--kv-cache-dtype").evidence == "unmeasured" and not p.omitted


def test_spark_utilisation_from_mem_available(cat) -> None:
    # no probe: MemAvailable at vLLM's check is typically 102 GiB (published, vLLM's processes already in it)
    # - 8 GiB reserve for the OS = 94 GiB over 121.7 GiB -> 0.77, required to start (spark_tui.core.hardware.unified)
    p = plan(cat, device="dgx-spark")
    u = p.flag("--gpu-memory-utilization")
    assert u.text == "0.77" and u.evidence == "required" and "0.92" in u.reason and "102.00 GiB" in u.reason
    assert "reserve for the OS 8.00 GiB" in u.reason and "vLLM's processes" not in u.reason.split("usable")[0]
    assert not p.baseline.starts and "MemAvailable" in p.baseline.problems[0]
    assert any("--gpu-memory-utilization: recipe 0.5, plan 0.77" in d for d in p.differences)
    assert p.unified is not None and p.unified.inputs.at_check_source is not None
    # recorded GB10 probe: MemAvailable 121,411,960,832 B (113.07 GiB) - vLLM's processes 2.77 GiB - 8 GiB reserve
    # = 102.31 GiB over 121.69 GiB -> 0.84 and an explicit KV pool
    q = plan(cat, probe=ProbeResult.load(PROBES / "gb10" / "probe.json"))
    f = flags(q)
    assert q.device.id == "dgx-spark" and f["--gpu-memory-utilization"] == "0.84"
    assert "113.07 GiB (probe) - vLLM's processes 2.77 GiB" in q.flag("--gpu-memory-utilization").reason
    kv = parse_size(f["--kv-cache-memory-bytes"])
    assert f["--kv-cache-memory-bytes"].endswith("G") and kv % 2**30 == 0
    assert q.memory.exact_kv_pool and q.memory.kv_cache_bytes == kv and 70 * 2**30 < kv < 100 * 2**30
    assert q.flag("--kv-cache-memory-bytes").evidence == "required" and "rounded down" in \
        q.flag("--kv-cache-memory-bytes").reason


def test_rtx_5090_memory_at_vllm_defaults(cat) -> None:
    p = plan(cat, device="rtx-5090", checkpoint="nvidia-nvfp4")
    m = p.memory
    assert "--gpu-memory-utilization" not in flags(p)  # vLLM's 0.92, not the recipe's 0.95
    assert m.device_total_bytes == 32 * 2**30 and m.weights_bytes == 23_460_000_000  # the published size
    assert m.budget_bytes == int(32 * 2**30 * 0.92)
    assert m.kv_cache_bytes == m.budget_bytes - m.weights_bytes - m.overhead_bytes
    # vLLM's default below 70 GiB is 256 sequences, but the pool holds fewer blocks: decode CUDA graphs would refuse
    assert m.max_num_seqs <= m.num_blocks < 256 and p.flag("--max-num-seqs").evidence == "required"
    assert any("exceeds available Mamba cache blocks" in x for x in p.baseline.problems) or not p.baseline.starts
    if m.max_model_len != 262144:  # the full context does not start: a required, explained --max-model-len
        f = p.flag("--max-model-len")
        assert f.evidence == "required" and "one such request needs more KV" in f.reason


def test_context_above_the_model_is_refused(cat) -> None:
    with pytest.raises(UsageError, match="above the model's 262,144") as e:
        plan(cat, device="h200", context=1_000_000)
    assert "--context 262144" in e.value.hint
    with pytest.raises(PlanError, match="does not fit") as e:
        plan(cat, device="rtx-5090", context=250_000, set_flags=["kv-cache-dtype=auto"], checkpoint="qwen-fp8")
    p = plan(cat, device="h200", context=32768)
    assert p.flag("--max-model-len").value == 32768 and p.flag("--max-model-len").reason == "user --context"


def test_hopper_choices(cat) -> None:
    p = plan(cat, device="h100")
    assert p.checkpoint.repo_id == "Qwen/Qwen3.6-35B-A3B-FP8" and "TRITON" in p.checkpoint_reason
    assert "sm_9x has no FP4 tensor cores" in p.checkpoint_reason and "oracle/fp8.py" in p.checkpoint_source
    q = plan(cat, device="h100", checkpoint="nvidia-nvfp4")
    assert "--moe-backend" not in flags(q)  # vLLM's own choice; marlin is an unmeasured candidate
    assert any(f.name == "--moe-backend" and f.text == "marlin" for f in q.omitted)
    assert any("no FP4 tensor cores" in w for w in q.warnings)


def test_refuses_pre_hopper(cat) -> None:
    with pytest.raises(PlanError, match="sm_80") as e:
        plan(cat, device="a100")
    assert e.value.exit_code == 5
    with pytest.raises(PlanError, match="A100"):
        plan(cat, probe=ProbeResult.load(PROBES / "a100" / "probe.json"))


def test_recorded_probes_plan(cat) -> None:
    for pid, dev in {"rtx-pro-6000": "rtx-pro-6000-maxq", "rtx-5090": "rtx-5090"}.items():
        pr = ProbeResult.load(PROBES / pid / "probe.json")
        p = plan(cat, probe=pr)
        assert p.device.id == dev and p.device.memory_bytes == pr.gpus[0].memory_total_bytes
        assert p.device.source.startswith("probe-file:")
    # the recorded B200 / H100 / H200 snapshots come from busy servers (e.g. 162.7 of 179.1 GiB in use on the
    # B200): the plan says so and points at --device instead of planning into memory that is taken
    for pid, dev in (("b200", "b200"), ("h100", "h100"), ("h200", "h200"), ("multi-b200", "b200")):
        with pytest.raises(PlanError, match="in use by other processes") as e:
            plan(cat, probe=ProbeResult.load(PROBES / pid / "probe.json"))
        assert f"--device {dev}" in e.value.hint


def test_busy_gpu_lowers_utilisation_with_the_arithmetic(cat, tmp_path) -> None:
    d = json.loads((PROBES / "rtx-5090" / "probe.json").read_text())
    g = d["gpus"][0]
    g["memory_free_bytes"] = g["memory_total_bytes"] - 4 * 2**30
    g["memory_used_bytes"] = 4 * 2**30
    p = plan(cat, probe=ProbeResult.from_dict(d))
    u = p.flag("--gpu-memory-utilization")
    assert u.evidence == "required" and float(u.text) < 0.92 and "free" in u.reason
    assert any("in use by other processes" in w for w in p.warnings)


def test_multi_gpu_probe(cat) -> None:
    d = json.loads((PROBES / "multi-b200" / "probe.json").read_text())
    for g in d["gpus"]:  # the same box, idle
        g["memory_free_bytes"], g["memory_used_bytes"] = g["memory_total_bytes"], 0
    multi = plan(cat, probe=ProbeResult.from_dict(d))
    assert multi.device.id == "b200" and multi.device.gpu_count == 2
    # one GPU, pinned; TP / DP / replicas offered with their arithmetic (test_plan_topology.py has the details)
    assert multi.env_dict() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0"}
    assert multi.parallel is not None and any(n.startswith("2 x NVIDIA B200: ") for n in multi.notes)


def test_model_card_spark_recipe_reproduced_verbatim(cat) -> None:
    p = plan(cat, device="dgx-spark", recipe="model-card-spark")
    assert p.argv() == [
        "vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4", "--served-model-name", "qwen3.6-35b-a3b", "--host",
        "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1", "--trust-remote-code", "--kv-cache-dtype", "fp8",
        "--attention-backend", "flashinfer", "--moe-backend", "marlin", "--gpu-memory-utilization", "0.4",
        "--max-model-len", "262144", "--max-num-seqs", "4", "--max-num-batched-tokens", "8192",
        "--enable-chunked-prefill", "--async-scheduling", "--enable-prefix-caching", "--speculative-config", SPEC3,
        "--load-format", "fastsafetensors", "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_xml",
        "--enable-auto-tool-choice"]
    assert all(f.evidence == "required" for f in p.flags) and p.recipe == "model-card-spark"
    assert all(f.source.startswith("nvidia/Qwen3.6-35B-A3B-NVFP4 model card") for f in p.flags
               if f.name != "--served-model-name")
    d = "\n".join(p.differences)
    assert "qwen3_xml" in d and "aliases" in d and "--trust-remote-code" in d
    assert "--gpu-memory-utilization" in d and "MemAvailable" in d
    # the memory picture is computed from the recipe's own flags: 0.4 x 121.7 GiB
    assert p.memory.budget_bytes == int(121.7 * 2**30 * 0.4) and p.memory.max_model_len == 262144
    assert p.memory.mamba_slots_per_seq == 2 + 3 + 1


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
    # verbatim, after the stable served name and (where the recipe binds every interface by default) loopback
    assert p.argv() == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4", "--served-model-name", "qwen3.6-35b-a3b",
                        "--host", "127.0.0.1", *OFFICIAL[device]]


def test_checkpoint_choice_follows_kernels_and_measurements(cat) -> None:
    # native W4A4 FP4 on Blackwell datacenter (FLASHINFER_TRTLLM) and workstation (FLASHINFER_CUTLASS) parts
    b = plan(cat, device="b200")
    assert b.checkpoint.id == "redhatai-nvfp4" and b.baseline.moe_backend == "FLASHINFER_TRTLLM"
    assert "native FP4" in b.checkpoint_reason and "trtllm_nvfp4_moe.py" in b.checkpoint_source
    w = plan(cat, device="rtx-pro-6000")
    assert w.checkpoint.id == "infatoshi-nvfp4-fp8" and w.baseline.moe_backend == "FLASHINFER_CUTLASS"
    # on DGX Spark published one-user figures decide: NVIDIA W4A16 on Marlin 97.7 tok/s vs RedHatAI W4A4 55.9
    s = plan(cat, device="dgx-spark")
    assert s.checkpoint.id == "nvidia-nvfp4" and s.baseline.moe_backend == "MARLIN"
    assert "97.7" in s.checkpoint_reason and "55.9" in s.checkpoint_reason and "recipes PR #918" in s.checkpoint_source
    # Hopper: FP8 on TRITON; the NVIDIA checkpoint forced there runs Marlin (vLLM 0.26) or Humming (0.32+)
    assert plan(cat, device="h200", checkpoint="nvidia-nvfp4", vllm_version="0.26.0").baseline.moe_backend == "MARLIN"
    assert plan(cat, device="h200", checkpoint="nvidia-nvfp4", vllm_version="0.33.0").baseline.moe_backend == "HUMMING"


def test_default_plan_differences_explain_the_recipe(cat) -> None:
    p = plan(cat, device="rtx-pro-6000", checkpoint="nvidia-nvfp4")
    d = p.differences
    assert any("--enable-chunked-prefill" in x and "default" in x for x in d)
    assert any("--max-num-seqs 8: left out" in x and "no measurement" in x for x in d)
    assert any("--speculative-config" in x and "left out" in x for x in d)
    assert any("--language-model-only" in x and "added" in x for x in d)
    b = plan(cat, device="b200", checkpoint="nvidia-nvfp4")
    assert any("--quantization modelopt" in x and "FP8" in x for x in b.differences)
    assert b.differences[0].startswith("compared with NVIDIA model card") and "--recipe model-card-blackwell" in b.differences[0]
    s = plan(cat, device="b200", recipe="model-card-blackwell")
    assert flags(s)["--quantization"] == "modelopt" and any("FP8" in w for w in s.warnings)
    # on Spark the RedHatAI checkpoint is compared with Steve Scargall's recipe; the plan pins no MoE backend
    sp = plan(cat, device="dgx-spark", checkpoint="redhatai-nvfp4")
    assert "--moe-backend" not in flags(sp) and "Scargall" in sp.differences[0]
    assert any(x.startswith("--quantization compressed-tensors: left out") for x in sp.differences)


def test_mtp_off_where_a_published_pair_shows_a_loss(cat) -> None:
    # Infatoshi model card, RTX PRO 6000, vLLM 0.19: 156.9 tok/s with MTP k=1 vs 163.4 without
    p = plan(cat, device="rtx-pro-6000", checkpoint="infatoshi-nvfp4-fp8", goal="latency")
    assert "--speculative-config" not in flags(p)
    assert not any(f.name == "--speculative-config" for f in p.omitted)  # measured: not even offered
    assert any("x0.96" in n and "Infatoshi" in n for n in p.notes)


def test_mtp_measured_model_turns_it_on(cat) -> None:
    # decode steps as a spark-tui GPU run records them: T(0) = 1/200 s at c=1, +10 % per draft token
    steps = []
    for k in range(4):
        t = (1 / 200) * (1 + 0.10 * k)
        steps.append(MtpStep("h200", 90, "nvidia-nvfp4", k, 1.0 if k else 0.0, 1, (k + 1) / t, "0.26.0", "run X"))
        t16 = (16 / 1800) * (1 + 0.30 * k)
        steps.append(MtpStep("h200", 90, "nvidia-nvfp4", k, 1.0 if k else 0.0, 16, 16 * (k + 1) / t16, "0.26.0",
                             "run X"))
    m = Measured(mtp_steps=tuple(steps))
    lat = choose_mtp("h100", 90, "nvidia-nvfp4", "latency", m)  # an H200 measurement stands for sm_90
    assert lat.measured and lat.k >= 2 and "run X" in lat.source and "85%" in lat.reason
    bal = choose_mtp("h200", 90, "nvidia-nvfp4", "balanced", m)
    assert bal.measured and bal.k >= 1 and "concurrency 16" in bal.effect
    # a costly step at high batch: no k gains 5 % at concurrency 64 -> off for throughput, with the reason
    steps64 = [MtpStep("h200", 90, "nvidia-nvfp4", k, 0.0, 64, 64 / ((64 / 3000) * (1 + 0.9 * k)), "0.26.0", "run X")
               for k in range(4)]
    thr = choose_mtp("h200", 90, "nvidia-nvfp4", "throughput", Measured(mtp_steps=tuple(steps + steps64)))
    assert thr.k == 0 and thr.measured and "no k gains" in thr.reason
    # another SM is not covered by an H200 measurement
    assert not choose_mtp("rtx-5090", 120, "nvidia-nvfp4", "latency", m).measured


def test_set_overrides_are_typed_and_required(cat) -> None:
    p = plan(cat, device="rtx-pro-6000", set_flags=["max-num-seqs=32", "--enforce-eager", "--load-format=",
                                                    "no-enable-prefix-caching", "VLLM_USE_DEEP_GEMM=0"])
    f = p.flag("--max-num-seqs")
    assert f.value == 32 and f.text == "32" and f.reason == "user --set" and f.evidence == "required"
    assert "--enforce-eager" in flags(p) and flags(p)["--enforce-eager"] is None
    assert "--load-format" not in flags(p)
    assert "--no-enable-prefix-caching" in flags(p) and "--enable-prefix-caching" not in flags(p)
    assert p.env_dict() == {"VLLM_USE_DEEP_GEMM": "0"}
    assert p.memory.mamba_slots_per_seq == 1 and p.memory.cuda_graph_bytes == 0 and p.memory.max_num_seqs == 32
    q = plan(cat, device="rtx-pro-6000", set_flags=["kv-cache-dtype=fp8"])
    assert q.memory.block_size_tokens == 2096 and q.memory.kv_bytes_per_token == 10240
    # the port a --set gives is the plan's port (one flag model)
    assert plan(cat, device="rtx-5090", set_flags=["port=9000"]).port == 9000
    for bad in (["max-num-seqs=abc"], ["gpu-memory-utilization=nan"], ["port=99999"], ["port=abc"],
                ["speculative-config={bad"]):
        with pytest.raises(UsageError):
            plan(cat, device="rtx-5090", set_flags=bad)


def test_set_parsing() -> None:
    assert parse_set(["a=1", "--b", "c=", "HF_HOME=/x"]) == [("--a", "1", False), ("--b", None, False),
                                                              ("--c", None, True), ("HF_HOME", "/x", False)]
    with pytest.raises(UsageError):
        parse_set(["=3"])
    assert parse_size("16M") == 16 * 2**20 and parse_size("16m") == 16_000_000 and parse_size("1G") == 2**30
    assert split_args(["--a", "1", "--b", "--c=x"]) == [("--a", "1"), ("--b", None), ("--c", "x")]


def test_goal_context_takes_fp8_kv(cat) -> None:
    c = plan(cat, device="rtx-5090", goal="context")
    f = c.flag("--kv-cache-dtype")
    assert f.text == "fp8" and f.evidence == "required" and "goal context" in f.reason
    assert c.memory.kv_bytes_per_token == 10240
    with pytest.raises(PlanError, match="does not fit"):
        plan(cat, device="rtx-5090", checkpoint="qwen-bf16")


def test_version_adaptation(cat) -> None:
    old = plan(cat, device="rtx-pro-6000", checkpoint="infatoshi-nvfp4-fp8", vllm_version="0.15.0",
               set_flags=["moe-backend=flashinfer_cutlass"])
    assert "--moe-backend" not in flags(old)
    assert old.env_dict() == {"VLLM_USE_FLASHINFER_MOE_FP4": "1", "VLLM_FLASHINFER_MOE_BACKEND": "throughput"}
    new = plan(cat, device="rtx-pro-6000", checkpoint="infatoshi-nvfp4-fp8", vllm_version="0.32.0")
    assert new.memory.mamba_slots_per_seq == 2  # 0.32: 2 + k slots with prefix caching, no checkpoint block
    d = {x["key"]: x for x in new.baseline.defaults}
    assert "v0.32.0" in d["gpu_memory_utilization"]["source"] and d["gpu_memory_utilization"]["verified"]
    between = plan(cat, device="h200", vllm_version="0.28.0")
    assert {x["key"]: x for x in between.baseline.defaults}["max_num_seqs"]["verified"] is False


def test_cpu_test_plan_predicts_recorded_runs(cat, tmp_path) -> None:
    from tests.unit.test_memory import QWEN35_MTP, QWEN3_MOE

    for name, cfg, want, mtp in (("qwen3-moe", QWEN3_MOE, (32768, 64.0), None),
                                 ("qwen35-mtp", QWEN35_MTP, (6528, 12.75), 1)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        p = plan(cat, device="cpu-test", model_path=str(d), vllm_version="0.32.0", mtp=mtp)
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
    with pytest.raises(UsageError, match="not a vLLM release"):
        plan(cat, device="rtx-5090", vllm_version="latest-ish")
    with pytest.raises(PlanError, match="no NVIDIA GPU"):
        plan(cat, probe=ProbeResult(status="no_nvml", message="libnvidia-ml.so not found"))


def test_forced_flash_attn_on_sm100_pages_by_128(cat) -> None:
    auto = plan(cat, device="b200", set_flags=["kv-cache-dtype=fp8"])
    fa = plan(cat, device="b200", set_flags=["kv-cache-dtype=fp8", "attention-backend=FLASH_ATTN"])
    assert auto.memory.block_size_tokens == 2096  # FLASHINFER: 16-token alignment
    assert fa.memory.block_size_tokens == 2176  # 128 x ceil(mamba page / (128 x 1024))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=st.sampled_from(["dgx-spark", "rtx-pro-6000", "rtx-5090", "b200", "gb300", "h100", "h200",
                               "generic-sm12x"]),
       checkpoint=st.sampled_from([None, "nvidia-nvfp4", "redhatai-nvfp4", "infatoshi-nvfp4-fp8", "qwen-fp8",
                                   "qwen-bf16"]),
       goal=st.sampled_from(["latency", "throughput", "context", "balanced"]),
       context=st.one_of(st.none(), st.integers(1024, 262_144)), concurrency=st.one_of(st.none(), st.integers(1, 64)),
       mtp=st.one_of(st.none(), st.integers(0, 4)), version=st.sampled_from([None, "0.15.0", "0.24.0", "0.32.0"]),
       unmeasured=st.booleans())
def test_any_plan_is_consistent_or_refused(cat, device, checkpoint, goal, context, concurrency, mtp, version,
                                           unmeasured) -> None:
    try:
        p = make_plan(catalog=cat, device=device, checkpoint=checkpoint, goal=goal, context=context,
                      concurrency=concurrency, mtp=mtp, vllm_version=version, include_unmeasured=unmeasured)
    except PlanError as e:
        assert e.message and e.hint
        return
    m = p.memory
    # what the plan says is what vLLM would log for its own flags
    assert m.max_model_len == p.flags.value("--max-model-len", 262144)
    if concurrency:
        assert m.max_num_seqs == concurrency
    assert m.fits and m.max_concurrency >= 1
    assert m.kv_cache_tokens == int(m.num_blocks / m.blocks_per_request * m.max_model_len) or version == "0.15.0"
    if context is not None:
        assert m.max_model_len == context
    k = p.mtp_k
    if mtp is not None:
        assert k == mtp
    # prefix caching: on for hybrid models from 0.32 (2 + k slots, + 1 checkpoint block in 0.33), off before (1 + k)
    assert m.mamba_slots_per_seq == {None: 3 + k, "0.32.0": 2 + k}.get(version, 1 + k)
    assert len(p.flags.names()) == len(set(p.flags.names()))  # no flag twice
    assert all(x.reason and x.source for x in p.flags) and all(e.reason and e.source for e in p.env)
    assert unmeasured or all(f.evidence != "unmeasured" for f in p.flags)


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
