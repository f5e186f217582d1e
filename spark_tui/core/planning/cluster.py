"""Two DGX Sparks: does a second Spark help this model, and how to use it.

Pure: the planner (and the ray export) call `second_spark_advice(...)`. The default offer for a model that fits
one Spark is one replica per Spark behind a router; tensor (or pipeline) parallel across the two boxes is offered
only when the model does not fit one.

Why, with the public evidence found (what could not be found is said so in `NOT_FOUND`):
- Qwen3.6-35B-A3B NVFP4 fits one Spark with tens of GiB to spare for the KV cache (the unified-memory sizing,
  spark_tui.core.hardware.unified); on one GB10 at TP1 it was measured at 97.7 decode tok/s (vllm-project/recipes PR #918,
  vLLM 0.28.0); Spark Arena's leaderboard listed it at 77.07 tok/s on vLLM (entry #6, quoted in
  Avarok-Cybersecurity/atlas-recipes PR #2).
- Tensor parallel across two Sparks pays an all-reduce over the 200 GbE link in every layer of every decode step;
  for the sibling Qwen3.6-27B (FP8) two Sparks at TP2 decoded 53-64% slower than one at TP1 (al-engr.com,
  "Two DGX Spark units with tensor parallelism — Qwen3.6 TP=2 benchmark").
- A two-Spark TP2 deployment of this exact checkpoint (nvidia/Qwen3.6-35B-A3B-NVFP4) failed under unified-memory
  pressure on the head node (eugr/spark-vllm-docker #321).
- vLLM's own data parallel does not give independent replicas for a MoE model: the expert layers form one DP x TP
  group and all ranks step together (https://docs.vllm.ai/en/latest/serving/data_parallel_deployment/). So the
  replicas are two separate `vllm serve` processes, one per Spark, with a router in front (vllm-router,
  https://blog.vllm.ai/2025/12/13/vllm-router-release.html; cache-aware by default, which keeps a conversation's
  prefix cache on one Spark).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EVIDENCE = (
    "vllm-project/recipes PR #918: Qwen3.6-35B-A3B NVFP4 on one GB10 (TP1), vLLM 0.28.0: 97.7 decode tok/s, "
    "6,265 prefill tok/s (8K in / 256 out, concurrency 1)",
    "Avarok-Cybersecurity/atlas-recipes PR #2: Spark Arena leaderboard entry #6, Qwen3.6-35B-A3B-NVFP4 on vLLM, "
    "one GB10: 77.07 tok/s decode",
    "https://al-engr.com/qwen3.6-tp2-result.html: Qwen3.6-27B-FP8 (sibling model), two Sparks TP2 vs one Spark "
    "TP1 (SGLang): decode -53% to -64%, prefill -35%",
    "eugr/spark-vllm-docker #321: nvidia/Qwen3.6-35B-A3B-NVFP4 at TP2 over Ray on two Sparks crashed under "
    "unified-memory pressure on the head node",
    "https://docs.vllm.ai/en/latest/serving/data_parallel_deployment/: for MoE models vLLM's DP ranks are not "
    "independent (expert layers form one DP x TP group)",
)
NOT_FOUND = ("a public leaderboard entry for Qwen3.6-35B-A3B itself run on two Sparks at TP2 (searched Spark Arena "
             "references, GitHub issues and blogs): the two-node slowdown is shown for the sibling Qwen3.6-27B, "
             "not for this model")
ROUTER = "https://blog.vllm.ai/2025/12/13/vllm-router-release.html"


@dataclass(frozen=True)
class SecondSparkAdvice:
    helps_as: str  # "replicas" | "tensor_parallel" | "none"
    recommended: str  # "replicas": one `vllm serve` per Spark behind a router; "ray_tp"; "ray_pp"
    summary: str
    reason: str
    steps: tuple[str, ...]
    evidence: tuple[str, ...]
    not_found: str

    def lines(self) -> list[str]:
        out = [f"second DGX Spark: {self.summary}", f"  why: {self.reason}"]
        out += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        out += [f"  source: {e}" for e in self.evidence]
        if self.not_found:
            out.append(f"  not found: {self.not_found}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def second_spark_advice(*, fits_one_spark: bool, model: str = "Qwen3.6-35B-A3B",
                        per_spark_concurrency: float | None = None, max_model_len: int | None = None) -> SecondSparkAdvice:
    """Whether and how a second Spark helps.

    fits_one_spark: the model plus at least one request at the planned context fits one Spark (the unified sizing's
    `fits`). per_spark_concurrency / max_model_len: the single-Spark plan's figures, quoted in the reason."""
    if fits_one_spark:
        conc = (f" ({per_spark_concurrency:.2f}x at {max_model_len:,} tokens on each)"
                if per_spark_concurrency is not None and max_model_len else "")
        return SecondSparkAdvice(
            helps_as="replicas", recommended="replicas",
            summary=f"helps as a second replica: one `vllm serve` per Spark behind a router{conc}",
            reason=(f"{model} fits one Spark, so splitting it over two only adds a network all-reduce to every layer "
                    "of every token; two replicas double the requests served at once and keep each request at "
                    "single-Spark speed. vLLM's own --data-parallel-size is not the way: for a MoE model its ranks "
                    "step together"),
            steps=("on each Spark: the same single-Spark plan (`spark-tui launch` or `spark-tui export --format "
                   "bash|systemd`) with --host on the cluster address and an API key",
                   f"in front: a router over both URLs (vllm-router, cache-aware by default: {ROUTER}), or any "
                   "HTTP load balancer",
                   "tensor parallel over both Sparks stays available with `spark-tui export --format ray "
                   "--ray-layout tp --head-ifname IF --worker-ifname IF` when one request needs more memory than one "
                   "Spark has"),
            evidence=EVIDENCE, not_found=NOT_FOUND)
    return SecondSparkAdvice(
        helps_as="tensor_parallel", recommended="ray_tp",
        summary="is needed: the model does not fit one Spark; run it across both with tensor parallel over Ray",
        reason=("weights plus one request at the planned context exceed one Spark's memory; TP2 splits weights and KV "
                "cache over both (expect slower decode per request than a single box would give, from the "
                "all-reduce over the link)"),
        steps=("`spark-tui export --format ray --nodes 2 --ray-layout tp --head-ifname IF --worker-ifname IF` "
               "(the interface names often differ between the two Sparks: `ip -br addr` on each)",
               "run ray-worker.sh on the second Spark, then ray-head.sh on the first"),
        evidence=EVIDENCE[2:4], not_found="")
