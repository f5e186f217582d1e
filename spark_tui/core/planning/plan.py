"""The launch plan: a `vllm serve` command where every flag carries its value, reason and source.

`Plan.to_dict()` is the `spark-tui plan --json` API (documented in README "Plan JSON"). Exporters
(spark_tui.core.export.formats), the supervisor and the TUI all consume a `Plan`; none of them re-derive flags.
Secrets are never values here: `secret_env` names environment variables (HF_TOKEN, VLLM_API_KEY) that
the deployment must provide; renderers emit references to them only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from spark_tui.core.planning.flags import Flag, Flags

if TYPE_CHECKING:
    from spark_tui.core.planning.cluster import SecondSparkAdvice
    from spark_tui.core.hardware.gpus import ParallelComparison
    from spark_tui.core.hardware.unified import UnifiedSizing


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
    # added by the planner (spark_tui.core.planning.memory); defaults keep older constructors working
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
        headroom. DeltaNet state is what the requests that fit at full length at once hold (at most max_num_seqs)."""
        running = min(max(self.max_num_seqs, 0), max(int(self.max_concurrency), 0))
        state = min(self.state_bytes_per_seq * running, self.kv_cache_bytes)
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
class Baseline:
    """What `vllm serve <checkpoint>` does by itself with the targeted release on this device: its argv, the
    defaults that matter here (each with the vLLM source line it was read from), and its memory picture."""

    argv: tuple[str, ...]
    defaults: tuple[dict[str, Any], ...] = ()  # {key, value, source, verified}
    memory: MemoryEstimate | None = None
    starts: bool = True  # False: vLLM refuses to start with its defaults here (see problems)
    problems: tuple[str, ...] = ()
    moe_backend: str | None = None  # what vLLM's own selection is expected to pick (kernel path), if known
    moe_backend_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "defaults": [dict(d) for d in self.defaults],
                "memory": None if self.memory is None else asdict(self.memory), "starts": self.starts,
                "problems": list(self.problems), "moe_backend": self.moe_backend,
                "moe_backend_reason": self.moe_backend_reason}


@dataclass(frozen=True)
class Plan:
    """A `vllm serve` command: the model plus `flags`, every one a deviation from vLLM's defaults with its
    reason, source and evidence class. Host, port, served name and parallel sizes are read from the flags."""

    device: DeviceRef
    checkpoint: CheckpointRef
    model: str  # what `vllm serve` is given: repo id or local path
    flags: Flags
    env: tuple[EnvChoice, ...] = ()
    memory: MemoryEstimate | None = None
    warnings: tuple[str, ...] = ()
    goal: str = "balanced"
    nodes: int = 1
    vllm_version: str | None = None  # the vLLM version the argv is written for
    secret_env: tuple[str, ...] = ("HF_TOKEN",)  # referenced, never valued
    differences: tuple[str, ...] = ()  # deliberate differences from the seed recipe for this device
    checkpoint_reason: str = ""  # why this checkpoint (planner)
    checkpoint_source: str = ""
    match: str = ""  # how the device profile was matched (PCI id / name / SM family / --device)
    recipe: str | None = None  # the published recipe reproduced (plan --recipe), else None
    baseline: Baseline | None = None
    omitted: tuple[Flag, ...] = ()  # unmeasured deviations left out (plan --include-unmeasured adds them)
    notes: tuple[str, ...] = ()  # one-line hints (e.g. how to measure MTP here)
    unified: "UnifiedSizing | None" = None  # unified memory (GB10): the sizing of the memory flags, its arithmetic
    memory_guard: tuple[str, ...] = ()  # what `spark-tui launch` watches on unified memory (spark_tui.core.hardware.memguard)
    parallel: "ParallelComparison | None" = None  # two or more identical GPUs: TP vs DP vs replicas
    parallel_choice: str | None = None  # "tp" | "dp" | "replicas" when the user chose one (plan --parallel)
    second_spark: "SecondSparkAdvice | None" = None  # DGX Spark with --nodes 2 or more: does a second one help

    # ---- read from the flags (one place)
    @property
    def host(self) -> str:
        """The bind address; vLLM's default (no --host) is every interface."""
        return str(self.flags.value("--host", "0.0.0.0"))

    @property
    def port(self) -> int:
        return int(self.flags.value("--port", 8000))  # type: ignore[arg-type]

    @property
    def served_model_name(self) -> str | None:
        v = self.flags.value("--served-model-name")
        return None if v is None else str(v)

    @property
    def tensor_parallel_size(self) -> int:
        return int(self.flags.value("--tensor-parallel-size", 1))  # type: ignore[arg-type]

    @property
    def data_parallel_size(self) -> int:
        return int(self.flags.value("--data-parallel-size", 1))  # type: ignore[arg-type]

    @property
    def mtp_k(self) -> int:
        sc = self.flags.value("--speculative-config")
        if isinstance(sc, dict):
            try:
                return int(sc.get("num_speculative_tokens", 1))
            except (TypeError, ValueError):
                return 1
        return 0

    def argv(self) -> list[str]:
        return ["vllm", "serve", self.model, *self.flags.argv()]

    def flag(self, name: str) -> Flag | None:
        return self.flags.get(name)

    def with_flag(self, name: str, value: Any, reason: str, source: str) -> "Plan":
        """A copy of the plan with one flag set (a caller's port, a container's bind address)."""
        from dataclasses import replace

        flags = self.flags.copy()
        flags.set(name, value, reason, source)
        return replace(self, flags=flags)

    def deviations(self, evidence: str | None = None) -> list[Flag]:
        return [f for f in self.flags if evidence is None or f.evidence == evidence]

    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env}

    def to_dict(self) -> dict[str, Any]:
        return {
            "argv": self.argv(),
            "baseline_argv": list(self.baseline.argv) if self.baseline else ["vllm", "serve", self.model],
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "env": self.env_dict(),
            "env_reasons": [asdict(e) for e in self.env],
            "flags": [f.to_dict() for f in self.flags],
            "omitted": [f.to_dict() for f in self.omitted],
            "checkpoint": asdict(self.checkpoint),
            "device": asdict(self.device),
            "memory": None if self.memory is None else asdict(self.memory),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
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
            "unified_memory_sizing": None if self.unified is None else _sizing_dict(self.unified),
            "memory_guard": {"enabled": bool(self.memory_guard), "lines": list(self.memory_guard)},
            "parallel": None if self.parallel is None else {**self.parallel.to_dict(), "chosen": self.parallel_choice},
            "second_spark": None if self.second_spark is None else self.second_spark.to_dict(),
        }


def _sizing_dict(s: "UnifiedSizing") -> dict[str, Any]:
    d = s.to_dict()
    d["lines"], d["sources"], d["warnings"] = list(s.lines), list(s.sources), list(s.warnings)
    return d


# vLLM default keys (spark_tui.core.catalog.vllm_defaults) of the flags a plan commonly sets
_DEFAULT_KEY = {"--gpu-memory-utilization": "gpu_memory_utilization", "--kv-cache-dtype": "kv_cache_dtype",
                "--max-model-len": "max_model_len", "--host": "host", "--port": "port",
                "--language-model-only": "language_model_only", "--moe-backend": "moe_backend",
                "--speculative-config": "speculative_config", "--load-format": "load_format",
                "--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
                "--enable-prefix-caching": "enable_prefix_caching_hybrid",
                "--no-enable-prefix-caching": "enable_prefix_caching_hybrid",
                "--async-scheduling": "async_scheduling"}


def comparison(plan: Plan) -> list[dict[str, Any]]:
    """Baseline vs plan, one row per deviation: {flag, baseline, plan, evidence, reason, source, effect}. The CLI's
    `plan --explain` and the TUI's Plan screen both render these rows."""
    defaults = {d["key"]: d for d in (plan.baseline.defaults if plan.baseline else ())}
    rows = []
    for f in plan.flags:
        d = defaults.get(_DEFAULT_KEY.get(f.name, ""))
        if d is None:
            base = "not set"
        elif d["value"] is None:
            base = "off" if f.name == "--speculative-config" else "not set"
        else:
            base = str(d["value"]).lower() if isinstance(d["value"], bool) else str(d["value"])
        rows.append({"flag": f.name, "baseline": base, "plan": "on" if f.text is None else f.text,
                     "evidence": f.evidence, "reason": f.reason, "source": f.source, "effect": f.effect or "",
                     "baseline_source": d["source"] if d else ""})
    return rows
