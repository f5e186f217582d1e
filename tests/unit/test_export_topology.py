"""Exports carry the GPU topology: tensor/pipeline/data parallel sizes, a pinned GPU, and two-node Ray clusters
with a network interface per node. Two-Spark advice (spark_tui.core.planning.cluster)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from spark_tui.core.planning import cluster
from spark_tui.core.export import formats as ex
from spark_tui.core.planning.flags import Flag, Flags
from spark_tui.core.planning.plan import EnvChoice, MemoryEstimate
from spark_tui.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_export_render import k8s_docs, spark_plan  # noqa: E402
from test_export_support import run_with_stubs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PIN = (EnvChoice("CUDA_DEVICE_ORDER", "PCI_BUS_ID", "r", "s"), EnvChoice("CUDA_VISIBLE_DEVICES", "1", "r", "s"))


def pinned(**kw):
    p = spark_plan(**kw)
    return replace(p, env=p.env + PIN)


def test_pipeline_parallel_counts_in_gpu_totals():
    p = replace(spark_plan(tensor_parallel_size=2), flags=Flags([*spark_plan(tensor_parallel_size=2).flags,
                                                                Flag("--pipeline-parallel-size", 2, "r", "s")]))
    assert ex.parallel_sizes(p) == (2, 2, 1) and ex.gpus_per_replica(p) == 4
    compose = yaml.safe_load(ex.to_compose(p))["services"]["vllm"]
    assert compose["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4
    c = k8s_docs(ex.to_k8s(p, ex.ExportOptions(api_key_env="VLLM_API_KEY")))["Deployment"]["spec"]["template"]["spec"]
    assert c["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_flag_values_win_and_bad_ones_are_refused():
    p = replace(spark_plan(), flags=Flags([*spark_plan().flags, Flag("--tensor-parallel-size", "4", "r", "s")]))
    assert ex.gpus_per_replica(p) == 4
    bad = replace(spark_plan(), flags=Flags([*spark_plan().flags, Flag("--data-parallel-size", "two", "r", "s")]))
    with pytest.raises(UsageError, match="is not a GPU count"):
        ex.gpus_per_replica(bad)


def test_pinned_gpu_in_bash_stays_env():
    text = ex.to_bash(pinned())
    assert "export CUDA_DEVICE_ORDER=PCI_BUS_ID\nexport CUDA_VISIBLE_DEVICES=1\n" in text


def test_pinned_gpu_becomes_docker_device_selection():
    text = ex.to_docker(pinned())
    assert "  --gpus device=1 \\\n" in text and "--gpus all" not in text
    assert "CUDA_VISIBLE_DEVICES" not in text and "CUDA_DEVICE_ORDER" not in text  # the container sees it as GPU 0
    assert "-e VLLM_USE_DEEP_GEMM=0" in text
    two = replace(spark_plan(tensor_parallel_size=2), env=spark_plan().env + (
        EnvChoice("CUDA_VISIBLE_DEVICES", "0,1", "r", "s"),))
    assert "  --gpus '\"device=0,1\"' \\\n" in ex.to_docker(two)


def test_docker_script_passes_the_device_to_docker(tmp_path):
    r = run_with_stubs(ex.to_docker(pinned()), tmp_path, ("docker",), {"HOME": str(tmp_path)})
    argv = r["docker"]
    assert argv[argv.index("--gpus") + 1] == "device=1"


def test_pinned_gpu_becomes_compose_device_ids():
    svc = yaml.safe_load(ex.to_compose(pinned()))["services"]["vllm"]
    dev = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev == {"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}
    assert "CUDA_VISIBLE_DEVICES" not in svc["environment"]


def test_pinned_gpu_in_k8s_is_left_to_the_device_plugin():
    text = ex.to_k8s(pinned(), ex.ExportOptions(api_key_env="VLLM_API_KEY"))
    assert "# The plan pins GPU 1 on its machine; here the NVIDIA device plugin picks the 1 GPU(s)" in text
    env = k8s_docs(text)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any(e["name"].startswith("CUDA_") for e in env)


def test_pin_fewer_gpus_than_the_server_needs_is_refused():
    with pytest.raises(UsageError, match="pins 1 GPU"):
        ex.to_docker(pinned(tensor_parallel_size=2))
    bad = replace(spark_plan(), env=(EnvChoice("CUDA_VISIBLE_DEVICES", "1; rm -rf /", "r", "s"),))
    with pytest.raises(UsageError, match="not a list of GPU indices"):
        ex.to_compose(bad)


def test_ray_sets_each_nodes_interface(tmp_path):
    opts = ex.ExportOptions(head_ifname="enP2p1s0f1np1", worker_ifname="enp1s0f0np0", ray_layout="tp")
    head, worker = ex.to_ray(spark_plan(nodes=2), opts)
    assert "export NCCL_SOCKET_IFNAME=enP2p1s0f1np1\nexport GLOO_SOCKET_IFNAME=enP2p1s0f1np1\n" in head.content
    assert "export NCCL_SOCKET_IFNAME=enp1s0f0np0\nexport GLOO_SOCKET_IFNAME=enp1s0f0np0\n" in worker.content
    assert "enp1s0f0np0" not in head.content and "enP2p1s0f1np1" not in worker.content
    env = {"VLLM_HOST_IP": "10.0.0.2", "RAY_HEAD_IP": "10.0.0.1", "HOME": str(tmp_path)}
    r = run_with_stubs(worker.content, tmp_path, ("ray",), env)
    assert r["ray.env"]["NCCL_SOCKET_IFNAME"] == r["ray.env"]["GLOO_SOCKET_IFNAME"] == "enp1s0f0np0"


def test_ray_role_interface_falls_back_to_common_then_to_runtime():
    head, worker = ex.to_ray(spark_plan(nodes=2), ex.ExportOptions(ifname="eth9", worker_ifname="eth1"))
    assert "NCCL_SOCKET_IFNAME=eth9" in head.content and "NCCL_SOCKET_IFNAME=eth1" in worker.content
    head, worker = ex.to_ray(spark_plan(nodes=2), ex.ExportOptions(head_ifname="eth0"))
    assert "NCCL_SOCKET_IFNAME=eth0" in head.content
    assert ': "${NCCL_SOCKET_IFNAME:?set NCCL_SOCKET_IFNAME to the cluster network interface of this worker node' \
           in worker.content
    with pytest.raises(UsageError, match="--worker-ifname"):
        ex.to_ray(spark_plan(nodes=2), ex.ExportOptions(worker_ifname="eth0; reboot"))


def test_ray_reads_parallel_sizes_from_flags_and_refuses_dp():
    p = replace(spark_plan(nodes=2), flags=Flags([*spark_plan().flags, Flag("--tensor-parallel-size", "2", "r", "s")]))
    pairs = dict(ex.ray_pairs(p, ex.ExportOptions(ray_layout="pp")))
    assert (pairs["--tensor-parallel-size"], pairs["--pipeline-parallel-size"]) == ("2", "2")
    with pytest.raises(UsageError, match="data-parallel replicas") as e:
        ex.to_ray(spark_plan(nodes=2, data_parallel_size=2))
    assert "one server per node" in e.value.hint


def _spark_memory(fits: bool) -> MemoryEstimate:
    return MemoryEstimate(device_total_bytes=1, budget_bytes=1, weights_bytes=1, overhead_bytes=0, kv_cache_bytes=1,
                          kv_bytes_per_token=1, state_bytes_per_seq=0, block_size_tokens=16, kv_cache_tokens=1,
                          max_model_len=1, max_concurrency=1.0, headroom_bytes=0, fits=fits)


def test_ray_head_notes_the_replica_default_for_a_spark_plan_that_fits():
    head, _ = ex.to_ray(spark_plan(nodes=2, memory=_spark_memory(True)))
    assert ("# Note: a second Spark helps as a second replica: one `vllm serve` per Spark behind a router (1.00x at 1 "
            "tokens on each):") in head.content
    assert "# Source: vllm-project/recipes PR #918" in head.content and "al-engr.com" in head.content
    head, _ = ex.to_ray(spark_plan(nodes=2, memory=_spark_memory(False)))
    assert "# Note:" not in head.content


def test_second_spark_advice():
    a = cluster.second_spark_advice(fits_one_spark=True, per_spark_concurrency=2.5, max_model_len=262144)
    assert (a.helps_as, a.recommended) == ("replicas", "replicas")
    assert a.summary.endswith("(2.50x at 262,144 tokens on each)")
    assert any("recipes PR #918" in e for e in a.evidence) and any("al-engr.com" in e for e in a.evidence)
    assert "Qwen3.6-27B" in a.not_found  # the exact-model two-node entry was not found: said, not invented
    assert any("--head-ifname" in s for s in a.steps)
    lines = a.lines()
    assert lines[0].startswith("second DGX Spark: helps as a second replica") and lines[-1].startswith("  not found:")
    b = cluster.second_spark_advice(fits_one_spark=False)
    assert b.recommended == "ray_tp" and b.not_found == ""


def test_export_cli_per_node_interfaces(tmp_path):
    r = subprocess.run([sys.executable, "-m", "spark_tui", "export", "--format", "ray", "--device", "dgx-spark",
                        "--nodes", "2", "--ray-layout", "tp", "--head-ifname", "enP2p1s0f1np1", "--worker-ifname",
                        "enp1s0f0np0"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={"SPARK_TUI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    head, worker = r.stdout.split("# ===== FILE: ray-worker.sh =====\n")
    assert "NCCL_SOCKET_IFNAME=enP2p1s0f1np1" in head and "NCCL_SOCKET_IFNAME=enp1s0f0np0" in worker
    assert "--tensor-parallel-size 2 \\\n  --pipeline-parallel-size 1 \\\n" in head
