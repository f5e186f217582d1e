"""The cpu-test plan's memory prediction against a live vLLM: the same tiny models, the same memory flags,
and the server's own startup line "KV cache size: N tokens, Maximum concurrency for L tokens per request: X".

The servers come from the shared session fixture (tests/conftest.py), which starts `vllm serve` with exactly
the memory flags the cpu-test plan writes (asserted below), so no extra server is started for this test.
On a CUDA machine the same check runs with the GPU block alignment (run this file there: see README
"plan" section / the report).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from spark_tui.core.planning.flags import split_args
from spark_tui.core.planning.planner import make_plan

pytestmark = pytest.mark.vllm

KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")
CONC_LINE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
MEMORY_FLAGS = ("--max-model-len", "--enforce-eager", "--kv-cache-memory-bytes", "--speculative-config",
                "--no-enable-prefix-caching", "--enable-prefix-caching", "--kv-cache-dtype")


def logged_capacity(log: Path, timeout_s: float = 30.0) -> tuple[int, int, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        kv, conc = KV_LINE.search(text), CONC_LINE.search(text)
        if kv and conc:
            return int(kv.group(1).replace(",", "")), int(conc.group(1).replace(",", "")), float(conc.group(2))
        if time.monotonic() > deadline:
            raise AssertionError(f"no KV cache size line in {log}")
        time.sleep(0.5)


@pytest.mark.parametrize("model", ["qwen3-moe", "qwen35-mtp"])
def test_cpu_test_plan_predicts_the_live_server(model, tiny_models_dir, vllm_server_factory) -> None:
    from tests.support.vllm_server import mtp_config, serve_argv

    model_dir = tiny_models_dir / model
    plan = make_plan(device="cpu-test", model_path=str(model_dir), vllm_version="0.32.0",
                     mtp=1 if model == "qwen35-mtp" else None)
    mtp = mtp_config(1) if model == "qwen35-mtp" else None
    mine = {f: v for f, v in split_args(plan.argv()[3:]) if f in MEMORY_FLAGS}
    theirs = {f: v for f, v in split_args(serve_argv(model_dir, 0, mtp)[3:]) if f in MEMORY_FLAGS}
    if "--speculative-config" in mine:  # same JSON object, maybe spelled differently
        import json

        assert json.loads(mine.pop("--speculative-config")) == json.loads(theirs.pop("--speculative-config"))
    assert mine == theirs  # the fixture's server runs with exactly the plan's memory flags

    server = vllm_server_factory(model_dir, speculative_config=mtp)
    tokens, max_len, conc = logged_capacity(server.log_path)
    assert max_len == plan.memory.max_model_len
    assert tokens == plan.memory.kv_cache_tokens
    assert conc == round(plan.memory.max_concurrency, 2)
