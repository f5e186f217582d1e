import math

import pytest
from hypothesis import given, strategies as st

from spark_tui.core.observe.bench import (
    BenchConfig,
    BenchResult,
    RequestResult,
    percentile,
    render_plot,
    render_table,
    summarise_level,
)
from spark_tui.core.observe.metrics import Snapshot, window_stats
from spark_tui.errors import UsageError


def stats(t0, t1, gen0, gen1, spec0=None, spec1=None):
    """Server Stats over two snapshots; spec = (drafts, draft tokens, accepted)."""
    def snap(t, gen, spec):
        c = {"vllm:generation_tokens": gen}
        if spec:
            c.update({"vllm:spec_decode_num_drafts": spec[0], "vllm:spec_decode_num_draft_tokens": spec[1],
                      "vllm:spec_decode_num_accepted_tokens": spec[2]})
        return Snapshot(t=t, wall=t, counters=c)
    return window_stats([snap(t0, gen0, spec0), snap(t1, gen1, spec1)])


def test_percentile_matches_linear_interpolation():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95.0
    assert percentile([10, 20], 99) == pytest.approx(19.9)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_percentiles_are_ordered_and_bounded(xs):
    p50, p95, p99 = (percentile(xs, q) for q in (50, 95, 99))
    assert min(xs) <= p50 <= p95 <= p99 <= max(xs)


def req(start, first, end, n, gaps=None, ok=True):
    return RequestResult(ok, start, end, 10, n, first, tuple(gaps or ()), None if ok else "boom")


def test_summarise_level_client_side_figures():
    rs = [
        req(0.0, 0.5, 2.5, 21, [0.1] * 20),  # decode 20 tok in 2.0 s = 10 tok/s
        req(0.0, 1.0, 2.0, 11, [0.1] * 10),  # decode 10 tok in 1.0 s = 10 tok/s
        req(1.0, None, 1.5, 0, ok=False),
    ]
    lv = summarise_level(2, rs)
    assert lv.requests == 3 and lv.errors == 1
    assert lv.duration_s == pytest.approx(2.5)
    assert lv.output_tokens == 32
    assert lv.output_tok_s == pytest.approx(32 / 2.5)
    assert lv.per_user_tok_s == pytest.approx(32 / (2.5 + 2.0))  # tokens over the two requests' time
    # one request whose tokens arrived in a single read does not blow the per-user figure up
    burst = summarise_level(1, [req(0.0, 0.5, 2.5, 21), req(3.0, 3.9999, 4.0, 21)])
    assert burst.per_user_tok_s == pytest.approx(42 / 3.5)
    assert lv.request_per_s == pytest.approx(2 / 2.5)
    assert lv.ttft_s.p50 == pytest.approx(0.75)
    assert lv.itl_s.p50 == pytest.approx(0.1)
    assert lv.first_errors == ("boom",)
    assert lv.self_check_ok is None and lv.acceptance_rate is None  # no server counters given


def test_summarise_level_server_window_self_check_and_acceptance():
    rs = [req(0.0, 0.1, 4.0, 400, [0.01] * 399)]
    srv = stats(0.0, 4.0, 1000, 1000 + 410, (100, 300, 150), (100 + 200, 300 + 600, 150 + 480))
    lv = summarise_level(1, rs, srv, 4.0)
    assert lv.server_gen_tok_s == pytest.approx(410 / 4.0)
    assert lv.self_check_deviation == pytest.approx(abs(100 - 102.5) / 102.5)
    assert lv.self_check_ok is True
    assert lv.acceptance_rate == pytest.approx(480 / 600)
    assert lv.mean_acceptance_length == pytest.approx(1 + 480 / 200)


def test_self_check_fails_when_client_and_server_disagree():
    rs = [req(0.0, 0.1, 1.0, 100)]
    lv = summarise_level(1, rs, stats(0.0, 1.0, 0, 150), 1.0)
    assert lv.self_check_ok is False


def test_counter_reset_and_absent_spec_family_give_none():
    rs = [req(0.0, 0.1, 1.0, 100)]
    lv = summarise_level(1, rs, stats(0.0, 1.0, 5000, 20), 1.0)
    assert lv.server_gen_tok_s is None and lv.self_check_ok is None
    assert lv.acceptance_rate is None and lv.mean_acceptance_length is None


@pytest.mark.parametrize(
    "kw",
    [dict(concurrency=()), dict(concurrency=(0,)), dict(requests=None, duration_s=None), dict(requests=0),
     dict(prompt_tokens=0), dict(prompts="poems")],
)
def test_config_rejects_bad_input(kw):
    with pytest.raises(UsageError):
        BenchConfig(url="http://127.0.0.1:1", **kw)


def test_render_table_and_plot():
    lv = summarise_level(4, [req(0.0, 0.2, 2.0, 50, [0.02] * 49)], stats(0.0, 2.0, 0, 50), 2.0)
    res = BenchResult(url="http://127.0.0.1:8000", model="m", config={}, levels=[lv], server_version="0.32.0")
    t = render_table(res)
    assert "vLLM 0.32.0" in t and "   4 " in t and "25.0" in t and " ok " in t
    p = render_plot(res, width=10, reference={4: (50.0, "seed 000")})
    assert "c=4" in p and "█" * 5 in p and "░" * 10 in p and "seed 000" in p
    assert not math.isnan(lv.output_tok_s)


def test_api_key_is_not_in_the_config_repr():
    from spark_tui.core.observe.bench import BenchConfig

    cfg = BenchConfig(url="http://127.0.0.1:8000", api_key="sk-live-0123456789")
    assert "sk-live-0123456789" not in repr(cfg)


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), float("inf")])
def test_duration_must_be_positive_and_finite(duration):
    from spark_tui.core.observe.bench import BenchConfig
    from spark_tui.errors import UsageError

    with pytest.raises(UsageError, match="--duration"):
        BenchConfig(url="http://127.0.0.1:8000", duration_s=duration)
