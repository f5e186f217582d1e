"""The launch sequence every server start goes through (spark_tui.core.runtime.launch): preflight -> start -> ready ->
verify, each step reported in order, and nothing left running when a step fails. The server is the fake vLLM
(tests/support/fake_vllm.py), a real process replaying a recorded real vLLM 0.32.0 startup."""

from __future__ import annotations

import socket

import pytest

from spark_tui.core.planning.planner import make_plan
from spark_tui.core.runtime import launch as ls
from spark_tui.core.runtime import supervisor as sv
from spark_tui.errors import VllmError
from tests.support.fake_vllm import tiny_model, write_fake_vllm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plan(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setenv("SPARK_TUI_VLLM", str(write_fake_vllm(tmp_path / "vllm")))
    return make_plan(device="cpu-test", model_path=str(tiny_model(tmp_path / "tiny")), port=_free_port())


def test_the_steps_in_order_then_a_server_checked_against_its_plan(plan):
    steps: list[object] = []
    sup = sv.supervisor_for_plan(plan)
    try:
        up = ls.launch(plan, sup, startup_timeout_s=60, guard=ls.default_guard(plan), on_step=steps.append)
        assert [type(s).__name__ for s in steps] == ["PreflightDone", "Started", "GuardWatching"]
        pre = steps[0].preflight
        assert pre.checkpoint is not None and pre.checkpoint.path == plan.model and pre.lines()[-1].startswith(
            f"checkpoint: {plan.model} complete")
        assert steps[1].record.pid == sup.proc.pid and up.record is steps[1].record
        assert sup.alive() and up.ready.url == sup.url and up.preflight is pre and up.watcher is not None
        assert up.verification.actual_kv_tokens is not None  # what the (recorded) log said, vs the plan
    finally:
        sup.stop()


def test_no_checks_no_preflight_step(plan):
    steps: list[object] = []
    sup = sv.supervisor_for_plan(plan)
    try:
        up = ls.launch(plan, sup, startup_timeout_s=60, checks=False, on_step=steps.append)
        assert [type(s).__name__ for s in steps] == ["Started"] and up.preflight is None and up.watcher is None
    finally:
        sup.stop()


def test_a_taken_port_stops_it_before_anything_starts(plan):
    sup = sv.supervisor_for_plan(plan)
    steps: list[object] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", plan.port))
        s.listen()
        with pytest.raises(VllmError, match="already in use"):
            ls.launch(plan, sup, startup_timeout_s=60, on_step=steps.append)
    assert steps == [] and sup.proc is None


def test_a_server_that_is_not_ready_in_time_is_stopped(plan):
    sup = sv.supervisor_for_plan(plan)
    sup.argv = ["sleep", "60"]
    with pytest.raises(VllmError, match="did not become ready within 1 s"):
        ls.launch(plan, sup, startup_timeout_s=1, checks=False)
    assert not sup.alive() and sv.list_servers() == []


def test_a_server_that_exits_during_startup_is_reported_with_its_diagnosis(plan):
    sup = sv.supervisor_for_plan(plan)
    sup.argv = ["sh", "-c", "echo 'ERROR 11-23 10:00:00 [core.py:1] ValueError: Quantization method specified in the "
                "model config (modelopt_fp4) does not match the quantization method specified in the `quantization` "
                "argument (fp8).'; exit 1"]
    with pytest.raises(VllmError) as e:
        ls.launch(plan, sup, startup_timeout_s=30, checks=False, diagnose=ls.diagnosis_summary)
    assert "exited with code 1" in e.value.message and "fix:" in e.value.message
    assert not sup.alive()


def test_when_the_memory_guard_stopped_the_server_its_diagnosis_is_the_error():
    from spark_tui.core.hardware import memguard as mg

    class Watcher:
        tripped = mg.GuardEvent("stop", None, "memory guard stopped vLLM during loading weights: MemAvailable 1.7 GiB")

    err = ls.guard_stopped(Watcher())
    assert isinstance(err, VllmError) and err.exit_code == 6
    assert err.message.startswith("memory guard stopped vLLM during loading weights") and "relaunch" in err.hint
    Watcher.tripped = None
    assert ls.guard_stopped(Watcher()) is None and ls.guard_stopped(None) is None
