"""The launch plan: a `vllm serve` command where every flag carries its value, reason and source.

`Plan.to_dict()` is the `spark-tui plan --json` API (documented in README "Plan JSON"). Exporters
(spark_tui.core.export), the supervisor and the TUI all consume a `Plan`; none of them re-derive flags.
Secrets are never values here: `secret_env` names environment variables (HF_TOKEN, VLLM_API_KEY) that
the deployment must provide; renderers emit references to them only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FlagChoice:
    flag: str  # "--kv-cache-dtype"; a positional is not a flag (the model is Plan.model)
    value: str | None  # None for a boolean switch ("--enable-auto-tool-choice")
    reason: str
    source: str  # where the choice comes from: seed file, model card, FACTS.md §, vLLM source path, "user --set"

    def argv(self) -> list[str]:
        return [self.flag] if self.value is None else [self.flag, self.value]


@dataclass(frozen=True)
class EnvChoice:
    name: str
    value: str
    reason: str
    source: str


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory picture, in the same terms vLLM logs ("GPU KV cache size: N tokens")."""

    device_total_bytes: int  # memory the budget is taken from (NVML total, or RAM on unified memory)
    budget_bytes: int  # gpu_memory_utilization x total, or --kv-cache-memory-bytes + the rest
    weights_bytes: int
    overhead_bytes: int  # activations peak, CUDA graphs, torch/NCCL context
    kv_cache_bytes: int  # what is left for the KV cache + DeltaNet state pool
    kv_bytes_per_token: int  # full-attention layers (+ MTP layer) bytes per token
    state_bytes_per_seq: int  # DeltaNet conv+ssm state per request (all its slots)
    block_size_tokens: int  # attention block size after vLLM's mamba page alignment
    kv_cache_tokens: int  # predicted "GPU KV cache size: N tokens"
    max_model_len: int
    max_concurrency: float  # predicted "Maximum concurrency for N tokens per request: X"
    headroom_bytes: int  # device total - budget (what the OS / other processes keep)
    notes: tuple[str, ...] = ()
    # added by the planner (spark_tui.core.memory); defaults keep older constructors working
    num_blocks: int = 0  # vLLM's num_gpu_blocks
    bytes_per_block: int = 0  # one block across the largest KV cache group
    blocks_per_request: int = 0  # blocks one max_model_len request takes (all groups)
    kv_cache_groups: int = 0
    mamba_slots_per_seq: int = 0  # DeltaNet state slots per request (1+k, or 2+k(+1) with prefix caching)
    mamba_state_bytes_per_layer: int = 0  # one layer, one slot, before padding to the attention page
    activation_bytes: int = 0
    cuda_graph_bytes: int = 0
    non_torch_bytes: int = 0
    max_num_seqs: int = 0
    fits: bool = True  # KV pool > 0 and at least one max_model_len request fits
    exact_kv_pool: bool = False  # True with --kv-cache-memory-bytes

    def bar(self) -> list[tuple[str, int]]:
        """Segments for a memory bar, summing to device_total_bytes: weights, KV, DeltaNet state, overhead,
        headroom. DeltaNet state is what max_num_seqs running requests hold (capped at the pool)."""
        state = min(self.state_bytes_per_seq * max(self.max_num_seqs, 0), self.kv_cache_bytes)
        used = self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes
        return [
            ("weights", self.weights_bytes),
            ("kv", self.kv_cache_bytes - state),
            ("deltanet_state", state),
            ("overhead", self.overhead_bytes),
            ("headroom", max(self.device_total_bytes - used, 0)),
        ]


@dataclass(frozen=True)
class DeviceRef:
    id: str  # device profile id, e.g. "dgx-spark"
    name: str
    sm: int | None
    memory_bytes: int | None
    unified_memory: bool
    gpu_count: int = 1
    source: str = "profile"  # "probe" | "probe-file:<path>" | "profile"


@dataclass(frozen=True)
class CheckpointRef:
    id: str  # checkpoint profile id
    repo_id: str  # "nvidia/Qwen3.6-35B-A3B-NVFP4"
    revision: str | None
    format: str  # "modelopt_fp4" | "compressed-tensors-nvfp4" | "fp8" | "bf16" ...
    local_path: str | None = None


@dataclass(frozen=True)
class Plan:
    device: DeviceRef
    checkpoint: CheckpointRef
    model: str  # what `vllm serve` is given: repo id or local path
    flags: tuple[FlagChoice, ...]
    env: tuple[EnvChoice, ...] = ()
    memory: MemoryEstimate | None = None
    warnings: tuple[str, ...] = ()
    goal: str = "balanced"
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    nodes: int = 1
    vllm_version: str | None = None  # the vLLM version the argv is written for
    secret_env: tuple[str, ...] = ("HF_TOKEN",)  # referenced, never valued
    differences: tuple[str, ...] = ()  # deliberate differences from the seed recipe for this device
    checkpoint_reason: str = ""  # why this checkpoint (planner)
    checkpoint_source: str = ""
    match: str = ""  # how the device profile was matched (PCI id / name / SM family / --device)
    recipe: str | None = None  # the published recipe reproduced (plan --recipe), else None

    def argv(self) -> list[str]:
        out = ["vllm", "serve", self.model]
        for f in self.flags:
            out += f.argv()
        return out

    def flag(self, name: str) -> FlagChoice | None:
        for f in self.flags:
            if f.flag == name:
                return f
        return None

    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env}

    def to_dict(self) -> dict[str, Any]:
        return {
            "argv": self.argv(),
            "env": self.env_dict(),
            "env_reasons": [asdict(e) for e in self.env],
            "flags": [asdict(f) for f in self.flags],
            "checkpoint": asdict(self.checkpoint),
            "device": asdict(self.device),
            "memory": None if self.memory is None else asdict(self.memory),
            "warnings": list(self.warnings),
            "differences": list(self.differences),
            "goal": self.goal,
            "host": self.host,
            "port": self.port,
            "served_model_name": self.served_model_name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "nodes": self.nodes,
            "vllm_version": self.vllm_version,
            "secret_env": list(self.secret_env),
            "checkpoint_reason": self.checkpoint_reason,
            "checkpoint_source": self.checkpoint_source,
            "match": self.match,
            "recipe": self.recipe,
        }
