"""Exact arithmetic of the metrics window: hand-checked deltas, restarts, absent families, quantiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_tui.core.observe.metrics import (
    Histogram, Window, counter_increase, histogram_increase, histogram_quantile, parse_metrics, window_stats,
)

INF = float("inf")


def scrape(gen: float, drafts: float | None = None, draft_tokens: float = 0, accepted: float = 0,
           per_pos: tuple[float, ...] = (), ttft: dict[float, float] | None = None, engines: int = 1,
           running: float = 0, kv: float = 0.25) -> str:
    """A /metrics body in vLLM's shape (names and labels as in tests/data/metrics), per engine."""
    labs = [f'engine="{e}",model_name="m"' for e in range(engines)]
    lines = ["# TYPE vllm:generation_tokens_total counter"]
    lines += [f"vllm:generation_tokens_total{{{lab}}} {gen}" for lab in labs]
    lines.append("# TYPE vllm:num_requests_running gauge")
    lines += [f"vllm:num_requests_running{{{lab}}} {running}" for lab in labs]
    lines.append("# TYPE vllm:kv_cache_usage_perc gauge")
    lines += [f"vllm:kv_cache_usage_perc{{{lab}}} {kv * (e + 1)}" for e, lab in enumerate(labs)]
    if drafts is not None:
        lab = 'engine="0",model_name="m"'
        lines += ["# TYPE vllm:spec_decode_num_drafts_total counter",
                  f"vllm:spec_decode_num_drafts_total{{{lab}}} {drafts}",
                  "# TYPE vllm:spec_decode_num_draft_tokens_total counter",
                  f"vllm:spec_decode_num_draft_tokens_total{{{lab}}} {draft_tokens}",
                  "# TYPE vllm:spec_decode_num_accepted_tokens_total counter",
                  f"vllm:spec_decode_num_accepted_tokens_total{{{lab}}} {accepted}",
                  "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter"]
        lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="{i}"}} {v}'
                  for i, v in enumerate(per_pos)]
    if ttft is not None:
        lines.append("# TYPE vllm:time_to_first_token_seconds histogram")
        for le, c in ttft.items():
            les = "+Inf" if math.isinf(le) else repr(le)
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{les}",model_name="m"}} {c}')
        lines.append(f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="m"}} {ttft[INF]}')
        lines.append(f'vllm:time_to_first_token_seconds_sum{{engine="0",model_name="m"}} 1.0')
    return "\n".join(lines) + "\n"


def snap(t: float, **kw):
    return parse_metrics(scrape(**kw), t=t, wall=t)


def test_rates_and_spec_over_a_window_hand_checked():
    a = snap(10.0, gen=1000, drafts=100, draft_tokens=300, accepted=210, per_pos=(90, 70, 50))
    b = snap(14.0, gen=1600, drafts=300, draft_tokens=900, accepted=540, per_pos=(190, 200, 150))
    s = window_stats([a, b])
    assert s.window_s == 4.0
    assert s.generation_tokens == 600 and s.generation_tok_s == 150.0
    # window: drafts 200, draft tokens 600, accepted 330, per position 100, 130, 100
    assert s.spec.acceptance_rate == pytest.approx(330 / 600)
    assert s.spec.mean_acceptance_length == pytest.approx(1 + 330 / 200)
    assert s.spec.per_position == pytest.approx((0.5, 0.65, 0.5))
    # cumulative view of b alone
    c = window_stats([b])
    assert c.spec.acceptance_rate == pytest.approx(540 / 900)
    assert c.spec.mean_acceptance_length == pytest.approx(1 + 540 / 300)
    assert c.spec.per_position == pytest.approx((190 / 300, 200 / 300, 150 / 300))


def test_engines_are_summed_and_perc_gauges_averaged():
    s = snap(0, gen=10, engines=2, running=3, kv=0.2)
    assert s.counter("vllm:generation_tokens") == 20
    assert s.gauge("vllm:num_requests_running") == 6
    assert s.gauge("vllm:kv_cache_usage_perc") == pytest.approx((0.2 + 0.4) / 2)


def test_counter_reset_counts_from_zero():
    # 100 -> 150 (+50), restart, 30 (+30), 70 (+40)
    assert counter_increase([100, 150, 30, 70]) == 120
    snaps = [snap(0, gen=100), snap(1, gen=150), snap(2, gen=30), snap(3, gen=70)]
    s = window_stats(snaps)
    assert s.generation_tokens == 120 and s.generation_tok_s == 40.0
    assert s.counter_reset is True
    assert window_stats(snaps[:2]).counter_reset is False


def test_counter_absent_then_present():
    assert counter_increase([None, None]) is None
    assert counter_increase([5.0, None]) is None  # gone in the newest scrape
    assert counter_increase([None, 5.0, 8.0]) == 3.0


def test_absent_spec_family_is_none_not_zero():
    s = window_stats([snap(0, gen=0), snap(1, gen=10)])
    assert s.spec is None
    assert s.prefix_cache_hit_rate is None and s.ttft_p50_s is None and s.preemptions is None


def test_spec_present_but_no_drafts_in_window():
    s = window_stats([snap(0, gen=5, drafts=10, draft_tokens=10, accepted=5, per_pos=(5,)),
                      snap(1, gen=5, drafts=10, draft_tokens=10, accepted=5, per_pos=(5,))])
    assert s.spec is not None and s.spec.num_drafts == 0
    assert s.spec.acceptance_rate is None and s.spec.per_position == (None,)


def test_histogram_quantile_hand_checked():
    h = Histogram(((0.1, 2), (0.2, 6), (0.5, 10), (INF, 10)), 10, 2.0)
    assert histogram_quantile(0.5, h) == pytest.approx(0.175)  # rank 5: 0.1 + 0.1 * (5-2)/4
    assert histogram_quantile(0.95, h) == pytest.approx(0.4625)  # rank 9.5: 0.2 + 0.3 * 3.5/4
    first = Histogram(((0.1, 4), (INF, 4)), 4, 0.1)
    assert histogram_quantile(0.5, first) == pytest.approx(0.05)  # lowest bucket starts at 0
    tail = Histogram(((0.1, 1), (INF, 10)), 10, 9.0)
    assert histogram_quantile(0.5, tail) == 0.1  # rank in +Inf: highest finite bound
    assert histogram_quantile(0.5, Histogram(((0.1, 0), (INF, 0)), 0, 0)) is None
    assert histogram_quantile(1.5, h) is None


def test_quantiles_come_from_bucket_deltas():
    # before: 100 fast observations (<= 0.01 s); window adds 10 slow ones in (0.5, 1.0]
    a = snap(0, gen=0, ttft={0.01: 100, 0.5: 100, 1.0: 100, INF: 100})
    b = snap(5, gen=0, ttft={0.01: 100, 0.5: 100, 1.0: 110, INF: 110})
    s = window_stats([a, b])
    assert s.ttft_p50_s == pytest.approx(0.75)  # only the 10 new ones: rank 5 of (0.5, 1.0]
    assert window_stats([b]).ttft_p50_s < 0.01  # cumulative is dominated by the old fast ones


def test_histogram_restart_uses_new_histogram():
    a = Histogram(((0.1, 50), (INF, 60)), 60, 3.0)
    b = Histogram(((0.1, 2), (INF, 4)), 4, 0.5)  # restarted
    d = histogram_increase([a, b])
    assert d.buckets == ((0.1, 2), (INF, 4)) and d.count == 4 and d.sum == 0.5


def test_window_keeps_span():
    w = Window(3.0)
    for t in range(10):
        w.add(snap(float(t), gen=t * 10))
    assert w.snaps[0].t == 6.0 and w.snaps[-1].t == 9.0
    assert w.stats().generation_tok_s == 10.0


@st.composite
def histograms(draw):
    n = draw(st.integers(1, 8))
    les = sorted(set(draw(st.lists(st.floats(0.001, 100.0), min_size=n, max_size=n))))
    incs = draw(st.lists(st.integers(0, 50), min_size=len(les) + 1, max_size=len(les) + 1))
    cum, c = [], 0
    for i in incs:
        c += i
        cum.append(float(c))
    buckets = tuple(zip([*les, INF], cum))
    return Histogram(buckets, cum[-1], 0.0)


@given(histograms(), st.floats(0, 1), st.floats(0, 1))
def test_quantile_monotone_and_bounded(h, q1, q2):
    lo, hi = sorted((q1, q2))
    a, b = histogram_quantile(lo, h), histogram_quantile(hi, h)
    if h.count == 0 or len(h.buckets) < 2:
        assert a is None and b is None
        return
    max_finite = h.buckets[-2][0]
    assert 0.0 <= a <= b <= max_finite


@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=20))
def test_counter_increase_never_negative(vals):
    inc = counter_increase(vals)
    assert inc is not None and inc >= 0
    if all(b >= a for a, b in zip(vals, vals[1:])):
        assert inc == pytest.approx(vals[-1] - vals[0])
