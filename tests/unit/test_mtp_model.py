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


def synthetic(t0: float, a: float, c: int, ks=range(4), ps=(0.0, 1.0)) -> list[Sample]:
    """Runs of a server whose step time is exactly t0 (1 + a k)."""
    out = []
    for k in ks:
        for p in (ps if k else (0.0,)):
            t = t0 * (1 + a * k)
            out.append(Sample(k, p, c, c * expected_length(k, p) / t))
    return out


def test_fit_recovers_the_step_model_and_predicts_other_acceptance() -> None:
    f = fit(synthetic(0.005, 0.12, 1) + synthetic(0.009, 0.35, 16))
    assert f.t0[1] == pytest.approx(0.005) and f.slope[1] == pytest.approx(0.12)
    assert f.slope[16] == pytest.approx(0.35) and f.max_error_pct() < 1e-9
    # at 85 % acceptance, k=1 gains 1.854 / 1.12 at c=1
    assert f.speedup(1, 0.85, 1) == pytest.approx(1.85 / 1.12)
    # between measured concurrencies the step time is interpolated
    assert f.t0[1] < f.step_s(0, 8) < f.t0[16]
    # the k that wins at every concurrency of the goal, with a 5 % margin
    assert f.best_k(0.85, (1,)) >= 2
    assert f.best_k(0.0, (1, 16)) == 0  # nothing accepted: MTP only costs


def test_fit_reports_error_of_noisy_samples() -> None:
    s = synthetic(0.005, 0.1, 1)
    s[3] = Sample(s[3].k, s[3].p, s[3].c, s[3].tok_s * 1.08, "noisy")
    f = fit(s)
    assert 0 < f.max_error_pct() < 10
    assert any(r["label"] == "noisy" for r in f.check())


def test_fit_needs_mtp_off_runs() -> None:
    with pytest.raises(ValueError, match="MTP-off"):
        fit([Sample(1, 1.0, 1, 300.0)])
    with pytest.raises(ValueError):
        fit([Sample(0, 0.0, 1, 0.0)])


def test_step_time_is_independent_of_acceptance() -> None:
    a, b = Sample(3, 0.0, 16, 1000.0), Sample(3, 1.0, 16, 4000.0)
    assert math.isclose(a.step_s, b.step_s)
