"""The memory model against what vLLM 0.26.0 logged on a real H200 (tests/data/plan/h200_kv_logs.json): with the KV
pool given (--kv-cache-memory-bytes), block count, KV tokens and concurrency must be exact; the hybrid model runs
without prefix caching by default in 0.26 (1 + k DeltaNet slots per request)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_tui.core.planning.flags import Flags
from spark_tui.core.planning.planner import graph_seqs_problem, make_plan, memory_for_flags

DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "plan" / "h200_kv_logs.json").read_text())


@pytest.mark.parametrize("run", DATA["runs"], ids=[r["name"] for r in DATA["runs"]])
def test_kv_cache_lines_are_predicted_exactly(run) -> None:
    plan = make_plan(device="h200", checkpoint="nvidia-nvfp4", vllm_version="0.26.0", context=131072)
    m = memory_for_flags(plan, Flags.from_argv(run["flags"]))
    assert m.num_blocks == run["logged_blocks"]
    assert m.kv_cache_tokens == run["logged_tokens"]
    assert round(m.max_concurrency, 2) == run["logged_concurrency"]
    # and the planner knows vLLM refused these servers: 1024 default sequences > the pool's blocks
    assert m.max_num_seqs == 1024 and graph_seqs_problem(m, enforce_eager=False)
    assert graph_seqs_problem(memory_for_flags(plan, Flags.from_argv(run["flags"] + ["--max-num-seqs", "256"])),
                              enforce_eager=False) is None
