import tomllib

import pytest

from spark_tui.core.observe.tune import (
    Candidate,
    CandidateResult,
    TuneState,
    choose,
    goal_concurrency,
    load_state,
    make_candidates,
    run_tune,
    save_state,
    score,
    warnings_for,
    winner_override_toml,
)
from spark_tui.errors import UsageError


def res(mtp, s, acc=None, ok=True, **kw):
    return CandidateResult(Candidate(mtp=mtp, **kw), ok, s, output_tok_s=s, acceptance_rate=acc)


def test_candidates_latency_and_throughput():
    lat = make_candidates("latency")
    assert [c.mtp for c in lat] == [0, 1, 2, 3, 4]
    thr = make_candidates("throughput", base_max_num_seqs=8, base_batched_tokens=8192)
    assert Candidate(0, max_num_seqs=4) in thr and Candidate(0, max_num_seqs=16) in thr
    assert Candidate(0, max_num_batched_tokens=4096) in thr and Candidate(0, max_num_batched_tokens=16384) in thr
    with pytest.raises(UsageError):
        make_candidates("speed")
    assert Candidate(2, max_num_seqs=4, max_num_batched_tokens=4096).set_flags() == [
        "--max-num-seqs=4", "--max-num-batched-tokens=4096"]
    assert Candidate(0).set_flags() == []


def test_goal_concurrency_and_score():
    assert goal_concurrency("latency", 64) == 1
    assert goal_concurrency("throughput", 8) == 8
    assert goal_concurrency("throughput", 1024) == 32
    assert score("latency", 100.0, 40.0) == 40.0
    assert score("throughput", 100.0, 40.0) == 100.0


def test_choose_and_warnings():
    rs = [res(0, 100.0), res(1, 90.0, acc=0.01), res(2, 120.0, acc=0.8), res(3, None, ok=False)]
    assert choose(rs).candidate == Candidate(2)
    w = warnings_for(rs)
    assert any("MTP k=1 is slower than MTP off" in x and "-10%" in x for x in w)
    assert any("near zero (1.0%)" in x for x in w)
    assert not any("k=2" in x for x in w)
    assert choose([res(0, None, ok=False)]) is None


def test_resumable_state(tmp_path):
    p = tmp_path / "t.json"
    st = load_state(p, "dev", "ck", "latency", 1)
    measured = []

    def measure(c):
        measured.append(c)
        if c.mtp == 2:
            raise KeyboardInterrupt  # interrupted in the middle of the third candidate
        return res(c.mtp, 10.0 + c.mtp)

    with pytest.raises(KeyboardInterrupt):
        run_tune(st, make_candidates("latency"), measure, lambda s: save_state(p, s))
    st2 = load_state(p, "dev", "ck", "latency", 1)
    assert [r.candidate.mtp for r in st2.results] == [0, 1]  # kept what finished
    measured.clear()
    run_tune(st2, make_candidates("latency"), lambda c: res(c.mtp, 10.0 + c.mtp), lambda s: save_state(p, s))
    assert [r.candidate.mtp for r in load_state(p, "dev", "ck", "latency", 1).results] == [0, 1, 2, 3, 4]
    assert measured == []  # the second run re-measured nothing already done
    # another concurrency is another experiment: not resumed from this file
    assert load_state(p, "dev", "ck", "latency", 4).results == []


def test_winner_override_is_valid_sourced_toml():
    best = CandidateResult(Candidate(1, max_num_seqs=8), True, 55.9, concurrency=1, finished_at="2026-11-23")
    d = tomllib.loads(winner_override_toml("dgx-spark", "nvidia-nvfp4", "latency", best))
    assert d["mtp"] == 1 and d["max_num_seqs"] == 8 and d["device"] == "dgx-spark"
    assert "measured on this machine" in d["sources"]["mtp"] and "55.9 tok/s" in d["sources"]["mtp"]


def test_state_roundtrip():
    st = TuneState("d", "c", "throughput", 16, [res(0, 1.0), res(1, 2.0, acc=0.5)])
    assert TuneState.from_dict(st.to_dict()) == st
