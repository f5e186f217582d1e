"""Several GPUs (spark_tui.core.hardware.gpus): pinning with --gpu-index, busy refusals, TP / DP / replicas arithmetic,
on the recorded 2x RTX 5090 and 2x B200 boxes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spark_tui.core.hardware import gpus
from spark_tui.core.planning import memory as mem
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.core.catalog.profiles import catalog
from spark_tui.errors import PlanError, UsageError

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"
GiB = 2**30
MiB = 2**20


def load(pid: str) -> ProbeResult:
    return ProbeResult.load(PROBES / pid / "probe.json")


def idle(p: ProbeResult, *indices: int) -> ProbeResult:
    """The same recorded box with some GPUs idle (memory used 0): what it looks like with the server stopped."""
    gs = tuple(dataclasses.replace(g, memory_used_bytes=0, memory_free_bytes=g.memory_total_bytes)
               if g.index in indices else g for g in p.gpus)
    return dataclasses.replace(p, gpus=gs)


@pytest.fixture(scope="module")
def arch() -> mem.Arch:
    return mem.Arch.from_profile(catalog().model("qwen3.6-35b-a3b").values)


def test_recorded_2x5090_both_busy_refuses_and_says_none_is_idle():
    p = load("2x-rtx-5090")
    assert [gpus.gpu_busy(g) for g in p.gpus] == ["28.6 GiB of 31.8 GiB in use (more than the 8% vLLM's default 0.92 "
                                                  "leaves)"] * 2
    with pytest.raises(PlanError) as e:
        gpus.pin_gpu(p, 1)
    assert e.value.exit_code == 5
    assert e.value.message == ("GPU 1 (NVIDIA GeForce RTX 5090) is busy: 28.6 GiB of 31.8 GiB in use (more than the 8% "
                               "vLLM's default 0.92 leaves)")
    assert e.value.hint.startswith("no GPU is idle (busy: 0, 1): stop the other GPU processes")
    assert "--device ID" in e.value.hint


def test_busy_gpu_refusal_names_the_idle_ones():
    p = idle(load("2x-rtx-5090"), 0)
    with pytest.raises(PlanError) as e:
        gpus.pin_gpu(p, 1)
    assert e.value.hint == "use an idle GPU: --gpu-index 0 (idle: 0 (NVIDIA GeForce RTX 5090))"
    b = idle(load("multi-b200"), 1)
    with pytest.raises(PlanError, match="GPU 0 \\(NVIDIA B200\\) is busy: 162.7 GiB of 179.1 GiB in use") as e:
        gpus.pin_gpu(b, 0)
    assert "--gpu-index 1" in e.value.hint


def test_pin_environment_is_pci_ordered_index():
    pin = gpus.pin_gpu(idle(load("2x-rtx-5090"), 0, 1), 1)
    assert pin.env_dict() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
    assert "GPU 1 (NVIDIA GeForce RTX 5090, PCI 00000000:03:00.0)" in pin.reason
    assert "vllm/platforms/cuda.py:749-754" in pin.source


def test_bad_index_is_a_usage_error():
    with pytest.raises(UsageError, match="the probe has GPUs 0, 1") as e:
        gpus.pin_gpu(load("2x-rtx-5090"), 2)
    assert e.value.exit_code == 2


def test_compute_processes_make_a_gpu_busy_and_unified_memory_use_does_not():
    g = load("rtx-5090").gpus[0]  # 492 MiB in use (a desktop): idle
    assert gpus.gpu_busy(g) is None
    assert gpus.gpu_busy(dataclasses.replace(g, compute_processes=1)) == "1 compute process running"
    assert gpus.gpu_busy(load("gb10").gpus[0]) is None


def test_2x5090_tp_dp_replicas_arithmetic(arch):
    total = 32607 * MiB  # the recorded 5090s
    w = int(21.9e9)  # nvidia NVFP4 checkpoint size (profiles/checkpoints/nvidia-nvfp4.toml)
    c = gpus.compare_parallel(arch, gpus=2, gpu_total_bytes=total, util=0.95, weights_bytes=w,
                              overhead_bytes=int(3.14 * GiB), scheme="nvfp4", max_model_len=262144, mtp_k=3,
                              gdn_checkpoint_blocks=1)
    rep, tp, dp = c.option("replicas"), c.option("tp"), c.option("dp")
    budget = int(total * 0.95)
    assert rep.weights_per_gpu_bytes == w and tp.weights_per_gpu_bytes == -(-w // 2)
    assert rep.kv_pool_per_gpu_bytes == budget - w - int(3.14 * GiB)
    assert tp.kv_pool_per_gpu_bytes == budget - -(-w // 2) - int(3.14 * GiB)
    assert rep.weights_per_gpu_bytes > dp.weights_per_gpu_bytes > tp.weights_per_gpu_bytes
    # TP: bigger pool per GPU and half the bytes per token on each rank -> far more tokens than one replica
    assert tp.kv_tokens_per_server > 2 * rep.kv_tokens_per_server
    assert rep.kv_tokens_total == 2 * rep.kv_tokens_per_server and rep.servers == 2
    assert rep.env_per_server == ((("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", "0")),
                                  (("CUDA_DEVICE_ORDER", "PCI_BUS_ID"), ("CUDA_VISIBLE_DEVICES", "1")))
    assert tp.flags == (("--tensor-parallel-size", "2"),) and dp.flags == (("--data-parallel-size", "2"),)
    assert all(o.fits for o in c.options)
    assert c.recommended == "replicas" and "fits one GPU" in c.reason
    assert "DP x TP group" in dp.communication
    text = "\n".join(c.lines())
    assert "2 independent replicas (one `vllm serve` per GPU, behind a router) (recommended):" in text


def test_tp_when_one_gpu_cannot_hold_it(arch):
    c = gpus.compare_parallel(arch, gpus=2, gpu_total_bytes=24 * GiB, util=0.92, weights_bytes=int(21.9e9),
                              overhead_bytes=int(3.14 * GiB), scheme="nvfp4", max_model_len=65536)
    assert not c.option("replicas").fits and c.option("tp").fits and c.recommended == "tp"


def test_tp_rank_keeps_at_least_one_kv_head(arch):
    assert gpus.tp_arch(arch, 2).num_kv_heads == 1 and gpus.tp_arch(arch, 4).num_kv_heads == 1
    assert gpus.tp_arch(arch, 2).linear_num_value_heads == 16
    assert 0.6 < gpus.expert_weight_fraction(arch, "nvfp4") < 0.85


def test_needs_two_gpus(arch):
    with pytest.raises(ValueError):
        gpus.compare_parallel(arch, gpus=1, gpu_total_bytes=GiB, util=0.9, weights_bytes=1, overhead_bytes=0,
                              scheme="nvfp4", max_model_len=4096)
