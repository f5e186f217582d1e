"""spark-tui: plan, launch, watch and export a tuned vLLM deployment of Qwen3.6-35B-A3B."""

__version__ = "0.1.0"
