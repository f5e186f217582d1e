"""`spark-tui tune`'s winner, written as a user override, is what the planner then plans — with its source."""

from __future__ import annotations

import json

import pytest

from spark_tui.core.planning.planner import make_plan
from spark_tui.core.observe.tune import Candidate, CandidateResult, winner_override_toml
from spark_tui.core.planning.tuned import load_tuned
from spark_tui.errors import ProfileError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    (tmp_path / "config" / "tuned").mkdir(parents=True)
    return tmp_path / "config" / "tuned"


def write(d, name, device, ckpt, goal, cand, score=97.7):
    best = CandidateResult(cand, True, score, concurrency=1, finished_at="2026-11-23T12:00:00Z")
    (d / f"{name}.toml").write_text(winner_override_toml(device, ckpt, goal, best))


def spec_k(plan):
    f = plan.flag("--speculative-config")
    return 0 if f is None else f.value["num_speculative_tokens"]


def test_planner_applies_the_measured_mtp_with_its_source(home):
    base = make_plan(device="dgx-spark")
    assert spec_k(base) == 0  # no measurement of MTP on GB10 yet: vLLM's default (off)
    write(home, "a", "dgx-spark", base.checkpoint.id, "latency", Candidate(1))
    p = make_plan(device="dgx-spark", goal="latency")
    f = p.flag("--speculative-config")
    assert spec_k(p) == 1 and f.evidence == "measured"
    assert f.source.startswith("measured on this machine (spark-tui tune, goal latency") and "97.7 tok/s" in f.source
    # a balanced plan takes the latency result; the memory picture follows the final flags
    assert spec_k(make_plan(device="dgx-spark")) == 1
    # the user's explicit choice still wins
    assert spec_k(make_plan(device="dgx-spark", goal="latency", mtp=2)) == 2
    assert spec_k(make_plan(device="dgx-spark", goal="latency", set_flags=["--speculative-config="])) == 0
    # another device is untouched
    assert spec_k(make_plan(device="rtx-pro-6000", goal="latency")) == 0


def test_measured_mtp_off_and_batching_for_throughput(home):
    base = make_plan(device="rtx-pro-6000", goal="throughput")
    write(home, "t", "rtx-pro-6000", base.checkpoint.id, "throughput", Candidate(0, max_num_seqs=64))
    p = make_plan(device="rtx-pro-6000", goal="throughput")
    assert p.flag("--speculative-config") is None
    assert p.flag("--max-num-seqs").value == 64 and "measured on this machine" in p.flag("--max-num-seqs").source
    assert p.flag("--max-num-seqs").evidence == "measured"
    assert p.memory.max_num_seqs == 64
    assert make_plan(device="rtx-pro-6000", goal="throughput", concurrency=8).flag("--max-num-seqs").value == 8
    assert load_tuned("rtx-pro-6000", base.checkpoint.id, "latency") is None  # no fallback from throughput


def test_a_tune_file_without_sources_is_rejected_naming_it(home):
    (home / "bad.toml").write_text('device = "dgx-spark"\ncheckpoint = "x"\ngoal = "latency"\nmtp = 2\n')
    with pytest.raises(ProfileError) as e:
        load_tuned("dgx-spark", "x", "latency")
    assert "bad.toml" in e.value.message and "'mtp' has no source" in e.value.message
