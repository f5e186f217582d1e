"""The planner on real topologies (issue #15): unified-memory sizing and the memory guard on the recorded GB10, GPU
pinning and TP / DP / replicas on the recorded 2x RTX 5090 box, two DGX Sparks, vGPU hosts; and that every export
and `launch` carry the choice."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from spark_tui.commands.launch import dry_run_command
from spark_tui.core.export import formats as ex
from spark_tui.core.hardware import probe as pr
from spark_tui.core.runtime import supervisor as sv
from spark_tui.core.hardware import unified as um
from spark_tui.core.planning.planner import make_plan, memory_for_flags
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.core.catalog.profiles import load_catalog
from spark_tui.errors import PlanError, UsageError
from tests.unit.test_export_support import run_with_stubs

ROOT = Path(__file__).resolve().parents[2]
PROBES = ROOT / "tests" / "data" / "probes"
GiB = 2**30
NOT_PUBLIC = __import__("re").compile(r"FACTS\.md|\bseeds? 0|(^|[\s(;])(/work|/tmp|/root|/home|\.\./shared)")


@pytest.fixture(scope="module")
def cat():
    return load_catalog(user=False)


def plan(cat, **kw):
    kw.setdefault("vllm_version", "0.33.0")
    return make_plan(catalog=cat, **kw)


def load(pid: str) -> ProbeResult:
    return ProbeResult.load(PROBES / pid / "probe.json")


def idle(p: ProbeResult, *indices: int) -> ProbeResult:
    """The same recorded box with some GPUs idle (nothing in use): what it looks like with its server stopped."""
    gs = tuple(dataclasses.replace(g, memory_used_bytes=0, memory_free_bytes=g.memory_total_bytes)
               if g.index in indices else g for g in p.gpus)
    return dataclasses.replace(p, gpus=gs)


def with_host(p: ProbeResult, **kw) -> ProbeResult:
    return dataclasses.replace(p, host=dataclasses.replace(p.host, **kw))


# ------------------------------------------------------------------------------------------ unified memory
def test_gb10_plan_is_sized_by_the_unified_arithmetic(cat):
    p = plan(cat, probe=load("gb10"))
    s = p.unified
    # the planner's numbers are exactly spark_tui.core.hardware.unified's for this probe, weights and in-budget overhead
    ref = um.size_for_probe(load("gb10"), weights_bytes=p.memory.weights_bytes, overhead_bytes=p.memory.overhead_bytes)
    assert s.lines == ref.lines and s.gpu_memory_utilization == ref.gpu_memory_utilization == 0.84
    u, kv = p.flag("--gpu-memory-utilization"), p.flag("--kv-cache-memory-bytes")
    assert u.value == 0.84 and u.evidence == kv.evidence == "required"
    assert ("MemAvailable 113.07 GiB (probe) - vLLM's processes 2.77 GiB - reserve for the OS 8.00 GiB = 102.31 GiB "
            "usable; 102.31 / 121.69 GiB = 0.8407, rounded down: 0.84 (the default 0.92 asks for 111.95 GiB); "
            "MemAvailable after start 8.09 GiB") in u.reason
    assert kv.text == f"{s.kv_cache_memory_bytes // GiB}G" and p.memory.kv_cache_bytes == s.kv_cache_memory_bytes
    assert f"in-budget overhead {p.memory.overhead_bytes / GiB:.2f} GiB" in kv.reason
    # what vLLM will hold stays within what its check requested
    assert p.memory.weights_bytes + p.memory.overhead_bytes + p.memory.kv_cache_bytes <= s.requested_bytes
    assert s.requested_bytes == math.ceil(s.inputs.total_bytes * 0.84)
    for src in (u.source, kv.source, *s.sources):
        assert not NOT_PUBLIC.search(src), src
    assert "vllm/v1/worker/utils.py:724-726" in u.source and "NousResearch/hermes-agent #90713" in u.source
    j = p.to_dict()
    assert j["unified_memory_sizing"]["gpu_memory_utilization"] == 0.84
    assert j["unified_memory_sizing"]["lines"] == list(s.lines)


def test_no_probe_uses_the_published_mem_available_at_vllms_check(cat):
    p = plan(cat, device="dgx-spark")
    s = p.unified
    assert s.inputs.at_check_source and "MiaAI-Lab/GLM-5.3-Flash-EXL3-2x-DGX-Sparks issue #47" in s.inputs.at_check_source
    assert s.available_at_check_bytes == 102 * GiB  # the processes are already in the published figure
    assert s.lines[1].startswith("MemAvailable when vLLM checks (typical)") and "vLLM's own processes" not in s.lines[2]
    assert p.flag("--gpu-memory-utilization").value == math.floor((102 - 8) * GiB / s.inputs.total_bytes * 100) / 100
    assert "from the typical MemAvailable" in p.flag("--kv-cache-memory-bytes").reason


def test_sizing_follows_the_final_batch_sizes(cat):
    """--include-unmeasured raises --max-num-batched-tokens to 8192 on the Spark: a larger activation peak, so the
    KV pool is sized again from the final overhead (what vLLM holds stays within what its check requested)."""
    a = plan(cat, probe=load("gb10"))
    b = plan(cat, probe=load("gb10"), include_unmeasured=True)
    assert b.flag("--max-num-batched-tokens").value == 8192
    assert b.memory.overhead_bytes > a.memory.overhead_bytes
    assert f"in-budget overhead {b.memory.overhead_bytes / GiB:.2f} GiB" in b.flag("--kv-cache-memory-bytes").reason
    assert b.memory.weights_bytes + b.memory.overhead_bytes + b.memory.kv_cache_bytes <= b.unified.requested_bytes
    assert b.memory.kv_cache_bytes <= a.memory.kv_cache_bytes


def test_user_utilization_above_the_sizing_is_warned(cat):
    p = plan(cat, probe=load("gb10"), set_flags=["gpu-memory-utilization=0.9"])
    assert p.flag("--gpu-memory-utilization").source == "user --set"
    assert any("--gpu-memory-utilization 0.9 leaves MemAvailable about 0.79 GiB after start, below the 8 GiB reserve"
               in w for w in p.warnings)
    q = plan(cat, probe=load("gb10"), set_flags=["gpu-memory-utilization=0.92"])
    assert any("it will refuse to start (the sizing gives 0.84)" in w for w in q.warnings)
    assert not any("planned MemAvailable after start" in x for x in q.memory_guard)  # it would not start
    assert not any("after start" in n for n in q.notes if n.startswith("memory guard"))


def test_page_cache_that_must_be_reclaimed_offers_drop_caches(cat):
    p = plan(cat, probe=with_host(load("gb10"), mem_free_bytes=30 * GiB, page_cache_bytes=85 * GiB))
    assert p.unified.page_cache_to_reclaim_bytes > 0
    assert any("run `sync; echo 3 | sudo tee /proc/sys/vm/drop_caches` before launching" in w for w in p.warnings)


def test_too_little_mem_available_is_refused_with_what_to_do(cat):
    with pytest.raises(PlanError) as e:
        plan(cat, probe=with_host(load("gb10"), mem_available_bytes=30 * GiB))
    assert e.value.exit_code == 5 and "does not fit the memory NVIDIA GB10 has free" in e.value.message
    assert "drop_caches" in e.value.hint


def test_memory_guard_is_shown_on_unified_memory_only(cat):
    p = plan(cat, probe=load("gb10"))
    assert p.memory_guard[0].startswith("memory guard: on (unified memory")
    assert p.memory_guard[-1] == "  planned MemAvailable after start: 8.1 GiB"
    note = next(n for n in p.notes if n.startswith("memory guard: on (unified memory)"))
    assert "stop vLLM cleanly below 2 GiB" in note and "about 8.09 GiB after start" in note
    assert "vllm-project/vllm #56824" in note
    assert p.to_dict()["memory_guard"]["enabled"] is True
    h = plan(cat, device="h200")
    assert h.memory_guard == () and h.unified is None and not any("memory guard" in n for n in h.notes)
    assert h.to_dict()["memory_guard"] == {"enabled": False, "lines": []}


# ------------------------------------------------------------------------------------------ one GPU of several
def test_recorded_2x5090_both_busy_is_refused_naming_that_none_is_idle(cat):
    with pytest.raises(PlanError) as e:
        plan(cat, probe=load("2x-rtx-5090"), gpu_index=1)
    assert e.value.exit_code == 5 and "28.6 GiB of the 31.8 GiB on NVIDIA GeForce RTX 5090 is in use" in e.value.message
    assert e.value.hint.startswith("no GPU of the probe is idle (busy: 0, 1)")


def test_busy_gpu_is_refused_naming_the_idle_one(cat):
    with pytest.raises(PlanError) as e:
        plan(cat, probe=idle(load("2x-rtx-5090"), 0), gpu_index=1)
    assert e.value.exit_code == 5 and e.value.message.startswith("GPU 1 (NVIDIA GeForce RTX 5090) is busy")
    assert e.value.hint == "use an idle GPU: --gpu-index 0 (idle: 0 (NVIDIA GeForce RTX 5090))"


def test_gpu_index_pins_the_server_in_the_plan_launch_and_every_export(cat, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    monkeypatch.delenv("SPARK_TUI_VLLM", raising=False)
    p = plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1), gpu_index=1)
    assert p.env_dict() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
    e = next(x for x in p.env if x.name == "CUDA_VISIBLE_DEVICES")
    assert "GPU 1 (NVIDIA GeForce RTX 5090, PCI 00000000:03:00.0)" in e.reason
    assert "vllm/platforms/cuda.py:749-754" in e.source and not NOT_PUBLIC.search(e.source)
    argv, env = dry_run_command(p)
    assert argv[-len(p.argv()) + 1:] == p.argv()[1:] and env["CUDA_VISIBLE_DEVICES"] == "1"
    with tempfile.TemporaryDirectory() as d:
        r = run_with_stubs(ex.to_bash(p), Path(d), ("vllm",))
    assert r["rc"] == 0 and r["vllm.env"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert r["vllm.env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and ["vllm", *r["vllm"]] == p.argv()
    assert "  --gpus device=1 \\\n" in ex.to_docker(p)
    dev = yaml.safe_load(ex.to_compose(p))["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["device_ids"] == ["1"]
    assert 'Environment="CUDA_VISIBLE_DEVICES=1"\n' in ex.to_systemd(p)
    dock = sv.docker_argv(p, image="vllm/vllm-openai:v0.33.0")  # launch --runtime docker: the same selection
    assert dock[dock.index("--gpus") + 1] == "device=1" and "CUDA_VISIBLE_DEVICES=1" not in " ".join(dock)


def test_single_gpu_probe_is_not_pinned_unless_asked(cat):
    assert plan(cat, probe=load("rtx-pro-6000")).env == ()
    p = plan(cat, probe=load("rtx-pro-6000"), gpu_index=0)
    assert p.env_dict()["CUDA_VISIBLE_DEVICES"] == "0"
    with pytest.raises(UsageError, match="--gpu-index 3: the probe has GPUs 0, 1") as e:
        plan(cat, probe=load("2x-rtx-5090"), gpu_index=3)
    assert e.value.exit_code == 2


# ------------------------------------------------------------------------------------------ TP / DP / replicas
def test_two_idle_5090s_offer_tp_dp_replicas_with_the_arithmetic(cat):
    p = plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1))
    c = p.parallel
    assert c is not None and p.parallel_choice is None
    assert [o.kind for o in c.options] == ["replicas", "tp", "dp"]
    # at the model's full 262,144 tokens one 32 GB card cannot hold the weights plus one request; TP2 can
    assert not c.option("replicas").fits and c.option("tp").fits and c.recommended == "tp"
    note = next(n for n in p.notes if n.startswith("2 x NVIDIA GeForce RTX 5090: at 262,144 tokens"))
    assert "replicas 215,405 tokens/server x 2 (does not fit)" in note and "recommended tp" in note
    assert "choose with --parallel tp|dp|replicas" in note and "docs.vllm.ai" in note
    j = p.to_dict()["parallel"]
    assert j["recommended"] == "tp" and j["chosen"] is None and len(j["options"]) == 3
    assert "--tensor-parallel-size" not in p.flags and p.tensor_parallel_size == 1  # the plan runs one GPU


def test_parallel_tp_sets_the_flag_and_every_export_carries_it(cat, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    monkeypatch.delenv("SPARK_TUI_VLLM", raising=False)
    p = plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1), parallel="tp")
    f = p.flag("--tensor-parallel-size")
    assert f.value == 2 and f.evidence == "required" and p.tensor_parallel_size == 2 and p.parallel_choice == "tp"
    assert f.reason.startswith("user --parallel tp: tensor parallel 2 (one server, --tensor-parallel-size 2): "
                               "weights per GPU ~11.2 GiB")
    assert "docs.vllm.ai/en/latest/serving/parallelism_scaling" in f.source
    assert p.env_dict() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1"}
    # the memory picture is one rank's: half the weights, half of every token's KV, the tokens the option predicts
    assert p.memory.weights_bytes == -(-24_000_000_000 // 2)
    assert p.memory.kv_cache_tokens == p.parallel.option("tp").kv_tokens_per_server
    assert "--max-model-len" not in p.flags  # the full context starts on two cards
    assert memory_for_flags(p, p.flags, cat) == p.memory  # `ablate` sees the same per-GPU picture
    argv, env = dry_run_command(p)
    assert argv[-len(p.argv()) + 1:] == p.argv()[1:] and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "  --gpus '\"device=0,1\"' \\\n" in ex.to_docker(p) and "--tensor-parallel-size 2" in ex.to_docker(p)
    svc = yaml.safe_load(ex.to_compose(p))["services"]["vllm"]
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0", "1"]
    assert svc["command"][svc["command"].index("--tensor-parallel-size") + 1] == "2"
    k8s = {x["kind"]: x for x in yaml.safe_load_all(ex.to_k8s(p, ex.ExportOptions(api_key_env="VLLM_API_KEY")))}
    assert k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_parallel_dp_and_replicas(cat):
    p = plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1), parallel="dp")
    assert p.data_parallel_size == 2 and p.flag("--data-parallel-size").evidence == "required"
    assert "DP x TP group" in p.flag("--data-parallel-size").reason
    assert p.memory.kv_cache_tokens == p.parallel.option("dp").kv_tokens_per_server // 2  # one rank's pool
    with pytest.raises(UsageError, match="data-parallel replicas"):
        ex.to_ray(p)
    r = plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1), parallel="replicas", gpu_index=1, port=9000)
    assert "--tensor-parallel-size" not in r.flags and "--data-parallel-size" not in r.flags
    assert r.env_dict()["CUDA_VISIBLE_DEVICES"] == "1"
    assert any("each this plan with --gpu-index 0 --port 9000, --gpu-index 1 --port 9001" in n for n in r.notes)


def test_profile_plans_take_a_gpu_count(cat):
    p = plan(cat, device="h200", gpus=2)
    assert p.parallel is not None and p.parallel.recommended == "replicas" and p.env == ()
    assert any("--set CUDA_VISIBLE_DEVICES=0 --port 8000, --set CUDA_VISIBLE_DEVICES=1 --port 8001" in n
               for n in p.notes)
    t = plan(cat, device="h200", gpus=4, parallel="tp")
    assert t.tensor_parallel_size == 4 and "spark-tui would recommend replicas" in t.flag("--tensor-parallel-size").reason
    assert plan(cat, device="h200").parallel is None


@pytest.mark.parametrize("kw,match", [
    (dict(device="h200", parallel="tp"), "needs two or more identical GPUs"),
    (dict(device="dgx-spark", gpus=2), "--nodes 2"),
    (dict(device="dgx-spark", parallel="tp"), "one GPU"),
    (dict(device="h200", gpus=0), "--gpus 0 must be >= 1"),
    (dict(device="h200", gpus=2, parallel="pp"), "unknown --parallel"),
    (dict(device="rtx-pro-6000", gpus=2, parallel="tp", recipe="vllm-recipes-rtx-pro-6000"), "verbatim"),
])
def test_bad_parallel_requests_are_usage_errors(cat, kw, match):
    with pytest.raises(UsageError, match=match) as e:
        plan(cat, **kw)
    assert e.value.exit_code == 2


def test_more_gpus_than_probed_or_a_busy_one_in_the_set(cat):
    with pytest.raises(UsageError, match="--gpus 3: the probe has 2 x NVIDIA GeForce RTX 5090"):
        plan(cat, probe=idle(load("2x-rtx-5090"), 0, 1), gpus=3, parallel="tp")
    with pytest.raises(PlanError) as e:
        plan(cat, probe=idle(load("2x-rtx-5090"), 0), parallel="tp")
    assert e.value.message.startswith("GPU 1 (NVIDIA GeForce RTX 5090) is busy") and "idle: 0" in e.value.hint


# ------------------------------------------------------------------------------------------ two DGX Sparks
def test_two_sparks_say_whether_the_second_helps(cat):
    p = plan(cat, probe=load("gb10"), nodes=2)
    a = p.second_spark
    assert p.nodes == 2 and a is not None and a.recommended == "replicas"
    assert a.summary.endswith(f"({p.memory.max_concurrency:.2f}x at {p.memory.max_model_len:,} tokens on each)")
    note = next(n for n in p.notes if n.startswith("2 nodes: a second DGX Spark helps as a second replica"))
    assert "vllm-project/recipes PR #918" in note and "al-engr.com" in note
    assert p.to_dict()["second_spark"]["recommended"] == "replicas" and p.to_dict()["nodes"] == 2
    head, _ = ex.to_ray(p, ex.ExportOptions(ray_layout="tp", head_ifname="enP2p1s0f1np1", worker_ifname="enp1s0f0np0"))
    assert f"# Note: a second Spark {a.summary}:" in head.content
    assert plan(cat, probe=load("gb10")).second_spark is None
    assert plan(cat, device="h200", nodes=2).second_spark is None


# ------------------------------------------------------------------------------------------ vGPU
def test_vgpu_host_is_refused_with_what_to_do(cat):
    p = load("vgpu-host")
    assert p.vgpu["kind"] == "host"
    with pytest.raises(PlanError) as e:
        plan(cat, probe=p)
    assert e.value.exit_code == 5 and "vGPU host" in e.value.message and "HOST_VGPU" in e.value.message
    assert e.value.hint == p.vgpu["hint"]


def test_a_driver_without_cuda_is_planned_with_a_warning(cat):
    base = load("rtx-pro-6000")
    r = dataclasses.replace(base, cuda_driver_version=None, cuda_driver_error="library_not_found")
    r = dataclasses.replace(r, vgpu=pr.detect_vgpu(r))
    assert r.vgpu["kind"] == "no_cuda"
    p = plan(cat, probe=r)
    w = next(x for x in p.warnings if x.startswith("vGPU: "))
    assert "libcuda.so.1" in w and "what to do:" in w and "nvmlDeviceGetVirtualizationMode" in w
    assert not any(x.startswith("vGPU") for x in plan(cat, probe=base).warnings)


# ------------------------------------------------------------------------------------------ CLI
def cli(*argv: str, home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(home)}
    env.pop("SPARK_TUI_VLLM", None)
    return subprocess.run([sys.executable, "-m", "spark_tui", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_explain_shows_the_arithmetic_and_json_the_topology(tmp_path):
    r = cli("plan", "--probe-file", str(PROBES / "gb10" / "probe.json"), "--explain", "--vllm-version", "0.33.0",
            home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "unified memory sizing (the GPU shares the host's RAM):\n  total (CUDA total_memory = host MemTotal)" in r.stdout
    assert "  startup check: MemAvailable 110.31 GiB >= requested 102.22 GiB: passes\n" in r.stdout
    assert "\nmemory guard: on (unified memory: the GPU shares the host RAM)" in r.stdout
    idle_file = tmp_path / "2x5090-idle.json"
    idle_file.write_text(json.dumps(idle(load("2x-rtx-5090"), 0, 1).to_dict()))
    r = cli("plan", "--probe-file", str(idle_file), "--gpu-index", "1", "--explain", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=1 vllm serve") == 1
    assert "several GPUs (not chosen: --parallel tp|dp|replicas):\n  2 independent replicas" in r.stdout
    j = json.loads(cli("plan", "--probe-file", str(idle_file), "--parallel", "dp", "--json", home=tmp_path).stdout)
    assert j["data_parallel_size"] == 2 and j["parallel"]["chosen"] == "dp" and j["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    r = cli("plan", "--probe-file", str(PROBES / "vgpu-host" / "probe.json"), home=tmp_path)
    assert r.returncode == 5 and "vGPU host" in r.stderr
    r = cli("export", "--format", "ray", "--device", "dgx-spark", "--nodes", "2", "--ray-layout", "tp",
            "--head-ifname", "enP2p1s0f1np1", "--worker-ifname", "enp1s0f0np0", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# Note: a second Spark helps as a second replica" in r.stdout and "--tensor-parallel-size 2" in r.stdout


def test_a_set_parallel_size_gets_the_per_gpu_memory_picture_too(cat):
    a = plan(cat, device="rtx-5090", gpus=2, parallel="tp")
    b = plan(cat, device="rtx-5090", set_flags=["tensor-parallel-size=2"])
    assert b.tensor_parallel_size == 2 and b.flag("--tensor-parallel-size").source == "user --set"
    assert b.memory.weights_bytes == a.memory.weights_bytes < plan(cat, device="rtx-5090").memory.weights_bytes
    assert a.device.gpu_count == 2 and b.device.gpu_count == 1


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=st.sampled_from(["rtx-5090", "rtx-pro-6000", "h100", "h200", "b200"]), gpus=st.integers(1, 8),
       parallel=st.sampled_from([None, "tp", "dp", "replicas"]),
       context=st.one_of(st.none(), st.sampled_from([8192, 65536, 262144])), port=st.sampled_from([8000, 9100]))
def test_any_parallel_plan_is_consistent_or_refused(cat, device, gpus, parallel, context, port):
    try:
        p = plan(cat, device=device, gpus=gpus, parallel=parallel, context=context, port=port)
    except UsageError as e:
        assert parallel is not None and gpus < 2 and "two or more" in e.message and e.exit_code == 2
        return
    except PlanError as e:
        assert e.message and e.hint and e.exit_code == 5
        return
    assert p.env == ()  # a profile plan pins nothing
    assert p.tensor_parallel_size == (gpus if parallel == "tp" else 1)
    assert p.data_parallel_size == (gpus if parallel == "dp" else 1)
    assert ex.gpus_per_replica(p) == (gpus if parallel in ("tp", "dp") else 1)
    assert (p.parallel is None) == (gpus < 2) and p.parallel_choice == parallel
    if p.parallel is not None:
        assert p.parallel.recommended in ("replicas", "tp") and len(p.parallel.options) == 3
        assert any(n.startswith(f"{gpus} x ") for n in p.notes)
        o = p.parallel.option(parallel) if parallel in ("tp", "dp") else None
        if o is not None and o.fits and context is None:
            # the plan's memory is that option's per-GPU picture (one rank's KV pool)
            per = o.kv_tokens_per_server // (gpus if parallel == "dp" else 1)
            assert p.memory.kv_cache_tokens == per
    assert p.memory.fits and p.memory.max_concurrency >= 1
    assert all(f.reason and f.source for f in p.flags) and all(not NOT_PUBLIC.search(f.source) for f in p.flags)
