"""Parse REAL /metrics scrapes recorded from the CPU vLLM 0.32 (tests/data/metrics/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_tui.core.observe.metrics import (
    GENERATION_TOKENS, ITL, KV_USAGE, TTFT, parse_metrics, snapshots_from, window_stats,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "metrics"


def load(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def pair(model: str, dt: float = 4.0):
    return snapshots_from([(100.0, load(f"{model}-0-fresh")), (100.0 + dt, load(f"{model}-1-after"))])


def test_qwen3_moe_has_no_spec_decode_and_counts_4_requests():
    s0, s1 = pair("qwen3-moe")
    assert s1.model_names == ("qwen3-moe",)
    assert s1.spec_per_pos is None
    st = window_stats([s0, s1])
    assert st.spec is None  # absent family: n/a, never 0
    assert st.generation_tokens == 128.0
    assert st.generation_tok_s == pytest.approx(128.0 / 4.0)
    assert st.requests_completed == 4.0  # summed over finished_reason label sets
    # every prompt token went through the prefix cache lookup; tiny distinct prompts never hit
    assert st.prefix_cache_queries == st.prompt_tokens and st.prefix_cache_hits == 0.0
    assert st.prefix_cache_hit_rate == 0.0
    assert st.requests_running == 0.0 and st.requests_waiting == 0.0
    assert st.kv_cache_usage == 0.0
    assert st.preemptions == 0.0


def test_histograms_parsed_from_real_scrape():
    s1 = parse_metrics(load("qwen3-moe-1-after"), t=0, wall=0)
    itl = s1.histogram(*ITL)
    ttft = s1.histogram(*TTFT)
    assert ttft.count == 4.0  # one first token per request
    assert itl.count == 4 * (32 - 1)  # the other 31 tokens of each request
    assert itl.buckets[-1][0] == float("inf") and itl.buckets[-1][1] == itl.count
    st = window_stats([s1])
    assert 0 < st.itl_p50_s <= st.itl_p95_s < 1.0
    assert 0 < st.ttft_p50_s <= st.ttft_p95_s < 1.0


def test_created_timestamps_are_not_gauges():
    s1 = parse_metrics(load("qwen3-moe-1-after"), t=0, wall=0)
    assert not [n for n in s1.gauges if n.endswith("_created")]
    assert s1.gauge(*KV_USAGE) == 0.0


def test_fresh_mtp_server_exports_spec_families_with_no_drafts():
    st = window_stats(snapshots_from([(0.0, load("qwen35-mtp-0-fresh"))]))
    assert st.spec is not None and st.spec.num_drafts == 0.0
    assert st.spec.acceptance_rate is None and st.spec.mean_acceptance_length is None  # n/a, not 0
    assert st.spec.per_position == (None,)


def test_random_mtp_head_accepts_nothing():
    st = window_stats(list(pair("qwen35-mtp")))
    assert st.spec.num_drafts == 124.0 and st.spec.draft_tokens == 124.0
    assert st.spec.accepted_tokens == 0.0
    assert st.spec.acceptance_rate == 0.0
    assert st.spec.mean_acceptance_length == 1.0
    assert st.spec.per_position == (0.0,)
    assert st.generation_tokens == 128.0


def test_always_accept_mtp_cumulative_and_windowed_agree():
    s0, s1 = pair("qwen35-mtp-accept")
    cum = window_stats([s1])
    win = window_stats([s0, s1])
    for st in (cum, win):
        assert st.spec.num_drafts == 64.0 and st.spec.accepted_tokens == 64.0
        assert st.spec.acceptance_rate == 1.0
        assert st.spec.mean_acceptance_length == 2.0  # every step: 1 target token + 1 accepted draft
        assert st.spec.per_position == (1.0,)
    assert cum.cumulative and cum.generation_tok_s is None and cum.window_s is None
    assert s1.counter(GENERATION_TOKENS) == 128.0


def test_model_filter():
    text = load("qwen3-moe-1-after")
    assert parse_metrics(text, 0, 0, model="qwen3-moe").counter(GENERATION_TOKENS) == 128.0
    assert parse_metrics(text, 0, 0, model="other").counter(GENERATION_TOKENS) is None


def test_older_metric_names_are_read():
    # vLLM < 0.9.2 exported the KV-cache gauge as gpu_cache_usage_perc and the ITL histogram as
    # time_per_output_token_seconds (seen in earlier vLLM source); rename them in a real scrape
    text = load("qwen3-moe-1-after")
    old = (text.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
               .replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"))
    new_st = window_stats([parse_metrics(text, 0, 0)])
    old_st = window_stats([parse_metrics(old, 0, 0)])
    assert old_st.kv_cache_usage == new_st.kv_cache_usage == 0.0
    assert old_st.itl_p50_s == new_st.itl_p50_s is not None


def test_histogram_selection_keeps_counters_and_gauges():
    text = load("qwen35-mtp-accept-1-after")
    all_h = parse_metrics(text, 0, 0, histograms=None)
    some = parse_metrics(text, 0, 0)
    assert set(some.histograms) == {"vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds"}
    assert len(all_h.histograms) > 10
    assert some.counters == all_h.counters and some.gauges == all_h.gauges
    assert some.spec_per_pos == all_h.spec_per_pos == (64.0,)
    assert window_stats([some]) == window_stats([all_h])
