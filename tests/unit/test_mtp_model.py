"""The MTP speed model: expected accepted length, step time fit, predictions checked against the samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_tui.core.planning.mtp_model import Sample, acceptance_from_length, expected_length, fit


def test_expected_length() -> None:
    assert expected_length(0, 0.9) == 1.0
    assert expected_length(3, 0.0) == 1.0 and expected_length(3, 1.0) == 4.0
    assert expected_length(1, 0.854) == pytest.approx(1.854)
    assert expected_length(3, 0.5) == pytest.approx(1 + 0.5 + 0.25 + 0.125)


@given(st.integers(1, 6), st.floats(0.0, 0.999))
def test_acceptance_inverts_length(k, p) -> None:
    assert acceptance_from_length(k, expected_length(k, p)) == pytest.approx(p, abs=1e-6)


def synthetic(t0: float, F: float, d: float, v: float, c: int, ks=range(4), ps=(0.0, 1.0),
              temperature: float | None = None) -> list[Sample]:
    """Runs of a server whose step time is exactly T0 + F + d k + v (E[L] - 1)."""
    out = []
    for k in ks:
        for p in (ps if k else (0.0,)):
            t = t0 if k == 0 else t0 + F + d * k + v * (expected_length(k, p) - 1)
            out.append(Sample(k, p, c, c * expected_length(k, p) / t, f"k={k} p={p}", temperature))
    return out


def test_fit_recovers_the_step_model_and_predicts_other_acceptance() -> None:
    f = fit(synthetic(0.005, 0.001, 0.0005, 0.0003, 1) + synthetic(0.009, 0.003, 0.002, 0.001, 16))
    assert f.t0[1] == pytest.approx(0.005)
    assert f.coef[1] == pytest.approx((0.001, 0.0005, 0.0003))
    assert f.coef[16] == pytest.approx((0.003, 0.002, 0.001)) and f.max_error_pct() < 1e-6
    # at 85 % acceptance, k=1: 1.85 tokens per step of 5 + 1 + 0.5 + 0.3 * 0.85 ms
    assert f.speedup(1, 0.85, 1) == pytest.approx(1.85 * 5 / (6.5 + 0.3 * 0.85))
    # between measured concurrencies the step time is interpolated
    assert f.t0[1] < f.step_s(0, 8) < f.t0[16]
    # the k that wins at every concurrency of the goal, with a 5 % margin; never one that was not measured
    assert f.best_k(0.85, (1,)) == 3
    assert f.best_k(0.0, (1, 16)) == 0  # nothing accepted: MTP only costs
    # out of sample: each k predicted from the others, exact for a server that follows the model
    assert f.holdout_check() and all(abs(r["error_pct"]) < 1e-6 for r in f.holdout_check())


def test_step_time_depends_on_acceptance_and_temperature() -> None:
    # the H200 runs' shape: accepted tokens cost the drafter time, and sampling at T=1 is slower than greedy
    runs = synthetic(0.0043, 0.0017, 0.0013, 0.0017, 1, ps=(1.0,), temperature=0.0)
    runs += synthetic(0.0045, 0.0017, 0.0013, 0.0017, 1, ps=(0.0,), temperature=1.0)
    f = fit(runs)
    assert f.t0_at[(1, 0.0)] == pytest.approx(0.0043) and f.t0_at[(1, 1.0)] == pytest.approx(0.0045)
    assert f.coef[1] == pytest.approx((0.0017, 0.0013, 0.0017))
    assert f.max_error_pct() < 1e-6
    assert f.step_s(3, 1, 1.0, 0.0) > f.step_s(3, 1, 0.0, 0.0)


def test_one_k_only_leaves_the_per_token_cost_out() -> None:
    f = fit(synthetic(0.005, 0.002, 0.0, 0.001, 1, ks=(0, 1)))
    assert f.coef[1] == pytest.approx((0.002, 0.0, 0.001)) and f.max_error_pct() < 1e-6
    assert f.holdout_check() == []  # nothing to hold out with one k
    assert f.best_k(1.0, (1,)) in (0, 1)


def test_fit_reports_error_of_noisy_samples() -> None:
    s = synthetic(0.005, 0.001, 0.0005, 0.0003, 1)
    s[3] = Sample(s[3].k, s[3].p, s[3].c, s[3].tok_s * 1.08, "noisy")
    f = fit(s)
    assert 0 < f.max_error_pct() < 10
    assert any(r["label"] == "noisy" for r in f.check())
    assert f.worst_error_pct((1,)) == f.max_error_pct() and f.worst_error_pct((1, 16)) is None


def test_fit_needs_mtp_off_runs() -> None:
    with pytest.raises(ValueError, match="MTP-off"):
        fit([Sample(1, 1.0, 1, 300.0)])
    with pytest.raises(ValueError):
        fit([Sample(0, 0.0, 1, 0.0)])


def test_a_run_gives_its_step_time() -> None:
    a, b = Sample(3, 0.0, 16, 1000.0), Sample(3, 1.0, 16, 4000.0)
    assert math.isclose(a.step_s, b.step_s) and math.isclose(a.step_s, 0.016)
