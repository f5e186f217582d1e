"""`tune --probe`: MTP off and the largest k measured, the acceptance read from that run, the MTP speed model
(fitted on a device class's measured runs) picks k; without a trusted model the rest of the sweep runs."""

from __future__ import annotations

import pytest

from spark_tui.core.observe.tune import Candidate, CandidateResult, probe_candidates, probe_decision
from spark_tui.core.planning.mtp_model import Sample, expected_length, fit


def server(t0: float, F: float, d: float, v: float, c: int = 1) -> list[Sample]:
    """Runs of a server that follows the step model exactly: k = 0..3 at acceptance 0 and 1."""
    out = []
    for k in range(4):
        for p in ((0.0, 1.0) if k else (0.0,)):
            t = t0 if k == 0 else t0 + F + d * k + v * (expected_length(k, p) - 1)
            out.append(Sample(k, p, c, c * expected_length(k, p) / t))
    return out


def probe_results(k: int, p: float) -> list[CandidateResult]:
    return [CandidateResult(Candidate(0), True, 200.0, 200.0, 200.0),
            CandidateResult(Candidate(k), True, 180.0, 180.0, 180.0, acceptance_rate=p,
                            mean_acceptance_length=expected_length(k, p))]


def test_probe_measures_off_and_the_largest_k_first() -> None:
    assert probe_candidates((0, 1, 2, 3, 4)) == [Candidate(0), Candidate(4)]
    assert probe_candidates((3, 1)) == [Candidate(0), Candidate(3)]
    assert probe_candidates((0,)) == [Candidate(0)]


def test_a_cheap_drafter_at_high_acceptance_gets_the_model_s_k_measured() -> None:
    f = fit(server(0.005, 0.0002, 0.0004, 0.0001))  # drafting is cheap: more k pays at p = 0.9
    d = probe_decision(probe_results(3, 0.9), (0, 1, 2, 3), 1, f, trust_pct=10)
    assert d.acceptance == pytest.approx(0.9, abs=1e-6)
    assert d.k == 3 and d.more == ()  # k=3 was the probe itself: nothing more to start
    d = probe_decision(probe_results(3, 0.6), (0, 1, 2, 3), 1, fit(server(0.005, 0.0002, 0.0012, 0.0004)), 10)
    assert d.k in (1, 2) and d.more == (Candidate(d.k),) and "measuring it" in d.reason


def test_an_expensive_drafter_keeps_mtp_off() -> None:
    f = fit(server(0.0043, 0.0017, 0.0013, 0.0017))  # the H200 figures at c=1 (bench/results/h200-summary.json)
    d = probe_decision(probe_results(3, 0.85), (0, 1, 2, 3), 1, f, trust_pct=10)
    assert d.k == 0 and d.more == () and "MTP off" in d.reason


def test_without_a_trusted_model_the_sweep_runs() -> None:
    rest = (Candidate(1), Candidate(2))
    d = probe_decision(probe_results(3, 0.8), (0, 1, 2, 3), 1, None, 10)
    assert d.k is None and d.more == rest and "no MTP speed model" in d.reason
    noisy = server(0.005, 0.001, 0.001, 0.001)
    noisy[3] = Sample(noisy[3].k, noisy[3].p, noisy[3].c, noisy[3].tok_s * 1.3)
    d = probe_decision(probe_results(3, 0.8), (0, 1, 2, 3), 1, fit(noisy), 10)
    assert d.k is None and d.more == rest and "misses its runs" in d.reason
    d = probe_decision(probe_results(3, 0.8), (0, 1, 2, 3), 16, fit(server(0.005, 0.001, 0.001, 0.001)), 10)
    assert d.k is None and "no run at this concurrency" in d.reason
    failed = [CandidateResult(Candidate(0), True, 200.0), CandidateResult(Candidate(3), False, None)]
    d = probe_decision(failed, (0, 1, 2, 3), 1, None, 10)
    assert d.acceptance is None and d.more == rest
