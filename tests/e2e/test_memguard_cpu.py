"""The memory guard against the real CPU vLLM: a bounded memory hog eats memory next to a running server; the
guard (the same `watch_supervisor` `spark-tui launch` runs) sees MemAvailable fall through a lowered threshold
and stops vLLM's whole process group, with a diagnosis.

Safe on a small machine (2 cores, 24 GiB): the hog allocates 128 MiB steps up to a hard cap of 3 GiB, exits by
itself after 90 s, and is killed by the test; the thresholds sit 0.5 / 1.25 GiB below what the host has free once
vLLM is up, so the guard trips after about 1.3 GiB. One vLLM start (~30-60 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from spark_tui.core.hardware import memguard as mg
from spark_tui.core.runtime import supervisor as sv

pytestmark = pytest.mark.vllm
GiB = 2**30
MiB = 2**20
CAP = 3 * GiB

HOG = textwrap.dedent("""
    import signal, sys, time
    step, cap, pause, life = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    held, total, end = [], 0, time.monotonic() + life
    while time.monotonic() < end:
        if total + step <= cap:
            b = bytearray(step)
            b[::4096] = b"\\x01" * len(range(0, step, 4096))  # touch every page: resident, not just reserved
            held.append(b)
            total += step
            print(total, flush=True)
        time.sleep(pause)
""")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_guard_stops_real_vllm_when_memory_runs_out(tiny_qwen3_moe, vllm_env, tmp_path, monkeypatch):
    from spark_tui.core.planning.planner import make_plan
    from tests.support.vllm_env import vllm_bin

    for k, v in {"SPARK_TUI_HOME": str(tmp_path / "home"), "SPARK_TUI_VLLM": str(vllm_bin()), "HF_HUB_OFFLINE": "1",
                 "VLLM_NO_USAGE_STATS": "1", "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache")}.items():
        monkeypatch.setenv(k, v)
    plan = make_plan(device="cpu-test", model_path=str(tiny_qwen3_moe), port=_free_port(), vllm_version="0.32.0")
    assert plan.device.unified_memory and mg.default_enabled(plan.device.unified_memory)
    sup = sv.supervisor_for_plan(plan)
    hog = None
    events: list[mg.GuardEvent] = []
    try:
        rec = sup.start()
        sup.wait_ready(300)
        pgid = rec.pgid
        assert len([p for p in psutil.process_iter() if _pgid(p) == pgid]) >= 2  # API server + engine core
        avail = mg.ProcReader().read().mem_available
        th = mg.GuardThresholds(warn_available_bytes=avail - GiB // 2, stop_available_bytes=avail - 5 * GiB // 4,
                                interval_s=0.25)
        watcher = mg.watch_supervisor(sup, th, on_event=events.append)
        time.sleep(1.0)
        assert watcher.tripped is None and sup.alive()  # a running server alone does not trip it
        hog = subprocess.Popen([sys.executable, "-c", HOG, str(128 * MiB), str(CAP), "0.1", "90"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
        end = time.monotonic() + 60
        while watcher.tripped is None and time.monotonic() < end:
            time.sleep(0.1)
        assert watcher.tripped is not None, f"the guard did not trip; events: {[e.text for e in events]}"
        v = watcher.tripped.verdict
        assert v.level == "stop" and any("MemAvailable" in r for r in v.reasons)
        text = watcher.tripped.text
        print(text)  # shown with -s: the diagnosis a user sees
        assert text.startswith("memory guard stopped vLLM during serving: ")
        assert "largest processes:" in text and "fix: plan a lower --gpu-memory-utilization" in text
        end = time.monotonic() + 30
        while sv.group_alive(pgid) and time.monotonic() < end:
            time.sleep(0.2)
        assert not sv.group_alive(pgid), "vLLM processes survived the guard"
        watcher.close(timeout=30)  # the stop runs in the guard's thread: let it finish its clean-up
        assert not sup.alive() and not list((tmp_path / "home" / "state" / "servers").glob("*.json"))
        assert [e.kind for e in events].count("stop") == 1
        held = psutil.Process(hog.pid).memory_info().rss
        assert held <= CAP + 256 * MiB  # the hog stayed bounded
    finally:
        if hog is not None:
            os.killpg(hog.pid, signal.SIGKILL)
            hog.wait(timeout=10)
        if sup.alive():
            sup.stop(grace_s=5)


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, PermissionError, OSError):
        return None
